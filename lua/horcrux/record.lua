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
}

local function checked(f)
  local c, refused, seen = {}, nil, {}
  for _, pair in ipairs(COUNTERS) do
    local v, ok = counter(f[pair[1]])
    c[pair[1]] = v
    if not ok and not seen[pair[2]] then
      seen[pair[2]] = true
      refused = refused or json.array()
      refused[#refused + 1] = pair[2]
    end
  end
  return c, refused
end

local function percent(v)
  if type(v) == "number" and v == v and v >= 0 and v < math.huge then
    return v
  end
  return nil
end

function M.new(f)
  local c, refused = checked(f)
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
  if refused then
    rec.refused = refused
  end
  return rec
end

return M
