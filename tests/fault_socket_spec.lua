-- Fault: the daemon's socket goes away while its containers keep running
-- (a private dockerd, tests/daemon.lua, stopped with live restore). The
-- stats routes must go on answering, at once, from the next source in the
-- order (the cgroup source reads the kernel's counters of the containers
-- that still run), and come back to the daemon when it returns.
local http = require "http"
local support = require "support"
local daemon = require "daemon"
local clock = require "horcrux.clock"

local PATH = "PATH=" .. os.getenv("PATH")

local function get(url)
  local t0 = clock.mono_ns()
  local r = assert(http.get(url, { timeout = 15 }))
  return r, (clock.mono_ns() - t0) / 1e9
end

-- id -> record of GET /api/stats
local function stats(srv)
  local r, secs = get(srv.url .. "/api/stats")
  local by = {}
  if r.status == 200 and type(r.json) == "table" then
    for _, rec in ipairs(r.json) do
      by[rec.id] = rec
    end
  end
  return by, r, secs
end

-- Polls until want(stats) holds; the seconds it took, or nil after limit.
local function until_stats(srv, want, limit)
  local t0 = clock.mono_ns()
  repeat
    if want(stats(srv)) then
      return (clock.mono_ns() - t0) / 1e9
    end
    clock.sleep(0.1)
  until clock.mono_ns() - t0 > limit * 1e9
end

describe("fault: the daemon's socket goes away", function()
  local d, srv, ids

  setup(function()
    local ok, why = daemon.available()
    assert(ok, why)
    d = daemon.start()
    local ok2, err = pcall(function()
      d:load_image(support.image)
      ids = { d:run { name = "sock" }, d:run { name = "sock" } }
      -- the API first, so the hand-over to the cgroup files and back shows
      -- in each record's source (the shipped order reads cgroups first
      -- whatever the daemon does)
      local dir = http.scripts_dir({ ["fallback.lua"] =
        http.read_file("examples/fallback-api-first.lua") })
      srv = http.start { scripts = dir, args = { "--interval", "0.5" },
        env = { "DOCKER_HOST=" .. d.host, PATH } }
    end)
    if not ok2 then
      d:stop()
      error(err)
    end
  end)

  teardown(function()
    local ok, err = true, nil
    if srv then
      ok, err = pcall(srv.stop, srv)
    end
    if d then
      d:stop()
    end
    assert(ok, err)
  end)

  it("answers stats from the cgroup source at once, and from the daemon "
    .. "when it is back", function()
      local function both(pred)
        return function(by)
          return by[ids[1]] and by[ids[2]] and pred(by[ids[1]])
            and pred(by[ids[2]])
        end
      end
      assert.is_number(until_stats(srv, both(function() return true end), 10),
        "the view never held the containers\n" .. srv:logtext())

      d:down()
      local f = io.open(d.socket)
      assert.is_nil(f, "the socket is still there")
      local took = until_stats(srv, both(function(rec)
        return rec.source == "cgroup"
      end), 10)
      local _, r, secs = stats(srv)
      local one, one_secs = get(srv.url .. "/api/containers/" .. ids[1]
        .. "/stats")
      local health = get(srv.url .. "/healthz")
      print(("\nfault socket: stats from the cgroup source %s s after the "
        .. "daemon went; /api/stats %.3f s, one container's stats %.3f s "
        .. "(%s, source %s); /healthz %s %s"):format(tostring(took), secs,
        one_secs, one.status, one.json and tostring(one.json.source),
        health.status, health.body:sub(1, 200)))
      assert.is_number(took, ("no cgroup records within 10 s: %s %s\n%s")
        :format(r.status, r.body:sub(1, 300), srv:logtext():sub(-2000)))
      assert.is_true(took <= 2, took)
      assert.is_true(secs < 1, secs)
      assert.equal(200, one.status, one.body)
      assert.equal("cgroup", one.json.source)
      assert.is_true(one_secs < 1, one_secs)
      assert.equal(200, health.status)
      assert.equal("degraded", health.json and health.json.status,
        health.body)

      d:up()
      took = until_stats(srv, both(function(rec)
        return rec.source ~= "cgroup"
      end), 10)
      print(("fault socket: back to %s %s s after the daemon answered")
        :format(tostring(stats(srv)[ids[1]] and stats(srv)[ids[1]].source),
          tostring(took)))
      assert.is_number(took, "never back to the daemon")
      assert.is_true(took <= 5, took)
    end)
end)
