-- A daemon that fails, over HTTP: what a client of horcrux gets when the
-- engine answers garbage, a 5xx, a refusal of our API version, a cut or
-- malformed reply (502), or nothing in time (504). The daemon is
-- tests/mocks/docker_mock.py, whose paths misbehave on request; the
-- shipped routes reach it as a container's name (/containers/garbage/json
-- answers as /garbage does).
local http = require "http"
local ds = require "docker_support"
local proc = require "horcrux.proc"
local clock = require "horcrux.clock"

local PATH = "PATH=" .. os.getenv("PATH")
-- Only the Engine API answers: no cgroup or CLI source to fall back on.
local API_ONLY = 'return { sources = { (require "horcrux.sources.docker_api") } }'

-- A route of the spec's own that reaches the mock through a client with a
-- 1 s timeout (the shipped client waits 30 s, the engine's own timeout):
-- what is under test is how the dispatcher answers a failure of kind
-- timeout, not how long the client waits. It raises the failure as a
-- route that lets failures propagate does.
local ROUTES = [[
local docker = require "horcrux.docker"
local errors = require "horcrux.errors"
route("GET", "/t/upstream/:what", { query = {} }, function(req)
  local c = assert(docker.connect { timeout = 1, api_version = "1.41" })
  local v, msg, kind = c:call("GET", "/containers/{id}/json", { id = req.params.what })
  c:close()
  errors.check(v, msg, kind)
  return 200, v
end)
]]

describe("a failing daemon over HTTP", function()
  local host, stop, srv, dir

  setup(function()
    host, stop = ds.mock({ args = "--slow 5" })
    dir = http.scripts_dir({ ["fallback.lua"] = API_ONLY, ["routes.lua"] =
      ('assert(loadfile(%q, "t", _ENV))()\n'):format(
        assert(proc.run({ "pwd" })).stdout:gsub("\n$", "") .. "/lua/routes.lua") .. ROUTES })
    srv = http.start({ scripts = dir, args = { "--interval", "0" },
      env = { PATH, "DOCKER_HOST=" .. host } })
  end)

  teardown(function()
    local ok, err = true, nil
    if srv then
      ok, err = pcall(srv.stop, srv)
    end
    if stop then
      stop()
    end
    if dir then
      proc.run({ "rm", "-rf", dir })
    end
    assert(ok, err)
  end)

  local function get(path)
    local r = assert(http.get(srv.url .. path, { timeout = 20 }))
    assert.are.equal("application/json", r.headers["content-type"], path)
    return r
  end

  it("answers 502 with the kind and the daemon's reason for what it cannot use", function()
    for _, case in ipairs({
      { "garbage", "protocol", "HTTP/0.9" },          -- bytes that are not HTTP
      { "error500", "server", "boom: disk on fire" },  -- the daemon's own 500
      { "toonew", "protocol", "is too new" },          -- our API version refused
      { "truncated", "protocol", "remaining to read" }, -- a reply cut short
      { "badjson", "protocol", "bad JSON" },           -- a reply that is not JSON
    }) do
      for _, path in ipairs({ "/api/containers/" .. case[1],
        "/api/containers/" .. case[1] .. "/stats" }) do
        local r = get(path)
        assert.are.equal(502, r.status, path .. ": " .. r.body)
        assert.are.equal(case[2], r.json.error.code, path)
        assert.truthy(r.json.error.message:find(case[3], 1, true), path .. ": "
          .. r.json.error.message)
        assert.matches("^%x+$", r.headers["x-request-id"])
      end
    end
  end)

  it("answers 504 when the daemon does not answer in time, and goes on serving", function()
    local t0 = clock.mono_ns()
    local r = get("/t/upstream/stall")
    local took = (clock.mono_ns() - t0) / 1e9
    assert.are.equal(504, r.status, r.body)
    assert.are.equal("timeout", r.json.error.code)
    -- the client's 1 s, not the mock's silence (it never answers)
    assert.is_true(took < 10, took)
    -- a slow answer (5 s) is a timeout too, a quick one is not
    r = get("/t/upstream/slow")
    assert.are.equal(504, r.status, r.body)
    r = get("/t/upstream/echo")
    assert.are.equal(200, r.status, r.body)
    -- the same kinds through this route as through the shipped ones
    r = get("/t/upstream/garbage")
    assert.are.equal(502, r.status, r.body)
    assert.are.equal("protocol", r.json.error.code)
    assert.are.equal(200, get("/healthz").status)
  end)

  it("answers 503 when the socket is not there", function()
    local down = http.start({ scripts = dir, args = { "--interval", "0" },
      env = { PATH, "DOCKER_HOST=unix:///nonexistent/horcrux-upstream.sock" } })
    finally(function() down:stop() end)
    local r = assert(http.get(down.url .. "/api/containers/x"))
    assert.are.equal(503, r.status, r.body)
    assert.are.equal("unavailable", r.json.error.code)
  end)
end)
