--- Fuzz target "router": horcrux.router's match on any method and path,
-- with the shipped routes' patterns, and horcrux.docker's id grammar
-- (valid_name, valid_id, ref) on every parameter it captures and on the
-- raw input.
--
-- Input: a first byte choosing the method, then the path (fuzzlib.expand:
-- long paths from short inputs).
--
-- Where the client has c:call, its placeholders' grammar too (see
-- call_grammar). Invariants: match never raises; it answers handler, params or nil,
-- "not_found" or nil, "method_not_allowed", "A, B"; a match is the route
-- whose pattern, filled with params, gives back the path's segments (":x"
-- one non-empty segment without "/", "*x" one or more); the grammar agrees
-- with the one written here from architecture.md: a name is
-- [a-zA-Z0-9][a-zA-Z0-9_.-]* (one leading "/" dropped, at most 255 bytes),
-- an id is 1 to 64 lower-case hex digits and is a name; ref(s) is s without
-- its "/" when s is a name, else nil, message, "bad_request".
local router = require "horcrux.router"
local docker = require "horcrux.docker"
local fz = require "fuzzlib"

local check, quote = fz.check, fz.quote

local METHODS = { "GET", "POST", "DELETE", "HEAD", "PUT", "PATCH", "OPTIONS",
  "get", "" }

-- The shipped routes' shapes (lua/routes.lua), and the greedy "*name" of
-- architecture.md where the router has it.
local PATTERNS = {
  { "GET", "/healthz" },
  { "GET", "/api/containers" },
  { "POST", "/api/containers" },
  { "GET", "/api/containers/:id" },
  { "DELETE", "/api/containers/:id" },
  { "POST", "/api/containers/:id/start" },
  { "POST", "/api/containers/:id/stop" },
  { "POST", "/api/containers/:id/restart" },
  { "POST", "/api/containers/:id/kill" },
  { "POST", "/api/containers/:id/pause" },
  { "POST", "/api/containers/:id/unpause" },
  { "GET", "/api/containers/:id/stats" },
  { "GET", "/api/containers/:id/logs" },
  { "GET", "/api/stats" },
  { "GET", "/api/stacks" },
  { "GET", "/api/stacks/:name" },
  { "POST", "/api/stacks/:name/start" },
  { "POST", "/api/stacks/:name/stop" },
  { "GET", "/api/images/*ref/json" },
  { "POST", "/api/images/*ref/push" },
  { "GET", "/api/files/*path" },
}

local ID_PARAMS = { id = true, ref = true, name = true, container = true }

local function segments(path)
  local segs = {}
  for seg in path:gmatch("[^/]+") do
    segs[#segs + 1] = seg
  end
  return segs
end

-- Whether this router has "*name" (one that has not takes "*ref" as a
-- literal segment, or refuses it).
local function greedy()
  local g = router.new()
  local ok = pcall(g.add, g, "GET", "/x/*rest/y", function() end)
  return ok and g:match("GET", "/x/a/b/y") ~= nil
end

local function build()
  local r = router.new()
  local routes = {}
  local star = greedy()
  for _, p in ipairs(PATTERNS) do
    local handler = function() end
    if (star or not p[2]:find("*", 1, true))
        and pcall(r.add, r, p[1], p[2], handler) then
      routes[handler] = { method = p[1], pattern = p[2], segs = segments(p[2]) }
    end
  end
  return r, routes
end

local r, routes = build()

-- The path's segments, rebuilt from the route's pattern and params.
local function fill(route, params)
  local out = {}
  for _, seg in ipairs(route.segs) do
    local kind, name = seg:sub(1, 1), seg:sub(2)
    if kind == ":" then
      local v = params[name]
      check(type(v) == "string" and #v > 0 and not v:find("/", 1, true),
        "%s: :%s captured %s", route.pattern, name, quote(v))
      out[#out + 1] = v
    elseif kind == "*" then
      local v = params[name]
      check(type(v) == "string" and #v > 0,
        "%s: *%s captured %s", route.pattern, name, quote(v))
      for _, s in ipairs(segments(v)) do
        out[#out + 1] = s
      end
    else
      out[#out + 1] = seg
    end
  end
  return out
end

local function is_name(s)
  if s:sub(1, 1) == "/" then
    s = s:sub(2)
  end
  return #s >= 1 and #s <= 255 and s:find("^[a-zA-Z0-9][a-zA-Z0-9_.-]*$") ~= nil
end

local function is_id(s)
  return #s >= 1 and #s <= 64 and s:find("^[0-9a-f]+$") ~= nil
end

local function grammar(s)
  local name, id = docker.valid_name(s), docker.valid_id(s)
  check(name == is_name(s), "valid_name(%s) is %s", quote(s), tostring(name))
  check(id == is_id(s), "valid_id(%s) is %s", quote(s), tostring(id))
  check(not id or name, "id %s is not a name", quote(s))
  local ref, msg, kind = docker.ref(s)
  if name then
    check(ref == (s:sub(1, 1) == "/" and s:sub(2) or s), "ref(%s) is %s",
      quote(s), quote(ref))
  else
    check(ref == nil and type(msg) == "string" and kind == "bad_request",
      "ref(%s) accepted a bad name (%s)", quote(s), quote(ref))
  end
end

-- c:call's placeholders (architecture.md), where the client has call():
-- a value outside its grammar is refused as bad_request before anything
-- is sent; one inside is sent (here to a socket that does not exist, so it
-- fails as unavailable). Names both ways; an exec id and an image only one
-- way (whatever is sent must be of the grammar; "hex" may or may not take
-- upper case).
local client = docker.connect({ host = "unix:///nonexistent/hx-fuzz.sock",
  timeout = 1, connect_timeout = 1 })
local call = client and client.call

local function is_object_name(s)
  return #s >= 1 and #s <= 255 and s:find("^[a-zA-Z0-9][a-zA-Z0-9_.-]*$") ~= nil
end

local function is_image(s)
  if #s < 1 or #s > 512 or s:find("[^a-zA-Z0-9._/:@-]") then
    return false
  end
  for seg in (s .. "/"):gmatch("([^/]*)/") do
    if seg == "" or seg == "." or seg == ".." then
      return false
    end
  end
  return true
end

local CALLS = {
  { "/containers/{id}/json", "id", is_name },
  { "/networks/{network}", "network", is_object_name },
  { "/exec/{exec}/json", "exec", function(s)
    return #s >= 1 and #s <= 64 and not s:find("[^0-9a-fA-F]")
  end, true },
  { "/images/{image}/json", "image", is_image, true },
}

local function call_grammar(s)
  for _, c in ipairs(CALLS) do
    local template, name, valid, one_way = c[1], c[2], c[3], c[4]
    local v, msg, kind = call(client, "GET", template, { [name] = s })
    check(v == nil and type(msg) == "string", "%s with %s=%s answered",
      template, name, quote(s))
    if kind == "bad_request" then
      check(one_way or not valid(s), "%s refused %s=%s (%s)", template, name,
        quote(s), quote(msg))
    else
      check(valid(s), "%s sent %s=%s (it failed as %s)", template, name,
        quote(s), tostring(kind))
    end
  end
end

return function(data)
  local method = METHODS[(data:byte(1) or 0) % #METHODS + 1]
  local path = fz.expand(data:sub(2))
  grammar(path)
  if call and #path <= 600 then
    call_grammar(path)
  end
  -- match gives the route (its handler in .handler), or nil and why
  local m, params, allow = r:match(method, path)
  local handler = type(m) == "table" and m.handler or m
  if handler == nil then
    check(params == "not_found" or (params == "method_not_allowed"
      and type(allow) == "string" and #allow > 0),
      "%s %s: no match answered %s, %s", method, quote(path), quote(params),
      quote(allow))
    return
  end
  local route = routes[handler]
  check(route, "%s %s: a handler that was never added", method, quote(path))
  check(type(params) == "table", "%s %s: params are a %s", method,
    quote(path), type(params))
  check(route.method == method or (method == "HEAD" and route.method == "GET"),
    "%s %s matched a %s route", method, quote(path), route.method)
  local want, got = segments(path), fill(route, params)
  check(#want == #got and table.concat(want, "/") == table.concat(got, "/"),
    "%s %s matched %s, which gives back %s", method, quote(path),
    route.pattern, quote("/" .. table.concat(got, "/")))
  for k, v in pairs(params) do
    if ID_PARAMS[k] then
      grammar(v)
    end
  end
end
