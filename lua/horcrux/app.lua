--- horcrux.app: loads the operator scripts into a state and returns the
-- dispatcher the server calls for every request.
--
-- The server calls `load{scripts = DIR, lib = DIR, sources = ...}` once per
-- Lua state. format.lua, fallback.lua and policy.lua come from the texts
-- the server read at start or reload (else the scripts dir, then the
-- shipped lib dir); each is checked, handed to the library
-- (horcrux.config.use) and registered so that an operator's script can
-- `require "format"`, `require "fallback"` or `require "policy"`. routes.lua
-- is run in an environment where assigning an undeclared global is an
-- error, with one function defined:
--
--   route(method, pattern, handler)
--   route(method, pattern, opts, handler)   opts = {query = {key = checker}}
--
-- (patterns: horcrux/router.lua). A handler is a function of req returning
-- status, body[, headers]; format.respond encodes them -- or a stream
-- object alone (horcrux.hub's hub.stream{}), which the host answers as a
-- live stream. opts.query names
-- the keys the route takes, each with a checker function(text) -> value |
-- nil, why (input.boolean, input.integer(min, max), input.one_of{...},
-- input.string(max)); the dispatcher refuses an unknown or repeated key, or
-- a value its checker refuses, with a bad_request failure whose field is
-- the key, before the handler runs, and sets req.query to the checked
-- values. Without opts.query, req.query is the raw query (the first value
-- of each key). A handler may raise a failure (horcrux.errors): it is
-- answered with errors.answer(failure). Any other error is a 500 carrying
-- the request id, with the traceback in the log.
local router = require "horcrux.router"
local log = require "horcrux.log"
local config = require "horcrux.config"
local errors = require "horcrux.errors"
local input = require "horcrux.input"
local prometheus = require "horcrux.prometheus"
local mono_ns = require("horcrux.clock").mono_ns

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
-- check(value), a check's refusal (a message raised at level 0:
-- "policy.lua: unknown setting ...") given as it is, without the traceback
-- of the library that found it: an error object's own words are all hx_traceback
-- shows. An error in the operator's script itself keeps its traceback:
-- the script ran before this.
local REFUSAL = { __tostring = function(e) return e.message end }
local function checked(check, value)
  local ok, r = pcall(check, value)
  if ok then
    return r
  end
  if type(r) == "string" then
    error(setmetatable({ message = r }, REFUSAL), 0)
  end
  error(r, 0)
end

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
  local order = checked(M.check_sources, load_module("fallback", opts))
  config.use({ sources = order })
  return order
end

--- The hooks thread's loader: hooks.lua (as load_hooks) and fallback.lua's
-- sources handed to the library (after a restart the thread asks the
-- engine's events through them: horcrux.hooks_run).
function M.load_hooks_thread(opts)
  M.load_sources(opts)
  return M.load_hooks(opts)
end

--- Loads hooks.lua only (the hooks thread needs no routes) and checks it
-- (horcrux.hooks_check); returns {hooks =, alerts =}. The routes' states
-- check it too (load), so a bad hooks.lua fails a start or a reload.
function M.load_hooks(opts)
  return checked(require("horcrux.hooks_check").check,
    M.run_script("hooks", opts, M.strict_env()))
end

--- Checks opts of route(): nil or {query = {key = checker}}.
local function check_opts(opts)
  if opts == nil then
    return
  end
  if type(opts) ~= "table" then
    error("route options must be a table, got " .. type(opts), 0)
  end
  for k in pairs(opts) do
    if k ~= "query" then
      error(("unknown route option %q (known: query)"):format(tostring(k)), 0)
    end
  end
  if opts.query == nil then
    return
  end
  if type(opts.query) ~= "table" then
    error("route option query must be a table {key = checker}, got " ..
      type(opts.query), 0)
  end
  for k, check in pairs(opts.query) do
    if type(k) ~= "string" then
      error("route option query: keys must be strings, got " .. type(k), 0)
    end
    if type(check) ~= "function" then
      error(("route option query.%s must be a checker function(text) -> "
        .. "value | nil, why (input.boolean, input.integer(min, max), ...), "
        .. "got %s"):format(k, type(check)), 0)
    end
  end
end

--- The `route` function of routes.lua: route(method, pattern, [opts,]
-- handler), adding to `routes`. Errors point at the caller's line.
local function definer(routes)
  return function(method, pattern, opts, handler)
    if handler == nil and type(opts) == "function" then
      opts, handler = nil, opts
    end
    local info = debug.getinfo(2, "Sl")
    local where = info and (info.short_src .. ":" .. info.currentline)
    local ok, err = pcall(check_opts, opts)
    local r
    if ok then
      ok, r = pcall(routes.add, routes, method, pattern, handler, opts, where)
      err = r
    end
    if not ok then
      error(err, 2)
    end
    r.query = opts and opts.query
  end
end

--- req.query from req.args and the route's checkers (input.query): every
-- key known and given once, each value as its checker returns it. Raises a
-- bad_request failure naming the key.
local function check_query(req, spec)
  local q, msg, kind, key = input.query(req.args, spec)
  if not q then
    errors.raise(kind, msg, key)
  end
  req.query = q
end

--- The answers the dispatcher gives when no route answers, with respond
-- (format.respond): unrouted(req, why, allow) -- 404, or 405 with Allow;
-- failed(req, err) -- a failure a route raised (horcrux.errors) as
-- errors.answer says, anything else a 500 with the request id, logged.
-- Either gives a 500 when format.respond refuses.
-- An error value as the log says it: a table raised with error({...})
-- (no __tostring) by its JSON, keys sorted, not "table: 0x...".
local function described(err)
  if type(err) == "table" and not (getmetatable(err) or {}).__tostring then
    local ok, text = pcall(require("horcrux.json").encode, err,
      { sort_keys = true })
    if ok then
      return "a table raised as an error: " .. text
    end
  end
  return tostring(err)
end

-- {["Retry-After"] = seconds} while the state's daemon's breaker is open
-- (its next probe, at least 1 s), else nil.
local function retry_after()
  local b = require("horcrux.engine").breaker()
  local secs = b and b.state ~= "closed" and b.next_probe_in
  if secs then
    return { ["Retry-After"] = tostring(math.max(1, math.ceil(secs))) }
  end
end

local function answerers(respond)
  local function fail(req, err)
    log.error("%s %s: %s", req.method, req.path, described(err)) -- id= too
    local status, body = errors.answer("internal",
      "the route failed; see the server log for this request id",
      { request_id = req.id })
    return respond(status, body)
  end

  local function answer(req, status, body, headers)
    local ok, s, b, h = pcall(respond, status, body, headers)
    if not ok then
      return fail(req, s)
    end
    return s, b, h
  end

  local function unrouted(req, why, allow)
    if why == "method_not_allowed" then
      local status, body = errors.answer("method_not_allowed", req.method ..
        " is not allowed on " .. req.path .. "; allowed: " .. allow)
      return answer(req, status, body, { Allow = allow })
    end
    return answer(req, errors.answer("not_found", "no route for " .. req.path))
  end

  -- A failure of one of horcrux's kinds is the route's answer. One of kind
  -- internal, or of a kind no table has (a typo, check(nil, msg) with no
  -- kind, io.open's errno), is a bug: logged, a 500 with the request id,
  -- and its words (a host path, say) stay in the log. A 503 without
  -- headers of its own, while the daemon's breaker is open, says when it
  -- will be asked again (Retry-After: curl --retry and most clients wait
  -- that long).
  local kinds = errors.KINDS
  local function failed(req, err)
    if errors.is(err) and err.kind ~= "internal" and kinds[err.kind] then
      local status, body, headers = errors.answer(err)
      if status == 503 and headers == nil then
        headers = retry_after()
      end
      return answer(req, status, body, headers)
    end
    return fail(req, err)
  end

  return unrouted, failed
end

--- The dispatcher of a loaded set of routes: dispatch(req [, nargs [, t0]])
-- -> status, body (a string), headers; nargs: how many query arguments the
-- request has, t0: when it started (clock.mono_ns), when the caller knows
-- (the host does). A failure a route raises (horcrux.errors) is answered
-- as errors.answer says; any other error, or an answer format.respond
-- refuses, is a 500 with the request id, the traceback in the log.
local function dispatcher(routes, format)
  local respond = format.respond
  local traceback = debug.traceback
  local is_stream = require("horcrux.hub").is_stream
  local unrouted, failed = answerers(respond)

  --- What runs protected for each request: the query check (nargs is the
  -- number of query arguments when the host knows it: with none there is
  -- nothing to check, and the host's req.query is already the empty table
  -- the check would give, made only if the route reads it), the handler,
  -- the encoding of its answer.
  local function run(r, req, nargs)
    if r.query and nargs ~= 0 then
      check_query(req, r.query)
    end
    local status, body, headers = r.handler(req)
    if is_stream(status) then
      return status -- the host answers it (hub.stream{}: a live stream)
    end
    return respond(status, body, headers)
  end

  -- Every request counted by route pattern and status, and timed
  -- (horcrux.prometheus): the pattern, not the path, so the series stay few.
  -- A route without parameters is found by two lookups here (what
  -- routes:match does first), without the method call.
  local exact, no_params = routes.exact, router.NO_PARAMS
  local request_metrics = prometheus.request -- never raises
  local bind = log.bind -- what a route logs names its request
  return function(req, nargs, t0)
    t0 = t0 or mono_ns()
    local method, path = req.method, req.path
    local by = exact[path]
    local r, params, allow = by and by[method], no_params
    if not r then
      r, params, allow = routes:match(method, path)
    end
    local ok, status, body, headers
    bind(req)
    if r then
      req.params = params
      ok, status, body, headers = xpcall(run, traceback, r, req, nargs)
      if not ok then
        status, body, headers = failed(req, status)
      end
    else
      status, body, headers = unrouted(req, params, allow)
    end
    request_metrics(r and r.pattern, method, status, (mono_ns() - t0) / 1e9)
    return status, body, headers
  end
end

--- Loads format.lua, fallback.lua, policy.lua, hooks.lua (checked only: the
-- hooks thread runs it) and routes.lua; returns
-- dispatch(req [, nargs [, t0]]) and the router.
function M.load(opts)
  local format = checked(require("horcrux.format").check,
    load_module("format", opts))
  local order = checked(M.check_sources, load_module("fallback", opts))
  local policy = checked(require("horcrux.manage.policy").check,
    load_module("policy", opts))
  config.use({ sources = order, format = format, policy = policy,
    state_dir = opts.state_dir })
  M.load_hooks(opts)
  -- A DOCKER_HOST or DOCKER_API_VERSION that cannot be right is refused at
  -- start (and by a reload), not at the first request.
  local _, err, kind = require("horcrux.engine").client()
  if kind == "bad_request" then
    error(err, 0)
  end
  local routes = router.new()
  M.run_script("routes", opts, M.strict_env({ route = definer(routes) }))
  return dispatcher(routes, format), routes
end

return M
