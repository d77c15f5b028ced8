--- horcrux.manage: creating containers and driving their lifecycle under
-- the operator's policy (policy.lua), through the Engine API -- or the
-- docker CLI when the API cannot be reached and policy.lua allows it.
--
--   manage.validate(body)            -> spec | nil, msg, "bad_request", extra
--   manage.allowed(spec, policy, req) -> spec | nil, msg, "forbidden", field
--   manage.may(action, ref, policy, req) -> container | nil, msg, kind
--   manage.create(spec, policy)      -> {id, name, started, warnings}
--   manage.action(ref, action, opts, policy) -> {id, action, changed}
--   manage.remove(ref, opts, policy) -> {id, removed = true}
--   manage.ACTIONS                   the lifecycle actions and their options
-- Each returns its answer or nil, message, kind[, extra] (kinds of
-- horcrux.errors). `policy` defaults to horcrux.config's.
--
-- The parts, one concern each: horcrux.manage.validate (the body),
-- horcrux.manage.policy (the verdict), horcrux.manage.render (the Engine
-- API body and the CLI arguments, side by side).
local json = require "horcrux.json"
local null = json.null
local engine = require "horcrux.engine"
local config = require "horcrux.config"
local cli = require "horcrux.cli"
local live = require "horcrux.live"
local verdict = require "horcrux.manage.policy"
local render = require "horcrux.manage.render"

local M = {}

local validate = require "horcrux.manage.validate"
M.validate = validate.validate
M.FIELDS = validate.FIELDS
M.allowed = function(spec, policy, req)
  return verdict.allowed(spec, policy or config.policy(), req)
end
M.may = function(action, ref, policy, req)
  return verdict.may(action, ref, policy or config.policy(), req)
end

-- ---- the docker CLI, when the policy allows it ----------------------------

local function via_cli(policy, kind)
  return kind == "unavailable" and policy.cli_fallback == true
end

local function run_cli(policy, args)
  local o = policy.cli or {}
  local out, err, kind = cli.run(args, { docker = o.docker,
    timeout = o.timeout or 30, env = o.env })
  if not out then
    return nil, err, kind
  end
  return cli.trim(out)
end

local function cli_create(spec, policy)
  local args, err, kind, field = render.cli_args(spec, policy)
  if not args then
    return nil, err, kind, field
  end
  local id
  id, err, kind = run_cli(policy, args)
  if not id then
    return nil, err, kind
  end
  -- the id is the last line docker create prints
  local last = 1
  for i = #id, 1, -1 do
    if id:byte(i) == 10 then
      last = i + 1
      break
    end
  end
  id = id:sub(last)
  local out = { id = id, name = spec.name or null, started = false,
    warnings = json.array(), via = "docker-cli" }
  if spec.start then
    local ok
    ok, err, kind = run_cli(policy, { "start", "--", id })
    if not ok then
      return nil, err, kind, { id = id, created = true }
    end
    out.started = true
  end
  return out
end

-- `docker COMMAND [FLAGS] -- REF`: flags are {name, value | true} pairs
-- given when their value is.
local function cli_on(policy, command, ref, flags)
  local args = { command }
  for _, f in ipairs(flags) do
    if f[2] then
      args[#args + 1] = f[1]
      if f[2] ~= true then
        args[#args + 1] = tostring(f[2])
      end
    end
  end
  args[#args + 1] = "--"
  args[#args + 1] = ref
  return run_cli(policy, args)
end

local function cli_action(ref, action, opts, policy)
  local timed = action == "stop" or action == "restart"
  local ok, err, kind = cli_on(policy, action, ref, {
    { "--time", timed and opts.timeout },
    { "--signal", action == "kill" and opts.signal },
  })
  if not ok then
    return nil, err, kind
  end
  -- the CLI does not say whether anything changed
  return { id = ref, action = action, changed = null, via = "docker-cli" }
end

local function cli_remove(ref, opts, policy)
  local ok, err, kind = cli_on(policy, "rm", ref, {
    { "--force", opts.force }, { "--volumes", opts.volumes },
  })
  if not ok then
    return nil, err, kind
  end
  return { id = ref, removed = true, via = "docker-cli" }
end

-- ---- lifecycle -------------------------------------------------------------

-- The name Docker gave a container created without one (its create answer
-- has only the id): one inspect, nil when that fails -- the container is
-- made all the same.
local function given_name(id)
  local info = engine.inspect(id)
  local name = type(info) == "table" and info.Name
  return type(name) == "string" and name:gsub("^/", "") or nil
end

--- Creates the container of a validated (and allowed) spec; starts it when
-- spec.start. A start that fails leaves the created container and says
-- so: the 4th value is {id =, created = true}.
function M.create(spec, policy)
  policy = policy or config.policy()
  local res, err, kind = engine.create(render.engine_body(spec, policy),
    spec.name)
  if not res then
    if via_cli(policy, kind) then
      return cli_create(spec, policy)
    end
    return nil, err, kind
  end
  local warnings = json.array()
  for _, w in ipairs(type(res.Warnings) == "table" and res.Warnings or {}) do
    warnings[#warnings + 1] = w
  end
  if not spec.name then -- the spec as Docker named it; the caller's stays
    spec = setmetatable({ name = given_name(res.Id) }, { __index = spec })
  end
  local out = { id = res.Id, name = spec.name or null, started = false,
    warnings = warnings }
  if spec.start then
    local ok
    ok, err, kind = engine.action(res.Id, "start")
    if not ok then
      live.note(res.Id, "created", spec, false)
      return nil, err, kind, { id = res.Id, created = true }
    end
    out.started = true
  end
  live.note(res.Id, "created", spec, out.started)
  return out
end

--- The lifecycle actions and the options each takes.
M.ACTIONS = {
  start = {}, stop = { timeout = true }, restart = { timeout = true },
  kill = { signal = true }, pause = {}, unpause = {},
}

--- POST /containers/{ref}/{action}: {id = ref, action, changed}. opts:
-- timeout (stop, restart: seconds), signal (kill).
function M.action(ref, action, opts, policy)
  policy = policy or config.policy()
  opts = opts or {}
  if not M.ACTIONS[action] then
    error("manage.action: unknown action " .. tostring(action), 2)
  end
  local query
  if opts.timeout and M.ACTIONS[action].timeout then
    -- the daemon waits that long before it kills: it must end before the
    -- request's deadline, or the client gets a 504 while it goes on
    local left = require("horcrux.clock").time_left()
    if left and opts.timeout >= left - 1 then
      return nil, ("timeout=%d: at most %d s here (the request's deadline, "
        .. "--deadline, is %d s away)"):format(opts.timeout,
          math.max(0, math.floor(left) - 2), math.floor(left)),
        "bad_request", { field = "timeout" }
    end
    query = { t = opts.timeout }
  elseif opts.signal and action == "kill" then
    query = { signal = opts.signal }
  end
  local res, err, kind = engine.action(ref, action, query)
  if not res then
    if via_cli(policy, kind) then
      return cli_action(ref, action, opts, policy)
    end
    return nil, err, kind
  end
  live.note(ref, action)
  return { id = ref, action = action, changed = res.changed }
end

--- DELETE /containers/{ref}: opts.force (a running one too), opts.volumes
-- (its anonymous volumes too). A running container without force is a
-- conflict (409).
function M.remove(ref, opts, policy)
  policy = policy or config.policy()
  opts = opts or {}
  local query = {}
  if opts.force then query.force = true end
  if opts.volumes then query.v = true end
  local ok, err, kind = engine.remove(ref, query)
  if not ok then
    if via_cli(policy, kind) then
      return cli_remove(ref, opts, policy)
    end
    return nil, err, kind
  end
  live.note(ref, "removed")
  return { id = ref, removed = true }
end

return M
