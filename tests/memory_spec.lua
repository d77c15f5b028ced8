-- Issue 8, defect 7: memory. Requests that wait share their worker's Lua
-- state, and its --memory cap: a worker runs at most --max-inflight of them
-- (429 beyond, with Retry-After), so slow requests never fail for memory.
-- A GET or HEAD with a body is refused at once instead of buffered. A state
-- that hit its cap is replaced and its memory given back to the system.
local http = require "http"
local proc = require "horcrux.proc"
local clock = require "horcrux.clock"

local ROUTES = [[
local clock = require "horcrux.clock"
route("GET", "/text", function() return 200, "plain" end)
-- holds about 250 KB while it waits a second
route("GET", "/slow", function()
  local t = {}
  for i = 1, 1000 do t[i] = ("x"):rep(200) .. i end
  clock.sleep(1)
  return 200, { n = #t }
end)
route("GET", "/alloc", function()
  local t = {}
  for i = 1, math.huge do t[i] = string.rep("x", 4096) .. i end
end)
]]

local PATH = "PATH=" .. os.getenv("PATH")

local function start(args)
  local dir = http.scripts_dir({ ["routes.lua"] = ROUTES })
  return http.start({ scripts = dir, args = args, env = { PATH } })
end

-- n requests at once; returns {status = count}, and one 429's headers.
local function burst(srv, path, n)
  local out = os.tmpname()
  local clients = {}
  for i = 1, n do
    clients[i] = assert(proc.spawn({ "curl", "-s", "-D", out .. "." .. i, "-o", "/dev/null",
      "-w", "%{http_code}", "--max-time", "20", srv.url .. path }, { stdout = out .. ".code" .. i }))
  end
  local counts, busy = {}, nil
  for i = 1, n do
    assert(clients[i]:wait(30))
    local code = tonumber(http.read_file(out .. ".code" .. i))
    counts[code or "none"] = (counts[code or "none"] or 0) + 1
    if code == 429 and not busy then
      busy = http.read_file(out .. "." .. i)
    end
    os.remove(out .. ".code" .. i)
    os.remove(out .. "." .. i)
  end
  os.remove(out)
  return counts, busy
end

local function show(counts)
  local parts = {}
  for k, v in pairs(counts) do
    parts[#parts + 1] = k .. "x" .. v
  end
  table.sort(parts)
  return table.concat(parts, " ")
end

-- Sends raw bytes and waits up to `wait` seconds for a status line.
local function raw(port, bytes, wait)
  local r = proc.run({ "python3", "-c", [[
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=float(sys.argv[2]))
s.sendall(sys.stdin.buffer.read())
try:
    print(s.recv(4096).split(b"\r\n")[0].decode())
except socket.timeout:
    print("no answer")
]], tostring(port), tostring(wait) }, { stdin = bytes, timeout = wait + 10 })
  assert.are.equal(0, r.status, r.stderr)
  return tonumber(r.stdout:match("^HTTP/%S+ (%d+)")) or r.stdout
end

local function rss_kb(pid)
  return tonumber(http.read_file("/proc/" .. pid .. "/status"):match("VmRSS:%s*(%d+)"))
end

describe("requests in flight per worker", function()
  it("at a small --memory, slow requests that pile up get 429 with Retry-After, never 500", function()
    -- one worker, 4 MB: the default limit follows --memory (one per MB)
    local srv = start({ "--workers", "1", "--memory", "4", "--interval", "0" })
    finally(function() srv:stop() end)
    local counts, busy = burst(srv, "/slow", 40)
    assert.is_nil(counts[500], show(counts))
    assert.is_nil(counts.none, show(counts))
    assert.is_true((counts[200] or 0) >= 4, show(counts))
    assert.is_true((counts[429] or 0) >= 1, show(counts))
    assert.are.equal(40, (counts[200] or 0) + (counts[429] or 0), show(counts))
    assert.truthy(busy:lower():find("retry%-after: 1\r\n"), busy)
    local r = assert(http.get(srv.url .. "/text"))
    assert.are.equal(200, r.status) -- the count went back down
  end)

  it("takes --max-inflight: 2 per worker, the others answered 429 too_many_requests", function()
    local srv = start({ "--workers", "1", "--max-inflight", "2", "--interval", "0" })
    finally(function() srv:stop() end)
    local counts = burst(srv, "/slow", 6)
    assert.are.equal(2, counts[200], show(counts))
    assert.are.equal(4, counts[429], show(counts))
    local waiting = assert(proc.spawn({ "curl", "-s", "-o", "/dev/null", "--max-time", "10",
      srv.url .. "/slow" }))
    local other = assert(proc.spawn({ "curl", "-s", "-o", "/dev/null", "--max-time", "10",
      srv.url .. "/slow" }))
    -- asked until both are in flight: a curl program may take longer than
    -- the 0.3 s this spec once waited to start on a loaded machine
    local r
    local deadline = clock.mono_ns() + 5e9
    repeat
      r = assert(http.get(srv.url .. "/text"))
    until r.status == 429 or clock.mono_ns() > deadline
    assert.are.equal(429, r.status)
    assert.are.equal("too_many_requests", r.json.error.code)
    assert.truthy(r.json.error.message:find("--max-inflight", 1, true))
    waiting:wait(15)
    other:wait(15)
    assert.are.equal(200, assert(http.get(srv.url .. "/text")).status)
  end)
end)

describe("a GET or HEAD with a body", function()
  it("is refused at once with 400, before the body is read", function()
    local srv = start({ "--interval", "0" })
    finally(function() srv:stop() end)
    -- A body larger than the sockets hold: the server answers and closes
    -- with the rest unread, and Linux then resets the connection, which
    -- reaches the client before it read the answer now and then (curl
    -- exit 55, 1 CI run in 2): the access log says what was answered.
    local r, err = http.request("GET", srv.url .. "/text",
      { body = ("x"):rep(100000) })
    if r then
      assert.are.equal(400, r.status, r.body)
      assert.are.equal("bad_request", r.json.error.code)
    else
      assert.matches("curl exit 55", err)
      clock.sleep(0.2)
      assert.truthy(srv:logtext():find("access GET /text 400", 1, true),
        srv:logtext())
    end
    -- announced and never sent: the answer does not wait for it
    for _, m in ipairs({ "GET", "HEAD" }) do
      assert.are.equal(400, raw(srv.port, m .. " /text HTTP/1.1\r\nHost: localhost\r\n" ..
        "Content-Length: 1000\r\n\r\n", 3), m)
      assert.are.equal(400, raw(srv.port, m .. " /text HTTP/1.1\r\nHost: localhost\r\n" ..
        "Transfer-Encoding: chunked\r\n\r\n", 3), m)
    end
    assert.are.equal(200, raw(srv.port, "GET /text HTTP/1.1\r\nHost: localhost\r\n" ..
      "Content-Length: 0\r\n\r\n", 3))
  end)
end)

describe("a state that hit its memory cap", function()
  it("is replaced, and the memory goes back: VmRSS returns near its start", function()
    local srv = start({ "--workers", "2", "--memory", "64", "--interval", "0", "--no-access-log" })
    finally(function() srv:stop() end)
    for _ = 1, 8 do -- both workers have built their state
      assert.are.equal(200, assert(http.get(srv.url .. "/text")).status)
    end
    local pid = srv.proc:pid()
    local before = rss_kb(pid)
    for _ = 1, 10 do
      assert.are.equal(500, assert(http.get(srv.url .. "/alloc", { timeout = 30 })).status)
    end
    for _ = 1, 8 do
      assert.are.equal(200, assert(http.get(srv.url .. "/text")).status)
    end
    clock.sleep(0.2)
    local after = rss_kb(pid)
    -- ten states filled to 64 MB each; each was closed and given back
    local msg = ("VmRSS %d kB before, %d kB after 10 cap failures"):format(before, after)
    if os.getenv("HORCRUX_TEST_SANITIZE") == "1" then
      -- ASan's allocator keeps freed memory in its quarantine: RSS tells
      -- nothing there; the normal run checks it
      print("memory_spec (sanitizer run, not checked): " .. msg)
    else
      assert.is_true(after - before < 16 * 1024, msg)
    end
    assert.truthy(srv:logtext():find("hit its memory cap", 1, true), srv:logtext())
  end)
end)
