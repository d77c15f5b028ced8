-- The container routes over HTTP against the real engine: shapes, figures
-- that agree with `docker stats`, errors, and the fallback between sources.
local http = require "http"
local support = require "support"
local proc = require "horcrux.proc"
local clock = require "horcrux.clock"
local cli = require "horcrux.cli"
local json = require "horcrux.json"

local PATH = "PATH=" .. os.getenv("PATH")

-- docker stats --no-stream for one container, in the background, so that it
-- measures the same seconds as the request made meanwhile.
local function docker_stats_async(name)
  local out = os.tmpname()
  local p = assert(proc.spawn({ "docker", "stats", "--no-stream", "--format",
    "{{json .}}", name }, { stdout = out }))
  return function()
    assert(p:wait(20))
    local line = http.read_file(out):match("[^\n]+")
    os.remove(out)
    return assert(cli.parse_stats_line(line))
  end
end

describe("container routes", function()
  local srv, busy, idle, created, busy_name, idle_name, created_name

  setup(function()
    busy, busy_name = support.run_container({ name = "busy",
      cmd = { "sh", "-c", "while :; do :; done" } })
    -- 32 MiB in /dev/shm: known memory (shmem is not page cache, so docker
    -- counts it as used)
    idle, idle_name = support.run_container({ name = "idle",
      cmd = { "sh", "-c", "dd if=/dev/zero of=/dev/shm/m bs=1M count=32 2>/dev/null; exec sleep 600" },
      host_config = { ShmSize = 64 * 1024 * 1024 } })
    created, created_name = support.run_container({ name = "created", start = false })
    srv = http.start({ env = { PATH } })
  end)

  teardown(function()
    if srv then srv:stop() end
    for _, id in ipairs({ busy, idle, created }) do
      if id then support.remove(id) end
    end
  end)

  it("lists containers with 12-char ids, names without slash, state words", function()
    local r = assert(http.get(srv.url .. "/api/containers"))
    assert.are.equal(200, r.status)
    local seen = {}
    for _, c in ipairs(r.json) do
      seen[c.name] = c
    end
    assert.are.same({ id = busy:sub(1, 12), name = busy_name, status = "running",
      image = support.image }, seen[busy_name])
    assert.are.equal("created", seen[created_name].status)
    -- all=0 is `docker ps`: what runs, paused ones included (another
    -- run's paused container may be there), never a created one
    local running = assert(http.get(srv.url .. "/api/containers?all=0")).json
    local names = {}
    for _, c in ipairs(running) do
      assert.truthy(c.status == "running" or c.status == "paused", c.status)
      names[c.name] = true
    end
    assert.is_true(names[busy_name])
    assert.is_nil(names[created_name])
  end)

  it("inspects by name, full id and id prefix", function()
    for _, ref in ipairs({ busy_name, busy, busy:sub(1, 10) }) do
      local r = assert(http.get(srv.url .. "/api/containers/" .. ref))
      assert.are.equal(200, r.status)
      assert.are.equal(busy, r.json.id)
      assert.are.equal(busy_name, r.json.name)
      assert.are.equal("running", r.json.status)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT", r.json.created)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT", r.json.started)
    end
    local r = assert(http.get(srv.url .. "/api/containers/" .. created_name))
    assert.are.equal("created", r.json.status)
    assert.are.equal(json.null, r.json.started)
  end)

  it("answers 404 for a missing container and 400 for an invalid id", function()
    local r = assert(http.get(srv.url .. "/api/containers/hxtest-no-such-container"))
    assert.are.equal(404, r.status)
    assert.are.equal("not_found", r.json.error.code)
    for _, bad in ipairs({ "bad!name", "-rf", "x%3Fy", "a%23b" }) do
      r = assert(http.get(srv.url .. "/api/containers/" .. bad .. "/stats"))
      assert.are.equal(400, r.status, bad)
      assert.are.equal("bad_request", r.json.error.code)
    end
  end)

  -- docker stats measures over its own second or two, horcrux over its own;
  -- on a host whose load changes from second to second (other work sharing
  -- the CPUs) the two can differ for reasons that are not horcrux's, so a
  -- comparison gets three tries: a wrong number fails all three.
  local function agrees(ask, name)
    local last
    for _ = 1, 3 do
      local theirs = docker_stats_async(name)
      local r = ask()
      local d = theirs()
      assert.are.equal(200, r.status, r.body)
      local ours = r.json.cpu_usage_percent
      assert.is_number(ours)
      if math.abs(ours - d.cpu_usage_percent) <= 10 then
        return ours
      end
      last = ("horcrux %.1f vs docker %.1f"):format(ours, d.cpu_usage_percent)
    end
    error(last)
  end

  it("gives a busy loop's CPU % within 10 points of docker stats, from the live view", function()
    for _ = 1, 2 do
      local ours = agrees(function()
        clock.sleep(1.0) -- the middle of docker's two-sample window
        return assert(http.get(srv.url .. "/api/containers/" .. busy_name .. "/stats"))
      end, busy_name)
      assert.is_true(ours > 20, "a busy loop uses a core: " .. ours)
    end
  end)

  it("gives a true CPU % on the very first request, with no live view", function()
    -- a new server each time: its sample store is empty, so the request is
    -- a first one (two one-shot samples), as docker stats takes two
    local ours = agrees(function()
      local s = http.start({ env = { PATH }, args = { "--interval", "0" } })
      local r = assert(http.get(s.url .. "/api/containers/" .. busy_name .. "/stats"))
      s:stop()
      return r
    end, busy_name)
    assert.is_true(ours > 20, "a busy loop uses a core: " .. ours)
    -- and a later request, against the sample the first one stored
    local s = http.start({ env = { PATH }, args = { "--interval", "0" } })
    finally(function() s:stop() end)
    assert(http.get(s.url .. "/api/containers/" .. busy_name .. "/stats"))
    agrees(function()
      return assert(http.get(s.url .. "/api/containers/" .. busy_name .. "/stats"))
    end, busy_name)
  end)

  it("gives an idle container under 5 % CPU and its memory within 10 % of docker's", function()
    local theirs = docker_stats_async(idle_name)
    clock.sleep(1.0)
    local r = assert(http.get(srv.url .. "/api/containers/" .. idle_name .. "/stats"))
    local d = theirs()
    local rec = r.json
    assert.is_true(rec.cpu_usage_percent < 5)
    assert.is_true(rec.memory_usage_bytes > 32 * 1024 * 1024)
    local rel = math.abs(rec.memory_usage_bytes - d.memory_usage_bytes) / d.memory_usage_bytes
    assert.is_true(rel < 0.10, ("memory %.0f vs docker %.0f"):format(rec.memory_usage_bytes, d.memory_usage_bytes))
    assert.are.equal(1, rec.pids)
    assert.is_true(rec.memory_limit_bytes > rec.memory_usage_bytes)
    for _, k in ipairs({ "network_rx_bytes", "network_tx_bytes", "block_read_bytes",
      "block_write_bytes", "cpu_usage_ns", "online_cpus" }) do
      assert.are.equal("integer", math.type(rec[k]), k)
    end
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT.*Z$", rec.read)
    assert.is_string(rec.source)
  end)

  it("says null CPU % for a container that is not running", function()
    local r = assert(http.get(srv.url .. "/api/containers/" .. created_name .. "/stats"))
    assert.are.equal(200, r.status)
    assert.are.equal(json.null, r.json.cpu_usage_percent)
  end)

  it("answers every running container at /api/stats from the live view", function()
    local r = assert(http.get(srv.url .. "/api/stats"))
    assert.are.equal(200, r.status)
    local by = {}
    for _, rec in ipairs(r.json) do
      by[rec.id] = rec
    end
    assert.truthy(by[busy] and by[idle], "busy and idle in /api/stats")
    assert.is_nil(by[created])
    assert.is_number(by[busy].sample_age_ms)
    assert.is_true(by[busy].sample_age_ms < 3000)
  end)

  it("answers /healthz in under 50 ms while 8 clients wait on stats the daemon holds", function()
    -- no collector and the API first: every stats request goes to the
    -- daemon, which answers a one-shot at its next tick (up to a second on
    -- engines before 25.0)
    local dir = http.scripts_dir({ ["fallback.lua"] =
      http.read_file("examples/fallback-api-first.lua") })
    local s = http.start({ scripts = dir, env = { PATH },
      args = { "--interval", "0", "--workers", "2" } })
    finally(function() s:stop() end)
    assert.are.equal(200, http.get(s.url .. "/healthz").status) -- engine check cached
    local waiting, outs = {}, {}
    for i = 1, 8 do
      local ref = ({ busy, idle })[i % 2 + 1]
      outs[i] = os.tmpname()
      waiting[i] = assert(proc.spawn({ "curl", "-s", "-o", "/dev/null", "-w", "%{time_total}",
        "--max-time", "20", s.url .. "/api/containers/" .. ref .. "/stats" }, { stdout = outs[i] }))
    end
    clock.sleep(0.3)
    local times = {}
    for i = 1, 5 do
      local t0 = clock.mono_ns()
      local r = assert(http.get(s.url .. "/healthz"))
      times[i] = (clock.mono_ns() - t0) / 1e6
      assert.are.equal(200, r.status)
    end
    table.sort(times)
    -- curl's own start is in these figures: the median is what counts
    assert.is_true(times[3] < 50, "healthz median " .. times[3] .. " ms")
    for i = 1, 8 do
      assert.are.equal(0, waiting[i]:wait(30).status)
      -- they did wait on the daemon meanwhile (else this proves nothing)
      local took = tonumber(http.read_file(outs[i]))
      os.remove(outs[i])
      assert.is_true(took > 0.5, "stats request " .. i .. " took " .. tostring(took) .. " s")
    end
  end)

  it("refuses query keys a route does not take, on every route", function()
    for _, path in ipairs({ "/healthz?foo=1", "/api/containers/" .. busy .. "?foo=1",
      "/api/containers/" .. busy .. "/stats?foo=1", "/api/stacks?x=1",
      "/api/containers?foo=1", "/api/stats?foo=1" }) do
      local r = assert(http.get(srv.url .. path))
      assert.are.equal(400, r.status, path)
      assert.are.equal("bad_request", r.json.error.code, path)
      assert.are.equal(path:match("%?(%w+)="), r.json.error.field, path)
    end
    -- the list comes from the collector's view (it follows the daemon's
    -- events) once it holds every container
    local r
    for _ = 1, 50 do
      r = assert(http.get(srv.url .. "/api/containers?all=0"))
      if r.headers["x-horcrux-source"] == "view" then
        break
      end
      clock.sleep(0.1)
    end
    assert.are.equal("view", r.headers["x-horcrux-source"])
  end)

  it("says why when DOCKER_API_VERSION is one the daemon does not speak", function()
    local s = http.start({ env = { PATH, "DOCKER_API_VERSION=9.99" },
      args = { "--interval", "0" } })
    finally(function() s:stop() end)
    local r = assert(http.get(s.url .. "/healthz"))
    assert.are.equal(200, r.status)
    assert.are.equal("degraded", r.json.status)
    assert.is_false(r.json.engine.reachable)
    assert.are.equal("protocol", r.json.engine.kind)
    assert.truthy(r.json.engine.error:find("9.99", 1, true), r.json.engine.error)
    -- every call: 502, the daemon's reason passed on
    local f = http.scripts_dir({ ["fallback.lua"] =
      'return { sources = { (require "horcrux.sources.docker_api") } }' })
    local api_only = http.start({ scripts = f, args = { "--interval", "0" },
      env = { PATH, "DOCKER_API_VERSION=9.99" } })
    r = assert(http.get(api_only.url .. "/api/containers/" .. busy))
    api_only:stop()
    assert.are.equal(502, r.status, r.body)
    assert.are.equal("protocol", r.json.error.code)
  end)

  it("refuses to start with a DOCKER_API_VERSION that is no version", function()
    local ok, err = pcall(http.start, { env = { PATH, "DOCKER_API_VERSION=garbage" } })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("exited at start", 1, true), err)
    assert.truthy(tostring(err):find("garbage", 1, true), err)
  end)

  it("reports the engine in /healthz", function()
    local r = assert(http.get(srv.url .. "/healthz"))
    assert.are.equal(200, r.status)
    assert.are.equal("ok", r.json.status)
    assert.is_true(r.json.engine.reachable)
    assert.matches("^1%.%d+$", r.json.engine.api_version)
  end)

  describe("with no engine at DOCKER_HOST", function()
    local down
    setup(function()
      down = http.start({ env = { PATH, "DOCKER_HOST=unix:///nonexistent/docker.sock" } })
    end)
    teardown(function()
      if down then down:stop() end
    end)

    it("still starts, and /healthz says the engine is unreachable", function()
      local r = assert(http.get(down.url .. "/healthz"))
      assert.are.equal(200, r.status)
      assert.are.equal("degraded", r.json.status)
      assert.is_false(r.json.engine.reachable)
      assert.truthy(r.json.engine.error:find("nonexistent", 1, true))
    end)

    it("answers stats of a running container from its cgroup, with a true CPU %", function()
      local r = assert(http.get(down.url .. "/api/containers/" .. busy .. "/stats"))
      assert.are.equal(200, r.status)
      assert.are.equal("cgroup", r.json.source)
      assert.is_true(r.json.cpu_usage_percent > 20)
    end)

    it("lists the running containers, saying the list came from the cgroup files", function()
      local r = assert(http.get(down.url .. "/api/containers"))
      assert.are.equal(200, r.status)
      assert.are.equal("cgroup", r.headers["x-horcrux-source"])
      local ids = {}
      for _, c in ipairs(r.json) do
        ids[c.id] = true
        -- no name from the daemon: the item says where it came from, so a
        -- null name is not taken for the container's real one
        assert.are.equal("cgroup", c.source)
      end
      assert.is_true(ids[busy:sub(1, 12)] and ids[idle:sub(1, 12)])
    end)
  end)

  it("answers 503 with a clear message when the only source cannot reach the engine", function()
    local dir = http.scripts_dir({ ["fallback.lua"] =
      'local api = require "horcrux.sources.docker_api"\nreturn { sources = { api } }' })
    local s = http.start({ scripts = dir,
      env = { PATH, "DOCKER_HOST=unix:///nonexistent/docker.sock" } })
    finally(function() s:stop() end)
    for _, path in ipairs({ "/api/containers", "/api/containers/x", "/api/containers/x/stats" }) do
      local r = assert(http.get(s.url .. path))
      assert.are.equal(503, r.status, path)
      assert.are.equal("unavailable", r.json.error.code)
      assert.truthy(r.json.error.message:find("nonexistent", 1, true))
    end
  end)

  it("labels docker-cli records approximate, and lists every source's error when all fail", function()
    local dir = http.scripts_dir({ ["fallback.lua"] =
      'local cli = require "horcrux.sources.docker_cli"\nreturn { sources = { cli } }' })
    local s, f
    -- one finally per `it` (busted keeps only the last one given)
    finally(function()
      for _, server in ipairs({ s or false, f or false }) do
        if server then
          server:stop()
        end
      end
    end)
    s = http.start({ scripts = dir, env = { PATH }, args = { "--interval", "0" } })
    local r = assert(http.get(s.url .. "/api/containers/" .. busy_name .. "/stats", { timeout = 30 }))
    assert.are.equal(200, r.status)
    assert.are.equal("docker-cli", r.json.source)
    assert.is_true(r.json.approximate)

    dir = http.scripts_dir({ ["fallback.lua"] = [[
      local cli = require "horcrux.sources.docker_cli"
      cli.options.docker = "/nonexistent/docker"
      local api = require "horcrux.sources.docker_api"
      return { sources = { api, cli } }]] })
    f = http.start({ scripts = dir, args = { "--interval", "0" },
      env = { PATH, "DOCKER_HOST=unix:///nonexistent/docker.sock" } })
    r = assert(http.get(f.url .. "/api/containers/" .. busy_name .. "/stats"))
    assert.are.equal(503, r.status)
    assert.are.equal("metrics_unavailable", r.json.error.code)
    assert.are.equal(2, #r.json.error.tried)
    assert.are.equal("docker-api", r.json.error.tried[1].source)
    assert.are.equal("docker-cli", r.json.error.tried[2].source)
    assert.truthy(r.json.error.tried[2].error:find("not found", 1, true))
    assert.is_nil(r.json.cpu_usage_percent)
  end)
end)
