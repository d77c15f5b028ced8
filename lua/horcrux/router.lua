--- horcrux.router: routes matched by method and path pattern.
--
--   local r = router.new()
--   r:add("GET", "/api/containers/:id", handler [, opts [, where]])
--   local route, params = r:match("GET", "/api/containers/web")
--   -- route = {method, pattern, handler, opts, where}; params = {id = "web"}
--   -- no route: nil, "not_found"; wrong method: nil, "method_not_allowed",
--   -- allow ("GET, POST")
--
-- A pattern is a path of segments:
--   literal   matches itself
--   :name     one non-empty segment, captured as params.name
--   *name     one or more segments (greedy), captured joined with "/";
--             literal and :name segments may follow it, matched from the
--             end: "/api/images/*ref/push" takes "/api/images/a/b:1/push"
--             with params.ref = "a/b:1". At most one per pattern.
-- Empty segments do not count: "/a//b/" is "/a/b".
--
-- Which route answers: a pattern without parameters is found by one table
-- lookup on the path, before any pattern with parameters; those are tried
-- in the order they were added. HEAD is answered by the GET route when no
-- HEAD route matches. A second route with the same method and the same
-- pattern (parameter names aside) is an error naming both places.
local M = {}
local Router = {}
Router.__index = Router

local find, match, sub, byte = string.find, string.match, string.sub,
  string.byte
local concat = table.concat

--- The params of a route without parameters: shared, so read-only.
M.NO_PARAMS = setmetatable({}, {
  __newindex = function()
    error("req.params of a route without parameters is read-only", 2)
  end,
  __metatable = false,
})

--- The non-empty segments of path, and their count. Plain find, no
-- pattern: the path comes from outside.
local function split(path)
  local parts, n, i, len = {}, 0, 1, #path
  while i <= len do
    local j = find(path, "/", i, true) or len + 1
    if j > i then
      n = n + 1
      parts[n] = sub(path, i, j - 1)
    end
    i = j + 1
  end
  return parts, n
end
M.split = split

function M.new()
  return setmetatable({ exact = {}, patterns = {}, by_method = {},
    shapes = {}, count = 0 }, Router)
end

local function check_args(method, pattern, handler)
  if type(method) ~= "string" or not method:match("^%u+$") then
    error("route: method must be an upper-case word like \"GET\", got " ..
      tostring(method), 0)
  end
  if type(pattern) ~= "string" or pattern:sub(1, 1) ~= "/" then
    error("route: pattern must be a path starting with '/', got " ..
      tostring(pattern), 0)
  end
  if type(handler) ~= "function" then
    error("route " .. method .. " " .. pattern ..
      ": handler must be a function, got " .. type(handler), 0)
  end
end

--- The segments of a pattern: {literal = s} or {param = name, rest = bool};
-- the index of its *name segment; its shape (for duplicates).
local function compile(pattern)
  local parts, n = split(pattern)
  local segs, shape, star, names = {}, {}, nil, {}
  for i = 1, n do
    local seg = parts[i]
    local c = sub(seg, 1, 1)
    if c == ":" or c == "*" then
      local name = seg:match("^[:*]([%a_][%w_]*)$")
      if not name then
        error(("route %s: bad parameter name in segment %d (%q)")
          :format(pattern, i, seg), 0)
      end
      if names[name] then
        error(("route %s: parameter %q appears twice"):format(pattern, name), 0)
      end
      names[name] = true
      if c == "*" then
        if star then
          error("route " .. pattern .. ": at most one *name segment", 0)
        end
        star = i
      end
      segs[i] = { param = name, rest = c == "*" }
      shape[i] = c
    else
      segs[i] = { literal = seg }
      shape[i] = "=" .. seg
    end
  end
  local has_params = next(names) ~= nil
  return segs, n, star, has_params, "/" .. concat(parts, "/"),
    concat(shape, "/")
end

--- The Lua pattern that matches a normalised path for segs, and the names
-- of its captures in order. A :name is "([^/]+)", a *name "(.+)"; both
-- backtrack at most over the path once (linear), and literals are
-- escaped.
local function lua_pattern(segs, n)
  local out, names = {}, {}
  for i = 1, n do
    local s = segs[i]
    if s.literal then
      out[i] = s.literal:gsub("[^%w]", "%%%0")
    else
      out[i] = s.rest and "(.+)" or "([^/]+)"
      names[#names + 1] = s.param
    end
  end
  return "^/" .. concat(out, "/") .. "$", names
end

--- Adds a route. Raises on a malformed method, pattern or handler, and on
-- a duplicate; `where` ("routes.lua:12") names the place in messages.
function Router:add(method, pattern, handler, opts, where)
  check_args(method, pattern, handler)
  local segs, nsegs, star, has_params, norm, shape = compile(pattern)
  local key = method .. " " .. shape
  local prev = self.shapes[key]
  if prev then
    error(("route %s %s%s duplicates %s %s%s"):format(method, pattern,
      where and (" at " .. where) or "", prev.method, prev.pattern,
      prev.where and (" at " .. prev.where) or ""), 0)
  end
  self.count = self.count + 1
  local lpat, names = lua_pattern(segs, nsegs)
  local r = { method = method, pattern = pattern, handler = handler,
    opts = opts, where = where, index = self.count, lpat = lpat,
    names = names, nparams = #names }
  self.shapes[key] = r
  if has_params then
    self.patterns[#self.patterns + 1] = r
    local list = self.by_method[method]
    if not list then
      list = {}
      self.by_method[method] = list
    end
    list[#list + 1] = r
  else
    local by = self.exact[norm]
    if not by then
      by = {}
      self.exact[norm] = by
    end
    by[method] = r
  end
  return r
end

--- The params of r when it matches path (normalised), else nil.
local function params_of(r, path)
  local n = r.nparams
  if n == 1 then
    local v = match(path, r.lpat)
    return v and { [r.names[1]] = v }
  end
  local caps = { match(path, r.lpat) }
  if caps[1] == nil then
    return nil
  end
  local params, names = {}, r.names
  for i = 1, n do
    params[names[i]] = caps[i]
  end
  return params
end

local function find_pattern(self, method, path)
  local list = self.by_method[method]
  for i = 1, list and #list or 0 do
    local r = list[i]
    local params = params_of(r, path)
    if params then
      return r, params
    end
  end
  return nil
end

--- The methods that some route takes on this path, in the order they were
-- added.
local function allowed(self, exact, path)
  local found = {}
  for _, r in pairs(exact or {}) do
    found[#found + 1] = r
  end
  for _, r in ipairs(self.patterns) do
    if find(path, r.lpat) then
      found[#found + 1] = r
    end
  end
  table.sort(found, function(a, b) return a.index < b.index end)
  local out, seen = {}, {}
  for _, r in ipairs(found) do
    if not seen[r.method] then
      seen[r.method] = true
      out[#out + 1] = r.method
    end
  end
  return out
end

--- path without empty segments ("/a//b/" -> "/a/b"); most paths already
-- are, and are returned as they are.
local function normalise(path)
  if not find(path, "//", 1, true) and
      (byte(path, -1) ~= 47 or #path == 1) and byte(path, 1) == 47 then
    return path
  end
  local parts = split(path)
  return "/" .. concat(parts, "/")
end

--- Finds the route of method + path.
-- Returns route, params; or nil, "not_found"; or nil, "method_not_allowed",
-- allow (a comma-separated list of methods).
function Router:match(method, path)
  local by = self.exact[path]
  if by then
    local r = by[method] or (method == "HEAD" and by.GET)
    if r then
      return r, M.NO_PARAMS
    end
  end
  local norm = normalise(path)
  if norm ~= path then
    by = self.exact[norm]
    local r = by and (by[method] or (method == "HEAD" and by.GET))
    if r then
      return r, M.NO_PARAMS
    end
  end
  local r, params = find_pattern(self, method, norm)
  if not r and method == "HEAD" then
    r, params = find_pattern(self, "GET", norm)
  end
  if r then
    return r, params
  end
  local allow = allowed(self, by, norm)
  if #allow > 0 then
    return nil, "method_not_allowed", concat(allow, ", ")
  end
  return nil, "not_found"
end

--- The routes, for listing: { {method=, pattern=, where=}, ... } in the
-- order they were added.
function Router:list()
  local all = {}
  for _, by in pairs(self.exact) do
    for _, r in pairs(by) do
      all[#all + 1] = r
    end
  end
  for _, r in ipairs(self.patterns) do
    all[#all + 1] = r
  end
  table.sort(all, function(a, b) return a.index < b.index end)
  local out = {}
  for i, r in ipairs(all) do
    out[i] = { method = r.method, pattern = r.pattern, where = r.where }
  end
  return out
end

return M
