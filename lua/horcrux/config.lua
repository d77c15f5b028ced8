--- horcrux.config: what the operator's scripts say, as the host loaded them,
-- or the library's own defaults when nothing was loaded (stock lua5.4, a
-- program embedding the modules, `horcrux run` before any `use`).
--
--   config.use{sources =, format =, policy =, state_dir =}   the host,
--                                  after loading fallback.lua, format.lua,
--                                  policy.lua
--   config.sources()   -> the source order: an array of sources
--   config.order(given) -> given (an array or {sources = ...}), else sources()
--   config.format()    -> the output settings {pretty, sort_keys, respond}
--   config.policy()    -> the policy table (policy.lua's shape)
--   config.state_dir() -> where state is kept: serve's --state-dir, else
--                         /var/lib/horcrux
--   config.reset()     -> back to the defaults (specs)
--
-- Nothing in lua/horcrux/ requires an operator script by name: the library
-- asks here. A value given to use() is taken as it is; the host checks the
-- scripts when it loads them (horcrux.app).
local M = {}

local current = {}

local KEYS = { sources = true, format = true, policy = true, state_dir = true }

function M.use(t)
  if type(t) ~= "table" then
    error("config.use: a table {sources =, format =, policy =, state_dir =} "
      .. "expected", 2)
  end
  for k, v in pairs(t) do
    if not KEYS[k] then
      error("config.use: unknown key " .. tostring(k), 2)
    end
    current[k] = v
  end
end

function M.reset()
  current = {}
end

function M.state_dir()
  return current.state_dir or "/var/lib/horcrux"
end

--- The sources, in the order reads try them: fallback.lua's `sources`, or
-- the library's default order, the shipped one (the cgroup files, the
-- Engine API, the docker CLI).
function M.sources()
  local order = current.sources
  if type(order) == "table" then
    return order.sources or order
  end
  -- (require gives a second value, the loader's data, the first time:
  -- a call as the last item of a table would add it to the list)
  return {
    require "horcrux.sources.cgroup",
    require "horcrux.sources.docker_api",
    (require "horcrux.sources.docker_cli"),
  }
end

--- The order to use: `given` (an array of sources, or a table with
-- .sources as fallback.lua returns it) when not nil, else M.sources().
function M.order(given)
  if given == nil then
    return M.sources()
  end
  return given.sources or given
end

--- format.lua's settings, or the defaults (compact JSON, sorted keys).
function M.format()
  return current.format or require("horcrux.format").DEFAULT
end

--- policy.lua's table, or the default policy (nothing that gives a
-- container root on the host).
function M.policy()
  return current.policy or require("horcrux.manage.policy").DEFAULT
end

return M
