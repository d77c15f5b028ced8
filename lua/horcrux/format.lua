--- horcrux.format: a route's answer on the wire -- what format.lua (the
-- operator's script) builds on, and the defaults when there is none.
--
--   format.respond(status, body, headers, settings) -> status, text, headers
--   format.responder(settings)  respond(status, body, headers) for settings,
--                    the common answer encoded in C
--   format.JSON_HEADERS  {["Content-Type"] = "application/json"}, read-only
--   format.DEFAULT   {pretty = false, sort_keys = true, respond = ...}
--
-- A table body is JSON (settings.pretty: indented; settings.sort_keys:
-- object keys in byte order, so the same answer is always the same text)
-- with Content-Type application/json unless the route set one; a string
-- goes as it is (text/plain unless set); nil is an empty body. Anything
-- else, or a status outside 100-599, raises: the route is wrong. The
-- headers returned for a table body without headers of the route's are
-- JSON_HEADERS, shared by every answer (read-only: copy it to change it).
local json = require "horcrux.json"

local M = {}

local type, mtype, encoder = type, math.type, json.encoder

local function has(headers, name)
  for k in pairs(headers) do
    if type(k) == "string" and k:lower() == name then
      return true
    end
  end
  return false
end

-- The common answer, a table body with no headers of the route's own, by
-- the shortest way: an encoder (json.encoder) made once per settings table
-- and made again only when its pretty or sort_keys changes, and no header
-- to look for. Measured: about a sixth of a small request's instructions.
local fast = setmetatable({}, { __mode = "k" })

--- The headers of that answer: one table for every request (no table made
-- per request), read-only since it is shared: a format.lua that adds a
-- header copies it first (pairs works). The host knows it and sends its
-- Content-Type without walking it.
local json_headers = { ["Content-Type"] = "application/json" }
M.JSON_HEADERS = setmetatable({}, {
  __index = json_headers,
  __newindex = function()
    error("format.JSON_HEADERS is shared by every answer: copy it to add a "
      .. "header", 2)
  end,
  __pairs = function()
    return next, json_headers, nil
  end,
  __metatable = false,
})
local JSON_HEADERS = M.JSON_HEADERS

function M.respond(status, body, headers, settings)
  if headers == nil and type(body) == "table"
      and mtype(status) == "integer" and status >= 100
      and status <= 599 then
    local enc = fast[settings]
    local pretty, sort = settings.pretty, settings.sort_keys
    if enc == nil or enc.pretty ~= pretty or enc.sort_keys ~= sort then
      enc = { pretty = pretty, sort_keys = sort }
      enc.encode = encoder(enc)
      fast[settings] = enc
    end
    local text = enc.encode(body)
    if text then
      return status, text, JSON_HEADERS
    end
  end
  if math.type(status) ~= "integer" or status < 100 or status > 599 then
    error("a route must return an HTTP status (100-599) first, got " ..
      tostring(status), 0)
  end
  local out = {}
  for k, v in pairs(headers or {}) do
    out[tostring(k)] = tostring(v)
  end
  if type(body) == "table" then
    local text, err = json.encode(body, { pretty = settings.pretty,
      sort_keys = settings.sort_keys })
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

--- A respond(status, body, headers) for settings (format.lua's table):
-- the common answer is encoded in C, as M.respond would (json.responder;
-- pretty and sort_keys read at each call), anything else goes to
-- M.respond(status, body, headers, settings).
function M.responder(settings)
  return json.responder(settings, JSON_HEADERS, function(status, body, headers)
    return M.respond(status, body, headers, settings)
  end)
end

--- The settings format.lua may give, and their types.
M.SETTINGS = { pretty = "boolean", sort_keys = "boolean",
  respond = "function" }

M.DEFAULT = { pretty = false, sort_keys = true }
M.DEFAULT.respond = M.responder(M.DEFAULT)

--- Checks format.lua's table; raises naming a bad setting.
function M.check(t)
  if type(t) ~= "table" then
    error("format.lua must return a table", 0)
  end
  for k, v in pairs(t) do
    local want = M.SETTINGS[k]
    if not want then
      error(("format.lua: unknown setting %s (settings: pretty, sort_keys, "
        .. "respond)"):format(tostring(k)), 0)
    elseif type(v) ~= want then
      error(("format.lua: %s must be a %s, got %s"):format(k, want, type(v)),
        0)
    end
  end
  return t
end

return M
