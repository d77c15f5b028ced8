-- top.lua: the three busiest containers
local engine = require "horcrux.engine"
local metrics = require "horcrux.metrics"
local ids, names = {}, {}
for i, c in ipairs(assert(engine.containers({ all = false }))) do
  ids[i], names[c.Id] = c.Id, c.Names[1]:sub(2)
end
local recs = {}
for _, r in ipairs(metrics.stats_many(ids)) do
  -- a container's first sample has no CPU % yet (null)
  if r.record and type(r.record.cpu_usage_percent) == "number" then
    recs[#recs + 1] = r.record
  end
end
table.sort(recs, function(a, b) return a.cpu_usage_percent > b.cpu_usage_percent end)
for i = 1, math.min(3, #recs) do
  print(names[recs[i].id], ("%.1f%%"):format(recs[i].cpu_usage_percent))
end
