-- Issue 8, defect 11 (the server's part):
--  * every Lua call on the host's side is protected: a route that fails
--    with its state out of memory gets a 500, not a Lua panic (abort);
--  * --max-per-ip counts all of 127.0.0.0/8 as one address: every local
--    process can bind any 127.x source, so counting them apart was no limit;
--  * a flood of connections cannot take the descriptors the Docker client
--    and the cgroup readers need: the soft RLIMIT_NOFILE is raised to the
--    hard limit and --max-connections kept below it with a reserve; a
--    --max-connections that cannot fit is refused at start.
local http = require "http"
local proc = require "horcrux.proc"
local clock = require "horcrux.clock"
local support = require "support"

local PATH = "PATH=" .. os.getenv("PATH")

local function hard_nofile()
  local r = proc.run({ "sh", "-c", "ulimit -Hn" })
  local n = tonumber(r.stdout:match("%d+"))
  return n or math.huge
end

local function soft_nofile_of(pid)
  local text = http.read_file("/proc/" .. pid .. "/limits")
  return tonumber(text:match("Max open files%s+(%d+)")), text
end

describe("the host's Lua calls", function()
  it("answer a route that fails with its state full 500, and the server keeps serving", function()
    local dir = http.scripts_dir({ ["routes.lua"] = [[
route("GET", "/text", function() return 200, "plain" end)
-- fills the state to its cap, then yields outside a transfer: describing
-- that failure needs memory the state has not got
route("GET", "/yield-full", function()
  local node
  pcall(function() while true do node = { node, ("x"):rep(100) } end end)
  pcall(function() while true do node = { node } end end)
  coroutine.yield()
  return 200, tostring(node)
end)
]] })
    local srv = http.start({ scripts = dir, env = { PATH },
      args = { "--workers", "1", "--memory", "8", "--interval", "0" } })
    finally(function() srv:stop() end)
    for _ = 1, 3 do
      local r, err = http.get(srv.url .. "/yield-full", { timeout = 20 })
      assert.truthy(r, err)
      assert.are.equal(500, r.status, r.body)
      assert.are.equal(200, assert(http.get(srv.url .. "/text")).status)
    end
    assert.is_true(srv:alive())
    assert.truthy(srv:logtext():find("a route yielded outside a transfer", 1, true), srv:logtext())
  end)
end)

describe("--max-per-ip", function()
  -- Holds `n` connections from 127.0.0.2, .3, ...; then asks from `probe`,
  -- closes one held connection and asks again.
  local function probe(port, n, from)
    local r = proc.run({ "python3", "-c", [[
import socket, sys, time
port, n, probe = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
held = []
for i in range(n):
    s = socket.socket()
    s.bind(("127.0.0.%d" % (2 + i), 0))
    s.connect(("127.0.0.1", port))
    held.append(s)
time.sleep(0.3)
def ask():
    s = socket.socket()
    s.settimeout(5)
    s.bind((probe, 0))
    s.connect(("127.0.0.1", port))
    try:
        s.sendall(b"GET /text HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        d = s.recv(100)
        return d.split(b"\r\n")[0].decode() if d else "refused"
    except OSError as e:
        return "refused"
print(ask())
held.pop().close()
time.sleep(0.3)
print(ask())
]], tostring(port), tostring(n), from }, { timeout = 30 })
    assert.are.equal(0, r.status, r.stderr)
    return r.stdout:match("^([^\n]*)\n([^\n]*)")
  end

  it("counts all of 127.0.0.0/8 as one address", function()
    local srv = http.start({ scripts = "tests/fixtures/routes", env = { PATH },
      args = { "--max-per-ip", "4", "--interval", "0" } })
    finally(function() srv:stop() end)
    local first, second = probe(srv.port, 4, "127.0.0.9")
    assert.are.same({ "refused", "HTTP/1.1 200 OK" }, { first, second })
    first, second = probe(srv.port, 3, "127.0.0.1")
    assert.are.same({ "HTTP/1.1 200 OK", "HTTP/1.1 200 OK" }, { first, second })
    clock.sleep(0.1)
    assert.truthy(srv:logtext():find("all of loopback counts as one address", 1, true), srv:logtext())
  end)
end)

describe("descriptors", function()
  local hard = hard_nofile()

  it("raises the soft limit to the hard one, and keeps the daemon reachable through a flood", function()
    assert.is_true(hard >= 4096, "this spec needs a hard limit of 4096 descriptors or more, not " .. hard)
    local c = support.docker()
    assert(c)
    local id, name = support.run_container({ name = "fd" })
    local srv
    finally(function()
      local ok, err = true, nil
      if srv then
        ok, err = pcall(srv.stop, srv)
      end
      support.remove(id)
      assert(ok, err)
    end)
    -- a client of its own: the daemon is asked over a new connection
    local dir = http.scripts_dir({ ["routes.lua"] = [[
local docker = require "horcrux.docker"
local json = require "horcrux.json"
route("GET", "/fresh", function()
  local c <close>, err = docker.connect()
  if not c then
    return 503, { error = err }
  end
  local list, msg = c:containers({ all = true })
  if not list then
    return 503, { error = msg }
  end
  local names = {}
  for i, ct in ipairs(list) do
    names[i] = ct.Names and ct.Names[1] or ct.name
  end
  return 200, json.encode(names)
end)
]] })
    srv = http.start({ prefix = { "prlimit", "--nofile=1024:" .. hard },
      scripts = dir, env = { PATH },
      args = { "--max-per-ip", "0", "--interval", "0", "--no-access-log", "--workers", "2" } })
    -- a connection made before the flood asks the daemon once the flood
    -- holds every connection the server takes
    local out = os.tmpname()
    local r = proc.run({ "python3", "-c", [[
import resource, socket, sys, time
port, n, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
a = socket.create_connection(("127.0.0.1", port), timeout=30)
def req(path):
    a.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += a.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = [int(l.split(b":")[1]) for l in head.split(b"\r\n")
              if l.lower().startswith(b"content-length:")][0]
    while len(body) < length:
        body += a.recv(65536)
    return head.split(b"\r\n")[0].decode(), body
req(b"/nothing")
held = []
for i in range(n):
    try:
        s = socket.socket()
        s.bind(("127.0.%d.%d" % (1 + i // 250, 1 + i % 250), 0))
        s.connect(("127.0.0.1", port))
        held.append(s)
    except OSError:
        pass
time.sleep(1)
status, body = req(b"/fresh")
open(out, "wb").write(body)
print(status)
]], tostring(srv.port), "1100", out }, { timeout = 60 })
    local body = http.read_file(out)
    os.remove(out)
    assert.are.equal(0, r.status, r.stderr)
    assert.are.equal("HTTP/1.1 200 OK", r.stdout:match("[^\n]*"), body)
    assert.truthy(body:find(name, 1, true), "the container list lost " .. name .. ": " .. body:sub(1, 300))
    assert.is_true(srv:alive())
    local soft, limits = soft_nofile_of(srv.proc:pid())
    assert.are.equal(math.min(hard, 1 << 20), soft, limits)
    assert.truthy(srv:logtext():find("descriptors: limit " .. soft, 1, true), srv:logtext())
  end)

  it("refuses a --max-connections that cannot fit under the limit, saying why", function()
    local r = proc.run({ http.bin, "serve", "--listen", "127.0.0.1:0", "--scripts",
      "tests/fixtures/routes", "--interval", "0", "--max-connections", "1000000" },
      { timeout = 10, env = http.env({ PATH }) })
    assert.are.equal(2, r.status, r.stderr)
    assert.truthy(r.stderr:find("--max-connections 1000000", 1, true), r.stderr)
    assert.truthy(r.stderr:find("descriptor limit", 1, true), r.stderr)
  end)
end)
