--- format.lua: how answers look on the wire. Operators may edit this file;
-- `kill -HUP` the server to apply it.
--
-- respond(status, body, headers) turns what a route returned into the
-- status, the body string and the headers the server sends: a table body is
-- JSON, a string goes as is.
local json = require "horcrux.json"

local M = {}

--- Set to true for indented JSON (easier to read, a little slower).
M.pretty = false
--- Object keys in byte order, so the same answer is always the same text.
M.sort_keys = true

--- The error shape of every route: {"error": {"code", "message", ...}}.
function M.error(code, message, extra)
  local e = { code = code, message = message }
  for k, v in pairs(extra or {}) do
    e[k] = v
  end
  return { error = e }
end

--- The HTTP status of each error kind.
M.status = {
  bad_request = 400,
  unauthorized = 401,
  forbidden = 403,
  not_found = 404,
  method_not_allowed = 405,
  conflict = 409,
  too_large = 413,
  unsupported_media_type = 415,
  server = 502,
  protocol = 502,
  limit = 502,
  unavailable = 503,
  metrics_unavailable = 503,
  timeout = 504,
}

--- A route's answer for a failure `message` of `kind`, with what each
-- source said (`tried`) when there were several.
function M.fail(message, kind, tried)
  local extra
  if tried and #tried > 1 then
    extra = { tried = tried }
  end
  return M.status[kind] or 500, M.error(kind or "internal", message, extra)
end

local function has(headers, name)
  name = name:lower()
  for k in pairs(headers) do
    if type(k) == "string" and k:lower() == name then
      return true
    end
  end
  return false
end

function M.respond(status, body, headers)
  if math.type(status) ~= "integer" or status < 100 or status > 599 then
    error("a route must return an HTTP status (100-599) first, got " ..
      tostring(status), 0)
  end
  local out = {}
  for k, v in pairs(headers or {}) do
    out[tostring(k)] = tostring(v)
  end
  if type(body) == "table" then
    local text, err = json.encode(body, { pretty = M.pretty, sort_keys = M.sort_keys })
    if not text then
      error("the route's body cannot be encoded as JSON: " .. err, 0)
    end
    body = text
    if not has(out, "content-type") then
      out["Content-Type"] = "application/json"
    end
  elseif body == nil then
    body = ""
  elseif type(body) ~= "string" then
    error("a route's body must be a table, a string or nil, got " ..
      type(body), 0)
  elseif not has(out, "content-type") then
    out["Content-Type"] = "text/plain; charset=utf-8"
  end
  return status, body, out
end

return M
