-- horcrux.docker's circuit breaker (core/docker_breaker.c): what a process
-- remembers of a daemon that does not answer. Against the mock daemon on a
-- real socket, held unanswered (--hang-file) as a daemon stopped with
-- SIGSTOP and answered again as one continued, and against a socket that
-- nothing listens on. Each test has a daemon (a host) of its own: the
-- breaker is the process's, shared by every client of a host.
local docker = require "horcrux.docker"
local clock = require "horcrux.clock"
local ds = require "docker_support"

local pack = table.pack

local function timed(f, ...)
  local t0 = clock.mono_ns()
  local r = pack(f(...))
  return r, (clock.mono_ns() - t0) / 1e9
end

-- Sleeps until the breaker of host lets its next probe through.
local function until_probe(host)
  local b = docker.breaker(host)
  clock.sleep((b.next_probe_in or 0) + 0.05)
end

local function pattern(s)
  return (s:gsub("[%p]", "%%%0"))
end

-- Calls fn with a client of the same daemon that waits 10 s: where a spec
-- needs an answer, 0.3 s (the short client's, for the timeouts) is too
-- little for a sanitizer build's mock on a loaded machine, and a timeout is
-- no answer. The breaker is the daemon's, shared by both.
local function patient(host, fn)
  local p = assert(docker.connect { host = host, api_version = "1.41",
    timeout = 10 })
  local r = table.pack(fn(p))
  p:close()
  return table.unpack(r, 1, r.n)
end

describe("the breaker of a daemon", function()
  local host, stop, hang, c

  before_each(function()
    host, stop, hang = ds.mock { hang = true }
    c = assert(docker.connect { host = host, api_version = "1.41",
      timeout = 0.3 })
  end)

  after_each(function()
    hang(false)
    c:close()
    stop()
  end)

  -- Three calls in a row that get no answer.
  local function open_it()
    hang(true)
    for _ = 1, 3 do
      local r = pack(c:inspect("x"))
      assert.are.equal("timeout", r[3], r[2])
    end
    assert.are.equal("open", docker.breaker(host).state)
  end

  it("opens after three calls in a row get no answer; then every call "
    .. "fails at once, saying why and when it asks again", function()
      hang(true)
      for i = 1, 3 do
        local r, took = timed(c.inspect, c, "x")
        assert.are.equal("timeout", r[3], r[2])
        assert.is_true(took >= 0.25 and took < 2, took)
        local b = docker.breaker(host)
        assert.are.equal(i, b.failures)
        assert.are.equal(i < 3 and "closed" or "open", b.state)
      end
      local b = docker.breaker(host)
      assert.are.equal("timeout", b.last_kind)
      assert.matches("Operation timed out", b.last_error)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$",
        b.next_probe)
      assert.is_true(b.next_probe_in > 0.5 and b.next_probe_in <= 1, b.next_probe_in)
      local r, took = timed(c.inspect, c, "x")
      assert.is_nil(r[1])
      assert.are.equal("unavailable", r[3])
      assert.is_true(took < 0.05, took)
      assert.matches("^docker: the daemon at " .. pattern(host)
        .. " did not answer 3 times %(last: timeout after 0%.3 s%); not "
        .. "asked again before %d%d:%d%d:%d%d UTC$", r[2])
      assert.are.equal(r[2], b.message)
      local ok, msg, kind = c:admit()
      assert.is_nil(ok)
      assert.are.equal("unavailable", kind)
      assert.are.equal(r[2], msg)
    end)

  it("lets one probe through after the back-off; its answer closes it",
    function()
      open_it()
      hang(false) -- the daemon is back, but nobody has asked yet
      local r = pack(c:call("GET", "/echo"))
      assert.are.equal("unavailable", r[3], r[2])
      until_probe(host)
      r = pack(patient(host, function(p) return p:call("GET", "/echo") end))
      assert.are.equal(200, r[2], tostring(r[2]))
      local b = docker.breaker(host)
      assert.are.equal("closed", b.state)
      assert.are.equal(0, b.failures)
      assert.is_nil(b.next_probe)
      assert.are.equal(1, b.opened_count)
    end)

  it("opens again for twice as long when the probe gets no answer, up to "
    .. "2 s", function()
      open_it()
      for _, want in ipairs { 2, 2, 2 } do
        until_probe(host)
        local r, took = timed(c.inspect, c, "x")
        assert.are.equal("unavailable", r[3], r[2])
        assert.is_true(took >= 0.9 and took < 2, took) -- the probe's 1 s
        assert.matches("not asked again before", r[2])
        local b = docker.breaker(host)
        assert.are.equal("open", b.state)
        assert.is_true(b.next_probe_in > want - 0.3
          and b.next_probe_in <= want, want .. " " .. b.next_probe_in)
      end
    end)

  it("opens at once on a stall: a timeout of 1.5 s or more while the daemon "
    .. "answered nobody", function()
      local slow = assert(docker.connect { host = host, api_version = "1.41",
        timeout = 1.7 })
      hang(true)
      local r = pack(slow:inspect("x"))
      slow:close()
      assert.are.equal("timeout", r[3], r[2])
      local b = docker.breaker(host)
      assert.are.equal("open", b.state)
      assert.are.equal(1, b.failures)
      -- The message gives the time the call really waited: 1.7 s, or a
      -- little more on a loaded machine (the CI run saw 1.8).
      local waited = tonumber(b.message:match(
        "did not answer once %(last: timeout after (%d+%.%d) s%)"))
      assert.is_truthy(waited, b.message)
      assert.is_true(waited >= 1.7 and waited < 3, b.message)
    end)

  it("counts a long timeout as one failure while the daemon answers others",
    function()
      -- One batch: /stall is never answered, /echo at once.
      local slow = assert(docker.connect { host = host, api_version = "1.41",
        timeout = 1.7 })
      local res = slow:stats_many { "stall", "echo" }
      slow:close()
      assert.are.equal("timeout", res[1].kind, res[1].error)
      assert.is_table(res[2].value, res[2].error)
      local b = docker.breaker(host)
      assert.are.equal("closed", b.state)
      assert.are.equal(1, b.failures)
    end)

  it("counts failures in a row: any answer, even a 500, resets the count",
    function()
      hang(true)
      c:inspect("x")
      c:inspect("x")
      assert.are.equal(2, docker.breaker(host).failures)
      hang(false)
      local r = pack(patient(host, function(p) return p:call("GET", "/status/500") end))
      assert.are.equal("server", r[3], r[2])
      assert.are.equal(0, docker.breaker(host).failures)
      hang(true)
      c:inspect("x")
      c:inspect("x")
      assert.are.equal("closed", docker.breaker(host).state)
    end)

  it("is shared by every client of the daemon in the process; a client "
    .. "connected with breaker = false ignores it", function()
      open_it()
      hang(false)
      local other = assert(docker.connect { host = host })
      local r, took = timed(other.ping, other)
      assert.are.equal("unavailable", r[3], r[2])
      assert.is_true(took < 0.05, took)
      assert.are.equal("open", other:breaker().state)
      other:close()
      local free = assert(docker.connect { host = host, breaker = false })
      assert.is_true(free:ping())
      assert.is_nil(free:breaker())
      assert.is_true(free:admit())
      free:close()
      -- Its answer is not the probe: the breaker stays open.
      assert.are.equal("open", docker.breaker(host).state)
    end)

  it("refuses stats_many and the streams at once too, and lets a batch "
    .. "probe", function()
      open_it()
      local r, took = timed(c.stats_many, c, { "a", "b" })
      assert.is_true(took < 0.05, took)
      assert.are.equal("unavailable", r[1][1].kind)
      assert.are.equal("unavailable", r[1][2].kind)
      assert.matches("did not answer 3 times", r[1][2].error)
      r, took = timed(c.events, c, { ["until"] = 1 }, function() end)
      assert.is_true(took < 0.05, took)
      assert.are.equal("unavailable", r[3], r[2])
      hang(false)
      until_probe(host)
      r = patient(host, function(p) return p:stats_many { "a", "echo" } end)
      assert.are.equal("not_found", r[1].kind, r[1].error) -- answered
      assert.is_table(r[2].value)
      assert.are.equal("closed", docker.breaker(host).state)
    end)
end)

describe("the breaker of a socket nothing listens on", function()
  it("opens after three refused connections and probes again every second: "
    .. "a probe refused at once costs nothing", function()
      local dir = os.tmpname()
      local host = "unix://" .. dir .. ".sock"
      os.remove(dir)
      local c = assert(docker.connect { host = host, api_version = "1.41" })
      for _ = 1, 3 do
        local r = pack(c:inspect("x"))
        assert.are.equal("unavailable", r[3], r[2])
        assert.matches("cannot connect", r[2])
      end
      local b = docker.breaker(host)
      assert.are.equal("open", b.state)
      assert.matches("did not answer 3 times %(last: cannot connect to "
        .. pattern(host), b.message)
      for _ = 1, 2 do
        until_probe(host)
        local r, took = timed(c.inspect, c, "x")
        assert.are.equal("unavailable", r[3], r[2])
        assert.is_true(took < 0.1, took)
        b = docker.breaker(host)
        assert.is_true(b.next_probe_in > 0.8 and b.next_probe_in <= 1,
          b.next_probe_in)
      end
      c:close()
    end)

  it("docker.breaker(host) of a daemon nobody asked: closed", function()
    local b = docker.breaker("unix:///nonexistent/never-asked.sock")
    assert.are.same({ host = "unix:///nonexistent/never-asked.sock",
      state = "closed", failures = 0, opened_count = 0 }, b)
  end)
end)
