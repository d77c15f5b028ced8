--- source-simulated.lua: a demo metric source that makes numbers up.
--
-- NEVER A DEFAULT, and never for production: every figure below is
-- invented. It exists for demos and for trying a dashboard on a machine
-- without Docker. Every record it gives says `source = "simulated"` (and
-- `simulated = true`), so nobody mistakes its numbers for measured ones.
--
-- To use it, add it to the source order by hand, e.g. in fallback.lua:
--
--   local simulated = dofile("examples/source-simulated.lua")
--   return { sources = { docker_api, cgroup, simulated } }
--
-- placed last, it answers only when every real source failed; horcrux's own
-- order never lists it.
--
-- The interface is that of every source (the source contract in the
-- README): a name and the capabilities it has -- here list / inspect /
-- stats, each returning its answer or nil, message, kind. The record comes
-- from horcrux.record, the one constructor every source uses.
local json = require "horcrux.json"
local record = require "horcrux.record"
local clock = require "horcrux.clock"

local M = { name = "simulated" }

-- The made-up containers: full ids (64 hex digits), names, images.
local CONTAINERS = {
  { id = string.rep("5e", 32), name = "sim-web", image = "nginx:demo" },
  { id = string.rep("5f", 32), name = "sim-db", image = "postgres:demo" },
}

local function find(ref)
  ref = tostring(ref):gsub("^/", "")
  for _, c in ipairs(CONTAINERS) do
    if c.name == ref or c.id:sub(1, #ref) == ref then
      return c
    end
  end
  return nil
end

function M.list()
  local out = json.array()
  for _, c in ipairs(CONTAINERS) do
    out[#out + 1] = { id = c.id:sub(1, 12), name = c.name,
      status = "running", image = c.image }
  end
  return out
end

function M.inspect(ref)
  local c = find(ref)
  if not c then
    return nil, "simulated: no container '" .. tostring(ref) .. "'",
      "not_found"
  end
  return { id = c.id, name = c.name, status = "running", image = c.image,
    created = json.null, started = json.null }
end

-- Figures that move smoothly with time, so a demo graph has something to
-- draw. Invented, all of them.
function M.stats(ref)
  local c = find(ref)
  if not c then
    return nil, "simulated: no container '" .. tostring(ref) .. "'",
      "not_found"
  end
  local now = clock.now_ns()
  local t = now / 1e9
  local limit = 512 * 1024 * 1024
  local rec = record.new({
    id = c.id, name = c.name, source = "simulated", read_ns = now,
    cpu_percent = 20 + 15 * math.sin(t / 10),
    memory_usage = math.floor(limit * (0.3 + 0.1 * math.sin(t / 30))),
    memory_limit = limit,
    net_rx = math.floor(t * 1000) % (1 << 40),
    net_tx = math.floor(t * 400) % (1 << 40),
    pids = 3,
  })
  rec.simulated = true
  return rec
end

return M
