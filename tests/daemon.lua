--- tests/daemon.lua: a private dockerd for a spec that must stop, restart,
-- freeze or lose its daemon, so the shared engine is never touched.
--
--   local daemon = require "daemon"
--   local d = daemon.start()          -- raises (with its log) if it fails
--   finally(function() d:stop() end)  -- containers removed, dockerd gone
--   d:load_image(support.image)       -- copied from the shared engine
--   local id, name = d:run { cmd = { "sleep", "600" } }
--   srv = http.start { env = { "DOCKER_HOST=" .. d.host, PATH } }
--   d:restart()                       -- seconds until it answered again
--   d:down() ... d:up()               -- the same, with a gap of the spec's
--   d:signal("STOP"); d:signal("CONT")
--
-- Everything of it lives in one new directory (d.dir, under /tmp): its
-- socket (-H unix://d.dir/docker.sock), --data-root, --exec-root (its own
-- managed containerd under it), --pidfile, an empty --config-file and its
-- log (d.log). It starts and stops by its pid. It runs in a network
-- namespace of its own (unshare --net), so nothing it does to links,
-- bridges, routes or iptables can reach the host's: a dockerd started with
-- --bridge=none deletes any link named docker0 it can see, which in the
-- host's namespace is the shared engine's bridge (that happened once, and
-- every container of the shared engine then failed to start). Inside its
-- namespace networking is off too (--bridge=none --iptables=false
-- --ip-masq=false --ip-forward=false) and its containers run with network
-- "none". Its socket is a path, reachable from the host. With live_restore
-- (the default) its containers keep running across a restart, as on a host
-- where dockerd is upgraded.
--
-- Needs root and dockerd (Debian's docker.io): daemon.available() says
-- whether a spec can use one, and why not.
local proc = require "horcrux.proc"
local docker = require "horcrux.docker"
local clock = require "horcrux.clock"

local M = {}
local Daemon = {}
Daemon.__index = Daemon

local label_env = os.getenv("HORCRUX_TEST_LABEL") or "horcrux.test=1"
local LABEL, LABEL_VALUE = label_env:match("^([^=]+)=(.*)$")
if not LABEL then
  LABEL, LABEL_VALUE = label_env, "1"
end

local function run(argv, opts)
  local r, err = proc.run(argv, opts or { timeout = 60 })
  if not r then
    error(table.concat(argv, " ") .. ": " .. tostring(err), 3)
  end
  return r
end

-- a file's text, "" when it cannot be read
local read_file = require("http").read_file

--- Whether a private dockerd can be started here: true, or false and why.
function M.available()
  if not proc.which("dockerd") then
    return false, "dockerd is not installed"
  end
  if not proc.which("unshare") then
    return false, "unshare (util-linux) is not installed"
  end
  local r = run({ "id", "-u" })
  if r.stdout ~= "0\n" then
    return false, "starting dockerd needs root"
  end
  return true
end

--- The end of the daemon's log, for a message.
function Daemon:logtail(lines)
  local text = read_file(self.log)
  local out, n = {}, 0
  for line in text:gmatch("[^\n]+") do
    n = n + 1
    out[n] = line
  end
  return table.concat(out, "\n", math.max(1, n - (lines or 40) + 1), n)
end

--- A horcrux.docker client of this daemon (a new one each time: a client
-- keeps its connection, which a restart breaks).
function Daemon:client(opts)
  -- The spec's own clients ignore the breaker: the spec stops and freezes
  -- this daemon on purpose, and must still reach it as soon as it answers.
  local o = { host = self.host, timeout = 10, connect_timeout = 2,
    breaker = false }
  for k, v in pairs(opts or {}) do
    o[k] = v
  end
  return assert(docker.connect(o))
end

--- Whether it answers GET /_ping now.
function Daemon:ping()
  local c = docker.connect({ host = self.host, timeout = 2,
    connect_timeout = 1, breaker = false })
  if not c then
    return false
  end
  local ok = c:ping()
  c:close()
  return ok and true or false
end

function Daemon:alive()
  return self.proc ~= nil and self.proc:wait(0) == nil
end

-- Spawns dockerd and waits until it answers; raises with the log if not.
function Daemon:spawn()
  local argv = { "unshare", "--net", "dockerd",
    "-H", self.host,
    "--data-root", self.dir .. "/data",
    "--exec-root", self.dir .. "/exec",
    "--pidfile", self.dir .. "/docker.pid",
    "--config-file", self.dir .. "/daemon.json",
    "--bridge=none", "--iptables=false", "--ip-masq=false",
    "--ip-forward=false",
  }
  if self.live_restore then
    argv[#argv + 1] = "--live-restore"
  end
  local f = assert(io.open(self.log, "a"))
  f:write(("\n==== %s %s\n"):format(os.date("!%Y-%m-%dT%H:%M:%SZ"),
    table.concat(argv, " ")))
  f:close()
  local p, err = proc.spawn(argv, { stdout = self.log, stderr = self.log })
  if not p then
    error("cannot start dockerd: " .. tostring(err), 3)
  end
  self.proc = p
  self.pid = p:pid()
  local deadline = clock.mono_ns() + self.start_timeout * 1e9
  while clock.mono_ns() < deadline do
    if self:ping() then
      return
    end
    if not self:alive() then
      self.proc = nil
      error("dockerd exited before answering; its log:\n" .. self:logtail(),
        3)
    end
    clock.sleep(0.1)
  end
  error(("dockerd did not answer within %d s; its log:\n%s"):format(
    self.start_timeout, self:logtail()), 3)
end

--- Starts a private dockerd. opts: live_restore (default true),
-- start_timeout (s, default 60).
function M.start(opts)
  opts = opts or {}
  local ok, why = M.available()
  if not ok then
    error("no private dockerd: " .. why, 2)
  end
  local r = run({ "mktemp", "-d", "/tmp/hxd.XXXXXX" })
  local dir = r.stdout:gsub("\n$", "")
  local d = setmetatable({
    dir = dir,
    socket = dir .. "/docker.sock",
    host = "unix://" .. dir .. "/docker.sock",
    log = dir .. "/dockerd.log",
    live_restore = opts.live_restore ~= false,
    start_timeout = opts.start_timeout or 60,
  }, Daemon)
  local f = assert(io.open(dir .. "/daemon.json", "w"))
  f:write("{}\n")
  f:close()
  local started, err = pcall(d.spawn, d)
  if not started then
    d:cleanup()
    error(err, 2)
  end
  return d
end

--- The docker CLI against this daemon: the result of proc.run.
function Daemon:cli(args, opts)
  local argv = { "docker", "-H", self.host }
  for _, a in ipairs(args) do
    argv[#argv + 1] = a
  end
  return run(argv, opts)
end

--- Copies an image from the shared engine (docker save | docker load).
function Daemon:load_image(ref)
  local r = run({ "sh", "-c", 'docker save "$1" | docker -H "$2" load -q',
    "sh", ref, self.host }, { timeout = 120 })
  if r.status ~= 0 then
    error(("loading %s into the private dockerd: %s"):format(ref, r.stderr), 2)
  end
end

--- Creates and starts a container (network "none", the test label).
-- opts: name (a readable part), cmd, image (default horcrux-test:busybox),
-- labels. Returns the id and the name.
function Daemon:run(opts)
  opts = opts or {}
  self.seq = (self.seq or 0) + 1
  local name = ("hxd-%s-%d-%d"):format(opts.name or "c", self.pid or 0,
    self.seq)
  local labels = { [LABEL] = LABEL_VALUE }
  for k, v in pairs(opts.labels or {}) do
    labels[k] = v
  end
  local c = self:client()
  local status, body = c:request("POST", "/containers/create", { name = name },
    { Image = opts.image or "horcrux-test:busybox",
      Cmd = opts.cmd or { "sleep", "600" },
      Labels = labels, StopTimeout = 1,
      HostConfig = { NetworkMode = "none" } })
  if status ~= 201 then
    error(("create %s: %s %s"):format(name, tostring(status),
      type(body) == "table" and tostring(body.message) or tostring(body)), 2)
  end
  local id = body.Id
  status, body = c:request("POST", "/containers/" .. id .. "/start")
  c:close()
  if status ~= 204 then
    error(("start %s: %s"):format(name, tostring(status)), 2)
  end
  return id, name
end

--- Sends a signal to dockerd ("STOP", "CONT", "KILL", ...).
function Daemon:signal(sig)
  assert(self.proc, "dockerd is not running")
  return self.proc:kill(sig)
end

-- SIGTERM, then SIGKILL after `grace` seconds; reaps it.
function Daemon:terminate(grace)
  if not self.proc then
    return
  end
  self.proc:kill("CONT") -- a frozen one cannot shut down
  self.proc:kill("TERM")
  if not self.proc:wait(grace or 30) then
    self.proc:kill("KILL")
    self.proc:wait(10)
  end
  self.proc = nil
end

--- Stops dockerd (SIGTERM; its containers keep running with live_restore).
function Daemon:down()
  self:terminate(30)
end

--- Starts it again on the same socket and data, after down().
function Daemon:up()
  assert(not self.proc, "dockerd is running")
  self:spawn()
end

--- down() then up(); returns the seconds from the stop until it answered
-- again.
function Daemon:restart()
  local t0 = clock.mono_ns()
  self:down()
  self:up()
  return (clock.mono_ns() - t0) / 1e9
end

-- Unmounts what dockerd left under the directory (overlay and netns mounts
-- of containers it did not stop), deepest first, then removes it.
function Daemon:cleanup()
  local mounts = {}
  for line in read_file("/proc/self/mounts"):gmatch("[^\n]+") do
    local target = line:match("^%S+ (%S+)")
    if target and target:sub(1, #self.dir + 1) == self.dir .. "/" then
      mounts[#mounts + 1] = target
    end
  end
  table.sort(mounts, function(a, b) return #a > #b end)
  for _, m in ipairs(mounts) do
    run({ "umount", "-l", m })
  end
  run({ "rm", "-rf", "--one-file-system", self.dir })
end

--- Removes its containers, stops it and removes its directory. Safe to
-- call twice, and after a failed start.
function Daemon:stop()
  if self.stopped then
    return
  end
  self.stopped = true
  if self.proc then
    self.proc:kill("CONT")
    if self:ping() then
      local c = self:client({ timeout = 30 })
      local list = c:containers({ all = true })
      for _, ct in ipairs(list or {}) do
        c:request("DELETE", "/containers/" .. ct.Id, { force = true, v = true })
      end
      c:close()
    end
    self:terminate(30)
  end
  self:cleanup()
end

return M
