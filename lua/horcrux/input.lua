--- horcrux.input: what the management routes check before anything is
-- sent to the daemon -- container refs, stack names, query values, JSON
-- bodies -- and their error answers.
--
--   input.ref(s)              -> ref | nil, message, "bad_request"
--   input.stack_name(s)       -> name | nil, message, "bad_request"
--   input.query(args, spec)   -> {key = value} | nil, message, "bad_request", key
--   input.json_body(req)      -> object | nil, message, kind
--   input.no_body(req)        -> true | nil, message, "bad_request"
--   input.read_only(req, what) -> nil | message, "forbidden"
--   input.fail(message, kind, extra) -> status, error body
--
-- Checkers for a route's opts.query and for input.query (each
-- function(text) -> value | nil, why):
--   input.boolean, input.integer(min, max), input.one_of{...},
--   input.string(max)
local docker = require "horcrux.docker"
local json = require "horcrux.json"

local M = {}

local MAX_REF = 255

--- A container as a route names it: a name, a full id or an id prefix
-- (Docker's grammar, checked before any request is made).
function M.ref(s)
  if type(s) == "string" and #s <= MAX_REF and docker.valid_name(s) then
    return (s:gsub("^/", ""))
  end
  return nil, ("invalid container id or name %q: a name is letters, digits "
    .. "and _ . - (starting with a letter or digit), an id is hex")
    :format(type(s) == "string" and s:sub(1, 80) or tostring(s)),
    "bad_request"
end

--- A Compose project name (the value of com.docker.compose.project).
function M.stack_name(s)
  if type(s) == "string" and #s <= MAX_REF and s:match("^[%w][%w_.-]*$") then
    return s
  end
  return nil, ("invalid stack name %q: letters, digits and _ . - "
    .. "(starting with a letter or digit)")
    :format(type(s) == "string" and s:sub(1, 80) or tostring(s)),
    "bad_request"
end

function M.boolean(v)
  if v == "1" or v == "true" then
    return true
  elseif v == "0" or v == "false" then
    return false
  end
  return nil, "must be 1, 0, true or false"
end

function M.integer(min, max)
  return function(v)
    local n = v:match("^%-?%d+$") and #v <= 19 and math.tointeger(tonumber(v))
    if n and n >= min and n <= max then
      return n
    end
    return nil, ("must be an integer from %d to %d"):format(min, max)
  end
end

function M.one_of(words)
  local set = {}
  for _, w in ipairs(words) do
    set[w] = true
  end
  return function(v)
    if set[v] then
      return v
    end
    return nil, "must be one of " .. table.concat(words, ", ")
  end
end

--- Any text of at most max bytes (the empty one too), as it came.
function M.string(max)
  if math.type(max) ~= "integer" or max < 0 then
    error("input.string(max): max must be a non-negative integer, got " ..
      tostring(max), 2)
  end
  return function(v)
    if #v <= max then
      return v
    end
    return nil, ("must be at most %d bytes"):format(max)
  end
end

local function keys_of(spec)
  local names = {}
  for k in pairs(spec) do
    names[#names + 1] = k
  end
  table.sort(names)
  return #names > 0 and table.concat(names, ", ") or "no parameters"
end

--- The query of a route: every key must be in spec and given once; each
-- value is checked by spec[key]. Returns {key = value}.
function M.query(args, spec)
  local out = {}
  for _, kv in ipairs(args or {}) do
    local k, v = kv[1], kv[2]
    local check = spec[k]
    if not check then
      return nil, ("unknown query parameter %q (this route takes: %s)")
        :format(k, keys_of(spec)), "bad_request", k
    end
    if out[k] ~= nil then
      return nil, ("query parameter %q given twice"):format(k),
        "bad_request", k
    end
    local val, why = check(v)
    if val == nil then
      return nil, ("query %s=%q: %s"):format(k, v:sub(1, 80), why),
        "bad_request", k
    end
    out[k] = val
  end
  return out
end

local function header(req, name)
  local h = req.headers or {}
  return h[name]
end

--- The body of a route that takes JSON: Content-Type application/json
-- (415 otherwise), a JSON object (400 otherwise).
function M.json_body(req)
  local ctype = (header(req, "content-type") or ""):lower()
  local media = ctype:match("^%s*([^;%s]+)")
  if media ~= "application/json" then
    return nil, ("this route takes a JSON body (Content-Type: "
      .. "application/json), got %s"):format(
        media and ("Content-Type " .. media) or "no Content-Type"),
      "unsupported_media_type"
  end
  local body = req.body or ""
  if body == "" then
    return nil, "the body is empty; a JSON object is expected", "bad_request"
  end
  local v, err = json.decode(body)
  if v == nil then
    return nil, "the body is not valid JSON: " .. tostring(err), "bad_request"
  end
  if type(v) ~= "table" or json.is_array(v) then
    return nil, "the body must be a JSON object", "bad_request"
  end
  return v
end

--- A route that takes no body refuses one.
function M.no_body(req)
  if req.body ~= nil and req.body ~= "" then
    return nil, "this route takes no body", "bad_request"
  end
  return true
end

--- In read-only mode (horcrux serve --read-only), what leaks data or
-- changes state is refused. The server refuses mutating methods itself;
-- this is the same rule for the routes' own checks.
function M.read_only(req, what)
  if req.read_only then
    return ("read-only mode: %s refused"):format(what), "forbidden"
  end
  return nil
end

--- A route's error answer; `extra` goes into the error object (e.g. the
-- field a message is about).
function M.fail(message, kind, extra)
  local format = require "format"
  return format.status[kind] or 500,
    format.error(kind or "internal", message, extra)
end

return M
