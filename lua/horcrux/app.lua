--- horcrux.app: loads the operator scripts into a state and returns the
-- dispatcher the server calls for every request.
--
-- The server calls `load{scripts = DIR, lib = DIR, sources = ...}` once per
-- Lua state. format.lua, fallback.lua and policy.lua come from the texts
-- the server read at start or reload (else the scripts dir, then the
-- shipped lib dir); each is checked, handed to the library
-- (horcrux.config.use) and registered so that an operator's script can
-- `require "format"`, `require "fallback"` or `require "policy"`. routes.lua
-- is run with a `route` function in an environment where assigning an
-- undeclared global is an error.
local router = require "horcrux.router"
local log = require "horcrux.log"
local config = require "horcrux.config"
local errors = require "horcrux.errors"
local input = require "horcrux.input"

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
function M.check_sources(order)
  if type(order.sources) ~= "table" then
    error("fallback.lua must return { sources = { ... } }", 0)
  end
  for i, src in ipairs(order.sources) do
    if type(src) ~= "table" or type(src.name) ~= "string" then
      local hint = type(src) == "string" and
        " (require returns two values: write local x = require \"...\" " ..
        "and list x, or wrap the call in parentheses)" or ""
      error(("fallback.lua: sources[%d] is a %s, not a source with a name%s")
        :format(i, type(src), hint), 0)
    end
  end
  return order
end

--- Loads fallback.lua only (the server's collector needs no routes) and
-- hands it to the library; returns it.
function M.load_sources(opts)
  local order = M.check_sources(load_module("fallback", opts))
  config.use({ sources = order })
  return order
end

--- Loads format.lua, fallback.lua and routes.lua; returns dispatch(req).
function M.load(opts)
  local format = require("horcrux.format").check(load_module("format", opts))
  local order = M.check_sources(load_module("fallback", opts))
  local policy = require("horcrux.manage.policy").check(
    load_module("policy", opts))
  config.use({ sources = order, format = format, policy = policy })
  -- A DOCKER_HOST or DOCKER_API_VERSION that cannot be right is refused at
  -- start (and by a reload), not at the first request.
  local _, err, kind = require("horcrux.engine").client()
  if kind == "bad_request" then
    error(err, 0)
  end
  local routes = router.new()
  -- TEMPORARY (the route-engine branch replaces the dispatcher): route
  -- options {query = {key = checker}} checked before the handler.
  local function route(method, pattern, o, handler)
    if handler == nil then
      o, handler = nil, o
    end
    if o and o.query then
      local spec, h = o.query, handler
      handler = function(req)
        req.query = errors.check(input.query(req.args, spec))
        return h(req)
      end
    end
    routes:add(method, pattern, handler)
  end
  M.run_script("routes", opts, M.strict_env({ route = route }))

  local function fail(req, err)
    log.error("id=%s %s %s: %s", req.id, req.method, req.path, tostring(err))
    return format.respond(errors.answer("internal",
      "the route failed; see the server log for this request id",
      { request_id = req.id }))
  end

  local function traceback(e)
    if errors.is(e) then
      return e
    end
    return debug.traceback(e, 2)
  end

  return function(req)
    local handler, params, allow = routes:match(req.method, req.path)
    if not handler then
      if params == "method_not_allowed" then
        local st, b = errors.answer("method_not_allowed",
          req.method .. " is not allowed on " .. req.path ..
          "; allowed: " .. allow)
        return format.respond(st, b, { Allow = allow })
      end
      return format.respond(errors.answer("not_found",
        "no route for " .. req.path))
    end
    req.params = params
    local ok, status, body, headers = xpcall(handler, traceback, req)
    if not ok then
      if errors.is(status) then
        status, body = errors.answer(status)
        headers = nil
      else
        return fail(req, status)
      end
    end
    local ok2, s, b, h = pcall(format.respond, status, body, headers)
    if not ok2 then
      return fail(req, s)
    end
    return s, b, h
  end, routes
end

return M
