-- horcrux.proc inside `horcrux serve` (issue 8 #2 and #9). A program that a
-- request runs (the docker-cli source's `docker stats`, a route's own
-- proc.run) is handed to the host's executor, which polls its pipes beside
-- the curl transfers: the worker thread goes on serving other requests
-- meanwhile. And the program inherits no descriptor of the server's beyond
-- 0, 1 and 2, and not the token.
local http = require "http"
local proc = require "horcrux.proc"
local clock = require "horcrux.clock"

local PATH = "PATH=" .. os.getenv("PATH")
local TOKEN = "proc-serve-spec-token-0123456789"
-- Seconds the fake `docker stats` takes, and how many run at once: three
-- per worker on a two-worker server.
local SLEEP, PARALLEL = 4, 6

local function write(path, text, mode)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  if mode then
    assert(proc.run({ "chmod", mode, path }).status == 0)
  end
end

-- The names in dir that start with `prefix`.
local function count(dir, prefix)
  local n = 0
  for name in assert(proc.run({ "ls", dir })).stdout:gmatch("[^\n]+") do
    if name:sub(1, #prefix) == prefix then
      n = n + 1
    end
  end
  return n
end

local function median(t)
  local s = {}
  for i, v in ipairs(t) do
    s[i] = v
  end
  table.sort(s)
  return s[(#s + 1) // 2]
end

local function max(t)
  local m = -math.huge
  for _, v in ipairs(t) do
    m = math.max(m, v)
  end
  return m
end

-- The descriptor numbers in an `ls -l /proc/self/fd` listing, without the
-- one ls opened to read that directory.
local function fds_of(listing)
  local fds = {}
  for fd, target in listing:gmatch(" (%d+) %-> ([^\n]*)") do
    if not target:match("^/proc/%d+/fd$") then
      fds[#fds + 1] = tonumber(fd)
    end
  end
  table.sort(fds)
  return fds
end

-- A docker CLI: `stats ... -- ID` records what it inherited (its
-- descriptors as ls sees them, its environment) and when it ran under
-- DIR/run, then prints one stats line after SLEEP seconds (ID "hang": it
-- never answers; ID "big": 20 MiB of output). Anything else prints nothing.
local FAKE = [[#!/bin/sh
last=
for a in "$@"; do last=$a; done
case "$1" in
stats)
  case "$last" in
  hang) exec sleep 60 ;;
  big) exec head -c 20971520 /dev/zero ;;
  esac
  ls -l /proc/self/fd > DIR/run/fds.$$
  env > DIR/run/env.$$
  : > DIR/run/started.$$
  sleep SLEEP
  : > DIR/run/ended.$$
  echo '{"BlockIO":"0B / 0B","CPUPerc":"1.50%","Container":"x","ID":"0123456789ab","MemPerc":"0.10%","MemUsage":"1MiB / 1GiB","Name":"x","NetIO":"0B / 0B","PIDs":"1"}'
  ;;
esac
]]

describe("horcrux.proc in horcrux serve", function()
  local dir, srv

  setup(function()
    dir = http.scripts_dir({ ["fallback.lua"] = "" })
    assert(proc.run({ "mkdir", dir .. "/run" }).status == 0)
    write(dir .. "/docker", (FAKE:gsub("DIR", dir):gsub("SLEEP", SLEEP)), "755")
    write(dir .. "/fallback.lua", ([[
      local cli = require "horcrux.sources.docker_cli"
      cli.options.docker = %q
      cli.options.timeout = %d
      return { sources = { cli } }]]):format(dir .. "/docker", SLEEP + 2))
    srv = http.start({ scripts = dir, args = { "--workers", "2" },
      env = { PATH, "HORCRUX_TOKEN=" .. TOKEN } })
  end)

  teardown(function()
    if srv then
      srv:stop()
    end
    if dir then
      proc.run({ "rm", "-rf", dir })
    end
  end)

  before_each(function()
    assert(proc.run({ "sh", "-c", 'rm -f "$0"/run/*', dir }).status == 0)
  end)

  local function healthz_times(n)
    local t = {}
    for i = 1, n do
      local r = assert(http.get(srv.url .. "/healthz", { timeout = 30 }))
      assert.equal(200, r.status)
      t[i] = r.time
    end
    return t
  end

  it("answers /healthz while docker-cli requests wait on their programs (#2)", function()
    local idle = healthz_times(5)
    local url = srv.url .. "/api/containers/0123456789ab/stats"
    local kids, outs = {}, {}
    for i = 1, PARALLEL do
      outs[i] = os.tmpname()
      kids[i] = assert(proc.spawn({ "curl", "-sS", "--max-time", "60",
        "-o", outs[i] .. ".body", "-w", "%{http_code} %{time_total}", url },
        { stdout = outs[i] }))
    end
    finally(function()
      for i = 1, PARALLEL do
        kids[i]:close()
        os.remove(outs[i])
        os.remove(outs[i] .. ".body")
      end
    end)
    -- How many programs run at once: every request's, when none holds a
    -- worker; one per worker when each does. Then /healthz, while they
    -- run. Up to SLEEP - 1 s for all to start: a sanitizer build at a load
    -- average of 12 had started 2 of 6 after 1.5 s.
    local at_once, deadline = 0, clock.mono_ns() + (SLEEP - 1) * 1e9
    while at_once < PARALLEL and clock.mono_ns() < deadline do
      at_once = math.max(at_once,
        count(dir .. "/run", "started") - count(dir .. "/run", "ended"))
      clock.sleep(0.05)
    end
    local busy = healthz_times(5)
    local ended_meanwhile = count(dir .. "/run", "ended")
    for i = 1, PARALLEL do
      assert(kids[i]:wait(60))
      local code, took = http.read_file(outs[i]):match("^(%d+) ([%d.]+)")
      assert.equal("200", code, http.read_file(outs[i] .. ".body"))
      assert.is_true(tonumber(took) >= SLEEP - 0.1, took)
      local rec = require("horcrux.json").decode(http.read_file(outs[i] .. ".body"))
      assert.equal("docker-cli", rec.source)
      assert.equal(1.5, rec.cpu_usage_percent)
      assert.equal(1024 * 1024, rec.memory_usage_bytes)
    end
    local say = ("programs at once %d; /healthz idle median %.0f ms, max %.0f"
      .. " ms; meanwhile median %.0f ms, max %.0f ms"):format(at_once,
        median(idle) * 1000, max(idle) * 1000, median(busy) * 1000,
        max(busy) * 1000)
    print("\nproc in serve: " .. say)
    assert.equal(PARALLEL, at_once, say)
    -- The probes were made while every program still ran.
    assert.equal(0, ended_meanwhile, say)
    -- A worker that ran a program would hold /healthz for up to SLEEP s.
    assert.is_true(max(busy) < 0.5 + 4 * max(idle), say)
  end)

  it("gives a program only descriptors 0, 1, 2 and no token (#9)", function()
    -- Connections to the engine are open meanwhile (/healthz asks it).
    healthz_times(3)
    local r = assert(http.get(srv.url .. "/api/containers/0123456789ab/stats"))
    assert.equal(200, r.status, r.body)
    local pid = assert(proc.run({ "ls", dir .. "/run" })).stdout:match("fds%.(%d+)")
    assert.truthy(pid, "the fake docker did not run")
    local listing = http.read_file(dir .. "/run/fds." .. pid)
    assert.same({ 0, 1, 2 }, fds_of(listing), listing)
    local env = http.read_file(dir .. "/run/env." .. pid)
    assert.truthy(env:find("PATH=", 1, true), env)
    assert.is_nil(env:find("HORCRUX_TOKEN", 1, true), env)
    assert.is_nil(env:find(TOKEN, 1, true), env)
  end)

  it("kills a program at its timeout and reaps it (#2)", function()
    local t0 = clock.mono_ns()
    local r = assert(http.get(srv.url .. "/api/containers/hang/stats"))
    local took = (clock.mono_ns() - t0) / 1e9
    assert.equal(504, r.status, r.body)
    assert.truthy(r.body:find("timed out", 1, true), r.body)
    assert.is_true(took >= SLEEP + 2 - 0.2 and took < SLEEP + 5, took)
    -- The server has no child left: no zombie, no sleep.
    local kids = http.read_file(("/proc/%d/task/%d/children"):format(
      srv.proc:pid(), srv.proc:pid()))
    for pid in kids:gmatch("%d+") do
      local comm = http.read_file("/proc/" .. pid .. "/comm")
      assert.is_nil(comm:find("sleep", 1, true), "child " .. pid .. " " .. comm)
      local stat = http.read_file("/proc/" .. pid .. "/stat")
      assert.is_nil(stat:match("%) Z "), "zombie " .. pid)
    end
  end)

  it("caps a program's output while it drains the rest (#2)", function()
    local r = assert(http.get(srv.url .. "/api/containers/big/stats"))
    assert.equal(502, r.status, r.body) -- kind limit
    assert.truthy(r.body:find("printed more than", 1, true), r.body)
  end)
end)

-- A route's own proc.run: the same result table as outside the server.
describe("horcrux.proc from a route", function()
  local dir, srv

  setup(function()
    dir = http.scripts_dir({ ["routes.lua"] = [[
      local proc = require "horcrux.proc"
      local json = require "horcrux.json"
      local function answer(r, msg, kind)
        if not r then
          return 200, { failed = msg, kind = kind }
        end
        return 200, { status = r.status or json.null,
          signal = r.signal or json.null, stdout = r.stdout,
          stderr = r.stderr, timed_out = r.timed_out,
          truncated = r.truncated }
      end
      route("POST", "/cat", function(req)
        return answer(proc.run({ "cat" }, { stdin = req.body,
          max_output = tonumber(req.query.max) }))
      end)
      route("GET", "/sh", function(req)
        return answer(proc.run({ "sh", "-c", req.query.c },
          { timeout = tonumber(req.query.timeout) }))
      end)
      route("GET", "/missing", function()
        return answer(proc.run({ "horcrux-no-such-program" }))
      end)
      route("GET", "/healthz", function() return 200, "ok" end)
    ]] })
    srv = http.start({ scripts = dir, args = { "--workers", "1" },
      env = { PATH, "HORCRUX_TOKEN=" .. TOKEN } })
  end)

  teardown(function()
    if srv then
      srv:stop()
    end
    if dir then
      proc.run({ "rm", "-rf", dir })
    end
  end)

  local function sh(c, timeout)
    local url = srv.url .. "/sh?c=" .. c:gsub("[^%w]", function(ch)
      return ("%%%02X"):format(ch:byte())
    end) .. (timeout and ("&timeout=" .. timeout) or "")
    local r = assert(http.get(url))
    assert.equal(200, r.status, r.body)
    return r.json
  end

  it("captures stdout, stderr and the exit status", function()
    local r = sh("echo out; echo err >&2; exit 3")
    assert.same({ status = 3, stdout = "out\n", stderr = "err\n",
      timed_out = false, truncated = false }, { status = r.status,
      stdout = r.stdout, stderr = r.stderr, timed_out = r.timed_out,
      truncated = r.truncated })
    assert.equal(9, sh("kill -KILL $$").signal)
  end)

  it("feeds stdin and reads it back, larger than a pipe both ways", function()
    -- 256 KiB
    local big = string.rep("0123456789abcdef", 16 * 1024)
    -- (No Expect: 100-continue: the helper reads one response head.)
    local auth = { Authorization = "Bearer " .. TOKEN, Expect = "" }
    local r = assert(http.request("POST", srv.url .. "/cat?max=" .. #big,
      { body = big, headers = auth }))
    assert.equal(200, r.status, r.body)
    assert.equal(#big, #r.json.stdout)
    assert.is_true(r.json.stdout == big)
    assert.is_false(r.json.truncated)
    r = assert(http.request("POST", srv.url .. "/cat?max=1000",
      { body = big, headers = auth }))
    assert.equal(1000, #r.json.stdout)
    assert.is_true(r.json.truncated)
  end)

  it("kills at the timeout, SIGKILL for a program that ignores SIGTERM", function()
    local t0 = clock.mono_ns()
    local r = sh("trap '' TERM; echo ready; while :; do sleep 0.01; done", 0.3)
    assert.is_true((clock.mono_ns() - t0) / 1e9 < 3)
    assert.is_true(r.timed_out)
    assert.equal(9, r.signal)
    assert.equal("ready\n", r.stdout)
    r = sh("sleep 30 & echo $!", 0.5) -- the grandchild holds stdout
    assert.is_true(r.timed_out)
    assert.equal(0, r.status)
    r = sh("exec >&- 2>&-; sleep 10", 0.3) -- outputs closed, still running
    assert.is_true(r.timed_out)
    assert.equal(15, r.signal)
  end)

  it("says not_found for a missing program", function()
    local r = assert(http.get(srv.url .. "/missing"))
    assert.equal("not_found", r.json.kind)
  end)

  it("kills a program in flight when the server stops past its grace", function()
    local stopping = http.start({ scripts = dir, args = { "--grace", "1" },
      env = { PATH } })
    local out, pidfile = os.tmpname(), os.tmpname()
    local kid = assert(proc.spawn({ "curl", "-sS", "-w", "\n%{http_code}",
      stopping.url .. "/sh?timeout=60&c=echo%20%24%24%20%3E" .. pidfile
        .. "%3B%20exec%20sleep%2030" }, { stdout = out }))
    finally(function()
      kid:close()
      stopping:stop()
      os.remove(out)
      os.remove(pidfile)
    end)
    local pid
    for _ = 1, 100 do
      pid = http.read_file(pidfile):match("%d+")
      if pid then
        break
      end
      clock.sleep(0.05)
    end
    assert.truthy(pid, "the program did not start")
    local t0 = clock.mono_ns()
    assert.equal(0, stopping:stop().status) -- SIGTERM, a clean exit
    assert.is_true((clock.mono_ns() - t0) / 1e9 < 5)
    assert(kid:wait(10))
    -- The request was answered: proc.run said the server stopped.
    assert.truthy(http.read_file(out):find("stopped", 1, true), http.read_file(out))
    assert.equal("", http.read_file("/proc/" .. pid .. "/comm"))
  end)

  it("serves another request on its only worker while a program runs", function()
    local out = os.tmpname()
    local kid = assert(proc.spawn({ "curl", "-sS", "-o", "/dev/null", "-w",
      "%{time_total}", srv.url .. "/sh?c=sleep%202" }, { stdout = out }))
    finally(function()
      kid:close()
      os.remove(out)
    end)
    clock.sleep(0.3)
    local r = assert(http.get(srv.url .. "/healthz"))
    assert.equal(200, r.status)
    assert.is_true(r.time < 1, r.time)
    assert(kid:wait(30))
    assert.is_true(tonumber(http.read_file(out)) >= 2)
  end)
end)
