-- horcrux.stats: the stats record (horcrux.record) from the Engine API's
-- stats reply, and the CPU sample that horcrux.cpu keeps.
--
--   stats.sample_from_api(raw [, "precpu"]) -> sample | nil, message, kind
--   stats.fields(raw)        -> the reply's figures as horcrux.record's fields
--   stats.record_from_api(raw, cpu_percent [, opts]) -> record
--   stats.record(id, raw [, opts]) -> record, reason
--   stats.running(raw)       -> boolean
--   stats.needs_second_sample(reason) -> boolean
--
-- `raw` is a decoded reply of GET /containers/{id}/stats (horcrux.json
-- shapes: a JSON null is json.null, not nil, so every field is type-checked
-- before use). A container that is not running has a reply stamped with
-- Go's zero time and an empty memory_stats: its record has null figures
-- (horcrux.record's running = false). Network and block I/O are summed over
-- interfaces (not lo) and devices; v1 says Read/Write, v2 read/write. The
-- reply also gives the CPU split (usage_in_usermode, usage_in_kernelmode),
-- percpu_usage (cgroup v1), throttling_data, RSS and cache (memory.stat's
-- total_rss and total_cache on v1, anon and file on v2), pids_stats.limit,
-- the counters of each interface and each device; not the CPU quota,
-- cpuset, OOM kills, processes nor pressure (null in its records).
local cpu = require "horcrux.cpu"
local null = require("horcrux.json").null
local record = require "horcrux.record"
local time = require "horcrux.time"
local tointeger = math.tointeger

local stats = {}

local function tab(v)
  return type(v) == "table" and v or nil
end

local function int(v)
  return type(v) == "number" and tointeger(v) or nil
end

--- Whether the reply is of a running container: the daemon stamps one that
-- is not (created, exited) with Go's zero time.
function stats.running(raw)
  if type(raw) ~= "table" then
    error("running: table expected, got " .. type(raw), 2)
  end
  local t, why = nil, "syntax"
  if type(raw.read) == "string" then
    t, why = time.parse(raw.read)
  end
  return t ~= nil or why ~= "zero"
end

-- cpu_stats.online_cpus, or the length of percpu_usage (older daemons and
-- cgroup v1 without the field), or nil.
local function online_cpus(cs)
  local n = int(cs.online_cpus)
  if n and n > 0 then
    return n
  end
  local per = tab(tab(cs.cpu_usage) and cs.cpu_usage.percpu_usage)
  if per and #per > 0 then
    return #per
  end
  return nil
end

--- The sample horcrux.cpu takes: {cpu_ns, system_ns, online_cpus, time_ns},
-- time_ns from the reply's `read`. which = "precpu" takes the previous
-- sample that a stream=0 reply without one-shot carries (precpu_stats,
-- stamped `preread`). kind is "not_running" for a sample stamped with the
-- zero time, "protocol" for a reply without usable counters.
function stats.sample_from_api(raw, which)
  if type(raw) ~= "table" then
    error("sample_from_api: table expected, got " .. type(raw), 2)
  end
  local tkey, ckey = "read", "cpu_stats"
  if which == "precpu" then
    tkey, ckey = "preread", "precpu_stats"
  elseif which ~= nil then
    error("sample_from_api: which must be nil or 'precpu'", 2)
  end
  local ts = raw[tkey]
  if type(ts) ~= "string" then
    return nil, "stats: reply has no " .. tkey .. " time", "protocol"
  end
  local t, why = time.parse(ts)
  if why == "zero" then
    return nil, "stats: no " .. tkey .. " sample (not running)", "not_running"
  elseif not t then
    return nil, ("stats: bad %s time '%s' (%s)"):format(tkey, ts:sub(1, 64),
      why), "protocol"
  end
  local cs = tab(raw[ckey])
  local usage = cs and tab(cs.cpu_usage)
  local total = usage and int(usage.total_usage)
  if not total or total < 0 then
    return nil, "stats: reply has no " .. ckey .. ".cpu_usage.total_usage",
      "protocol"
  end
  local system = int(cs.system_cpu_usage)
  return {
    cpu_ns = total,
    system_ns = (system and system >= 0) and system or nil,
    online_cpus = online_cpus(cs),
    time_ns = t,
  }
end

-- A sum of counters; false (refused) when one is not a counter or the sum
-- leaves 64 bits.
local function sum(total, v)
  if total == false then
    return false
  end
  local n, ok = record.counter(v)
  if not ok then
    return false
  end
  if n == nil then
    return total
  end
  return record.add(total, n) or false
end

-- rx and tx summed over the interfaces except lo; nil without any.
local function network(nets)
  local rx, tx
  for name, n in pairs(tab(nets) or {}) do
    if name ~= "lo" and tab(n) then
      rx, tx = sum(rx or 0, n.rx_bytes), sum(tx or 0, n.tx_bytes)
    end
  end
  return rx, tx
end

-- Bytes read and written summed over devices; ops compared without case.
local function block_io(blkio)
  local rd, wr
  local list = tab(blkio) and tab(blkio.io_service_bytes_recursive)
  for _, e in ipairs(list or {}) do
    local op = tab(e) and type(e.op) == "string" and e.op:lower()
    if op == "read" then
      rd = sum(rd or 0, e.value)
    elseif op == "write" then
      wr = sum(wr or 0, e.value)
    end
  end
  return rd, wr
end

-- Bytes read and written per device: {["8:0"] = {read_bytes, write_bytes}};
-- nil without a list.
local function block_devices(blkio)
  local list = tab(blkio) and tab(blkio.io_service_bytes_recursive)
  if not list then
    return nil
  end
  local out = {}
  for _, e in ipairs(list) do
    local op = tab(e) and type(e.op) == "string" and e.op:lower()
    local key = (op == "read" or op == "write") and int(e.major)
      and int(e.minor) and ("%d:%d"):format(e.major, e.minor)
    if key then
      local d = out[key] or { read_bytes = 0, write_bytes = 0 }
      local k = op == "read" and "read_bytes" or "write_bytes"
      d[k] = d[k] ~= false and sum(d[k], e.value) or false
      out[key] = d
    end
  end
  for _, d in pairs(out) do -- a refused sum: something record.new refuses
    d.read_bytes = d.read_bytes == false and -1 or d.read_bytes
    d.write_bytes = d.write_bytes == false and -1 or d.write_bytes
  end
  return out
end

-- RSS and cache as cAdvisor reads them: v1 total_rss and total_cache, v2
-- anon and file.
local function rss_cache(ms)
  local st = tab(ms.stats) or {}
  if st.total_rss ~= nil or st.total_cache ~= nil then
    return st.total_rss, st.total_cache
  end
  return st.anon, st.file
end

-- pids_stats.limit: -1 when none (absent on engines that send no limit, 0
-- or past 2^62 for "max").
local function pids_limit(ps)
  local v = ps and ps.limit
  if type(v) ~= "number" then
    return nil
  elseif v == 0 or v >= 2 ^ 62 then
    return -1
  end
  return v
end

-- docker's calculateMemUsageUnixNoCache: total_inactive_file (v1) when it
-- is below usage, else inactive_file (v2; v1's own cgroup).
local function inactive(ms, usage)
  local st = tab(ms.stats) or {}
  local v1, v2 = st.total_inactive_file, st.inactive_file
  if type(v1) == "number" and type(usage) == "number" and v1 < usage then
    return v1
  end
  return v2
end

--- The reply's figures, as horcrux.record.new's fields (without cpu_percent,
-- id and name).
function stats.fields(raw)
  local running = stats.running(raw)
  local cs = tab(raw.cpu_stats) or {}
  local usage = tab(cs.cpu_usage) or {}
  local ms = tab(raw.memory_stats) or {}
  local rx, tx = network(raw.networks)
  local rd, wr = block_io(raw.blkio_stats)
  local rss, cache = rss_cache(ms)
  local thr = tab(cs.throttling_data) or {}
  local per = tab(usage.percpu_usage)
  return {
    cpu_user_ns = usage.usage_in_usermode,
    cpu_system_ns = usage.usage_in_kernelmode,
    cpu_percpu_ns = per and #per > 0 and per or nil,
    cpu_periods = thr.periods, cpu_throttled_periods = thr.throttled_periods,
    cpu_throttled_ns = thr.throttled_time,
    memory_rss = ms.usage ~= nil and rss or nil,
    memory_cache = ms.usage ~= nil and cache or nil,
    pids_limit = pids_limit(tab(raw.pids_stats)),
    networks = tab(raw.networks),
    block_devices = block_devices(raw.blkio_stats),
    running = running,
    read = type(raw.read) == "string" and raw.read or nil,
    cpu_ns = usage.total_usage,
    online_cpus = online_cpus(cs),
    memory_usage = ms.usage,
    inactive_file = ms.usage ~= nil and inactive(ms, ms.usage) or nil,
    memory_limit = ms.usage ~= nil and ms.limit or nil,
    net_rx = rx, net_tx = tx, blk_read = rd, blk_write = wr,
    pids = tab(raw.pids_stats) and raw.pids_stats.current or nil,
    source = "docker-api",
  }
end

--- The record of one reply with a CPU % already known (a number, or
-- nil/json.null for none). opts.host_memory caps the memory limit.
function stats.record_from_api(raw, cpu_percent, opts)
  if type(raw) ~= "table" then
    error("record_from_api: table expected, got " .. type(raw), 2)
  end
  if cpu_percent ~= nil and cpu_percent ~= null
      and type(cpu_percent) ~= "number" then
    error("record_from_api: cpu_percent must be a number or nil", 2)
  end
  local host_memory = opts and opts.host_memory
  if host_memory ~= nil and math.type(host_memory) ~= "integer" then
    error("record_from_api: opts.host_memory must be an integer", 2)
  end
  local f = stats.fields(raw)
  f.cpu_percent = cpu_percent
  f.host_memory = opts and opts.host_memory
  return record.new(f)
end

--- The record of one reply: feeds its sample to the shared store
-- (horcrux.cpu.observe) and builds the record with the CPU % it gives.
-- reason says why cpu_usage_percent is null: "not_running", "no_base",
-- "reset", "clock", "range" or "protocol"; nil when there is a CPU %.
-- opts: host_memory (caps the limit), window_ms (the minimum age of the
-- base sample; default cpu.set_window's).
function stats.record(id, raw, opts)
  local pct, reason
  local s, _, kind = stats.sample_from_api(raw)
  if s then
    local p, why = cpu.observe(id, s, opts and opts.window_ms)
    pct, reason = p, p == nil and why or nil
  else
    reason = kind
  end
  local rec = stats.record_from_api(raw, pct, opts)
  rec.id = id
  if type(raw.name) == "string" then
    rec.name = raw.name:gsub("^/", "")
  end
  return rec, reason
end

--- Whether sampling again after the window can give the CPU % that
-- `reason` (from stats.record) withheld.
function stats.needs_second_sample(reason)
  return reason == "no_base" or reason == "reset" or reason == "clock"
end

return stats
