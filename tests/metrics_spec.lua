-- GET /metrics and the history without an engine: view.prometheus on
-- records and metas put by hand, horcrux.telemetry, horcrux.prometheus's
-- negotiation, view.history's buckets and summary.
local view = require "horcrux.view"
local json = require "horcrux.json"
local clock = require "horcrux.clock"
local telemetry = require "horcrux.telemetry"
local prometheus = require "horcrux.prometheus"
local history = require "horcrux.history"

local null = json.null

local function id_of(i)
  return ("%064x"):format(i)
end

local function lines_of(text, prefix)
  local out = {}
  for line in text:gmatch("[^\n]+") do
    if line:sub(1, #prefix) == prefix then
      out[#out + 1] = line
    end
  end
  return out
end

describe("view.prometheus", function()
  before_each(function()
    view.clear()
  end)
  after_each(function()
    view.clear()
  end)

  it("writes cAdvisor's families, units and labels", function()
    local id = id_of(1)
    view.set_meta(id, { name = "/web", status = "running", image = "nginx:1",
      created = "2026-11-30T12:30:58.434150671Z",
      labels = { ["com.docker.compose.service"] = "web", ["a-b"] = "x\"y\n",
        ["a_b"] = "second" } })
    view.put(id, { cpu_usage_ns = 1500000000, cpu_user_ns = 1000000000,
      cpu_system_ns = 500000000, cpu_quota_us = 50000, cpu_period_us = 100000,
      cpu_periods = 10, cpu_throttled_periods = 2, cpu_throttled_ns = 3000000,
      memory_cgroup_usage_bytes = 4096, memory_working_set_bytes = 2048,
      memory_rss_bytes = 1024, memory_cache_bytes = 512,
      memory_cgroup_limit_bytes = null, pids = 3, processes = 2,
      memory_oom_events = 1, started = "2026-11-30T12:31:00Z",
      networks = { eth0 = { rx_bytes = 10, rx_packets = 1, rx_errors = 0,
        rx_dropped = 0, tx_bytes = 20, tx_packets = 2, tx_errors = 0,
        tx_dropped = 0 } },
      block_devices = { ["8:0"] = { read_bytes = 7, write_bytes = 8 } },
      pressure = { cpu = { some = { total_us = 2500000 } } } })
    local text, n = view.prometheus({ now = 1796041900.7 })
    assert.equal(1, n)
    local labels = '{id="/docker/' .. id .. '",name="web",image="nginx:1",'
      .. 'container_label_a_b="x\\"y\\n",'
      .. 'container_label_com_docker_compose_service="web"'
    local function has(line)
      assert.truthy(text:find("\n" .. line .. "\n", 1, true), line .. "\n" .. text)
    end
    has("# TYPE container_cpu_usage_seconds_total counter")
    has("container_cpu_usage_seconds_total" .. labels .. ',cpu="total"} 1.5')
    has("container_cpu_user_seconds_total" .. labels .. "} 1")
    has("container_cpu_cfs_throttled_seconds_total" .. labels .. "} 0.003")
    has("container_spec_cpu_quota" .. labels .. "} 50000")
    has("container_spec_memory_limit_bytes" .. labels .. "} 0") -- none: 0
    has("container_memory_usage_bytes" .. labels .. "} 4096")
    has("container_memory_working_set_bytes" .. labels .. "} 2048")
    has("container_threads" .. labels .. "} 3")
    has("container_processes" .. labels .. "} 2")
    has("container_oom_events_total" .. labels .. "} 1")
    has("container_pressure_cpu_waiting_seconds_total" .. labels .. "} 2.5")
    -- the meta's created wins over the first process's start (cAdvisor's
    -- creation time)
    has("container_start_time_seconds" .. labels .. "} 1796041858.4341507")
    has("container_network_receive_bytes_total" .. labels .. ',interface="eth0"} 10')
    has("container_fs_writes_bytes_total" .. labels .. ',device="8:0"} 8')
    has("container_last_seen" .. labels .. "} 1796041900")
    -- what the record does not have is left out, never 0
    assert.same({}, lines_of(text, "container_memory_cache{x"))
    assert.falsy(text:find("container_pressure_io_", 1, true))
    -- one HELP and one TYPE a family
    local _, types = text:gsub("# TYPE container_cpu_usage_seconds_total ", "")
    assert.equal(1, types)
  end)

  it("keeps the labels of a container the events made (a meta with created)", function()
    -- regression: a meta whose created parsed popped the meta off the stack
    local id = id_of(2)
    view.set_meta(id, { name = "ev", status = "running", image = "img",
      created = "2026-11-30T12:30:58Z", labels = { x = "1" } })
    view.put(id, { cpu_usage_ns = 5, started = "2026-11-30T12:31:00Z" })
    local text = view.prometheus()
    assert.truthy(text:find('name="ev",image="img",container_label_x="1",cpu="total"}',
      1, true), text)
  end)

  it("leaves the CFS figures out without a quota, and names OpenMetrics families", function()
    local id = id_of(3)
    view.set_meta(id, { name = "free", status = "running" })
    view.put(id, { cpu_usage_ns = 5, cpu_periods = 3, cpu_quota_us = null })
    local text = view.prometheus({ openmetrics = true })
    assert.falsy(text:find("cfs", 1, true))
    assert.truthy(text:find("# TYPE container_cpu_usage_seconds counter\n", 1, true))
    assert.truthy(text:find("\ncontainer_cpu_usage_seconds_total{", 1, true))
  end)

  it("holds with many containers and many labels (the stack stays put)", function()
    for i = 1, 300 do
      local labels = {}
      for k = 1, 10 do
        labels["l" .. k] = tostring(k)
      end
      view.set_meta(id_of(100 + i), { name = "c" .. i, status = "running",
        image = "x", labels = labels, created = "2026-11-30T12:30:58Z" })
      view.put(id_of(100 + i), { cpu_usage_ns = i })
    end
    local text, n = view.prometheus()
    assert.equal(300, n)
    assert.equal(300, #lines_of(text, "container_cpu_usage_seconds_total{"))
    assert.equal(300, #lines_of(text, "container_start_time_seconds{"))
  end)
end)

describe("horcrux.telemetry and GET /metrics", function()
  before_each(function()
    telemetry.reset()
  end)

  it("counts, sets and observes, process-wide", function()
    telemetry.counter("hx_test_total", "A test counter.")
    telemetry.counter("hx_test_total", "Declared again: the same.")
    telemetry.gauge("hx_test_gauge", "A test gauge.")
    telemetry.histogram("hx_test_seconds", "A test histogram.", { 0.1, 1 })
    telemetry.inc("hx_test_total", { route = "/a", status = 200 })
    telemetry.inc("hx_test_total", { status = 200, route = "/a" }, 2)
    telemetry.set("hx_test_gauge", nil, 2.5)
    telemetry.observe("hx_test_seconds", nil, 0.05)
    telemetry.observe("hx_test_seconds", nil, 3)
    local text = telemetry.render()
    assert.truthy(text:find('\nhx_test_total{route="/a",status="200"} 3\n', 1, true), text)
    assert.truthy(text:find("\nhx_test_gauge 2.5\n", 1, true))
    assert.truthy(text:find('\nhx_test_seconds_bucket{le="0.1"} 1\n', 1, true))
    assert.truthy(text:find('\nhx_test_seconds_bucket{le="+Inf"} 2\n', 1, true))
    assert.truthy(text:find("\nhx_test_seconds_sum 3.05\n", 1, true))
    assert.truthy(telemetry.render(true):find("# TYPE hx_test counter", 1, true))
    assert.has_error(function() telemetry.gauge("hx_test_total", "clash") end)
    assert.has_error(function() telemetry.inc("hx_test_total", nil, -1) end)
    assert.has_error(function() telemetry.inc("hx_undeclared") end)
    assert.has_error(function() telemetry.counter("bad-name", "x") end)
  end)

  it("bumps series by handle (the dispatcher's path); a reset makes handles stale", function()
    telemetry.counter("hx_test_total", "A test counter.")
    telemetry.histogram("hx_test_seconds", "A test histogram.", { 0.1, 1 })
    local c = telemetry.series("hx_test_total", { route = "/a", status = 200 })
    assert.are.equal(c, telemetry.series("hx_test_total", { status = 200, route = "/a" }))
    local h = telemetry.series("hx_test_seconds", nil)
    assert.is_true(telemetry.bump(c, 1, h, 0.05))
    assert.is_true(telemetry.bump(c, 2))
    telemetry.inc("hx_test_total", { route = "/a", status = 200 })
    local text = telemetry.render()
    assert.truthy(text:find('\nhx_test_total{route="/a",status="200"} 4\n', 1, true), text)
    assert.truthy(text:find('\nhx_test_seconds_bucket{le="0.1"} 1\n', 1, true), text)
    assert.has_error(function() telemetry.bump(c, -1) end)
    assert.has_error(function() telemetry.series("hx_undeclared", nil) end)
    telemetry.reset()
    telemetry.counter("hx_test_total", "A test counter.")
    assert.is_false(telemetry.bump(c, 1)) -- stale: nothing bumped
    assert.is_nil(telemetry.render():find("hx_test_total{", 1, true))
    -- the dispatcher's counts go on after a reset (the slow way, then new
    -- handles); in a process of its own: prometheus declares its families
    -- once per state, and the specs after this one need them declared
    local r = require("horcrux.proc").run({ "lua5.4", "-e", [[
      local telemetry = require "horcrux.telemetry"
      local prometheus = require "horcrux.prometheus"
      local function families()
        telemetry.counter("horcrux_http_requests_total", "x")
        telemetry.histogram("horcrux_http_request_duration_seconds", "x", { 1 })
      end
      prometheus.request("/x", "GET", 200, 0.01)
      telemetry.reset()
      families()
      prometheus.request("/x", "GET", 200, 0.01)
      prometheus.request("/x", "GET", 200, 0.01)
      io.write(telemetry.render())
    ]] }, { env = { "LUA_PATH=" .. package.path, "LUA_CPATH=" .. package.cpath,
      "PATH=" .. os.getenv("PATH") } })
    assert.are.equal(0, r.status, r.stderr)
    assert.truthy(r.stdout:find(
      'horcrux_http_requests_total{method="GET",route="/x",status="200"} 2\n', 1, true), r.stdout)
  end)

  it("answers text or OpenMetrics as Accept says, gzip as Accept-Encoding allows", function()
    local _, body, h = prometheus.answer({ headers = {} })
    assert.matches("^text/plain; version=0.0.4", h["Content-Type"])
    assert.is_nil(h["Content-Encoding"])
    assert.falsy(body:find("# EOF", 1, true))
    _, body, h = prometheus.answer({ headers = {
      accept = "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
      ["accept-encoding"] = "gzip, deflate" } })
    assert.matches("^application/openmetrics%-text; version=1.0.0", h["Content-Type"])
    assert.equal("gzip", h["Content-Encoding"])
    assert.equal("\31\139", body:sub(1, 2))
    assert.is_false(prometheus.accepts("gzip;q=0", "gzip"))
    assert.is_true(prometheus.accepts("br, GZIP;q=0.5", "gzip"))
  end)

  it("gzips what gunzip reads back", function()
    local text = ("container_x 1\n"):rep(1000)
    local path = os.tmpname()
    local f = assert(io.open(path, "wb"))
    f:write(telemetry.gzip(text))
    f:close()
    local p = assert(io.popen("gunzip -c < " .. path))
    local back = p:read("a")
    p:close()
    os.remove(path)
    assert.equal(text, back)
  end)
end)

describe("the history", function()
  before_each(function()
    view.clear()
    view.set_limits({ history = 900, history_gap_ms = 500 })
  end)
  after_each(function()
    view.clear()
  end)

  it("answers a point a step, rates from counters, a summary of its points", function()
    local id = id_of(9)
    view.set_meta(id, { name = "h", status = "running" })
    local now = clock.mono_ns() - 1000000000 -- a second ago: every point past
    for i = 90, 0, -1 do
      view.put(id, { cpu_usage_percent = (i % 4) * 10.0,
        memory_usage_bytes = 1000, network_rx_bytes = (90 - i) * 50,
        network_tx_bytes = 0, block_read_bytes = 0, block_write_bytes = 0,
        pids = 1 }, nil, now - i * 1000000000)
    end
    local h = assert(history.of("h", 60, 1))
    assert.equal(id, h.id)
    assert.equal("h", h.name)
    assert.is_true(#h.points >= 59 and #h.points <= 61, #h.points)
    for _, p in ipairs(h.points) do
      assert.is_true(math.abs(p.network_rx_bytes_per_second - 50) < 0.01)
      assert.equal(1000, p.memory_working_set_bytes)
    end
    local s = h.summary.cpu_percent
    assert.equal(#h.points, s.count)
    assert.equal(0, s.min)
    assert.equal(30, s.max)
    assert.equal(30, s.p99)
    -- coarser steps: the mean of the rounds in each
    local h10 = assert(history.of("h", 60, 10))
    assert.is_true(#h10.points >= 6 and #h10.points <= 7, #h10.points)
    assert.is_true(math.abs(h10.summary.cpu_percent.mean - 15) < 2)
    -- a round closer than the gap replaces the last one
    view.put(id, { cpu_usage_percent = 99.0 }, nil, now + 300000000)
    -- and one older than the newest is not history
    view.put(id, { cpu_usage_percent = 77.0 }, nil, now - 5000000000)
    local last = assert(history.of("h", 2, 1)).points
    assert.equal(99, last[#last].cpu_percent)
    assert.equal(null, last[#last].pids)
    -- the summary across containers, and refusals
    local all = history.summary(60)
    assert.equal(1, #all.containers)
    assert.equal(60, all.window_s)
    assert.same({ nil, "step is longer than the window", "bad_request" },
      { history.of("h", 5, 10) })
    assert.equal("not_found", select(3, history.of("nope", 60, 1)))
    assert.is_nil(history.duration("5x"))
    assert.equal(300, history.duration("5m"))
    assert.equal(0.5, history.duration("500ms"))
  end)

  it("keeps counters and memory as they were: large, missing, replaced, resized", function()
    -- the ring keeps a counter as its change from the point before (a
    -- float) and the newest value: rates must come out as they went in
    local id = id_of(11)
    view.set_meta(id, { name = "c", status = "running" })
    local now = clock.mono_ns() - 1000000000
    local big = 5000000000007 -- 5 TB and 7 bytes: past 32 bits, odd
    for i = 60, 0, -1 do
      local k = 60 - i
      local rec = { memory_usage_bytes = big + k, pids = 2,
        block_read_bytes = 3 * k, block_write_bytes = 0 }
      if k < 20 or k > 24 then -- rounds 20-24 have no network figures
        rec.network_rx_bytes = 10000000000 * k -- 10 GB a second: past 2^24
        rec.network_tx_bytes = 123456789 + 7 * k
      end
      view.put(id, rec, nil, now - i * 1000000000)
    end
    local function check(points, upto)
      local rates = 0
      for i = 1, upto or #points do
        local p = points[i]
        assert.is_true(p.memory_working_set_bytes >= big, p.memory_working_set_bytes)
        local rd = p.block_read_bytes_per_second -- null: no point before
        assert.is_true(i == 1 or math.abs(rd - 3) < 1e-6, tostring(rd))
        local rx = p.network_rx_bytes_per_second
        if rx ~= null then
          rates = rates + 1
          assert.is_true(math.abs(rx - 1e10) / 1e10 < 1e-6, rx)
          assert.is_true(math.abs(p.network_tx_bytes_per_second - 7) < 1e-6,
            p.network_tx_bytes_per_second)
        end
      end
      return rates
    end
    local h = view.history(id, { window = 40 * 1000000000, step = 1000000000 })
    local last = h.points[#h.points]
    assert.equal(big + 60, last.memory_working_set_bytes) -- exact
    assert.is_true(check(h.points) >= 30)
    -- a replacing round (closer than the gap) moves the newest value only
    view.put(id, { memory_usage_bytes = big, pids = 2, block_read_bytes = 180,
      block_write_bytes = 0, network_rx_bytes = 600000000000,
      network_tx_bytes = 123456789 + 420 }, nil, now + 200000000)
    h = view.history(id, { window = 40 * 1000000000, step = 1000000000 })
    local fine = view.history(id, { window = 5 * 1000000000, step = 10000000 })
    assert.equal(big, fine.points[#fine.points].memory_working_set_bytes)
    -- (the newest's rates: 1.2 s since the round before it)
    -- A point's time is kept in wall-clock ms, from the monotonic time
    -- given and the clocks' offset read at each put: a step of this VM's
    -- wall clock between two puts, or the offset read across a ms, moves
    -- the 1.2 s by a ms or so (a CI run saw it once), hence 0.5 %.
    local p = fine.points[#fine.points]
    local seen = require("horcrux.json").encode(p)
    assert.is_true(math.abs(p.block_read_bytes_per_second / 2.5 - 1) < 5e-3, seen)
    assert.is_true(math.abs(p.network_rx_bytes_per_second / (1e10 / 1.2) - 1) < 5e-3, seen)
    check(h.points, #h.points - 1)
    -- a smaller ring keeps the newest points, rebuilt the same
    view.set_limits({ history = 20 })
    view.put(id, { memory_usage_bytes = big + 61, pids = 2,
      block_read_bytes = 183, block_write_bytes = 0,
      network_rx_bytes = 610000000000, network_tx_bytes = 123456789 + 427 },
      nil, now + 1000000000)
    h = view.history(id, { window = 60 * 1000000000, step = 1000000000 })
    assert.is_true(#h.points >= 18 and #h.points <= 20, #h.points)
    -- 10 ms steps: the newest point alone in its bucket
    fine = view.history(id, { window = 5 * 1000000000, step = 10000000 })
    assert.equal(big + 61, fine.points[#fine.points].memory_working_set_bytes)
    assert.is_true(check(h.points, #h.points - 2) >= 15)
    view.set_limits({ history = 900 })
  end)

  it("rounds the summary to 3 decimals, as the points are (README)", function()
    local id = id_of(12)
    view.set_meta(id, { name = "r", status = "running" })
    local now = clock.mono_ns() - 1000000000
    -- 7 points: their mean, 87.46471428..., is no figure of 3 decimals
    for i, cpu in ipairs({ 87.1, 87.9, 87.2, 87.8, 87.3, 87.053, 87.9 }) do
      view.put(id, { cpu_usage_percent = cpu, memory_usage_bytes = 1000 + i,
        pids = i }, nil, now - (7 - i) * 1000000000)
    end
    local function rounded(summary)
      for figure, s in pairs(summary) do
        if s ~= null then
          for k, v in pairs(s) do
            assert.equal(math.floor(v * 1000 + 0.5) / 1000, v, figure .. "." .. k)
          end
        end
      end
    end
    local h = assert(history.of("r", 60, 1))
    assert.equal(7, h.summary.cpu_percent.count)
    assert.equal(87.465, h.summary.cpu_percent.mean)
    rounded(h.summary)
    rounded(history.summary(60, 1).containers[1].summary)
  end)

  it("keeps at most the points it was told, oldest dropped", function()
    view.set_limits({ history = 10 })
    local id = id_of(10)
    local now = clock.mono_ns()
    for i = 30, 0, -1 do
      view.put(id, { pids = 30 - i }, nil, now - i * 1000000000)
    end
    local h = view.history(id, { window = 60 * 1000000000, step = 1000000000 })
    assert.equal(10, #h.points)
    assert.equal(21, h.summary.pids.min)
    view.set_limits({ history = 900 })
  end)
end)
