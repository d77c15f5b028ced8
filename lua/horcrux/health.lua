--- horcrux.health: the answer of GET /healthz. The server is up if this
-- runs at all; whether the engine answers is asked with a versioned call
-- (so a DOCKER_API_VERSION the daemon does not speak shows here, with the
-- daemon's reason) and remembered for a second, so a flood of health
-- checks is not a flood of calls.
local engine = require "horcrux.engine"
local clock = require "horcrux.clock"

local M = {}

local last, last_ns = nil, 0
local TTL_NS = 1000000000

function M.check()
  local now = clock.mono_ns()
  if last == nil or now - last_ns > TTL_NS then
    last, last_ns = engine.health(), now
  end
  return { status = last.reachable and "ok" or "degraded", engine = last }
end

return M
