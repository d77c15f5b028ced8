--- horcrux.router: routes matched by method and path pattern.
--
--   local r = router.new()
--   r:add("GET", "/api/containers/:id", handler)
--   local handler, params = r:match("GET", "/api/containers/web")
--   -- no route: nil, "not_found"; wrong method: nil, "method_not_allowed", allow
--
-- A pattern is a path of segments; a segment ":name" matches any one
-- non-empty segment and captures it as params.name. Routes are tried in the
-- order they were added.
local M = {}
local Router = {}
Router.__index = Router

local function split(path)
  local segs = {}
  for seg in path:gmatch("[^/]+") do
    segs[#segs + 1] = seg
  end
  return segs
end

function M.new()
  return setmetatable({ routes = {} }, Router)
end

--- Adds a route. Raises on a malformed method or pattern, naming it.
function Router:add(method, pattern, handler)
  if type(method) ~= "string" or not method:match("^%u+$") then
    error("route: method must be an upper-case word like \"GET\", got " .. tostring(method), 2)
  end
  if type(pattern) ~= "string" or pattern:sub(1, 1) ~= "/" then
    error("route: pattern must be a path starting with '/', got " .. tostring(pattern), 2)
  end
  if type(handler) ~= "function" then
    error("route " .. method .. " " .. pattern .. ": handler must be a function", 2)
  end
  local segs = {}
  for i, seg in ipairs(split(pattern)) do
    local name = seg:match("^:([%a_][%w_]*)$")
    if seg:sub(1, 1) == ":" and not name then
      error("route " .. pattern .. ": bad parameter name in segment " .. i, 2)
    end
    segs[i] = name and { param = name } or { literal = seg }
  end
  self.routes[#self.routes + 1] =
    { method = method, pattern = pattern, segs = segs, handler = handler }
end

local function match_segs(segs, parts)
  if #segs ~= #parts then
    return nil
  end
  local params = {}
  for i, seg in ipairs(segs) do
    if seg.literal then
      if seg.literal ~= parts[i] then
        return nil
      end
    else
      params[seg.param] = parts[i]
    end
  end
  return params
end

--- Finds the handler of method + path.
-- Returns handler, params; or nil, "not_found"; or nil,
-- "method_not_allowed", allow (a comma-separated list of methods).
function Router:match(method, path)
  local parts = split(path)
  local allowed, seen = {}, {}
  for _, r in ipairs(self.routes) do
    local params = match_segs(r.segs, parts)
    if params then
      if r.method == method or (method == "HEAD" and r.method == "GET") then
        return r.handler, params, r
      end
      if not seen[r.method] then
        seen[r.method] = true
        allowed[#allowed + 1] = r.method
      end
    end
  end
  if #allowed > 0 then
    return nil, "method_not_allowed", table.concat(allowed, ", ")
  end
  return nil, "not_found"
end

--- The routes, for listing: { {method=, pattern=}, ... }.
function Router:list()
  local out = {}
  for i, r in ipairs(self.routes) do
    out[i] = { method = r.method, pattern = r.pattern }
  end
  return out
end

return M
