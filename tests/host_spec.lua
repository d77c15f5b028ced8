-- Issue 8, defect 4: the token rule and the Host check.
--
-- A browser that an attacker's page drives can reach a loopback server
-- under the attacker's own name (DNS rebinding); the request then carries
-- that name in Host. The server answers only the names of its allow-list
-- (the loopback names, the listen address, --allow-host), before anything
-- else runs. --require-token asks for the token on every route (as
-- listening beyond loopback does), and a token that is short or blank is
-- refused at start.
local http = require "http"
local proc = require "horcrux.proc"
local clock = require "horcrux.clock"

local TOKEN = "host-spec-token-0123456789"
local PATH = "PATH=" .. os.getenv("PATH")

-- A route that counts the requests it ran (horcrux.shared: every worker).
local ROUTES = [[
local shared = require "horcrux.shared"
route("GET", "/count", function() return 200, { n = shared.incr("runs", 1, 0) } end)
route("POST", "/count", function() return 200, { n = shared.incr("runs", 1, 0) } end)
route("GET", "/text", function() return 200, "plain" end)
]]

-- Sends raw request bytes; returns the status line's code (or nil).
local function raw(port, bytes)
  local r = proc.run({ "python3", "-c", [[
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.sendall(sys.stdin.buffer.read())
data = b""
while b"\r\n" not in data:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
print(data.split(b"\r\n")[0].decode())
]], tostring(port) }, { stdin = bytes, timeout = 15 })
  assert.are.equal(0, r.status, r.stderr)
  return tonumber(r.stdout:match("^HTTP/%S+ (%d+)"))
end

-- Runs `horcrux serve` expecting it to refuse to start.
local function refused(args, env)
  local argv = { http.bin, "serve", "--listen", "127.0.0.1:0", "--scripts",
    "tests/fixtures/routes", "--interval", "0" }
  for _, a in ipairs(args) do
    argv[#argv + 1] = a
  end
  return proc.run(argv, { timeout = 10, env = http.env(env or { PATH }) })
end

describe("the Host allow-list", function()
  local srv, dir

  setup(function()
    dir = http.scripts_dir({ ["routes.lua"] = ROUTES })
    srv = http.start({ scripts = dir, env = { PATH, "HORCRUX_TOKEN=" .. TOKEN },
      args = { "--allow-host", "horcrux.example", "--allow-host", "proxy.example:8443" } })
  end)

  teardown(function()
    if srv then
      srv:stop()
    end
  end)

  local function count(host)
    return http.get(srv.url .. "/count", { headers = { Host = host } })
  end

  it("answers 403 to a Host not on the list, saying which and how to allow it, before any route runs", function()
    local before = assert(count("127.0.0.1:" .. srv.port)).json.n
    for _, host in ipairs({ "attacker.example", "attacker.example:" .. srv.port,
      "horcrux.example.attacker.example", "proxy.example", "proxy.example:80",
      "localhost.", "localhost.attacker.example" }) do
      local r = assert(count(host))
      assert.are.equal(403, r.status, host .. ": " .. r.body)
      assert.are.equal("forbidden", r.json.error.code, host)
      assert.truthy(r.json.error.message:find("Host '" .. host .. "'", 1, true), r.json.error.message)
      assert.truthy(r.json.error.message:find("--allow-host " .. host:gsub(":%d+$", ""), 1, true),
        r.json.error.message)
    end
    assert.are.equal(before + 1, assert(count("localhost")).json.n, "a refused request ran the route")
  end)

  it("checks the Host before the token: a mutating request from a foreign Host gets 403 with or without it", function()
    local before = assert(count("localhost")).json.n
    for _, auth in ipairs({ false, TOKEN }) do
      local r = assert(http.request("POST", srv.url .. "/count", { body = "",
        headers = { Host = "attacker.example", Authorization = auth and ("Bearer " .. auth) or nil } }))
      assert.are.equal(403, r.status, r.body)
      assert.truthy(r.json.error.message:find("attacker.example", 1, true))
    end
    assert.are.equal(before + 1, assert(count("localhost")).json.n)
  end)

  it("serves the loopback names and the listen address with or without a port, and --allow-host names", function()
    for _, host in ipairs({ "localhost", "localhost:" .. srv.port, "LocalHost:1",
      "127.0.0.1", "127.0.0.1:" .. srv.port, "[::1]", "[::1]:" .. srv.port,
      "horcrux.example", "horcrux.example:443", "proxy.example:8443" }) do
      local r = assert(count(host))
      assert.are.equal(200, r.status, host .. ": " .. r.body)
    end
  end)

  it("serves any IP address as Host (a rebinding page sends its own name), never a name made of digits", function()
    for _, host in ipairs({ "192.0.2.2", "192.0.2.2:8080", "[2001:db8::1]", "[2001:db8::1]:9" }) do
      local r = assert(count(host))
      assert.are.equal(200, r.status, host .. ": " .. r.body)
    end
    for _, host in ipairs({ "192.0.2.2.attacker.example", "1.2.3", "[2001:db8::zz]", "0x7f.1" }) do
      local r = assert(count(host))
      assert.are.equal(403, r.status, host .. ": " .. r.body)
    end
  end)

  it("refuses an HTTP/1.1 request without Host or with two (400), and serves HTTP/1.0 without one", function()
    assert.are.equal(400, raw(srv.port, "GET /text HTTP/1.1\r\n\r\n"))
    assert.are.equal(400, raw(srv.port,
      "GET /text HTTP/1.1\r\nHost: localhost\r\nHost: attacker.example\r\n\r\n"))
    assert.are.equal(400, raw(srv.port, "GET /text HTTP/1.1\r\nHost: a b\r\n\r\n"))
    assert.are.equal(200, raw(srv.port, "GET /text HTTP/1.0\r\n\r\n"))
    assert.are.equal(403, raw(srv.port, "GET /text HTTP/1.0\r\nHost: attacker.example\r\n\r\n"))
  end)

  it("refuses an --allow-host that is not a host name", function()
    local r = refused({ "--allow-host", "a b" })
    assert.are.equal(2, r.status, r.stderr)
    assert.truthy(r.stderr:find("--allow-host a b", 1, true), r.stderr)
  end)
end)

describe("the bearer token", function()
  it("is needed by every route with --require-token", function()
    local dir = http.scripts_dir({ ["routes.lua"] = ROUTES })
    local srv = http.start({ scripts = dir, args = { "--require-token" },
      env = { PATH, "HORCRUX_TOKEN=" .. TOKEN } })
    finally(function() srv:stop() end)
    for _, path in ipairs({ "/text", "/count", "/healthz", "/no/such/route" }) do
      local r = assert(http.get(srv.url .. path))
      assert.are.equal(401, r.status, path .. ": " .. r.body)
      assert.are.equal("unauthorized", r.json.error.code)
      r = assert(http.get(srv.url .. path, { headers = { Authorization = "Bearer wrong-" .. TOKEN } }))
      assert.are.equal(403, r.status, path)
    end
    local r = assert(http.get(srv.url .. "/count", { headers = { Authorization = "Bearer " .. TOKEN } }))
    assert.are.same({ n = 1 }, r.json) -- the refused ones never ran
  end)

  it("is needed by every route when listening beyond loopback", function()
    local log = os.tmpname()
    local p, url
    finally(function()
      local st = p and (p:kill("TERM") and p:wait(15))
      local text = http.read_file(log)
      os.remove(log)
      assert.are.equal(0, st and st.status, text)
    end)
    for _ = 1, 5 do -- a port another process holds: try another
      local port = math.random(20000, 60000)
      p = assert(proc.spawn({ http.bin, "serve", "--listen", "0.0.0.0:" .. port,
        "--scripts", "tests/fixtures/routes", "--interval", "0" },
        { stdout = log, stderr = log, env = http.env({ PATH, "HORCRUX_TOKEN=" .. TOKEN }) }))
      local deadline = clock.mono_ns() + 10e9
      while p:wait(0) == nil and clock.mono_ns() < deadline do
        if http.get("http://127.0.0.1:" .. port .. "/text", { timeout = 5 }) then
          url = "http://127.0.0.1:" .. port
          break
        end
        clock.sleep(0.05)
      end
      if url then
        break
      end
      p:kill("KILL")
      p:wait(5)
      p = nil
    end
    assert.truthy(url, http.read_file(log))
    local r = assert(http.get(url .. "/text"))
    assert.are.equal(401, r.status)
    r = assert(http.get(url .. "/api/hello/x", { headers = { Authorization = "Bearer " .. TOKEN } }))
    assert.are.equal(200, r.status)
  end)

  it("with --require-token and no token configured, is refused at start", function()
    local r = refused({ "--require-token" })
    assert.are.equal(2, r.status, r.stderr)
    assert.truthy(r.stderr:find("--require-token", 1, true), r.stderr)
    assert.truthy(r.stderr:find("HORCRUX_TOKEN", 1, true), r.stderr)
  end)

  it("is refused at start when shorter than 16 bytes or blank", function()
    for _, t in ipairs({ "short", "fifteen-bytes-x", "                    ", "" }) do
      local r = refused({}, { PATH, "HORCRUX_TOKEN=" .. t })
      assert.are.equal(2, r.status, ("%q: %s"):format(t, r.stderr))
      assert.truthy(r.stderr:find("HORCRUX_TOKEN", 1, true), r.stderr)
      assert.truthy(r.stderr:find(#t:gsub(" ", "") == 0 and "blank" or "at least 16", 1, true), r.stderr)
    end
    local file = os.tmpname()
    finally(function() os.remove(file) end)
    for _, t in ipairs({ "fifteen-bytes-x\nsecond line is longer", "   \t  \n" }) do
      local f = assert(io.open(file, "w"))
      f:write(t)
      f:close()
      local r = refused({ "--token-file", file })
      assert.are.equal(2, r.status, r.stderr)
      assert.truthy(r.stderr:find("--token-file", 1, true), r.stderr)
    end
  end)
end)
