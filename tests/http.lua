--- tests/http.lua: start `horcrux serve` for a spec and talk HTTP to it.
--
--   local srv = http.start{ scripts = "tests/fixtures/routes" }
--   local r = http.get(srv.url .. "/healthz")  -- {status, headers, body, json}
--   srv:stop()
--
-- The server is started without a shell (horcrux.proc.spawn) on a free
-- loopback port; its log goes to a file (srv.log) that a failing spec shows.
-- HTTP goes through libcurl in this process (tests/http_client.c).
local proc = require "horcrux.proc"
local httpc = require "hxtest_http"
local json = require "horcrux.json"
local clock = require "horcrux.clock"

local M = {}

M.bin = os.getenv("HORCRUX_BIN") or "build/horcrux"

local function read_file(path)
  local f = io.open(path, "r")
  if not f then
    return ""
  end
  local s = f:read("a")
  f:close()
  return s
end
M.read_file = read_file

--- A request as the curl program sends it (libcurl in this process:
-- tests/http_client.c); returns {status, headers (lower-case), body, json,
-- time (seconds)}, or nil and "curl exit N: curl: (N) why" when the
-- transfer failed (N: curl's exit code, 7 refused, 28 timed out).
function M.request(method, url, opts)
  opts = opts or {}
  local headers = {}
  for k, v in pairs(opts.headers or {}) do
    headers[#headers + 1] = k .. ": " .. v
  end
  local status, head, body, time = httpc.request(method, url, headers,
    opts.body, opts.timeout or 30, opts.max_output or 64 * 1024 * 1024)
  if not status then
    return nil, "curl exit " .. tostring(head) .. ": " .. body
  end
  local res = { headers = {}, body = body, time = time }
  res.status = status
  for line in head:gmatch("[^\r\n]+") do
    local k, v = line:match("^([^:]+):%s*(.*)$")
    if k then
      res.headers[k:lower()] = v
    end
  end
  if (res.headers["content-type"] or ""):find("json", 1, true) then
    res.json = json.decode(res.body)
  end
  return res
end

function M.get(url, opts)
  return M.request("GET", url, opts)
end

local Server = {}
Server.__index = Server

function Server:alive()
  return self.proc:wait(0) == nil
end

function Server:signal(sig)
  return self.proc:kill(sig)
end

--- Stops with SIGTERM and returns the exit status. Raises if it hangs, or
-- if it exits other than 0 (a clean stop is part of every spec; under the
-- sanitizers a leak found at exit shows here).
function Server:stop()
  if self.stopped then
    return self.status
  end
  self.stopped = true
  self.proc:kill("TERM")
  local st = self.proc:wait(15)
  if not st then
    self.proc:kill("KILL")
    self.proc:wait(5)
    error("horcrux serve did not stop within 15 s on SIGTERM\n" .. self:logtext())
  end
  self.status = st
  if st.status ~= 0 then
    error(("horcrux serve exited with %s on SIGTERM\n%s"):format(
      st.status and ("status " .. st.status) or ("signal " .. tostring(st.signal)),
      self:logtext()), 2)
  end
  return st
end

function Server:logtext()
  return read_file(self.log)
end

-- What a spec's own environment list must not drop: the sanitizer run's
-- settings (where reports go, suppressions).
local KEEP = { "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "TSAN_OPTIONS" }

--- The environment for a server: `env` (a list of K=V) plus the sanitizer
-- settings of this process; nil (inherit everything) when env is nil.
function M.env(env)
  if env == nil then
    return nil
  end
  local out = {}
  for i, kv in ipairs(env) do
    out[i] = kv
  end
  for _, k in ipairs(KEEP) do
    local v = os.getenv(k)
    if v then
      out[#out + 1] = k .. "=" .. v
    end
  end
  return out
end

--- The first IPv4 address of this machine beyond loopback (scope global),
-- for specs that listen where the loopback rules do not apply. Raises when
-- there is none: such a spec fails, it is never skipped.
function M.lan_address()
  local r = assert(proc.run({ "ip", "-4", "-o", "addr", "show", "scope", "global" }))
  local addr = r.status == 0 and r.stdout:match("inet (%d+%.%d+%.%d+%.%d+)/")
  if not addr then
    error("no IPv4 address beyond loopback on this machine (ip -4 addr): "
      .. r.stdout .. r.stderr)
  end
  return addr
end

-- A port from the kernel's randomness, not math.random's: a spec seeds
-- that (cgroup_spec), and the runs of other worktrees sharing the machine
-- would then try the same ports in the same order.
local function random_port()
  local f = assert(io.open("/dev/urandom", "rb"))
  local b = f:read(4)
  f:close()
  return 20000 + string.unpack("<I4", b) % 40000
end

-- Whether something takes connections on host:port. The server listens
-- with SO_REUSEPORT, so a second one on a taken port starts without an
-- error and the kernel shares the connections between the two: a spec's
-- requests would reach another run's server. Such a port is skipped.
local function port_taken(host, port)
  local status, code = httpc.request("GET", ("http://%s:%d/"):format(host, port),
    {}, nil, 1, 0)
  return status ~= nil or code ~= 7 -- 7: could not connect
end

--- Starts `horcrux serve`; waits until /healthz answers (any status: a
-- server beyond loopback answers 401 without the token). opts: scripts,
-- args, env (a list of K=V; nil inherits), host (the address to listen on
-- and to reach it at, default 127.0.0.1; "0.0.0.0" listens everywhere and
-- is reached at 127.0.0.1), prefix (an argv the server's goes after, as
-- {"prlimit", "--nofile=1024:4096"}).
function M.start(opts)
  opts = opts or {}
  local log = os.tmpname()
  local host = opts.host or "127.0.0.1"
  local reach = host == "0.0.0.0" and "127.0.0.1" or host
  for _ = 1, 5 do
    local port = random_port()
    while port_taken(reach, port) do
      port = random_port()
    end
    local argv = {}
    for _, a in ipairs(opts.prefix or {}) do
      argv[#argv + 1] = a
    end
    for _, a in ipairs({ M.bin, "serve", "--listen", host .. ":" .. port,
      "--scripts", opts.scripts or "lua" }) do
      argv[#argv + 1] = a
    end
    for _, a in ipairs(opts.args or {}) do
      argv[#argv + 1] = a
    end
    local p, err = proc.spawn(argv, { stdout = log, stderr = log, env = M.env(opts.env) })
    if not p then
      error("cannot start horcrux: " .. err)
    end
    local srv = setmetatable({ proc = p, port = port, log = log,
      url = "http://" .. reach .. ":" .. port }, Server)
    local deadline = clock.mono_ns() + 10e9
    while clock.mono_ns() < deadline do
      if not srv:alive() then
        break
      end
      local r = M.get(srv.url .. "/healthz", { timeout = 5 })
      if r and r.status then
        return srv
      end
      clock.sleep(0.05)
    end
    if srv:alive() then
      srv:stop()
      error("horcrux serve did not answer within 10 s\n" .. srv:logtext())
    end
    local text = srv:logtext()
    if not text:find("Address already in use", 1, true) then
      error("horcrux serve exited at start:\n" .. text)
    end
  end
  error("no free port found for horcrux serve")
end

--- Writes `files` ({name = text}) into a new temporary directory.
function M.scripts_dir(files)
  local dir = os.tmpname()
  os.remove(dir)
  assert(proc.run({ "mkdir", "-p", dir }).status == 0)
  for name, text in pairs(files) do
    local f = assert(io.open(dir .. "/" .. name, "w"))
    f:write(text)
    f:close()
  end
  return dir
end

return M
