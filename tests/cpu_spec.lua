-- horcrux.cpu: CPU-delta arithmetic and the shared sample store.
--
-- Thread safety is by construction and not exercised here (busted runs one
-- Lua state): the store is one process-wide structure, every access takes
-- its mutex, and no Lua call happens while it is held (sample fields are
-- read into C first, results pushed after unlocking).
local cpu = require("horcrux.cpu")

local S = 1000000000 -- ns in a second
local MS = 1000000 -- ns in a millisecond

local function sample(cpu_ns, system_ns, online_cpus, time_ns)
  return {
    cpu_ns = cpu_ns,
    system_ns = system_ns,
    online_cpus = online_cpus,
    time_ns = time_ns,
  }
end

-- Waits at least `ms` of wall time without a clock module: CPU time of this
-- single thread never runs ahead of wall time.
local function wait_ms(ms)
  local t = os.clock()
  while os.clock() - t < ms / 1000 do
  end
end

describe("horcrux.cpu", function()
  local saved_window, saved_limits

  before_each(function()
    cpu.clear()
    saved_window = cpu.set_window(cpu.DEFAULT_WINDOW_MS)
    saved_limits = cpu.set_limits({
      max_containers = cpu.DEFAULT_MAX_CONTAINERS,
      idle_ttl_ms = cpu.DEFAULT_IDLE_TTL_MS,
    })
  end)

  after_each(function()
    cpu.set_window(saved_window)
    cpu.set_limits(saved_limits)
    cpu.clear()
  end)

  it("exposes its constants", function()
    assert.equal(8, cpu.RING)
    assert.equal(128, cpu.ID_MAX)
    assert.equal(1000, cpu.SHORT_WINDOW_MS)
    assert.equal(500, cpu.DEFAULT_WINDOW_MS)
    -- as many as horcrux.view holds: a round evicts nothing it needs next
    assert.equal(10000, cpu.DEFAULT_MAX_CONTAINERS)
    assert.equal(require("horcrux.view").DEFAULT_MAX_CONTAINERS,
      cpu.DEFAULT_MAX_CONTAINERS)
    assert.equal(600000, cpu.DEFAULT_IDLE_TTL_MS)
  end)

  it("gives other C modules its store through cpu.capi", function()
    -- a light userdata (core/cpu_capi.h); horcrux.view's sample() uses it,
    -- tests/view_sample_spec.lua checks that the two share the samples
    assert.equal("userdata", type(cpu.capi))
    assert.is_nil(getmetatable(cpu.capi))
    assert.equal(cpu.capi, require("horcrux.cpu").capi)
  end)

  describe("percent", function()
    it("is docker's formula over a window of 1 s or more", function()
      -- 2 CPUs, Δcpu 1e9 over Δsystem 2e9: one full core
      local p = cpu.percent(sample(0, 0, 2, 0), sample(S, 2 * S, 2, S))
      assert.equal(100.0, p)
      assert.equal("float", math.type(p))
      -- 2 s on 2 CPUs, the system counter one tick short: the system
      -- counter is used, not the timestamps (which would say 50)
      p = cpu.percent(sample(0, 0, 2, 0), sample(S, 3990 * MS, 2, 2 * S))
      assert.equal(S / (3990 * MS) * 2 * 100, p)
    end)

    it("uses the timestamps below 1 s", function()
      -- 250 ms on 2 CPUs: Δsystem 510 ms (a tick too many) would say
      -- 49.02 %; the timestamps say the true 50 %
      local p = cpu.percent(sample(S, 0, 2, 0),
        sample(S + 125 * MS, 510 * MS, 2, 250 * MS))
      assert.equal(50.0, p)
      -- 999 ms is still short
      p = cpu.percent(sample(0, 0, 1, 0), sample(999 * MS, 900 * MS, 1, 999 * MS))
      assert.equal(100.0, p)
    end)

    it("uses the timestamps when the system counter or CPU count is missing", function()
      assert.equal(25.0, cpu.percent(sample(0, nil, 4, 0), sample(S, nil, 4, 4 * S)))
      assert.equal(25.0, cpu.percent(sample(0, 0, 4, 0), sample(S, nil, 4, 4 * S)))
      assert.equal(25.0, cpu.percent(sample(0, 0, nil, 0), sample(S, S, nil, 4 * S)))
      -- the system counter did not move in 4 s: not usable
      assert.equal(25.0, cpu.percent(sample(0, 7, 4, 0), sample(S, 7, 4, 4 * S)))
    end)

    it("takes the CPU count of the current sample, else of the previous", function()
      -- Δcpu 1e9, Δsys 4e9: × 4 CPUs = 100, × 2 CPUs = 50
      assert.equal(100.0, cpu.percent(sample(0, 0, 2, 0), sample(S, 4 * S, 4, S)))
      assert.equal(50.0, cpu.percent(sample(0, 0, 2, 0), sample(S, 4 * S, nil, S)))
    end)

    it("gives 0 for an idle container, not nil", function()
      local p, why = cpu.percent(sample(5, 0, 2, 0), sample(5, 2 * S, 2, S))
      assert.equal(0.0, p)
      assert.is_nil(why)
      assert.equal(0.0, cpu.percent(sample(5, 0, 2, 0), sample(5, 0, 2, MS)))
    end)

    it("refuses a zero or negative Δtime", function()
      assert.same({ nil, "clock" },
        { cpu.percent(sample(0, 0, 2, S), sample(0, 0, 2, S)) })
      assert.same({ nil, "clock" },
        { cpu.percent(sample(0, 0, 2, 2 * S), sample(S, 2 * S, 2, S)) })
    end)

    it("reports a counter that went backwards as a reset", function()
      assert.same({ nil, "reset" },
        { cpu.percent(sample(5 * S, 0, 2, 0), sample(S, 2 * S, 2, S)) })
      assert.same({ nil, "reset" },
        { cpu.percent(sample(0, 9 * S, 2, 0), sample(S, 2 * S, 2, S)) })
    end)

    it("clamps noise above all CPUs, refuses inconsistent samples", function()
      -- 2 CPUs: 205 % is measurement noise, clamped to 200
      assert.equal(200.0, cpu.percent(sample(0, 0, 2, 0), sample(2050 * MS, 2 * S, 2, S)))
      -- 220 % is the edge of the tolerance (10 %)
      assert.equal(200.0, cpu.percent(sample(0, 0, 2, 0), sample(2200 * MS, 2 * S, 2, S)))
      -- 300 % cannot be: no made-up number
      assert.same({ nil, "range" },
        { cpu.percent(sample(0, 0, 2, 0), sample(3 * S, 2 * S, 2, S)) })
      assert.same({ nil, "range" },
        { cpu.percent(sample(0, 0, 1, 0), sample(500 * MS, 0, 1, 100 * MS)) })
      -- without a CPU count there is no bound
      assert.equal(500.0, cpu.percent(sample(0, nil, nil, 0), sample(5 * S, nil, nil, S)))
    end)

    it("handles counters near 2^63", function()
      local big = math.maxinteger - 10 * S
      local p = cpu.percent(sample(big, big, 2, big), sample(big + S, big + 2 * S, 2, big + S))
      assert.equal(100.0, p)
    end)

    it("raises on misuse", function()
      local ok = sample(0, 0, 2, 0)
      assert.has_error(function() cpu.percent(nil, ok) end)
      assert.has_error(function() cpu.percent(ok, "x") end)
      assert.has_error(function() cpu.percent({ time_ns = 0 }, ok) end, "sample field 'cpu_ns': integer expected, got nil")
      assert.has_error(function() cpu.percent({ cpu_ns = 0 }, ok) end, "sample field 'time_ns': integer expected, got nil")
      assert.has_error(function() cpu.percent(sample(1.5, 0, 2, 0), ok) end, "sample field 'cpu_ns': integer expected, got non-integral number")
      assert.has_error(function() cpu.percent(sample("1", 0, 2, 0), ok) end)
      assert.has_error(function() cpu.percent(sample(-1, 0, 2, 0), ok) end, "sample field 'cpu_ns': -1 below 0")
      assert.has_error(function() cpu.percent(sample(0, -1, 2, 0), ok) end)
      assert.has_error(function() cpu.percent(sample(0, 0, -2, 0), ok) end)
      assert.has_error(function() cpu.percent(sample(0, 0, 2, -1), ok) end)
      assert.has_error(function() cpu.percent(sample(2 ^ 63, 0, 2, 0), ok) end)
    end)

    it("accepts integral floats and treats online_cpus 0 as unknown", function()
      assert.equal(100.0, cpu.percent(sample(0.0, 0.0, 2.0, 0.0), sample(1e9, 2e9, 2, 1e9)))
      assert.equal(500.0, cpu.percent(sample(0, nil, 0, 0), sample(5 * S, nil, 0, S)))
    end)
  end)

  describe("observe", function()
    it("needs a base at least the window old", function()
      assert.same({ nil, "no_base" }, { cpu.observe("a", sample(0, 0, 2, 0)) })
      -- 400 ms later: younger than the default 500 ms window
      assert.same({ nil, "no_base" },
        { cpu.observe("a", sample(200 * MS, 800 * MS, 2, 400 * MS)) })
      -- 600 ms: the base is the sample at 0 (the one at 400 ms is too young)
      local p, age = cpu.observe("a", sample(300 * MS, 1200 * MS, 2, 600 * MS))
      assert.equal(50.0, p)
      assert.equal(600.0, age)
    end)

    it("takes the newest sample that is at least the window old", function()
      -- one sample every 100 ms; the container's load differs in every
      -- interval, so the base can be told from the result: usage grows by
      -- k ms during interval k
      local used = 0
      for k = 0, 9 do
        used = used + k * MS
        cpu.observe("w", sample(used, nil, 4, k * 100 * MS))
      end
      -- at 1000 ms with used + 10 ms; window 500 ms: base is the 500 ms
      -- sample (used(5) = 15 ms); Δcpu = (45 + 10) - 15 = 40 ms over 500 ms
      local p, age = cpu.observe("w", sample(used + 10 * MS, nil, 4, 1000 * MS))
      assert.equal(40 * MS / (500 * MS) * 100, p)
      assert.equal(500.0, age)
      -- an explicit window of 250 ms: base is at 700 ms (used(7) = 28 ms)
      p, age = cpu.observe("w", sample(used + 10 * MS, nil, 4, 1000 * MS), 250)
      assert.equal(27 * MS / (300 * MS) * 100, p)
      assert.equal(300.0, age)
      -- window 0: the newest older sample (900 ms, used(9) = 45 ms)
      p, age = cpu.observe("w", sample(used + 10 * MS, nil, 4, 1000 * MS), 0)
      assert.equal(10 * MS / (100 * MS) * 100, p)
      assert.equal(100.0, age)
    end)

    it("uses the window set by set_window", function()
      assert.equal(500, cpu.window())
      assert.equal(500, cpu.set_window(2000))
      assert.equal(2000, cpu.window())
      cpu.observe("g", sample(0, 0, 2, 0))
      assert.same({ nil, "no_base" }, { cpu.observe("g", sample(S, 2 * S, 2, S)) })
      local p, age = cpu.observe("g", sample(3 * S, 4 * S, 2, 2 * S))
      assert.equal(3 * S / (4 * S) * 2 * 100, p)
      assert.equal(2000.0, age)
      assert.equal(2000, cpu.set_window(500))
    end)

    it("keeps a ring of the newest samples", function()
      for k = 0, cpu.RING do -- RING + 1 samples, 1 s apart
        cpu.observe("r", sample(k * S, nil, 2, k * S))
      end
      -- the sample at 0 s fell out: the oldest base is 1 s
      local p, age = cpu.observe("r", sample((cpu.RING + 1) * S, nil, 2,
        (cpu.RING + 1) * S), cpu.RING * 1000)
      assert.equal(100.0, p)
      assert.equal(cpu.RING * 1000.0, age)
      assert.same({ nil, "no_base" }, { cpu.observe("r", sample((cpu.RING + 1) * S,
        nil, 2, (cpu.RING + 1) * S), (cpu.RING + 1) * 1000) })
    end)

    it("does not store a sample twice, nor an older one", function()
      cpu.observe("d", sample(0, nil, 1, 0))
      local s = sample(S, nil, 1, 2 * S)
      for _ = 1, 2 * cpu.RING do -- the daemon answers from one tick again and again
        local p, age = cpu.observe("d", s)
        assert.equal(50.0, p)
        assert.equal(2000.0, age)
      end
      -- the base at 0 is still there: the duplicates did not fill the ring
      local p = cpu.observe("d", sample(2 * S, nil, 1, 4 * S), 3000)
      assert.equal(50.0, p)
      -- an older sample gets a figure but is not stored
      p = cpu.observe("d", sample(S // 2, nil, 1, S))
      assert.equal(50.0, p)
      assert.same(sample(2 * S, nil, 1, 4 * S), cpu.latest("d"))
    end)

    it("restarts the window when the counter goes backwards", function()
      cpu.observe("x", sample(10 * S, 100 * S, 2, 0))
      cpu.observe("x", sample(11 * S, 102 * S, 2, S))
      -- restarted: usage back near 0
      assert.same({ nil, "reset" }, { cpu.observe("x", sample(S // 10, 104 * S, 2, 2 * S)) })
      assert.same(sample(S // 10, 104 * S, 2, 2 * S), cpu.latest("x"))
      -- too young for the window, and the pre-restart samples are gone
      assert.same({ nil, "no_base" },
        { cpu.observe("x", sample(S // 10 + S // 5, 104 * S + 4 * S // 10, 2, 2 * S + S // 5)) })
      -- recovered: counted from the samples after the reset
      local p, age = cpu.observe("x", sample(S // 10 + S, 106 * S, 2, 3 * S))
      assert.equal(100.0, p) -- from the one at 2.2 s: 0.8 s busy in 0.8 s
      assert.equal(800.0, age)
      p, age = cpu.observe("x", sample(S // 10 + S, 106 * S, 2, 3 * S), 1000)
      assert.equal(S / (2 * S) * 2 * 100, p) -- from the reset sample at 2 s
      assert.equal(1000.0, age)
    end)

    it("restarts the window when the system counter goes backwards", function()
      cpu.observe("y", sample(S, 100 * S, 2, 0))
      assert.same({ nil, "reset" }, { cpu.observe("y", sample(2 * S, 50 * S, 2, S)) })
    end)

    it("keeps containers apart", function()
      cpu.observe("p", sample(0, nil, 2, 0))
      cpu.observe("q", sample(0, nil, 2, 0))
      assert.equal(100.0, cpu.observe("p", sample(S, nil, 2, S)))
      assert.equal(200.0, cpu.observe("q", sample(2 * S, nil, 2, S)))
      assert.equal(2, cpu.count())
    end)

    it("raises on misuse", function()
      local ok = sample(0, 0, 2, 0)
      assert.has_error(function() cpu.observe(nil, ok) end)
      assert.has_error(function() cpu.observe(42, ok) end)
      assert.has_error(function() cpu.observe("", ok) end)
      assert.has_error(function() cpu.observe(("a"):rep(129), ok) end)
      assert.has_error(function() cpu.observe("a", nil) end)
      assert.has_error(function() cpu.observe("a", { cpu_ns = 0 }) end)
      assert.has_error(function() cpu.observe("a", ok, -1) end)
      assert.has_error(function() cpu.observe("a", ok, 3600001) end)
      assert.has_error(function() cpu.observe("a", ok, 1.5) end)
      assert.equal(0, cpu.count()) -- nothing stored by a call that raised
      assert.same({ nil, "no_base" }, { cpu.observe(("a"):rep(128), ok) })
    end)
  end)

  describe("the store", function()
    it("returns the newest sample with latest", function()
      assert.is_nil(cpu.latest("none"))
      cpu.observe("l", sample(1, 2, 3, 4))
      cpu.observe("l", sample(5, 6, 7, 8))
      assert.same({ cpu_ns = 5, system_ns = 6, online_cpus = 7, time_ns = 8 }, cpu.latest("l"))
      cpu.observe("m", sample(1, nil, nil, 4))
      assert.same({ cpu_ns = 1, time_ns = 4 }, cpu.latest("m"))
      assert.has_error(function() cpu.latest(("a"):rep(129)) end)
    end)

    it("forgets, clears and counts", function()
      cpu.observe("a", sample(0, 0, 1, 0))
      cpu.observe("b", sample(0, 0, 1, 0))
      cpu.observe("c", sample(0, 0, 1, 0))
      assert.equal(3, cpu.count())
      assert.is_true(cpu.forget("b"))
      assert.is_false(cpu.forget("b"))
      assert.is_nil(cpu.latest("b"))
      assert.equal(2, cpu.count())
      assert.equal(2, cpu.clear())
      assert.equal(0, cpu.count())
      assert.equal(0, cpu.clear())
    end)

    it("is bounded, evicting the least recently used", function()
      local old = cpu.set_limits({ max_containers = 3 })
      assert.same({ max_containers = 10000, idle_ttl_ms = 600000 }, old)
      cpu.observe("1", sample(0, 0, 1, 0))
      cpu.observe("2", sample(0, 0, 1, 0))
      cpu.observe("3", sample(0, 0, 1, 0))
      assert.is_table(cpu.latest("1")) -- a use: "2" is now the oldest
      cpu.observe("4", sample(0, 0, 1, 0))
      assert.equal(3, cpu.count())
      assert.is_nil(cpu.latest("2"))
      assert.is_table(cpu.latest("1"))
      assert.is_table(cpu.latest("3"))
      assert.is_table(cpu.latest("4"))
      -- lowering the bound evicts at once
      cpu.set_limits({ max_containers = 1 })
      assert.equal(1, cpu.count())
      assert.is_table(cpu.latest("4"))
    end)

    it("holds at most 10000 containers by default", function()
      for i = 1, 11000 do
        cpu.observe("c" .. i, sample(0, 0, 1, 0))
      end
      assert.equal(10000, cpu.count())
      assert.is_nil(cpu.latest("c1000"))
      assert.is_table(cpu.latest("c1001"))
      assert.is_table(cpu.latest("c11000"))
    end)

    it("evicts entries unused for the idle time", function()
      cpu.set_limits({ idle_ttl_ms = 200 })
      cpu.observe("old", sample(0, 0, 1, 0))
      wait_ms(250)
      cpu.observe("new", sample(0, 0, 1, 0))
      assert.equal(1, cpu.count())
      assert.is_nil(cpu.latest("old"))
      assert.is_table(cpu.latest("new"))
    end)

    it("raises on bad settings", function()
      assert.has_error(function() cpu.set_window(-1) end)
      assert.has_error(function() cpu.set_window(3600001) end)
      assert.has_error(function() cpu.set_window("x") end)
      assert.has_error(function() cpu.set_limits() end)
      assert.has_error(function() cpu.set_limits({ max_containers = 0 }) end)
      assert.has_error(function() cpu.set_limits({ idle_ttl_ms = 0 }) end)
      assert.has_error(function() cpu.set_limits({ max_containers = "x" }) end)
      -- the message names the setting and its range
      assert.error_matches(function() cpu.set_limits({ max_containers = 1048577 }) end,
        "max_containers out of range 1..1048576", nil, true)
      assert.error_matches(function() cpu.set_limits({ idle_ttl_ms = -5 }) end,
        "idle_ttl_ms out of range 1..", nil, true)
      assert.same({ max_containers = 10000, idle_ttl_ms = 600000 }, cpu.set_limits({}))
    end)

    it("is shared by every copy of the module in the process", function()
      cpu.observe("shared", sample(0, 0, 1, 0))
      package.loaded["horcrux.cpu"] = nil
      local again = require("horcrux.cpu")
      package.loaded["horcrux.cpu"] = cpu
      assert.are_not.equal(cpu, again)
      assert.equal(1, again.count())
      assert.is_table(again.latest("shared"))
    end)
  end)
end)
