--- horcrux.input: what the management routes check before anything is
-- sent to the daemon -- container refs, stack names, query values, JSON
-- bodies -- and their error answers.
--
--   input.ref(s [, field])    -> ref | nil, message, "bad_request"[, field]
--   input.stack_name(s)       -> name | nil, message, "bad_request"
--   input.query(args, spec)   -> {key = value} | nil, message, "bad_request", key
--   input.json_body(req)      -> object | nil, message, kind
--   input.no_body(req)        -> true | nil, message, "bad_request"
--   input.writable(req, what) -> true | nil, message, "forbidden"
--   input.accepts_text(req)   -> boolean
--
-- Checkers for input.query (each function(text) -> value | nil, why):
--   input.boolean, input.integer(min, max), input.one_of{...},
--   input.string(max), input.signal
local docker = require "horcrux.docker"
local json = require "horcrux.json"
local tables = require "horcrux.tables"

local M = {}

local MAX_REF = 255

--- A container as a route names it: a name, a full id or an id prefix
-- (Docker's grammar, checked before any request is made), refused in
-- horcrux.docker's words. `field` (optional) names where s came from, a
-- body's field: the refusal then reads "field: ...", and a field that is
-- missing or not a string is refused as such.
function M.ref(s, field)
  if field and (s == nil or s == json.null) then
    return nil, field .. ": is required", "bad_request", field
  elseif type(s) ~= "string" then
    return nil, (field or "ref") .. ": must be a string", "bad_request", field
  end
  local ref, err, kind = docker.ref(s)
  if ref == nil and field then
    -- "docker: invalid ...": the field is what was wrong here
    return nil, field .. err:sub(#"docker" + 1), kind, field
  end
  return ref, err, kind
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

--- Any text of 1 to max bytes without control characters.
function M.string(max)
  return function(v)
    if #v >= 1 and #v <= max and not v:find("[%c\127]") then
      return v
    end
    return nil, ("must be 1 to %d printable bytes"):format(max)
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

local function keys_of(spec)
  local names = tables.sorted_keys(spec)
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
-- changes state is refused: true, or nil, message, "forbidden". The server
-- refuses mutating methods itself; this is the same rule for what a GET
-- route gives away.
function M.writable(req, what)
  if req.read_only then
    return nil, ("read-only mode: %s refused"):format(what), "forbidden"
  end
  return true
end

--- Whether the client asked for plain text (Accept: text/plain and not
-- application/json).
function M.accepts_text(req)
  local accept = ((req.headers or {}).accept or ""):lower()
  return accept:find("text/plain", 1, true) ~= nil
    and not accept:find("application/json", 1, true)
end

-- Signal names as `docker kill --signal` takes them.
local SIGNALS = {}
for _, s in ipairs({ "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS",
  "FPE", "KILL", "USR1", "SEGV", "USR2", "PIPE", "ALRM", "TERM", "STKFLT",
  "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG", "XCPU", "XFSZ",
  "VTALRM", "PROF", "WINCH", "IO", "POLL", "PWR", "SYS" }) do
  SIGNALS[s] = true
end

--- A signal: a name (TERM, SIGKILL, RTMIN+3) or a number 1-64. A "+" in a
-- query decodes to a space (form encoding), so RTMIN 3 is RTMIN+3.
function M.signal(v)
  local n = #v <= 2 and v:match("^%d+$") and tonumber(v)
  if n and n >= 1 and n <= 64 then
    return tostring(math.tointeger(n))
  end
  local name = #v <= 16 and v:upper():gsub("^SIG", ""):gsub(" ", "+") or ""
  if SIGNALS[name] or name:match("^RTMIN%+?%d?%d?$")
      or name:match("^RTMAX%-?%d?%d?$") then
    return "SIG" .. name
  end
  return nil, "must be a signal name (TERM, SIGKILL, RTMIN+3, ...) or number 1-64"
end

return M
