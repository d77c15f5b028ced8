--- GET /api/labels/:label/summary: the containers carrying a label (KEY or
-- KEY=VALUE), how many are in each state, and their figures summed from the
-- live view. Append to a copy of lua/routes.lua, as examples/routes-top.lua
-- says.
--
--   curl -s localhost:8080/api/labels/com.docker.compose.project=shop/summary
--   {"count":3,"cpu_usage_percent":12.5,"label":"com.docker.compose.project=shop",
--    "memory_usage_bytes":73400320,"running":2,"states":{"exited":1,"running":2}}
local filters = require "horcrux.filters"
local live = require "horcrux.live"
local check = require("horcrux.errors").check

route("GET", "/api/labels/:label/summary", { query = {} }, function(req)
  -- the label is checked as the ?label= filter checks it (400 otherwise)
  local f = check(filters.parse({ { "label", req.params.label } }))
  local out = { label = req.params.label, states = {}, cpu_usage_percent = 0,
    memory_usage_bytes = 0 }
  local all = check(filters.list(f, true))
  for _, c in ipairs(all) do
    out.states[c.status] = (out.states[c.status] or 0) + 1
  end
  local running = check(live.stats_matching(f))
  for _, r in ipairs(running) do
    out.cpu_usage_percent = out.cpu_usage_percent + (tonumber(r.cpu_usage_percent) or 0)
    out.memory_usage_bytes = out.memory_usage_bytes + (tonumber(r.memory_usage_bytes) or 0)
  end
  out.count, out.running = #all, #running
  return 200, out
end)
