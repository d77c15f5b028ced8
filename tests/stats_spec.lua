-- horcrux.stats: the stats record from Engine API replies.
--
-- tests/fixtures/api/stats_*.json are real replies of dockerd 20.10 (API
-- 1.41, cgroup v1) recorded from containers of horcrux-test:busybox;
-- edge_*.json are written by hand from the API's schema (see the README
-- there). Every expected number below is worked out from the fixture by hand.
local stats = require("horcrux.stats")
local time = require("horcrux.time")
local json = require("horcrux.json")
local cpu = require("horcrux.cpu")

local null = json.null

local function fixture(name)
  local path = "tests/fixtures/api/" .. name .. ".json"
  local f = assert(io.open(path, "rb"))
  local text = f:read("a")
  f:close()
  return assert(json.decode(text))
end

-- the record's fields: docker's seven and more (horcrux.record's list)
local FIELDS = require("horcrux.record").FIELDS

-- docker's figures, the seed's fields: what the whole-record checks compare
local BASE = {
  "cpu_usage_percent", "memory_usage_bytes", "memory_limit_bytes",
  "memory_percent", "network_rx_bytes", "network_tx_bytes",
  "block_read_bytes", "block_write_bytes", "pids", "cpu_usage_ns",
  "online_cpus", "read", "source",
}

local function base(rec)
  local out = {}
  for _, k in ipairs(BASE) do
    out[k] = rec[k]
  end
  return out
end

-- Exactly the record's fields, none missing (null is a value), none more
-- (but those of `extra`).
local function assert_shape(rec, extra)
  local n = 0
  for k in pairs(rec) do
    if not (extra and extra[k]) then
      n = n + 1
    end
  end
  for _, k in ipairs(FIELDS) do
    assert.is_true(rec[k] ~= nil, "missing field " .. k)
  end
  assert.equal(#FIELDS, n)
end

local function assert_int(expected, v)
  assert.equal("integer", math.type(v))
  assert.equal(expected, v)
end

describe("horcrux.stats", function()
  before_each(function()
    cpu.clear()
  end)

  after_each(function()
    cpu.clear()
  end)

  describe("parse_time", function()
    it("reads UTC with 0..9 fraction digits", function()
      assert_int(0, time.parse("1970-01-01T00:00:00Z"))
      assert_int(1500000000, time.parse("1970-01-01T00:00:01.5Z"))
      assert_int(100000000, time.parse("1970-01-01T00:00:00.1Z"))
      assert_int(120000000, time.parse("1970-01-01T00:00:00.12Z"))
      assert_int(123456789, time.parse("1970-01-01T00:00:00.123456789Z"))
      assert_int(1, time.parse("1970-01-01T00:00:00.000000001Z"))
      -- digits beyond ns are truncated
      assert_int(123456789, time.parse("1970-01-01T00:00:00.1234567899Z"))
      assert_int(1795927936655666234, time.parse("2026-11-29T04:52:16.655666234Z"))
      assert_int(1709283600000000000, time.parse("2024-03-01t09:00:00z"))
      assert_int(1709283600000000000, time.parse("2024-03-01 09:00:00Z"))
    end)

    it("applies offsets", function()
      assert_int(1709283602500000000, time.parse("2024-03-01T10:00:02.5+01:00"))
      assert_int(1709283602500000000, time.parse("2024-03-01T01:30:02.5-07:30"))
      assert_int(1709283600000000000, time.parse("2024-03-01T09:00:00+00:00"))
      assert_int(-3600 * 1000000000, time.parse("1970-01-01T00:00:00+01:00"))
    end)

    it("knows leap years", function()
      assert_int(951868799999999999, time.parse("2000-02-29T23:59:59.999999999Z"))
      assert.is_number(time.parse("2024-02-29T00:00:00Z"))
      assert.same({ nil, "syntax" }, { time.parse("2023-02-29T00:00:00Z") })
      assert.same({ nil, "syntax" }, { time.parse("1900-02-29T00:00:00Z") })
    end)

    it("says 'zero' for Go's zero time, the daemon's 'not running'", function()
      assert.same({ nil, "zero" }, { time.parse("0001-01-01T00:00:00Z") })
      assert.same({ nil, "zero" }, { time.parse("0001-01-01T01:00:00+01:00") })
    end)

    it("keeps to the range of int64 ns", function()
      assert_int(math.maxinteger, time.parse("2262-04-11T23:47:16.854775807Z"))
      assert_int(math.mininteger, time.parse("1677-09-21T00:12:43.145224192Z"))
      assert.same({ nil, "range" }, { time.parse("2262-04-11T23:47:16.854775808Z") })
      assert.same({ nil, "range" }, { time.parse("1677-09-21T00:12:43.145224191Z") })
      assert.same({ nil, "range" }, { time.parse("1600-01-01T00:00:00Z") })
      assert.same({ nil, "range" }, { time.parse("9999-12-31T23:59:59Z") })
    end)

    it("refuses what is not RFC 3339", function()
      for _, s in ipairs({
        "", "2024-03-01", "2024-03-01T09:00:00", "2024-03-01T09:00Z",
        "2024-13-01T00:00:00Z", "2024-00-01T00:00:00Z", "2024-04-31T00:00:00Z",
        "2024-03-00T00:00:00Z", "2024-03-01T24:00:00Z", "2024-03-01T09:60:00Z",
        "2024-03-01T09:00:61Z", "2024-03-01T09:00:00.Z", "2024-03-01T09:00:00+1:00",
        "2024-03-01T09:00:00+0100", "2024-03-01T09:00:00+24:00", "2024-03-01T09:00:00ZZ",
        "2024-03-01T09:00:00Z ", " 2024-03-01T09:00:00Z", "24-03-01T09:00:00Z",
      }) do
        assert.same({ nil, "syntax" }, { time.parse(s) }, s)
      end
    end)

    it("raises on a non-string", function()
      assert.has_error(function() time.parse(nil) end)
      assert.has_error(function() time.parse(0) end)
    end)
  end)

  describe("sample_from_api", function()
    it("takes the counters and the read time", function()
      assert.same({
        cpu_ns = 6832017464, system_ns = 649570000000, online_cpus = 2,
        time_ns = 1795927936655666234,
      }, stats.sample_from_api(fixture("stats_running_busy")))
    end)

    it("takes precpu_stats and preread with 'precpu'", function()
      assert.same({
        cpu_ns = 5829152332, system_ns = 647570000000, online_cpus = 2,
        time_ns = 1795927935652627399,
      }, stats.sample_from_api(fixture("stats_running_busy"), "precpu"))
      -- a one-shot reply has no previous sample
      local s, msg, kind = stats.sample_from_api(fixture("stats_running_busy_oneshot"), "precpu")
      assert.is_nil(s)
      assert.equal("stats: no preread sample (not running)", msg)
      assert.equal("not_running", kind)
      assert.has_error(function() stats.sample_from_api({}, "cpu") end)
    end)

    it("counts percpu_usage when online_cpus is 0, and has no CPU count without either", function()
      assert.equal(4, stats.sample_from_api(fixture("edge_null_blkio_no_networks")).online_cpus)
      assert.same({ cpu_ns = 123456789, time_ns = 1709283600000000000 },
        stats.sample_from_api(fixture("edge_empty_memory_stats")))
    end)

    it("reads offsets and v2 replies", function()
      assert.same({
        cpu_ns = 3000000000, system_ns = 104000000000, online_cpus = 4,
        time_ns = 1709283602500000000,
      }, stats.sample_from_api(fixture("edge_v2_memory_lowercase_blkio")))
    end)

    it("says not_running for a created or exited container", function()
      for _, name in ipairs({ "stats_created", "stats_exited" }) do
        local s, msg, kind = stats.sample_from_api(fixture(name))
        assert.is_nil(s)
        assert.equal("stats: no read sample (not running)", msg)
        assert.equal("not_running", kind)
      end
    end)

    it("says protocol for a reply without usable counters", function()
      local t = "2024-03-01T09:00:00Z"
      local cases = {
        { {}, "stats: reply has no read time" },
        { { read = null }, "stats: reply has no read time" },
        { { read = "yesterday" }, "stats: bad read time 'yesterday' (syntax)" },
        { { read = t }, "stats: reply has no cpu_stats.cpu_usage.total_usage" },
        { { read = t, cpu_stats = null }, "stats: reply has no cpu_stats.cpu_usage.total_usage" },
        { { read = t, cpu_stats = { cpu_usage = { total_usage = -1 } } },
          "stats: reply has no cpu_stats.cpu_usage.total_usage" },
        -- beyond int64 (a float from the decoder): no exact counter
        { { read = t, cpu_stats = { cpu_usage = { total_usage = 2 ^ 64 } } },
          "stats: reply has no cpu_stats.cpu_usage.total_usage" },
      }
      for _, c in ipairs(cases) do
        assert.same({ nil, c[2], "protocol" }, { stats.sample_from_api(c[1]) })
      end
    end)

    it("leaves out a system counter that is null", function()
      local s = stats.sample_from_api({
        read = "2024-03-01T09:00:00Z",
        cpu_stats = { cpu_usage = { total_usage = 5 }, system_cpu_usage = null, online_cpus = null },
      })
      assert.same({ cpu_ns = 5, time_ns = 1709283600000000000 }, s)
    end)

    it("gives docker's CPU % with horcrux.cpu", function()
      local raw = fixture("stats_running_busy")
      local prev = stats.sample_from_api(raw, "precpu")
      local cur = stats.sample_from_api(raw)
      -- Δt 1.003 s: docker's formula, (6832017464 - 5829152332) /
      -- (649570000000 - 647570000000) × 2 × 100
      assert.equal(1002865132 / 2000000000 * 2 * 100, cpu.percent(prev, cur))
      -- the idle container used no CPU in its window: 0, not nil
      raw = fixture("stats_running_idle")
      assert.equal(0.0, cpu.percent(stats.sample_from_api(raw, "precpu"), stats.sample_from_api(raw)))
    end)
  end)

  describe("record_from_api", function()
    it("builds the record of a busy container", function()
      local rec = stats.record_from_api(fixture("stats_running_busy"), 100.2865132)
      assert_shape(rec)
      assert.same({
        cpu_usage_percent = 100.2865132,
        memory_usage_bytes = 331776, -- usage 331776 - total_inactive_file 0
        memory_limit_bytes = 25276518400, -- the host's memory: no limit set
        memory_percent = 331776 / 25276518400 * 100,
        network_rx_bytes = 586,
        network_tx_bytes = 0,
        block_read_bytes = 0, -- io_service_bytes_recursive = []
        block_write_bytes = 0,
        pids = 1,
        cpu_usage_ns = 6832017464,
        online_cpus = 2,
        read = "2026-11-29T04:52:16.655666234Z",
        source = "docker-api",
      }, base(rec))
      assert_int(331776, rec.memory_usage_bytes)
      assert_int(25276518400, rec.memory_limit_bytes)
      assert_int(6832017464, rec.cpu_usage_ns)
      -- the figures beside docker's that the reply gives
      assert_int(6800000000, rec.cpu_user_ns)
      assert_int(20000000, rec.cpu_system_ns)
      assert.same({ 5602106872, 1229910592 }, { table.unpack(rec.cpu_percpu_ns) })
      assert_int(0, rec.cpu_throttled_periods)
      assert_int(61440, rec.memory_rss_bytes) -- total_rss
      assert_int(0, rec.memory_cache_bytes)
      assert_int(331776, rec.memory_working_set_bytes)
      assert.equal(7, rec.networks.eth0.rx_packets)
      -- what it does not give: null, never 0
      assert.equal(null, rec.cpu_quota_us)
      assert.equal(null, rec.cpu_limit_cores)
      assert.equal(null, rec.memory_oom_events)
      assert.equal(null, rec.pressure)
    end)

    it("builds the record of an idle container with a memory limit", function()
      local rec = stats.record_from_api(fixture("stats_running_idle"), 0.0)
      assert_shape(rec)
      assert.same({
        cpu_usage_percent = 0.0,
        memory_usage_bytes = 331776,
        memory_limit_bytes = 67108864, -- docker run -m 64m
        memory_percent = 0.494384765625, -- 331776 / 67108864 × 100, exact
        network_rx_bytes = 586,
        network_tx_bytes = 0,
        block_read_bytes = 0, -- "Read" 0
        block_write_bytes = 16384, -- "Write" 16384 (not "Sync", "Total")
        pids = 1,
        cpu_usage_ns = 18592042,
        online_cpus = 2,
        read = "2026-11-29T04:52:17.675319966Z",
        source = "docker-api",
      }, base(rec))
    end)

    it("subtracts inactive page cache (v1 total_inactive_file)", function()
      local rec = stats.record_from_api(fixture("stats_running_pagecache"), nil)
      assert_shape(rec)
      assert.equal(null, rec.cpu_usage_percent)
      assert_int(17735680 - 16777216, rec.memory_usage_bytes) -- 958464
      assert.equal(958464 / 25276518400 * 100, rec.memory_percent)
      assert_int(852, rec.network_rx_bytes)
      assert_int(336, rec.network_tx_bytes) -- 3 pings and an ARP
      assert_int(32768, rec.block_read_bytes)
      assert_int(0, rec.block_write_bytes)
      assert_int(25580139, rec.cpu_usage_ns)
    end)

    it("reports 0 network bytes for a container without network", function()
      local rec = stats.record_from_api(fixture("stats_network_none"), 0.0)
      assert_shape(rec)
      assert_int(0, rec.network_rx_bytes)
      assert_int(0, rec.network_tx_bytes)
      assert_int(323584, rec.memory_usage_bytes)
      assert_int(1, rec.pids)
      assert_int(17072443, rec.cpu_usage_ns)
    end)

    it("says null for what a created or exited container does not have", function()
      for _, name in ipairs({ "stats_created", "stats_exited" }) do
        -- even a CPU % passed in: a container that is not running has none
        local rec = stats.record_from_api(fixture(name), 12.5)
        assert_shape(rec)
        assert.same({
          cpu_usage_percent = null,
          memory_usage_bytes = null,
          memory_limit_bytes = null,
          memory_percent = null,
          network_rx_bytes = 0,
          network_tx_bytes = 0,
          block_read_bytes = 0,
          block_write_bytes = 0,
          pids = null,
          cpu_usage_ns = null,
          online_cpus = null,
          read = null, -- Go's zero time is no time: the daemon read nothing
          source = "docker-api",
        }, base(rec))
      end
    end)

    it("reads v2 memory_stats and lowercase blkio ops", function()
      local rec = stats.record_from_api(fixture("edge_v2_memory_lowercase_blkio"), 100.0)
      assert_shape(rec)
      assert.same({
        cpu_usage_percent = 100.0,
        memory_usage_bytes = 71303168, -- 104857600 - inactive_file 33554432
        memory_limit_bytes = 536870912,
        memory_percent = 13.28125, -- 71303168 / 536870912 × 100, exact
        network_rx_bytes = 1300, -- eth0 1000 + eth1 300
        network_tx_bytes = 2400, -- eth0 2000 + eth1 400
        block_read_bytes = 1049088, -- 1048576 + 512 over two devices
        block_write_bytes = 12288, -- 4096 + 8192
        pids = 7,
        cpu_usage_ns = 3000000000,
        online_cpus = 4,
        read = "2024-03-01T10:00:02.5+01:00",
        source = "docker-api",
      }, base(rec))
    end)

    it("takes null blkio and missing networks as 0, and v1's no-limit", function()
      local raw = fixture("edge_null_blkio_no_networks")
      local rec = stats.record_from_api(raw)
      assert_shape(rec)
      assert.equal(null, rec.cpu_usage_percent)
      assert_int(0, rec.block_read_bytes)
      assert_int(0, rec.block_write_bytes)
      assert_int(0, rec.network_rx_bytes)
      assert_int(0, rec.network_tx_bytes)
      -- neither inactive figure (8192) is below usage 4096: docker keeps usage
      assert_int(4096, rec.memory_usage_bytes)
      -- v1's "no limit" stays what the daemon said without host memory
      assert_int(9223372036854771712, rec.memory_limit_bytes)
      assert.equal(4096 / 9223372036854771712 * 100, rec.memory_percent)
      assert_int(4, rec.online_cpus) -- online_cpus 0: #percpu_usage
      assert_int(2, rec.pids)
      -- and is the host's memory with it
      rec = stats.record_from_api(raw, nil, { host_memory = 25276518400 })
      assert_int(25276518400, rec.memory_limit_bytes)
      assert.equal(4096 / 25276518400 * 100, rec.memory_percent)
    end)

    it("says null for an empty memory_stats of a running container", function()
      local rec = stats.record_from_api(fixture("edge_empty_memory_stats"), 3.5)
      assert_shape(rec)
      assert.equal(3.5, rec.cpu_usage_percent)
      assert.equal(null, rec.memory_usage_bytes)
      assert.equal(null, rec.memory_limit_bytes)
      assert.equal(null, rec.memory_percent)
      assert.equal(null, rec.pids) -- pids_stats = {}
      assert.equal(null, rec.online_cpus) -- neither online_cpus nor percpu
      assert_int(123456789, rec.cpu_usage_ns)
      -- lo is not counted
      assert_int(10, rec.network_rx_bytes)
      assert_int(20, rec.network_tx_bytes)
    end)

    it("keeps huge counters exact, and refuses sums past 64 bits", function()
      local rec = stats.record_from_api(fixture("edge_huge_counters"), 0.5,
        { host_memory = 25276518400 })
      assert_shape(rec, { refused = true })
      assert_int(4194304, rec.pids)
      assert_int(4611686018427387904, rec.cpu_usage_ns) -- 2^62
      assert_int(256, rec.online_cpus)
      -- 9223372036854771712 - 4096
      assert_int(9223372036854767616, rec.memory_usage_bytes)
      -- the limit is v1's "none": the host's memory stands in
      assert_int(25276518400, rec.memory_limit_bytes)
      assert.equal(9223372036854767616 / 25276518400 * 100, rec.memory_percent)
      -- 2^62 + 2^62 and (2^63 - 4096) + 8192 pass 2^63 - 1, and a uint64
      -- counter beyond int64 comes from the decoder as a float: no counter
      -- can be that big, so each is refused (null), never wrapped, and the
      -- record names them
      assert.equal(null, rec.block_read_bytes)
      assert.equal(null, rec.network_rx_bytes)
      assert.equal(null, rec.network_tx_bytes)
      assert.equal(null, rec.block_write_bytes)
      -- and a device's own sum past 64 bits (block_devices)
      assert.same({ "network_rx_bytes", "network_tx_bytes", "block_read_bytes",
        "block_write_bytes", "block_devices" }, { table.unpack(rec.refused) })
      assert.equal("2262-04-11T23:47:16.854775807Z", rec.read)
      -- and the CPU sample is exact at the edge of int64 ns
      assert.same({
        cpu_ns = 4611686018427387904, system_ns = 9223372036854774784,
        online_cpus = 256, time_ns = math.maxinteger,
      }, stats.sample_from_api(fixture("edge_huge_counters")))
    end)

    it("refuses counters that are not non-negative integers, naming them", function()
      local raw = fixture("stats_running_busy")
      raw.networks.eth0.tx_bytes = 1e300
      raw.pids_stats.current = -3
      raw.memory_stats.usage = 12.5
      raw.cpu_stats.cpu_usage.total_usage = 0 / 0
      local rec = stats.record_from_api(raw, 1.0)
      assert.equal(null, rec.network_tx_bytes)
      assert.equal(null, rec.pids)
      assert.equal(null, rec.memory_usage_bytes)
      assert.equal(null, rec.memory_percent)
      assert.equal(null, rec.cpu_usage_ns)
      assert.equal("integer", math.type(rec.network_rx_bytes))
      -- the interface's own tx_bytes is refused as well (networks)
      assert.same({ "memory_usage_bytes", "network_tx_bytes", "pids",
        "cpu_usage_ns", "networks" }, { table.unpack(rec.refused) })
      -- and the JSON a client gets says it
      assert.truthy(json.encode(rec):find('"refused":["memory_usage_bytes"', 1, true))
      -- a good reply has no `refused`
      assert.is_nil(stats.record_from_api(fixture("stats_running_busy"), 1.0).refused)
    end)

    it("falls back from total_inactive_file to inactive_file as docker does", function()
      local function used(usage, st)
        return stats.record_from_api({
          read = "2024-03-01T09:00:00Z",
          memory_stats = { usage = usage, stats = st, limit = 1000 },
        }).memory_usage_bytes
      end
      assert_int(700, used(1000, { total_inactive_file = 300, inactive_file = 100 }))
      assert_int(900, used(1000, { total_inactive_file = 1000, inactive_file = 100 }))
      assert_int(900, used(1000, { inactive_file = 100 }))
      assert_int(1000, used(1000, { inactive_file = 1000 }))
      assert_int(1000, used(1000, {}))
      assert_int(1000, used(1000, null))
      assert_int(0, used(0, { inactive_file = 0 }))
    end)

    it("takes json.null for 'no CPU %'", function()
      local rec = stats.record_from_api(fixture("stats_running_busy"), null)
      assert.equal(null, rec.cpu_usage_percent)
    end)

    it("raises on misuse", function()
      local raw = fixture("stats_running_busy")
      assert.has_error(function() stats.record_from_api(nil, 1.0) end)
      assert.has_error(function() stats.running(nil) end)
      assert.has_error(function() stats.record_from_api(raw, "1.0") end)
      assert.has_error(function() stats.record_from_api(raw, nil, { host_memory = "1" }) end)
      assert.has_error(function() stats.record_from_api(raw, nil, { host_memory = 1.5 }) end)
    end)

    it("survives nulls and wrong types anywhere", function()
      local rec = stats.record_from_api({
        read = "2024-03-01T09:00:00Z",
        cpu_stats = { cpu_usage = null, online_cpus = "2" },
        memory_stats = { usage = 100, stats = null, limit = null },
        networks = { eth0 = null, eth1 = { rx_bytes = null, tx_bytes = 5 } },
        blkio_stats = { io_service_bytes_recursive = { null, { op = null, value = 1 },
          { op = "Read", value = null }, { op = "READ", value = 7 } } },
        pids_stats = null,
      })
      assert_shape(rec)
      assert_int(100, rec.memory_usage_bytes)
      assert.equal(null, rec.memory_limit_bytes)
      assert.equal(null, rec.memory_percent)
      assert_int(0, rec.network_rx_bytes)
      assert_int(5, rec.network_tx_bytes)
      assert_int(7, rec.block_read_bytes)
      assert.equal(null, rec.cpu_usage_ns)
      assert.equal(null, rec.online_cpus)
      assert.equal(null, rec.pids)
    end)
  end)

  describe("record", function()
    it("needs a second sample, then gives the CPU % over the window", function()
      local id = "94d191d019e46740ff0ef60a084932e62056a8d81dd6583e3417a9d89d5aec39"
      local rec, why = stats.record(id, fixture("stats_running_busy_oneshot"))
      assert.equal(null, rec.cpu_usage_percent)
      assert.equal("no_base", why)
      assert.is_true(stats.needs_second_sample(why))
      -- the same collector tick again (a stream=0 reply): not a new sample
      rec, why = stats.record(id, fixture("stats_running_busy"))
      assert.equal("no_base", why)
      -- 42.58 s later: (49265091064 - 6832017464) /
      -- (734200000000 - 649570000000) × 2 × 100
      rec, why = stats.record(id, fixture("stats_running_busy_oneshot_later"))
      assert.is_nil(why)
      assert.equal(42433073600 / 84630000000 * 2 * 100, rec.cpu_usage_percent)
      assert_int(49265091064, rec.cpu_usage_ns)
      assert.same(stats.sample_from_api(fixture("stats_running_busy_oneshot_later")), cpu.latest(id))
    end)

    it("seeds the store from precpu_stats", function()
      local raw = fixture("stats_running_busy")
      cpu.observe("b", stats.sample_from_api(raw, "precpu"))
      local rec, why = stats.record("b", raw)
      assert.is_nil(why)
      assert.equal(1002865132 / 2000000000 * 2 * 100, rec.cpu_usage_percent)
    end)

    it("passes the window and host memory through", function()
      local raw = fixture("stats_running_busy")
      cpu.observe("w", stats.sample_from_api(raw, "precpu"))
      local rec, why = stats.record("w", raw, { window_ms = 2000 })
      assert.equal("no_base", why)
      assert.equal(null, rec.cpu_usage_percent)
      rec = stats.record("h", fixture("edge_null_blkio_no_networks"), { host_memory = 1 << 30 })
      assert_int(1 << 30, rec.memory_limit_bytes)
    end)

    it("says why there is no CPU %", function()
      local rec, why = stats.record("c", fixture("stats_created"))
      assert.equal("not_running", why)
      assert.equal(null, rec.cpu_usage_percent)
      assert.is_false(stats.needs_second_sample(why))
      assert.equal(0, cpu.count()) -- nothing to store
      rec, why = stats.record("p", { read = "2024-03-01T09:00:00Z" })
      assert.equal("protocol", why)
      assert.equal(null, rec.cpu_usage_percent)
    end)

    it("restarts after a counter reset", function()
      local raw = fixture("stats_running_busy")
      stats.record("r", raw)
      local restarted = fixture("stats_running_busy_oneshot_later")
      restarted.cpu_stats.cpu_usage.total_usage = 1000
      local _, why = stats.record("r", restarted)
      assert.equal("reset", why)
      assert.is_true(stats.needs_second_sample(why))
      assert.is_false(stats.needs_second_sample("range"))
      assert.is_false(stats.needs_second_sample(nil))
    end)
  end)
end)
