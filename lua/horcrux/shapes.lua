--- horcrux.shapes: the answers of the container routes, as DESIGN.md fixes
-- them, built from the Engine API's replies. Pure functions, no I/O.
local json = require "horcrux.json"

local M = {}

local ZERO_TIME = "0001-01-01T00:00:00Z"

local function strip_slash(name)
  if type(name) ~= "string" then
    return nil
  end
  return (name:gsub("^/", ""))
end

--- One item of GET /api/containers from one item of /containers/json.
function M.list_item(c)
  local names = type(c.Names) == "table" and c.Names or {}
  return {
    id = type(c.Id) == "string" and c.Id:sub(1, 12) or nil,
    name = strip_slash(names[1]) or json.null,
    status = c.State or json.null,
    image = c.Image or json.null,
  }
end

--- GET /api/containers from /containers/json: a JSON array, even empty.
function M.list(items)
  local out = json.array()
  for i, c in ipairs(items) do
    out[i] = M.list_item(c)
  end
  return out
end

local function time_or_null(t)
  if type(t) ~= "string" or t == "" or t == ZERO_TIME then
    return json.null
  end
  return t
end

--- GET /api/containers/:id from /containers/{id}/json.
function M.inspect(c)
  local state = type(c.State) == "table" and c.State or {}
  local config = type(c.Config) == "table" and c.Config or {}
  return {
    id = c.Id,
    name = strip_slash(c.Name) or json.null,
    status = state.Status or json.null,
    image = config.Image or c.Image or json.null,
    created = time_or_null(c.Created),
    started = time_or_null(state.StartedAt),
  }
end

--- The status words a filters table asks for (Docker's filters shape:
-- {status = {"running"}} or {status = {running = true}}), as a set; nil
-- when it asks for none (every status).
function M.wanted_status(opts)
  local f = opts and opts.filters
  local st = type(f) == "table" and f.status
  if type(st) == "string" then
    st = { st }
  end
  if type(st) ~= "table" then
    return nil
  end
  local want = {}
  for k, v in pairs(st) do
    if type(k) == "string" and v then
      want[k] = true
    elseif type(v) == "string" then
      want[v] = true
    end
  end
  return want
end

return M
