--- horcrux.health: the answer of GET /healthz. The server is up if this
-- runs at all; whether the engine answers is asked with a versioned call
-- (so a DOCKER_API_VERSION the daemon does not speak shows here, with the
-- daemon's reason) and remembered for a second, so a flood of health
-- checks is not a flood of calls. The daemon's circuit breaker is read
-- each time: while it is open (or probing) the answer is "degraded", with
-- the breaker's own words as the reason, and no call is made.
--
--   {status = "ok" | "degraded", reason = why (degraded only),
--    engine = {reachable, version, api_version | error, kind},
--    breaker = {state, failures, last_error, ..., next_probe}}
local engine = require "horcrux.engine"
local clock = require "horcrux.clock"

local M = {}

local last, last_ns, last_state = nil, 0, nil
local TTL_NS = 1000000000

local function state_of(breaker)
  return breaker and breaker.state or "closed"
end

function M.check()
  local now = clock.mono_ns()
  local state = state_of(engine.breaker())
  -- A breaker that changed state makes the remembered answer stale.
  if last == nil or now - last_ns > TTL_NS or state ~= last_state then
    last, last_ns = engine.health(), now
  end
  local breaker = engine.breaker()
  last_state = state_of(breaker)
  local open = last_state ~= "closed"
  local out = { status = (last.reachable and not open) and "ok" or "degraded",
    engine = last, breaker = breaker }
  if out.status == "degraded" then
    out.reason = open and breaker.message or last.error
  end
  return out
end

return M
