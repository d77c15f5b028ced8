-- horcrux.view.sample() against the real engine: its figures beside the
-- Engine API's for the same containers at the same moment (the bounds of
-- tests/sources_spec.lua: CPU ns 2 %, memory 2 %, network 1 %, PIDs equal),
-- a busy loop's CPU % beside the kernel's own accounting of the process,
-- a paused container, a stopped one, a restarted one, and what a round
-- costs a container beside its peers in the same run (the Lua cgroup
-- source, the C reader opening its files each time).
--
-- HORCRUX_VIEW_SAMPLE_N (default 10) idle containers are started for the
-- cost; the README's figures for 1, 100 and 1,000 came from this spec.
local support = require "support"
local view = require "horcrux.view"
local cpu = require "horcrux.cpu"
local cgroup = require "horcrux.cgroup"
local clock = require "horcrux.clock"
local stats = require "horcrux.stats"
local time = require "horcrux.time"
local json = require "horcrux.json"
local cg_source = require "horcrux.sources.cgroup"

local null = json.null
local BUSY = support.BUSY

local function near(a, b, rel, what)
  assert.is_number(a, what)
  assert.is_number(b, what)
  local d = math.abs(a - b)
  assert(d <= rel * math.abs(b), ("%s: %s vs %s, off by %.3f%% (allowed %.1f%%)")
    :format(what, tostring(a), tostring(b), b ~= 0 and d / math.abs(b) * 100 or 1 / 0,
      rel * 100))
end

-- CPU ns the kernel charged to a process (utime + stime, 10 ms ticks).
local function proc_cpu_ns(pid)
  local f = assert(io.open("/proc/" .. pid .. "/stat"))
  local s = f:read("a")
  f:close()
  local fields = {}
  for w in s:match("%) (.*)$"):gmatch("%S+") do
    fields[#fields + 1] = w
  end
  return (tonumber(fields[12]) + tonumber(fields[13])) * 10000000
end

local function running(id, name)
  view.set_meta(id, { id = id:sub(1, 12), name = name, status = "running" })
end

-- A sample round and the view's record of id.
local function sampled(id)
  local s = view.sample()
  return s, (view.get(id))
end

local function median(t)
  table.sort(t)
  return t[(#t + 1) // 2]
end

describe("view.sample on the real engine #docker", function()
  local busy, idle, busy_name, idle_name

  setup(function()
    support.docker()
    busy, busy_name = support.run_container { name = "vs-busy", cmd = BUSY }
    idle, idle_name = support.run_container { name = "vs-idle" }
  end)

  teardown(function()
    if busy then support.remove(busy) end
    if idle then support.remove(idle) end
    view.clear()
    cpu.clear()
  end)

  before_each(function()
    view.clear()
    cpu.clear()
    running(busy, busy_name)
    running(idle, idle_name)
  end)

  it("agrees with the Engine API: CPU ns 2 %, memory 2 %, network 1 %, PIDs", function()
    local c = support.docker()
    for _, id in ipairs({ busy, idle }) do
      -- The daemon reads the cgroup at its own tick within the request:
      -- sample before and after, and put the CPU counter at the daemon's
      -- `read` in between (tests/sources_spec.lua does the same).
      local before, raw, after, f
      for _ = 1, 5 do
        before = select(2, sampled(id))
        raw = assert(c:stats(id))
        after = select(2, sampled(id))
        local t0, t1 = time.parse(before.read), time.parse(after.read)
        f = (time.parse(raw.read) - t0) / (t1 - t0)
        if f > -0.05 and f < 1.05 then break end
      end
      assert.is_true(f > -0.05 and f < 1.05, "daemon read outside: " .. f)
      local api = stats.record_from_api(raw, nil)
      local cpu_at = before.cpu_usage_ns + f * (after.cpu_usage_ns - before.cpu_usage_ns)
      near(api.cpu_usage_ns, cpu_at, 0.02, "cpu ns")
      near(after.memory_usage_bytes, api.memory_usage_bytes, 0.02, "memory used")
      assert.equal(api.memory_limit_bytes, after.memory_limit_bytes)
      near(after.memory_percent, api.memory_percent, 0.02, "memory %")
      for _, k in ipairs({ "network_rx_bytes", "network_tx_bytes" }) do
        assert.is_true(api[k] >= before[k] * 0.99 and api[k] <= after[k] * 1.01,
          ("%s: api %d outside [%d, %d]"):format(k, api[k], before[k], after[k]))
        near(after[k], api[k], 0.01, k)
      end
      assert.equal(api.block_read_bytes, after.block_read_bytes)
      assert.equal(api.block_write_bytes, after.block_write_bytes)
      assert.equal(api.pids, after.pids)
      assert.equal(api.online_cpus, after.online_cpus)
      assert.equal("cgroup", after.source)
      print(("\nview.sample agreement %s: cpu ns api %d view %.0f (%.3f%%), memory "
        .. "api %d view %d, rx api %d view %d, pids %d/%d"):format(
        id == busy and "busy" or "idle", api.cpu_usage_ns, cpu_at,
        math.abs(api.cpu_usage_ns - cpu_at) / cpu_at * 100, api.memory_usage_bytes,
        after.memory_usage_bytes, api.network_rx_bytes, after.network_rx_bytes,
        api.pids, after.pids))
    end
  end)

  it("reads the network from the host's end of the veth as net/dev says it", function()
    -- the first round reads net/dev and finds the host's end, the next
    -- read the host's links (one dump for every container)
    local s = view.sample()
    local fds = s.fds
    s = view.sample()
    assert.equal(2, s.netlink)
    assert.equal(2, s.sampled)
    local a, b
    for _ = 1, 3 do -- an idle container's counters move seldom: retried
      a = view.get(idle)
      s = view.sample({ netlink = false })
      assert.equal(0, s.netlink)
      b = view.get(idle)
      if a.network_rx_bytes == b.network_rx_bytes
          and a.network_tx_bytes == b.network_tx_bytes then
        break
      end
      view.sample()
    end
    assert.is_true(b.network_rx_bytes > 0, "no traffic at all")
    assert.equal(b.network_rx_bytes, a.network_rx_bytes)
    assert.equal(b.network_tx_bytes, a.network_tx_bytes)
    assert.same(b.networks, a.networks)
    -- net/dev kept again while off: a descriptor more a container
    assert.equal(fds + 2, s.fds)
    s = view.sample() -- net/dev again, and the host's end found again
    assert.equal(fds, s.fds)
    assert.equal(2, view.sample().netlink)
  end)

  it("gives a busy loop's CPU % as the kernel accounts it, idle under 5", function()
    local window = cpu.set_window(1000)
    finally(function() cpu.set_window(window) end)
    local pid = assert(cgroup.stats(busy)).pid
    view.sample()
    local t0, p0 = clock.mono_ns(), proc_cpu_ns(pid)
    clock.sleep(1.1)
    local s, rec = sampled(busy)
    local t1, p1 = clock.mono_ns(), proc_cpu_ns(pid)
    assert.equal(2, s.sampled)
    local ref = (p1 - p0) / (t1 - t0) * 100
    print(("\nview.sample: busy loop %.1f %% (its own ticks say %.1f %%)")
      :format(rec.cpu_usage_percent, ref))
    assert.is_true(math.abs(rec.cpu_usage_percent - ref) <= 10,
      rec.cpu_usage_percent .. " vs " .. ref)
    assert.is_true(rec.cpu_usage_percent <= 103, rec.cpu_usage_percent)
    local irec = view.get(idle)
    assert.is_number(irec.cpu_usage_percent)
    assert.is_true(irec.cpu_usage_percent < 5, irec.cpu_usage_percent)
  end)

  it("shows a paused container as paused, a stopped one as gone, a restart found again", function()
    local c = support.docker()
    local id, name = support.run_container { name = "vs-life" }
    finally(function() support.remove(id) end)
    view.clear()
    running(id, name)
    local s, rec = sampled(id)
    assert.equal(1, s.sampled)
    local fds = s.fds
    assert.is_true(fds >= 8, fds)
    assert.equal(204, (support.pause(id)))
    -- a caller that learns pauses from events (freezer = false) has the
    -- freezer read only with the seldom-read figures: sampled, at 0 % CPU
    s = view.sample({ freezer = false })
    assert.same({}, s.paused)
    assert.equal(1, s.sampled)
    rec = view.get(id)
    s = view.sample()
    assert.same({ id }, s.paused)
    assert.equal(0, s.sampled)
    assert.equal(rec.read, (view.get(id)).read) -- its last figures stay
    assert.equal(204, (c:request("POST", "/containers/" .. id .. "/unpause")))
    view.sample()
    clock.sleep(cpu.window() / 1000 + 0.05) -- a base for the CPU %
    view.sample()
    local before = view.get(id)
    assert.is_number(before.cpu_usage_percent)
    local pid = assert(cgroup.stats(id)).pid
    assert.equal(204, (c:request("POST", "/containers/" .. id .. "/restart", { t = 0 })))
    s, rec = sampled(id)
    assert.equal(1, s.sampled)
    assert.equal(fds, s.fds)
    assert.not_equal(pid, assert(cgroup.stats(id)).pid)
    -- a new cgroup: the CPU window starts again, whatever the counter says
    assert.equal(null, rec.cpu_usage_percent)
    assert.is_true(rec.pids >= 1)
    assert.equal(204, (c:request("POST", "/containers/" .. id .. "/stop", { t = 0 })))
    s = view.sample()
    assert.same({ id }, s.gone)
    assert.equal(0, s.fds) -- what it kept for it is closed
    view.remove(id)
  end)

  it("costs a fraction of its peers' CPU a container a round", function()
    local n = tonumber(os.getenv("HORCRUX_VIEW_SAMPLE_N")) or 10
    local ids, limits = { busy, idle }, nil
    finally(function()
      for i = 3, #ids do support.remove(ids[i]) end
      if limits then view.set_limits(limits) end
    end)
    for i = 1, n - 2 do
      ids[#ids + 1] = support.run_container { name = "vs-cost" .. i }
    end
    limits = view.set_limits({ max_fds = #ids * 17 })
    for _, id in ipairs(ids) do running(id, "c") end
    local s = view.sample()
    assert.equal(#ids, s.sampled)
    -- peers: the Lua cgroup source's sample_many (what the collector ran),
    -- and the C reader's h:stats(), which opens its files every time
    local handles = {}
    for _, id in ipairs(ids) do handles[#handles + 1] = assert(cgroup.open(id)) end
    local rounds = math.max(5, math.min(200, 4000 // #ids))
    local v_us, src_us, h_us, into = {}, {}, {}, {}
    for r = 1, rounds do
      s = view.sample()
      assert.equal(#ids, s.sampled)
      v_us[r] = s.us / #ids
      local c0 = os.clock()
      local recs = cg_source.sample_many(ids)
      src_us[r] = (os.clock() - c0) * 1e6 / #ids
      assert.is_table(recs[ids[#ids]])
      c0 = os.clock()
      for _, h in ipairs(handles) do assert(h:stats(into)) end
      h_us[r] = (os.clock() - c0) * 1e6 / #ids
    end
    for _, h in ipairs(handles) do h:close() end
    local vm, sm, hm = median(v_us), median(src_us), median(h_us)
    print(("\nview.sample, %d containers, %d rounds: %.1f us CPU a container "
      .. "(%.1f..%.1f), %d descriptors kept; peers: Lua cgroup source %.1f us "
      .. "(%.1f..%.1f), h:stats() %.1f us (%.1f..%.1f); ratio %.2f and %.2f")
      :format(#ids, rounds, vm, v_us[1], v_us[#v_us], s.fds, sm, src_us[1],
        src_us[#src_us], hm, h_us[1], h_us[#h_us], vm / sm, vm / hm))
    -- The target is the product's: under the sanitizers the C that is timed
    -- is instrumented (the peers' ratios still hold).
    -- Issue 9's target is 50 us a container on a quiet machine; the figures
    -- of issue 11 (per-CPU, user/system, throttling, OOM, processes, PSI:
    -- 17 files a container where there were 10) brought it to 57-63 us on
    -- a loaded one (40-47 before, same load); read every 10 s since (10
    -- files a round), it measured 62.6-65.6 against 94.7-97.6 at load 8-16
    -- (README, "The collector and the view"). Here, what holds under any
    -- load: a fraction of its peers, read in the same run.
    assert.is_true(vm < sm / 2, vm .. " vs " .. sm)
    assert.is_true(vm < hm / 2, vm .. " vs " .. hm)
    assert.is_true(vm < hm, vm .. " vs " .. hm)
  end)
end)
