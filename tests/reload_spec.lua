-- SIGHUP and SIGTERM beyond routes.lua: format.lua and fallback.lua
-- reloaded on every worker (and in the collector), a request in flight
-- across a reload answered by the scripts it started with, and --grace
-- expiring on requests that still wait.
local http = require "http"
local support = require "support"
local ds = require "docker_support"
local proc = require "horcrux.proc"
local clock = require "horcrux.clock"

local PATH = "PATH=" .. os.getenv("PATH")

local function write(dir, name, text)
  local f = assert(io.open(dir .. "/" .. name, "w"))
  f:write(text)
  f:close()
end

-- Waits until f() is truthy (at most `seconds`); returns its value.
local function eventually(seconds, f)
  local deadline = clock.mono_ns() + seconds * 1e9
  while true do
    local v = f()
    if v or clock.mono_ns() > deadline then
      return v
    end
    clock.sleep(0.1)
  end
end

-- format.lua that marks its answers (X-Format: tag) and indents or not.
local function format_lua(tag, pretty, extra)
  return ([[
local output = require "horcrux.format"
local M = { pretty = %s, sort_keys = true%s }
function M.respond(status, body, headers)
  headers = headers or {}
  headers["X-Format"] = %q
  return output.respond(status, body, headers, M)
end
return M
]]):format(tostring(pretty), extra or "", tag)
end

describe("SIGHUP", function()
  it("applies an edited format.lua on every worker, and keeps it when the next one is bad", function()
    local dir = http.scripts_dir({ ["format.lua"] = format_lua("one", false) })
    local srv = http.start({ scripts = dir, args = { "--workers", "2", "--interval", "0" },
      env = { PATH } })
    finally(function()
      srv:stop()
      proc.run({ "rm", "-rf", dir })
    end)
    local r = assert(http.get(srv.url .. "/healthz"))
    assert.are.equal("one", r.headers["x-format"])
    assert.is_nil(r.body:find("\n  ", 1, true))
    write(dir, "format.lua", format_lua("two", true))
    srv:signal("HUP")
    assert.truthy(eventually(5, function()
      return assert(http.get(srv.url .. "/healthz")).headers["x-format"] == "two"
    end), "format.lua not applied after SIGHUP\n" .. srv:logtext())
    -- every worker: each of several requests (a state per worker, rebuilt
    -- on its next request after the reload)
    for _ = 1, 8 do
      r = assert(http.get(srv.url .. "/healthz"))
      assert.are.equal("two", r.headers["x-format"])
      assert.truthy(r.body:find("\n  ", 1, true), r.body)
      r = assert(http.get(srv.url .. "/no/such/route")) -- errors too
      assert.are.equal(404, r.status)
      assert.are.equal("two", r.headers["x-format"])
    end
    -- a format.lua naming a setting that does not exist: refused, kept
    write(dir, "format.lua", format_lua("three", false, ", colour = 'red'"))
    srv:signal("HUP")
    assert.truthy(eventually(5, function()
      return srv:logtext():find("reload failed", 1, true)
    end), srv:logtext())
    for _ = 1, 8 do
      assert.are.equal("two", assert(http.get(srv.url .. "/healthz")).headers["x-format"])
    end
  end)

  it("applies an edited fallback.lua to the routes on every worker and to the collector", function()
    local id = support.run_container({ name = "reload-src" })
    local dir = http.scripts_dir({ ["fallback.lua"] =
      'return { sources = { (require "horcrux.sources.docker_api") } }' })
    local srv = http.start({ scripts = dir, args = { "--workers", "2", "--interval", "0.5" },
      env = { PATH } })
    finally(function()
      local ok, err = pcall(srv.stop, srv)
      support.remove(id)
      proc.run({ "rm", "-rf", dir })
      assert(ok, err)
    end)
    -- what a route reads through the sources (the list and its filters
    -- come from the collector's view once it is trusted)
    local function list_source()
      local r = assert(http.get(srv.url .. "/api/containers/" .. id))
      assert.are.equal(200, r.status, r.body)
      return r.headers["x-horcrux-source"]
    end
    -- the collector's record of our container, by the source it came from
    local function view_source()
      local r = assert(http.get(srv.url .. "/api/stats"))
      for _, rec in ipairs(r.json or {}) do
        if rec.id == id then
          return rec.source
        end
      end
    end
    assert.are.equal("docker-api", list_source())
    assert.are.equal("docker-api", eventually(5, view_source))
    write(dir, "fallback.lua", 'return { sources = { (require "horcrux.sources.cgroup") } }')
    srv:signal("HUP")
    assert.truthy(eventually(5, function() return list_source() == "cgroup" end),
      "fallback.lua not applied after SIGHUP\n" .. srv:logtext())
    for _ = 1, 8 do
      assert.are.equal("cgroup", list_source())
    end
    assert.truthy(eventually(5, function() return view_source() == "cgroup" end),
      "the collector still samples through the old source order\n" .. srv:logtext())
  end)

  it("answers a request in flight with the scripts it started with", function()
    local function routes(version)
      return ([[
local clock = require "horcrux.clock"
route("GET", "/version", function(req)
  clock.sleep(tonumber(req.query.s) or 0)
  return 200, { version = %d }
end)
]]):format(version)
    end
    local dir = http.scripts_dir({ ["routes.lua"] = routes(1) })
    local srv = http.start({ scripts = dir, args = { "--workers", "2", "--interval", "0" },
      env = { PATH } })
    local out = os.tmpname()
    local client
    finally(function()
      local ok, err = pcall(srv.stop, srv)
      if client then
        client:kill("TERM")
        client:wait(5)
      end
      os.remove(out)
      proc.run({ "rm", "-rf", dir })
      assert(ok, err)
    end)
    client = assert(proc.spawn({ "curl", "-s", "-w", "\n%{http_code}", "--max-time", "20",
      srv.url .. "/version?s=2" }, { stdout = out }))
    clock.sleep(0.5)
    write(dir, "routes.lua", routes(2))
    srv:signal("HUP")
    assert.truthy(eventually(5, function()
      local r = assert(http.get(srv.url .. "/version"))
      return r.status == 200 and r.json.version == 2
    end), "routes.lua not applied after SIGHUP\n" .. srv:logtext())
    -- the old request was still waiting when the new version served
    assert.is_nil(client:wait(0), "the request in flight ended before the reload")
    local st = client:wait(15)
    client = nil
    assert.are.equal(0, st and st.status)
    assert.are.equal('{"version":1}\n200', http.read_file(out))
    assert.is_nil(srv:logtext():find("reload failed", 1, true))
  end)
end)

describe("SIGTERM with --grace", function()
  it("aborts a request still waiting on the daemon at --grace, answers it 503 and exits 0", function()
    local host, stop = ds.mock()
    local dir = http.scripts_dir({ ["fallback.lua"] =
      'return { sources = { (require "horcrux.sources.docker_api") } }' })
    local srv = http.start({ scripts = dir, args = { "--grace", "1", "--interval", "0" },
      env = { PATH, "DOCKER_HOST=" .. host } })
    local out = os.tmpname()
    local client
    finally(function()
      local ok, err = pcall(srv.stop, srv)
      if client then
        client:kill("TERM")
        client:wait(5)
      end
      stop()
      os.remove(out)
      proc.run({ "rm", "-rf", dir })
      assert(ok, err)
    end)
    -- the mock never answers /containers/stall/json: the request waits on
    -- the daemon (the client's own timeout is 30 s)
    client = assert(proc.spawn({ "curl", "-s", "-w", "\n%{http_code}", "--max-time", "40",
      srv.url .. "/api/containers/stall" }, { stdout = out }))
    clock.sleep(0.5)
    local t0 = clock.mono_ns()
    srv:signal("TERM")
    local st = srv.proc:wait(20)
    local took = (clock.mono_ns() - t0) / 1e9
    assert.is_table(st, "the server did not exit")
    srv.stopped, srv.status = true, st
    assert.are.equal(0, st.status, srv:logtext())
    -- at the grace, not at the daemon's 30 s nor at once
    assert.is_true(took >= 0.9 and took < 5, took)
    local cst = client:wait(10)
    client = nil
    assert.are.equal(0, cst and cst.status)
    local body, code = http.read_file(out):match("^(.*)\n(%d+)$")
    assert.are.equal("503", code, body)
    assert.truthy(body:find('"unavailable"', 1, true), body)
    assert.truthy(srv:logtext():find("still running after 1s", 1, true), srv:logtext())
  end)

  it("ends a sleeping route at --grace and exits 0, well before the route would", function()
    local srv = http.start({ scripts = "tests/fixtures/routes", args = { "--grace", "1",
      "--interval", "0" }, env = { PATH } })
    local out = os.tmpname()
    local client
    finally(function()
      local ok, err = pcall(srv.stop, srv)
      if client then
        client:kill("TERM")
        client:wait(5)
      end
      os.remove(out)
      assert(ok, err)
    end)
    client = assert(proc.spawn({ "curl", "-s", "-w", "\n%{http_code}", "--max-time", "40",
      srv.url .. "/sleep?s=20" }, { stdout = out }))
    clock.sleep(0.5)
    local t0 = clock.mono_ns()
    srv:signal("TERM")
    local st = srv.proc:wait(20)
    local took = (clock.mono_ns() - t0) / 1e9
    assert.is_table(st, "the server did not exit")
    srv.stopped, srv.status = true, st
    assert.are.equal(0, st.status, srv:logtext())
    assert.is_true(took >= 0.9 and took < 5, took)
    -- the client got an answer then, not a hang until the route's 20 s
    local cst = client:wait(10)
    client = nil
    assert.are.equal(0, cst and cst.status)
    assert.matches("\n%d%d%d$", http.read_file(out))
    assert.truthy(srv:logtext():find("still running after 1s", 1, true), srv:logtext())
  end)
end)
