--- horcrux stats [ID...]: one table of figures, as `docker stats --no-stream`
-- prints it, from the sources of fallback.lua (the Engine API first).
-- With no ID, every running container.
local metrics = require "horcrux.metrics"
local units = require "horcrux.units"
local json = require "horcrux.json"

local ids = {}
for _, a in ipairs(arg) do
  if a:sub(1, 1) == "-" then
    io.stderr:write("usage: horcrux stats [ID...]\n")
    os.exit(2)
  end
  ids[#ids + 1] = a
end

-- names by id: a record read from the cgroup files knows no name of its
-- own, the list does
local names = {}
if #ids == 0 then
  local list, err = metrics.list({ all = false })
  if not list then
    io.stderr:write("horcrux stats: ", err, "\n")
    os.exit(1)
  end
  for _, c in ipairs(list) do
    if c.status == "running" then
      ids[#ids + 1] = c.id
      names[c.id] = c.name
    end
  end
end

local function num(v)
  return v ~= nil and v ~= json.null and v or nil
end

local function pct(v)
  v = num(v)
  return v and string.format("%.2f%%", v) or "--"
end

local function size(f, v)
  v = num(v)
  return v and f(v) or "--"
end

local records, failed = metrics.stats_many(ids), false
local rows = {}
for i, id in ipairs(ids) do
  local r = records[i]
  if r.record then
    local rec = r.record
    rows[#rows + 1] = {
      (rec.id or id):sub(1, 12),
      type(rec.name) == "string" and rec.name or names[id] or id,
      pct(rec.cpu_usage_percent),
      size(units.bytes, rec.memory_usage_bytes) .. " / " ..
        size(units.bytes, rec.memory_limit_bytes),
      pct(rec.memory_percent),
      size(units.human, rec.network_rx_bytes) .. " / " ..
        size(units.human, rec.network_tx_bytes),
      size(units.human, rec.block_read_bytes) .. " / " ..
        size(units.human, rec.block_write_bytes),
      tostring(num(rec.pids) or "--"),
    }
  else
    failed = true
    io.stderr:write("horcrux stats: ", id, ": ", tostring(r.error), "\n")
  end
end
units.table(io.stdout, { "CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT",
  "MEM %", "NET I/O", "BLOCK I/O", "PIDS" }, rows)
os.exit(failed and 1 or 0)
