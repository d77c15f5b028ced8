--- horcrux.health: the answer of GET /healthz. The server is up if this
-- runs at all; whether the engine answers is asked with a short timeout and
-- remembered for a second, so a flood of health checks is not a flood of
-- pings.
local docker = require "horcrux.docker"
local clock = require "horcrux.clock"

local M = {}

local client
local last, last_ns = nil, 0
local TTL_NS = 1000000000

local function engine()
  if client == nil then
    local c, err = docker.connect({ timeout = 2, connect_timeout = 1 })
    if not c then
      return { reachable = false, error = err }
    end
    client = c
  end
  local v, err = client:version()
  if not v then
    return { reachable = false, error = err }
  end
  return {
    reachable = true,
    version = v.Version,
    api_version = client:api_version(),
  }
end

function M.check()
  local now = clock.mono_ns()
  if last == nil or now - last_ns > TTL_NS then
    last, last_ns = engine(), now
  end
  return { status = last.reachable and "ok" or "degraded", engine = last }
end

return M
