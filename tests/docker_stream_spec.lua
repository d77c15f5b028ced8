-- horcrux.docker streams: c:events() and c:stats_stream() against the real
-- engine and the fake one (tests/mocks/docker_mock.py).
local docker = require "horcrux.docker"
local proc = require "horcrux.proc"
local ds = require "docker_support"
local support = require "support"
local system = require "system"

local MISSING = "unix:///nonexistent/horcrux-test.sock"

-- Calls f and returns its results packed, and the seconds it took.
local function timed(f, ...)
  local t0 = system.monotime()
  local r = table.pack(f(...))
  return r, system.monotime() - t0
end

describe("horcrux.docker streams", function()
  describe("against the engine", function()
    local c
    before_each(function() c = support.docker() end)

    it("events: a filtered stream from `since`, stopped by the callback", function()
      local tag = support.unique_name("events")
      local name = support.unique_name("ev")
      finally(function() support.remove(name) end)
      local since = os.time() - 1
      -- Another process creates, starts and stops a container; the stream
      -- then replays its events from `since`.
      local r = assert(proc.run({ "docker", "run", "--rm", "--name", name,
        "--label", support.label_arg, "--label", "horcrux.test.events=" .. tag,
        support.image, "true" }, { timeout = 60 }))
      assert.are.equal(0, r.status, r.stderr)

      local seen, first = { start = 0, die = 0 }, nil
      local res, took = timed(c.events, c, {
        filters = { type = { "container" }, label = { "horcrux.test.events=" .. tag } },
        since = since, ["until"] = os.time() + 5,
      }, function(ev)
        first = first or ev
        if seen[ev.Action] then
          seen[ev.Action] = seen[ev.Action] + 1
        end
        return ev.Action ~= "die"
      end)
      assert.are.same({ n = 2, true, "stopped" }, res)
      assert.are.equal(1, seen.start)
      assert.are.equal(1, seen.die)
      assert.are.equal("container", first.Type)
      assert.are.equal(tag, first.Actor.Attributes["horcrux.test.events"])
      assert.are.equal(name, first.Actor.Attributes.name)
      assert.is_true(took < 4, "took " .. took)
    end)

    it("events: the daemon ends the stream at `until`", function()
      local n = 0
      local res, took = timed(c.events, c, {
        filters = { label = { "horcrux.test.events=" .. support.unique_name("none") } },
        ["until"] = os.time() + 1,
      }, function() n = n + 1 end)
      assert.are.same({ n = 2, true, "ended" }, res)
      assert.are.equal(0, n)
      assert.is_true(took < 4, "took " .. took)
    end)

    it("events: a bad request is the daemon's bad_request", function()
      local v, msg, kind = c:events({ since = 2000000000, ["until"] = 1000 },
        function() end)
      assert.is_nil(v)
      assert.are.equal("bad_request", kind)
      assert.matches("^docker: `since` time %(2000000000%) cannot be after", msg)
    end)

    it("stats_stream: samples until the callback says stop", function()
      local id = support.run_container { name = "stream" }
      finally(function() support.remove(id) end)
      local samples = {}
      local res, took = timed(c.stats_stream, c, id, { stall = 5 }, function(s)
        samples[#samples + 1] = s
        return #samples < 2
      end)
      assert.are.same({ n = 2, true, "stopped" }, res)
      assert.are.equal(2, #samples)
      for _, s in ipairs(samples) do
        assert.are.equal(id, s.id)
        assert.is_true(s.cpu_stats.cpu_usage.total_usage > 0)
      end
      assert.is_true(took < 5, "took " .. took)
      local v, msg, kind = c:stats_stream("hxtest-no-such-container", function() end)
      assert.is_nil(v)
      assert.are.equal("not_found", kind)
      assert.are.equal("docker: No such container: hxtest-no-such-container", msg)
    end)
  end)

  describe("against a fake engine", function()
    local host, stop
    setup(function() host, stop = ds.mock() end)
    teardown(function() stop() end)

    local function client(opts)
      opts = opts or {}
      opts.host = host
      return assert(docker.connect(opts))
    end

    it("splits lines that curl delivers split or merged", function()
      local c = client { api_version = "1.41" }
      local got = {}
      local ok, how = c:stats_stream("stream-lines", function(v) got[#got + 1] = v end)
      assert.is_true(ok)
      assert.are.equal("ended", how)
      assert.are.equal(5, #got)
      for i = 1, 5 do assert.are.equal(i, got[i].n) end
      assert.are.equal("a\nb", got[2].s)
      c:close()
    end)

    it("events: negotiates, and encodes filters, since and until", function()
      local c = client()
      local got = {}
      local ok, how = c:events({ filters = { label = { "a=b c" } }, since = 1700000000,
        ["until"] = 1700000000.25 }, function(v) got[#got + 1] = v end)
      assert.are.equal("ended", how, ok)
      assert.are.equal(6, #got)
      -- the version negotiated with the mock (its /_ping says 1.99), not
      -- a number written here: the client's maximum, or DOCKER_API_VERSION
      local v = ds.negotiated("1.99")
      assert.are.equal(v, c:api_version())
      local target = got[1].target
      assert.are.equal("/v" .. v .. "/events?", target:sub(1, #v + 10))
      local q = {}
      for k, v in target:gmatch("[?&]([^=]+)=([^&]*)") do q[k] = v end
      assert.are.equal("%7B%22label%22%3A%5B%22a%3Db%20c%22%5D%7D", q.filters)
      assert.are.equal("1700000000", q.since)
      assert.are.equal("1700000000.250000000", q["until"])
      -- Options may be left out, and filters given as JSON text.
      got = {}
      assert(c:events(function(v) got[#got + 1] = v end))
      assert.are.equal("/v" .. v .. "/events", got[1].target)
      got = {}
      assert(c:events({ filters = '{"type":["container"]}', since = "2h" },
        function(v) got[#got + 1] = v end))
      assert.matches("filters=%%7B%%22type%%22", got[1].target)
      assert.matches("since=2h", got[1].target)
      c:close()
    end)

    it("stops when the callback returns false, and only then", function()
      local c = client { api_version = "1.41" }
      local n = 0
      local ok, how = c:stats_stream("stream-lines", nil, function(v)
        n = n + 1
        if v.n == 1 then return nil end -- nil goes on
        if v.n == 2 then return true end
        return false
      end)
      assert.is_true(ok)
      assert.are.equal("stopped", how)
      assert.are.equal(3, n)
      -- The client goes on, on a new connection.
      assert.is_true(c:ping())
      c:close()
    end)

    it("raises the callback's error once curl is done", function()
      local c = client { api_version = "1.41" }
      local n = 0
      assert.has_error(function()
        c:stats_stream("stream-lines", function(v)
          n = n + 1
          if v.n == 2 then error("boom in the callback", 0) end
        end)
      end, "boom in the callback")
      assert.are.equal(2, n)
      local err = { code = 42 } -- any error value comes through
      local ok, e = pcall(c.events, c, {}, function() error(err) end)
      assert.is_false(ok)
      assert.are.equal(err, e)
      assert.is_true(c:ping())
      c:close()
    end)

    it("a stalled stream times out, a slow one does not", function()
      local c = client { api_version = "1.41" }
      local res, took = timed(c.stats_stream, c, "stream-stall", { stall = 1 },
        function() end)
      assert.is_nil(res[1])
      assert.are.equal("timeout", res[3], res[2])
      assert.matches("stall", res[2])
      assert.is_true(took >= 0.9 and took < 3, "took " .. took)
      -- No total timeout: a stream outlives the client's `timeout`.
      local short = client { api_version = "1.41", timeout = 1 }
      local n = 0
      res, took = timed(short.stats_stream, short, "stream-slow", { stall = 1 },
        function() n = n + 1 end)
      assert.are.same({ n = 2, true, "ended" }, res)
      assert.are.equal(6, n)
      assert.is_true(took > 2, "took " .. took)
      c:close()
      short:close()
    end)

    it("caps a line at max_line, and fails on bad JSON", function()
      local c = client { api_version = "1.41" }
      local v, msg, kind = c:stats_stream("stream-long", { max_line = 1000 }, function() end)
      assert.is_nil(v)
      assert.are.equal("limit", kind)
      assert.are.equal("docker: a stream line is longer than max_line (1000 bytes)", msg)
      local got
      assert(c:stats_stream("stream-long", function(s) got = s end))
      assert.are.equal(9998, #got)

      local n = 0
      v, msg, kind = c:stats_stream("stream-badjson", function() n = n + 1 end)
      assert.is_nil(v)
      assert.are.equal("protocol", kind)
      assert.matches("^docker: bad JSON in a stream", msg)
      assert.are.equal(1, n)
      c:close()
    end)

    it("an error reply fails with the daemon's message", function()
      local c = client { api_version = "1.41" }
      local called = false
      local v, msg, kind = c:stats_stream("nothing-here", function() called = true end)
      assert.is_nil(v)
      assert.are.equal("not_found", kind)
      assert.are.equal("docker: no such route: /nothing-here", msg)
      v, msg, kind = c:stats_stream("error500", function() called = true end)
      assert.are.equal("server", kind)
      assert.are.equal("docker: boom: disk on fire", msg)
      assert.is_false(called)
      c:close()
    end)

    it("misuse raises; a bad ref or a dead daemon fails", function()
      local c = client { api_version = "1.41" }
      local cb = function() end
      assert.has_error(function() c:events({ stall = -1 }, cb) end)
      assert.has_error(function() c:events({ max_line = 0 }, cb) end)
      assert.has_error(function() c:events({ filters = 5 }, cb) end)
      assert.has_error(function() c:events({ since = {} }, cb) end)
      assert.has_error(function() c:events({ since = 0 / 0 }, cb) end)
      assert.has_error(function() c:events({}) end)
      assert.has_error(function() c:events("x", cb) end)
      assert.has_error(function() c:stats_stream(nil, cb) end)
      assert.has_error(function() c:stats_stream("abc", {}) end)
      local v, msg, kind = c:stats_stream("../images/create", cb)
      assert.is_nil(v)
      assert.are.equal("bad_request", kind)
      assert.matches("^docker: invalid container name or id", msg)
      c:close()
      for _, api in ipairs { "1.41", false } do
        local dead = assert(docker.connect { host = MISSING, api_version = api or nil })
        v, msg, kind = dead:events({}, cb)
        assert.is_nil(v)
        assert.are.equal("unavailable", kind)
        assert.matches("cannot connect", msg)
        dead:close()
      end
    end)
  end)
end)
