-- horcrux.stats: the stats record (DESIGN.md, "Metrics") from the Engine
-- API's stats reply, and the CPU sample that horcrux.cpu keeps.
--
-- `raw` is a decoded reply of GET /containers/{id}/stats (horcrux.json
-- shapes: a JSON null is json.null, not nil, so every field is type-checked
-- before use).
--
-- Decisions, stated once:
--   * A value the daemon did not give is json.null in the record, never a
--     made-up 0: cpu_usage_percent when there is no CPU % (not running, no
--     base sample yet), and cpu_usage_ns, online_cpus, pids, `read` (the
--     daemon stamps Go's zero time) and the three memory fields of a
--     container that is not running (its memory_stats is
--     {}). `docker stats` prints such a container as 0B / 0B; the record
--     says "unknown" instead. Network and block I/O are 0 when absent
--     (DESIGN.md: a container with no network reports 0; cgroup v2 engines
--     send io_service_bytes_recursive = null).
--   * Byte counts are Lua integers. A sum that would overflow a 64-bit
--     integer (only bogus counters do that) stays a float rather than wrap.
--   * Percentages are floats, not rounded: rounding is presentation, done by
--     format.lua for people; programs (Prometheus) get every digit.
--   * Memory used is docker's: usage - total_inactive_file (cgroup v1) or
--     usage - inactive_file (v2), subtracted only when smaller than usage, so
--     never below 0. A memory limit of "none" (v1's huge number) is the
--     host's memory when the caller knows it (opts.host_memory), else what
--     the daemon said; a missing limit is null.
local json = require("horcrux.json")
local cpu = require("horcrux.cpu")

local null = json.null
local tointeger = math.tointeger
local maxinteger = math.maxinteger

local stats = {}

-- A memory limit at or above this is "no limit": cgroup v1 reports
-- PAGE_COUNTER_MAX pages (9223372036854771712 with 4 KiB pages, a little
-- less with 64 KiB ones); no machine has 4 EiB.
local UNLIMITED = 1 << 62

-- Seconds from 1970-01-01 to 0001-01-01, Go's zero time.
local ZERO_TIME_S = -62135596800

-- Values of a decoded reply, with json.null and wrong types as nil.
local function tab(v)
  return type(v) == "table" and v or nil
end

local function int(v)
  return type(v) == "number" and tointeger(v) or nil
end

-- A count: an integer, or a float when the value is beyond 64 bits.
local function count(v)
  if type(v) ~= "number" or v ~= v or v < 0 then
    return nil
  end
  return tointeger(v) or v
end

local function add(a, b)
  if math.type(a) == "integer" and math.type(b) == "integer"
    and a <= maxinteger - b then
    return a + b
  end
  return (a + 0.0) + b -- float before adding: an integer sum would wrap
end

-- Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
-- days_from_civil).
local function days_from_civil(y, m, d)
  if m <= 2 then
    y = y - 1
  end
  local era = y // 400
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = (153 * mp + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

local function days_in_month(y, m)
  if m == 2 then
    local leap = (y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0
    return leap and 29 or 28
  end
  return (m == 4 or m == 6 or m == 9 or m == 11) and 30 or 31
end

-- stats.parse_time(s) -> ns since the epoch (integer) | nil, reason.
-- RFC 3339: "2006-01-02T15:04:05.999999999Z" or with "+07:00"/"-07:00";
-- 0..9 fraction digits (more are truncated to ns); "t"/"z" and a space for
-- "T" are accepted (RFC 3339 §5.6 note). Reasons: "zero" for Go's zero time
-- "0001-01-01T00:00:00Z" (the daemon's "not running"), "syntax" for text
-- that is not RFC 3339, "range" for a time outside int64 ns (1677..2262).
-- A non-string raises.
function stats.parse_time(s)
  if type(s) ~= "string" then
    error("parse_time: string expected, got " .. type(s), 2)
  end
  local y, mo, d, h, mi, sec, rest =
    s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)[Tt ](%d%d):(%d%d):(%d%d)(.*)$")
  if not y then
    return nil, "syntax"
  end
  -- tonumber of a digit string is an integer
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  h, mi, sec = tonumber(h), tonumber(mi), tonumber(sec)
  local frac = 0
  local digits, tail = rest:match("^%.(%d+)(.*)$")
  if digits then
    rest = tail
    frac = tonumber((digits .. "00000000"):sub(1, 9))
  end
  local offset
  if rest == "Z" or rest == "z" then
    offset = 0
  else
    local sign, oh, om = rest:match("^([+-])(%d%d):(%d%d)$")
    if not sign then
      return nil, "syntax"
    end
    oh, om = tonumber(oh), tonumber(om)
    if oh > 23 or om > 59 then
      return nil, "syntax"
    end
    offset = (oh * 60 + om) * 60
    if sign == "-" then
      offset = -offset
    end
  end
  if mo < 1 or mo > 12 or d < 1 or d > days_in_month(y, mo)
    or h > 23 or mi > 59 or sec > 60 then
    return nil, "syntax"
  end
  local secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec
    - offset
  if secs == ZERO_TIME_S and frac == 0 then
    return nil, "zero"
  end
  -- int64 ns spans -9223372037 s + 145224192 ns .. 9223372036 s +
  -- 854775807 ns. (At the lower edge secs * 10^9 wraps, and adding frac
  -- wraps back: Lua integers are two's complement.)
  if secs < -9223372037 or secs > 9223372036
    or (secs == -9223372037 and frac < 145224192)
    or (secs == 9223372036 and frac > 854775807) then
    return nil, "range"
  end
  return secs * 1000000000 + frac
end

-- stats.running(raw) -> boolean: the daemon stamps a container that is not
-- running (created, exited) with the zero time.
function stats.running(raw)
  if type(raw) ~= "table" then
    error("running: table expected, got " .. type(raw), 2)
  end
  local t, why = nil, "syntax"
  if type(raw.read) == "string" then
    t, why = stats.parse_time(raw.read)
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

-- stats.sample_from_api(raw [, which]) -> sample | nil, message, kind.
-- The sample is what horcrux.cpu takes: {cpu_ns, system_ns, online_cpus,
-- time_ns}, time_ns from the reply's `read`. which = "precpu" takes the
-- previous sample that a stream=0 reply without one-shot carries
-- (precpu_stats, stamped `preread`), so that one reply can seed the store.
-- kind is "not_running" for a sample stamped with the zero time (a
-- container that is not running; a one-shot reply's precpu), "protocol" for
-- a reply without usable counters.
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
  local t, why = stats.parse_time(ts)
  if why == "zero" then
    return nil, "stats: no " .. tkey .. " sample (not running)", "not_running"
  elseif not t then
    return nil, ("stats: bad %s time '%s' (%s)"):format(tkey, ts, why),
      "protocol"
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

-- Memory used, limit and percent; nils when the reply has no memory figures.
local function memory(ms, host_memory)
  local usage = ms and count(ms.usage)
  if not usage then
    return nil, nil, nil
  end
  -- docker's calculateMemUsageUnixNoCache: total_inactive_file (v1) if it
  -- is below usage, else inactive_file (v2; v1's own cgroup) if below,
  -- else usage itself
  local st = tab(ms.stats) or {}
  local used = usage
  local v1, v2 = count(st.total_inactive_file), count(st.inactive_file)
  if v1 and v1 < usage then
    used = usage - v1
  elseif v2 and v2 < usage then
    used = usage - v2
  end
  local limit = count(ms.limit)
  if limit and limit >= UNLIMITED then
    limit = host_memory or limit
  end
  local pct
  if limit and limit > 0 then
    pct = used / limit * 100
  end
  return used, limit, pct
end

-- rx and tx summed over the interfaces except lo; 0 and 0 without any.
local function network(nets)
  local rx, tx = 0, 0
  for name, n in pairs(tab(nets) or {}) do
    if name ~= "lo" and tab(n) then
      rx = add(rx, count(n.rx_bytes) or 0)
      tx = add(tx, count(n.tx_bytes) or 0)
    end
  end
  return rx, tx
end

-- Bytes read and written summed over devices; ops compared without case
-- (v1 "Read"/"Write", v2 "read"/"write"). null or [] gives 0 and 0.
local function block_io(blkio)
  local rd, wr = 0, 0
  local list = tab(blkio) and tab(blkio.io_service_bytes_recursive)
  for _, e in ipairs(list or {}) do
    local op = tab(e) and type(e.op) == "string" and e.op:lower()
    local v = tab(e) and count(e.value)
    if v and op == "read" then
      rd = add(rd, v)
    elseif v and op == "write" then
      wr = add(wr, v)
    end
  end
  return rd, wr
end

local function or_null(v)
  if v == nil then
    return null
  end
  return v
end

-- stats.record_from_api(raw, cpu_percent [, opts]) -> the stats record.
-- cpu_percent is a number, or nil/json.null when there is none (it is null
-- in the record then, and always for a container that is not running).
-- opts.host_memory: bytes of the host, put in place of an "unlimited"
-- memory limit (engines that report v1's 9223372036854771712; this one
-- already reports host memory itself).
function stats.record_from_api(raw, cpu_percent, opts)
  if type(raw) ~= "table" then
    error("record_from_api: table expected, got " .. type(raw), 2)
  end
  if cpu_percent == null then
    cpu_percent = nil
  end
  if cpu_percent ~= nil and type(cpu_percent) ~= "number" then
    error("record_from_api: cpu_percent must be a number or nil", 2)
  end
  local host_memory = opts and opts.host_memory
  if host_memory ~= nil and not int(host_memory) then
    error("record_from_api: opts.host_memory must be an integer", 2)
  end
  local running = stats.running(raw)
  local cs = running and tab(raw.cpu_stats) or nil
  local usage = cs and tab(cs.cpu_usage)
  local used, limit, mem_pct
  if running then
    used, limit, mem_pct = memory(tab(raw.memory_stats), int(host_memory))
  end
  local rx, tx = network(raw.networks)
  local rd, wr = block_io(raw.blkio_stats)
  local pids = running and tab(raw.pids_stats) and count(raw.pids_stats.current)
  return {
    cpu_usage_percent = or_null(running and cpu_percent or nil),
    memory_usage_bytes = or_null(used),
    memory_limit_bytes = or_null(limit),
    memory_percent = or_null(mem_pct),
    network_rx_bytes = rx,
    network_tx_bytes = tx,
    block_read_bytes = rd,
    block_write_bytes = wr,
    pids = or_null(pids or nil),
    cpu_usage_ns = or_null(usage and count(usage.total_usage)),
    online_cpus = or_null(cs and online_cpus(cs)),
    read = or_null(running and type(raw.read) == "string" and raw.read or nil),
    source = "docker-api",
  }
end

-- stats.record(id, raw [, opts]) -> record, reason.
-- Feeds the reply's sample to the shared store (horcrux.cpu.observe) and
-- builds the record with the CPU % it gives. reason says why
-- cpu_usage_percent is null: "not_running", "no_base", "reset", "clock",
-- "range" or "protocol"; nil when there is a CPU %. opts: host_memory (as
-- in record_from_api), window_ms (the minimum age of the base sample;
-- default cpu.set_window's).
function stats.record(id, raw, opts)
  local pct, reason
  local s, _, kind = stats.sample_from_api(raw)
  if s then
    local p, why = cpu.observe(id, s, opts and opts.window_ms)
    pct, reason = p, p == nil and why or nil
  else
    reason = kind
  end
  return stats.record_from_api(raw, pct, opts), reason
end

-- stats.needs_second_sample(reason) -> boolean: whether sampling again after
-- the window can give the CPU % that `reason` (from stats.record) withheld.
-- The route does the waiting (horcrux.clock.sleep) and the second request.
function stats.needs_second_sample(reason)
  return reason == "no_base" or reason == "reset" or reason == "clock"
end

return stats
