--- horcrux.app: loads the operator scripts into a state and returns the
-- dispatcher the server calls for every request.
--
-- The server calls `load{scripts = DIR, lib = DIR, sources = ...}` once per
-- Lua state. format.lua, fallback.lua and policy.lua come from the texts
-- the server read at start or reload (else the scripts dir, then the
-- shipped lib dir), and are registered so that `require "format"`,
-- `require "fallback"` and `require "policy"` return them; routes.lua is run with a `route`
-- function in an environment where assigning an undeclared global is an
-- error.
local router = require "horcrux.router"
local log = require "horcrux.log"

local M = {}

--- An environment over _G (read-only for globals) with `extra` defined.
function M.strict_env(extra)
  local env = {}
  for k, v in pairs(extra or {}) do
    env[k] = v
  end
  return setmetatable(env, {
    __index = _G,
    __newindex = function(_, k)
      error("assignment to undeclared global '" .. tostring(k) ..
        "' (declare it local)", 2)
    end,
  })
end

local function find(name, opts)
  for _, dir in ipairs({ opts.scripts, opts.lib }) do
    local path = dir .. "/" .. name
    local f = io.open(path, "r")
    if f then
      f:close()
      return path
    end
  end
  error(name .. " not found in " .. opts.scripts ..
    (opts.lib ~= opts.scripts and (" or " .. opts.lib) or ""), 0)
end

--- Runs the script `name` in env and returns what it returns: the text
-- the server read at start or reload (opts.sources[name]) when given, else
-- DIR/name.lua from the scripts dir or the lib dir.
function M.run_script(name, opts, env)
  local src = opts.sources and opts.sources[name]
  local chunk, err
  if src then
    chunk, err = load(src.text, "@" .. src.path, "t", env)
  else
    chunk, err = loadfile(find(name .. ".lua", opts), "t", env)
  end
  if not chunk then
    error(err, 0)
  end
  return chunk()
end

local function load_module(name, opts)
  local mod = M.run_script(name, opts, M.strict_env())
  if type(mod) ~= "table" then
    error(name .. ".lua must return a table", 0)
  end
  package.loaded[name] = mod
  return mod
end

--- Checks the shape of fallback.lua's table; raises naming what is wrong.
function M.check_policy(policy)
  if type(policy.sources) ~= "table" then
    error("fallback.lua must return { sources = { ... } }", 0)
  end
  for i, src in ipairs(policy.sources) do
    if type(src) ~= "table" or type(src.name) ~= "string" then
      local hint = type(src) == "string" and
        " (require returns two values: write local x = require \"...\" " ..
        "and list x, or wrap the call in parentheses)" or ""
      error(("fallback.lua: sources[%d] is a %s, not a source with a name%s")
        :format(i, type(src), hint), 0)
    end
  end
  return policy
end

--- Loads fallback.lua only (the server's collector needs no routes).
function M.policy(opts)
  return M.check_policy(load_module("fallback", opts))
end

--- Loads format.lua, fallback.lua and routes.lua; returns dispatch(req).
function M.load(opts)
  local format = load_module("format", opts)
  M.check_policy(load_module("fallback", opts))
  require("horcrux.manage").check_policy_table(load_module("policy", opts))
  local routes = router.new()
  local function route(method, pattern, handler)
    routes:add(method, pattern, handler)
  end
  M.run_script("routes", opts, M.strict_env({ route = route }))

  local function fail(req, err)
    log.error("id=%s %s %s: %s", req.id, req.method, req.path, tostring(err))
    return format.respond(500, format.error("internal",
      "the route failed; see the server log for this request id",
      { request_id = req.id }))
  end

  return function(req)
    local handler, params, allow = routes:match(req.method, req.path)
    if not handler then
      if params == "method_not_allowed" then
        return format.respond(405, format.error("method_not_allowed",
          req.method .. " is not allowed on " .. req.path ..
          "; allowed: " .. allow), { Allow = allow })
      end
      return format.respond(404, format.error("not_found",
        "no route for " .. req.path))
    end
    req.params = params
    local ok, status, body, headers = xpcall(handler, debug.traceback, req)
    if not ok then
      return fail(req, status)
    end
    local ok2, s, b, h = pcall(format.respond, status, body, headers)
    if not ok2 then
      return fail(req, s)
    end
    return s, b, h
  end, routes
end

return M
