--- horcrux.hooks_check: checks hooks.lua's table (at start and at every
-- reload, in every state that loads the scripts) and fills in the
-- defaults. A bad hook or rule is refused with a message that names it;
-- the server then keeps the scripts it runs (a reload) or does not start.
--
--   check(t) -> {hooks = {hook, ...}, alerts = {rule, ...}}
--
-- t's array part holds the hooks, t.alerts the alert rules
-- (horcrux.alerts). A hook:
--
--   url          http:// or https://, with a host (required)
--   secret       a string: X-Horcrux-Signature: sha256=<HMAC-SHA256 hex>
--   filter       function(event) -> boolean (false: not for this hook)
--   transform    function(event) -> table (the body sent instead)
--   format       "json" (default: the event as it is) or "alertmanager"
--                (alerts only, in Alertmanager's webhook shape, version 4)
--   name         its queue's directory under --state-dir/hooks (default:
--                the url's host and a hash of the url); unique
--   headers      {Name = "value"}: sent with every delivery
--   timeout      seconds per attempt (default 5, 0.1 .. 60)
--   retry_min    seconds before the first retry (default 1)
--   retry_max    the cap of the backoff (default 300 s)
--   give_up_after  attempts of a delivery the receiver refuses with a 4xx
--                other than 408/429 before it is dropped (default 5)
--   queue_max    bytes of pending deliveries on disk (default 16 MiB)
--   receiver, external_url   Alertmanager's fields (format = alertmanager)
local M = {}

local MAX_HOOKS = 64 -- delivered at once: horcrux.hooks.poster's limit

-- Lua instructions a filter, a transform or an alert's `when`/`match` may
-- run per call (horcrux.hooks.bounded): a few hundred is usual; a loop
-- that never ends is stopped there instead of holding every delivery.
M.BUDGET = 1000000

local KNOWN = {
  url = "string", secret = "string", filter = "function",
  transform = "function", format = "string", name = "string",
  headers = "table", timeout = "number", retry_min = "number",
  retry_max = "number", give_up_after = "number", queue_max = "number",
  receiver = "string", external_url = "string",
}

local DEFAULTS = {
  format = "json", timeout = 5, retry_min = 1, retry_max = 300,
  give_up_after = 5, queue_max = 16 * 1024 * 1024, receiver = "horcrux",
  external_url = "",
}

local function fail(i, fmt, ...)
  error(("hooks.lua: hook %d: " .. fmt):format(i, ...), 0)
end

--- The url without credentials and query (what GET /api/hooks shows: a
-- password or a token in the query must not leak through the API).
function M.public_url(url)
  local scheme, rest = url:match("^(%a[%w+.-]*://)(.*)$")
  if not scheme then
    return url
  end
  local at = rest:find("@", 1, true)
  local slash = rest:find("/", 1, true)
  if at and (not slash or at < slash) then
    rest = rest:sub(at + 1)
  end
  local q = rest:find("[?#]")
  if q then
    rest = rest:sub(1, q - 1)
  end
  return scheme .. rest
end

local function check_url(i, url)
  if #url > 2048 or url:find("[%c%s]") then
    fail(i, "url must be at most 2048 bytes, with no space or control " ..
      "character")
  end
  local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
  if not scheme or (scheme:lower() ~= "http" and scheme:lower() ~= "https") then
    fail(i, "url %q: only http:// and https:// are delivered to",
      M.public_url(url))
  end
  local authority = rest:match("^([^/?#]*)")
  local host = authority:gsub("^.*@", "")
  if host == "" or host:match("^:") then
    fail(i, "url %q has no host", M.public_url(url))
  end
  return host:gsub(":%d+$", ""):gsub("[%[%]]", "")
end

local function check_number(i, h, k, min, max)
  local v = h[k]
  if v ~= v or v < min or v > max then
    fail(i, "%s must be between %s and %s, got %s", k, min, max, tostring(v))
  end
end

local function check_headers(i, headers)
  for k, v in pairs(headers) do
    if type(k) ~= "string" or not k:match("^[%w!#$%%&'*+.^_`|~-]+$") then
      fail(i, "headers: %q is not a header name", tostring(k))
    end
    if type(v) ~= "string" or v:find("[\r\n%z]") then
      fail(i, "headers.%s must be a string without CR, LF or NUL", k)
    end
    local low = k:lower()
    if low:match("^x%-horcrux%-") or low == "content-type"
        or low == "content-length" then
      fail(i, "headers.%s is set by horcrux", k)
    end
  end
end

local function default_name(host, url)
  local hooks = require "horcrux.hooks"
  local safe = host:lower():gsub("[^%w.-]", "-"):sub(1, 40)
  return safe .. "-" .. hooks.hmac_sha256("horcrux-hook", url):sub(1, 10)
end

local function check_hook(i, h, names)
  if type(h) ~= "table" then
    fail(i, "a hook is a table {url = ..., ...}, got a %s", type(h))
  end
  for k, v in pairs(h) do
    local want = KNOWN[k]
    if not want then
      fail(i, "unknown field %q (known: url, secret, filter, transform, " ..
        "format, name, headers, timeout, retry_min, retry_max, " ..
        "give_up_after, queue_max, receiver, external_url)", tostring(k))
    end
    if type(v) ~= want then
      fail(i, "%s must be a %s, got a %s", k, want, type(v))
    end
  end
  if h.url == nil then
    fail(i, "url is required")
  end
  local host = check_url(i, h.url)
  local out = {}
  for k, v in pairs(DEFAULTS) do
    out[k] = v
  end
  for k, v in pairs(h) do
    out[k] = v
  end
  if out.format ~= "json" and out.format ~= "alertmanager" then
    fail(i, "format must be \"json\" or \"alertmanager\", got %q", out.format)
  end
  if h.secret ~= nil and #h.secret == 0 then
    fail(i, "secret must not be empty (leave it out for no signature)")
  end
  check_number(i, out, "timeout", 0.1, 60)
  check_number(i, out, "retry_min", 0.01, 3600)
  check_number(i, out, "retry_max", out.retry_min, 86400)
  check_number(i, out, "give_up_after", 1, 1000)
  check_number(i, out, "queue_max", 64 * 1024, 1 << 40)
  out.queue_max = math.floor(out.queue_max)
  check_headers(i, out.headers or {})
  out.name = out.name or default_name(host, h.url)
  if not out.name:match("^[%w_.-]+$") or out.name:match("^%.") or #out.name > 100 then
    fail(i, "name %q: letters, digits, _ . - only (at most 100, not " ..
      "starting with a dot)", out.name)
  end
  if names[out.name] then
    fail(i, "name %q is hook %d's too: each hook has its own queue", out.name,
      names[out.name])
  end
  names[out.name] = i
  out.public_url = M.public_url(h.url)
  return out
end

--- Checks hooks.lua's table; returns {hooks =, alerts =} or raises.
function M.check(t)
  if type(t) ~= "table" then
    error("hooks.lua must return a table: { hook, ..., alerts = {...} }", 0)
  end
  for k in pairs(t) do
    if not (math.type(k) == "integer" and k >= 1 and k <= #t) and k ~= "alerts" then
      error(("hooks.lua: unknown key %q (the hooks are the list; alert " ..
        "rules go in alerts = {...})"):format(tostring(k)), 0)
    end
  end
  if #t > MAX_HOOKS then
    error(("hooks.lua: %d hooks, at most %d"):format(#t, MAX_HOOKS), 0)
  end
  local out, names = {}, {}
  for i = 1, #t do
    out[i] = check_hook(i, t[i], names)
  end
  local rules = require("horcrux.alerts").check(t.alerts or {})
  return { hooks = out, alerts = rules }
end

return M
