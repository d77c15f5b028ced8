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

-- names by id, name and id prefix: a record read from the cgroup files
-- knows no name of its own (its `name` is the id), the list does
local names = {}
local list, err = metrics.list({ all = #ids > 0 })
if not list then
  io.stderr:write("horcrux stats: ", err, "\n")
  os.exit(1)
end
local given = #ids > 0
for _, c in ipairs(list) do
  if not given and c.status == "running" then
    ids[#ids + 1] = c.id
  end
  names[c.id] = c.name
  names[c.name] = c.name
end
local function name_of(ref, rec)
  if names[ref] then
    return names[ref]
  end
  for id, name in pairs(names) do
    if id:find("^%x+$") and (ref:sub(1, #id) == id
        or (#ref >= 3 and id:sub(1, #ref) == ref)) then
      return name
    end
  end
  return type(rec.name) == "string" and rec.name or ref
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
      name_of(id, rec),
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
