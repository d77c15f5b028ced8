--- Helpers of the horcrux.docker specs.
--
--   local ds = require "docker_support"
--   local host, stop = ds.mock()                 -- the fake engine, unix socket
--   local host, stop = ds.mock { tcp = true }    -- on 127.0.0.1:port
--   local host, stop = ds.mock { args = "--big 8388608" }
--   local host, stop, hang = ds.mock { hang = true }  -- hang(true): every
--                                -- request held unanswered; hang(false):
--                                -- answered again (SIGSTOP, SIGCONT)
--   local out = ds.lua_with_env({ DOCKER_API_VERSION = "1.40" }, code)
--   ds.negotiated("1.52")                        -- what negotiation gives
--   local tls = ds.tls_endpoint(host)            -- TLS in front of a tcp mock
--
-- mock() starts tests/mocks/docker_mock.py, the fake engine that misbehaves
-- on request; it returns the host URL (for docker.connect{host = ...}) and
-- a function that stops the mock and removes its folder. The mock exits by
-- itself after its --lifetime should the spec die without stopping it.
local docker = require "horcrux.docker"
local system = require "system"

local M = {}

local function python()
  local f = io.open("/usr/bin/python3")
  if f then
    f:close()
    return "/usr/bin/python3"
  end
  return "python3"
end

function M.mock(opts)
  opts = opts or {}
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -m 700 " .. dir))
  local sock, portfile, pidfile = dir .. "/d.sock", dir .. "/port", dir .. "/pid"
  local listen = opts.tcp and "--tcp " .. portfile or "--unix " .. sock
  local hangfile = dir .. "/hang"
  local args = (opts.args or "") .. (opts.hang and " --hang-file " .. hangfile
    or "")
  assert(os.execute(string.format("%s tests/mocks/docker_mock.py %s %s"
    .. " >/dev/null 2>&1 & echo $! > %s", python(), listen, args, pidfile)))
  local function hang(on)
    if on then
      assert(io.open(hangfile, "w")):close()
    else
      os.remove(hangfile)
    end
  end
  local f = assert(io.open(pidfile))
  local pid = assert(tonumber(f:read("l")))
  f:close()
  local function stop()
    os.execute("kill " .. pid)
    os.execute("rm -rf " .. dir)
  end
  local host = "unix://" .. sock
  for _ = 1, 100 do
    if opts.tcp then
      f = io.open(portfile)
      if f then
        host = "tcp://127.0.0.1:" .. f:read("l")
        f:close()
      end
    end
    -- Not through the breaker: the pings before the mock listens would
    -- open it for the spec's own clients.
    local c = assert(docker.connect { host = host, breaker = false })
    local up = c:ping()
    c:close()
    if up then
      return host, stop, hang
    end
    system.sleep(0.05)
  end
  stop()
  error("the mock did not start")
end

-- Runs openssl with argv; raises with its stderr when it fails.
local function openssl(...)
  local proc = require "horcrux.proc"
  local r = assert(proc.run({ "openssl", ... }, { timeout = 30 }))
  assert(r.status == 0, "openssl " .. select(1, ...) .. ": " .. r.stderr)
end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local function copy(from, to)
  local f = assert(io.open(from, "rb"))
  write(to, f:read("a"))
  f:close()
end

-- A key and a certificate signed by ca (a prefix: ca.pem, ca-key.pem);
-- ext: the extensions' text.
local function signed(dir, name, cn, ca, ext)
  openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
    "-keyout", dir .. "/" .. name .. "-key.pem", "-out", dir .. "/" .. name .. ".csr",
    "-subj", "/CN=" .. cn)
  write(dir .. "/" .. name .. ".ext", ext)
  openssl("x509", "-req", "-in", dir .. "/" .. name .. ".csr", "-CA", ca .. ".pem",
    "-CAkey", ca .. "-key.pem", "-CAcreateserial", "-days", "2",
    "-extfile", dir .. "/" .. name .. ".ext", "-out", dir .. "/" .. name .. ".pem")
end

--- A TLS endpoint in front of a tcp:// mock (tests/mocks/tls_proxy.py),
-- as dockerd --tlsverify is: its certificate for 127.0.0.1 signed by a
-- CA made here, a client certificate required. Returns {host (tcp://),
-- log (the proxy's line per connection), stop()} and three folders in
-- DOCKER_CERT_PATH's layout (ca.pem, cert.pem, key.pem):
--   right    the CA and a client certificate it signed
--   wrong_ca another CA (the server's certificate is not trusted)
--   foreign  the right CA, a client certificate another CA signed
function M.tls_endpoint(upstream)
  local port = assert(upstream:match("^tcp://127%.0%.0%.1:(%d+)$"), upstream)
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -m 700 " .. dir))
  for _, ca in ipairs({ "ca1", "ca2" }) do
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
      "-nodes", "-keyout", dir .. "/" .. ca .. "-key.pem", "-out", dir .. "/" .. ca .. ".pem",
      "-days", "2", "-subj", "/CN=horcrux test " .. ca)
  end
  signed(dir, "server", "127.0.0.1", dir .. "/ca1",
    "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
  signed(dir, "client", "horcrux-client", dir .. "/ca1", "extendedKeyUsage=clientAuth\n")
  signed(dir, "stranger", "stranger", dir .. "/ca2", "extendedKeyUsage=clientAuth\n")
  local out = {}
  for name, parts in pairs({ right = { "ca1", "client" }, wrong_ca = { "ca2", "client" },
    foreign = { "ca1", "stranger" } }) do
    local d = dir .. "/" .. name
    assert(os.execute("mkdir " .. d))
    copy(dir .. "/" .. parts[1] .. ".pem", d .. "/ca.pem")
    copy(dir .. "/" .. parts[2] .. ".pem", d .. "/cert.pem")
    copy(dir .. "/" .. parts[2] .. "-key.pem", d .. "/key.pem")
    out[name] = d
  end
  local portfile, pidfile = dir .. "/port", dir .. "/pid"
  out.log = dir .. "/proxy.log"
  assert(os.execute(string.format("%s tests/mocks/tls_proxy.py %s %s %s %s %s %s"
    .. " >/dev/null 2>&1 & echo $! > %s", python(), dir .. "/ca1.pem", dir .. "/server.pem",
    dir .. "/server-key.pem", port, portfile, out.log, pidfile)))
  local f = assert(io.open(pidfile))
  local pid = assert(tonumber(f:read("l")))
  f:close()
  function out.stop()
    os.execute("kill " .. pid)
    os.execute("rm -rf " .. dir)
  end
  for _ = 1, 100 do
    f = io.open(portfile)
    if f then
      out.host = "tcp://127.0.0.1:" .. f:read("l")
      f:close()
      return out
    end
    system.sleep(0.05)
  end
  out.stop()
  error("the TLS proxy did not start")
end

local function sh_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

--- Runs `code` in a fresh lua5.4 with extra environment; returns its stdout
-- and stderr.
function M.lua_with_env(env, code)
  local parts = {}
  for k, v in pairs(env) do
    parts[#parts + 1] = k .. "=" .. sh_quote(v)
  end
  local cmd = string.format("env %s LUA_CPATH_5_4=%s lua5.4 -e %s 2>&1",
    table.concat(parts, " "), sh_quote(package.cpath), sh_quote(code))
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  return out
end

--- Set in the environment, DOCKER_API_VERSION replaces negotiation.
M.ENV_API = os.getenv("DOCKER_API_VERSION")

--- What negotiation must give with a daemon speaking `daemon`.
function M.negotiated(daemon)
  if M.ENV_API then
    return M.ENV_API
  end
  local function num(v)
    local a, b = v:match("^(%d+)%.(%d+)$")
    return tonumber(a) * 1000 + tonumber(b)
  end
  return num(daemon) < num(docker.max_api_version) and daemon
    or docker.max_api_version
end

return M
