--- horcrux.record: the stats record (DESIGN.md, "Metrics"), built in one
-- place for every source, so the figures mean the same whoever read them.
--
--   record.new(f) -> the record
--   record.memory(usage, inactive, limit, host_memory) -> used, limit, pct
--   record.or_null(v) -> v, or json.null for nil
--   record.FIELDS      the record's keys, in the README's order
--
-- f (every field optional but id and source):
--   id, name, source, approximate
--   read_ns (wall clock ns) or read (an RFC 3339 string)
--   running = false      not running: every figure but network and block
--                        I/O is null, whatever else f says
--   cpu_percent, cpu_ns, online_cpus
--   memory_usage         the cgroup's usage (page cache included)
--   inactive_file        what docker subtracts from it (total_inactive_file
--                        on v1, inactive_file on v2)
--   memory_limit         the cgroup's limit; nil means none
--   host_memory          bytes of the host: caps the limit (v1's "no limit"
--                        is 9223372036854771712), as the daemon does
--   net_rx, net_tx, blk_read, blk_write, pids
--   cpu_user_ns, cpu_system_ns, cpu_percpu_ns (an array, one per CPU)
--   cpu_periods, cpu_throttled_periods, cpu_throttled_ns
--   cpu_quota_us         the CFS quota a period; -1: none (nil: not known)
--   cpu_period_us, cpuset_cpus (the CPUs of its cpuset)
--   memory_rss, memory_cache, memory_oom_events, processes
--   pids_limit           pids.max; -1: none
--   pressure             {cpu = {some = {avg10, avg60, avg300, total}, full =
--                        {...}}, memory = ..., io = ...} (total in us)
--   networks             {name = {rx_bytes, rx_packets, rx_errors,
--                        rx_dropped, tx_bytes, ...}} (lo left out)
--   block_devices        {["8:0"] = {read_bytes, write_bytes}}
--   started_ns           when its first process started (wall clock ns)
--
-- Decisions, stated once:
--   * A figure the source did not give is json.null, never a made-up 0 --
--     except network and block I/O, which are 0 when absent (a container
--     with no network reports 0; cgroup v2 engines send no block I/O list).
--   * A counter that is not a non-negative integer (a negative, a fraction,
--     NaN, 1e300 from a broken daemon) is refused: null in the record, and
--     its name listed in `refused`. Sums that overflow 64 bits are refused
--     the same way, never wrapped.
--   * Memory used is docker's: usage - inactive file pages when that is
--     below usage, else usage; memory % = used / limit * 100.
--   * Percentages are floats, not rounded: rounding is for people.
--   * The CPU limit (cpu_limit_cores) is the least of quota / period, the
--     cpuset's CPUs and the online CPUs -- when the source can tell the
--     quota or the cpuset at all (the Engine API's stats cannot: null);
--     cpu_limit_percent = cpu_usage_percent / cpu_limit_cores, so 100 is
--     all the container may use.
--   * memory_working_set_bytes is cAdvisor's working set, the same figure
--     as memory_usage_bytes; memory_cgroup_usage_bytes is the cgroup's own
--     usage (page cache included: cAdvisor's container_memory_usage_bytes),
--     memory_cgroup_limit_bytes its own limit, null when it has none (a
--     limit at or above the host's memory counts as none).
local json = require "horcrux.json"
local time = require "horcrux.time"

local null = json.null
local tointeger = math.tointeger

local M = {}

M.FIELDS = {
  "cpu_usage_percent", "memory_usage_bytes", "memory_limit_bytes",
  "memory_percent", "network_rx_bytes", "network_tx_bytes",
  "block_read_bytes", "block_write_bytes", "pids", "cpu_usage_ns",
  "online_cpus", "read", "source",
  "cpu_user_ns", "cpu_system_ns", "cpu_percpu_ns", "cpu_periods",
  "cpu_throttled_periods", "cpu_throttled_ns", "cpu_quota_us",
  "cpu_period_us", "cpuset_cpus", "cpu_limit_cores", "cpu_limit_percent",
  "memory_working_set_bytes", "memory_cgroup_usage_bytes",
  "memory_cgroup_limit_bytes", "memory_rss_bytes", "memory_cache_bytes",
  "memory_oom_events", "processes", "pids_limit", "pressure", "networks",
  "block_devices", "started",
}

--- v, or json.null for nil: a field that is known to be unknown.
local function or_null(v)
  if v == nil then
    return null
  end
  return v
end
M.or_null = or_null

--- A counter as the record takes it: a non-negative integer, or nil and
-- false when v is given but is not one.
local function counter(v)
  if v == nil or v == null then
    return nil, true
  end
  local n = math.type(v) == "integer" and v or (type(v) == "number"
    and v == v and v >= 0 and v < 2 ^ 63 and tointeger(v)) or nil
  if n == nil or n < 0 then
    return nil, false
  end
  return n, true
end
M.counter = counter

--- Adds two counters; nil when the sum leaves 64 bits (or either is nil).
function M.add(a, b)
  if a == nil or b == nil or a > math.maxinteger - b then
    return nil
  end
  return a + b
end

function M.memory(usage, inactive, limit, host_memory)
  if usage == nil then
    return nil, nil, nil
  end
  local used = usage
  if inactive and inactive >= 0 and inactive < usage then
    used = usage - inactive
  end
  -- no limit (or one above the machine): the host's memory when known,
  -- as the daemon reports it
  if host_memory and (limit == nil or limit > host_memory) then
    limit = host_memory
  end
  local pct
  if limit and limit > 0 then
    pct = used / limit * 100
  end
  return used, limit, pct
end

-- The counters of f, checked; names refused go to `refused`.
local COUNTERS = {
  { "memory_usage", "memory_usage_bytes" },
  { "inactive_file", "memory_usage_bytes" },
  { "memory_limit", "memory_limit_bytes" },
  { "host_memory", "memory_limit_bytes" },
  { "net_rx", "network_rx_bytes" }, { "net_tx", "network_tx_bytes" },
  { "blk_read", "block_read_bytes" }, { "blk_write", "block_write_bytes" },
  { "pids", "pids" }, { "cpu_ns", "cpu_usage_ns" },
  { "online_cpus", "online_cpus" },
  { "cpu_user_ns", "cpu_user_ns" }, { "cpu_system_ns", "cpu_system_ns" },
  { "cpu_periods", "cpu_periods" },
  { "cpu_throttled_periods", "cpu_throttled_periods" },
  { "cpu_throttled_ns", "cpu_throttled_ns" },
  { "cpu_period_us", "cpu_period_us" }, { "cpuset_cpus", "cpuset_cpus" },
  { "memory_rss", "memory_rss_bytes" },
  { "memory_cache", "memory_cache_bytes" },
  { "memory_oom_events", "memory_oom_events" },
  { "processes", "processes" },
}

-- Counters where -1 says "none" (a limit not set).
local LIMITS = {
  { "cpu_quota_us", "cpu_quota_us" }, { "pids_limit", "pids_limit" },
}

-- Records that field `name` was refused (once).
local function refuse(state, name)
  if not state.seen[name] then
    state.seen[name] = true
    state.refused = state.refused or json.array()
    state.refused[#state.refused + 1] = name
  end
end

local function checked(f)
  local c, state = {}, { seen = {} }
  for _, pair in ipairs(COUNTERS) do
    local v, ok = counter(f[pair[1]])
    c[pair[1]] = v
    if not ok then
      refuse(state, pair[2])
    end
  end
  for _, pair in ipairs(LIMITS) do
    local v = f[pair[1]]
    if v == -1 then
      c[pair[1]] = -1
    else
      local n, ok = counter(v)
      c[pair[1]] = n
      if not ok then
        refuse(state, pair[2])
      end
    end
  end
  return c, state
end

local function percent(v)
  if type(v) == "number" and v == v and v >= 0 and v < math.huge then
    return v
  end
  return nil
end
M.percent = percent

--- The CPU limit in cores: the least of quota / period (quota -1: none),
-- the cpuset's CPUs and the online CPUs; nil when neither the quota nor
-- the cpuset is known.
function M.cpu_limit(quota, period, cpuset, cpus)
  if quota == nil and cpuset == nil then
    return nil
  end
  local lim = cpus
  if quota and quota >= 0 and period and period > 0 then
    local q = quota / period
    lim = (lim == nil or q < lim) and q or lim
  end
  if cpuset and (lim == nil or cpuset < lim) then
    lim = cpuset + 0.0
  end
  return lim and lim + 0.0
end

-- A table of counters {k = v} checked one by one (keys in `keys`); a
-- refused one is null and `name` goes to refused. nil when t is not a
-- table.
local function counters_of(t, keys, state, name)
  if type(t) ~= "table" then
    return nil
  end
  local out = {}
  for _, k in ipairs(keys) do
    local v, ok = counter(t[k])
    if not ok then
      refuse(state, name)
    end
    out[k] = or_null(v)
  end
  return out
end

local IFACE = { "rx_bytes", "rx_packets", "rx_errors", "rx_dropped",
  "tx_bytes", "tx_packets", "tx_errors", "tx_dropped" }
local DEVICE = { "read_bytes", "write_bytes" }

-- {key = {counters}} with every key but lo; nil when t is not a table.
local function keyed(t, keys, state, name)
  if type(t) ~= "table" then
    return nil
  end
  local out = {}
  for k, v in pairs(t) do
    if type(k) == "string" and k ~= "lo" then
      out[k] = counters_of(v, keys, state, name) or null
    end
  end
  return out
end

local function array_of(t, state, name)
  if type(t) ~= "table" or #t == 0 then
    return nil
  end
  local out = json.array()
  for i, v in ipairs(t) do
    local n, ok = counter(v)
    if not ok then
      refuse(state, name)
    end
    out[i] = or_null(n)
  end
  return out
end

local PSI_LINE = { "avg10", "avg60", "avg300" }

-- pressure = {cpu = {some = {avg10, avg60, avg300, total_us}, full = ...}}
local function pressure_of(p, state)
  if type(p) ~= "table" then
    return nil
  end
  local out, any = {}, false
  for _, res in ipairs({ "cpu", "memory", "io" }) do
    local r = type(p[res]) == "table" and p[res] or nil
    for _, line in ipairs({ "some", "full" }) do
      local l = r and type(r[line]) == "table" and r[line]
      if l then
        local o = {}
        for _, k in ipairs(PSI_LINE) do
          o[k] = or_null(M.percent(l[k]))
        end
        local total, ok = counter(l.total)
        if not ok then
          refuse(state, "pressure")
        end
        o.total_us = or_null(total)
        out[res] = out[res] or {}
        out[res][line] = o
        any = true
      end
    end
  end
  return any and out or nil
end

-- The figures beside docker's: CPU time split and throttling, the limits,
-- memory detail, processes, pressure, per interface and per device.
local function more(rec, f, c, state, running, used)
  local function run(v)
    return or_null(running and v or nil)
  end
  local cores = running and M.cpu_limit(c.cpu_quota_us, c.cpu_period_us,
    c.cpuset_cpus, c.online_cpus) or nil
  local pct = rec.cpu_usage_percent
  rec.cpu_user_ns, rec.cpu_system_ns = run(c.cpu_user_ns), run(c.cpu_system_ns)
  rec.cpu_percpu_ns = run(array_of(f.cpu_percpu_ns, state, "cpu_percpu_ns"))
  rec.cpu_periods = run(c.cpu_periods)
  rec.cpu_throttled_periods = run(c.cpu_throttled_periods)
  rec.cpu_throttled_ns = run(c.cpu_throttled_ns)
  rec.cpu_quota_us = run(c.cpu_quota_us ~= -1 and c.cpu_quota_us or nil)
  rec.cpu_period_us, rec.cpuset_cpus = run(c.cpu_period_us), run(c.cpuset_cpus)
  rec.cpu_limit_cores = or_null(cores)
  rec.cpu_limit_percent = or_null(cores and cores > 0 and pct ~= null
    and pct / cores or nil)
  rec.memory_working_set_bytes = or_null(used)
  rec.memory_cgroup_usage_bytes = run(c.memory_usage)
  -- a limit at the host's memory is none (the Engine API reports that)
  local lim = c.memory_usage and c.memory_limit
  if lim and c.host_memory and lim >= c.host_memory then
    lim = nil
  end
  rec.memory_cgroup_limit_bytes = run(lim)
  rec.memory_rss_bytes = run(c.memory_rss)
  rec.memory_cache_bytes = run(c.memory_cache)
  rec.memory_oom_events = run(c.memory_oom_events)
  rec.processes = run(c.processes)
  rec.pids_limit = run(c.pids_limit ~= -1 and c.pids_limit or nil)
  rec.pressure = run(pressure_of(f.pressure, state))
  rec.networks = or_null(keyed(f.networks, IFACE, state, "networks"))
  rec.block_devices = or_null(keyed(f.block_devices, DEVICE, state,
    "block_devices"))
  rec.started = run(math.type(f.started_ns) == "integer"
    and time.format(f.started_ns) or nil)
end

function M.new(f)
  local c, state = checked(f)
  local running = f.running ~= false
  local used, limit, mem_pct
  if running then
    used, limit, mem_pct = M.memory(c.memory_usage, c.inactive_file,
      c.memory_limit, c.host_memory)
  end
  local read = f.read
  if read == nil and f.read_ns then
    read = time.format(f.read_ns)
  end
  local rec = {
    cpu_usage_percent = or_null(running and percent(f.cpu_percent) or nil),
    memory_usage_bytes = or_null(used),
    memory_limit_bytes = or_null(limit),
    memory_percent = or_null(mem_pct),
    -- absent: 0; given but refused: null
    network_rx_bytes = f.net_rx == nil and 0 or or_null(c.net_rx),
    network_tx_bytes = f.net_tx == nil and 0 or or_null(c.net_tx),
    block_read_bytes = f.blk_read == nil and 0 or or_null(c.blk_read),
    block_write_bytes = f.blk_write == nil and 0 or or_null(c.blk_write),
    pids = or_null(running and c.pids or nil),
    cpu_usage_ns = or_null(running and c.cpu_ns or nil),
    online_cpus = or_null(running and c.online_cpus or nil),
    read = or_null(running and read or nil),
    source = f.source,
    id = f.id,
    name = f.name,
  }
  if f.approximate then
    rec.approximate = true
  end
  more(rec, f, c, state, running, used)
  if state.refused then
    rec.refused = state.refused
  end
  return rec
end

return M
