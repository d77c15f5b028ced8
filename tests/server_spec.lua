-- The host over HTTP: routing, errors, limits, reload, concurrency, signals.
local http = require "http"
local proc = require "horcrux.proc"
local clock = require "horcrux.clock"

local FIXTURE = "tests/fixtures/routes"
local TOKEN = "server-spec-token-0123"
local AUTH = { Authorization = "Bearer " .. TOKEN }
local ENV = { "HORCRUX_TOKEN=" .. TOKEN, "PATH=" .. os.getenv("PATH") }

local function copy_routes(extra)
  return http.scripts_dir({
    ["routes.lua"] = http.read_file(FIXTURE .. "/routes.lua") .. (extra or ""),
  })
end

describe("horcrux serve", function()
  local srv

  setup(function()
    srv = http.start({ scripts = FIXTURE, env = ENV,
      args = { "--budget", "20000000", "--memory", "64", "--workers", "2" } })
  end)

  teardown(function()
    if srv then
      assert.are.equal(0, srv:stop().status)
    end
  end)

  it("serves a route with params and query as JSON", function()
    local r = assert(http.get(srv.url .. "/api/hello/world?q=1"))
    assert.are.equal(200, r.status)
    assert.are.equal("application/json", r.headers["content-type"])
    assert.are.same({ hello = "world", q = "1" }, r.json)
    assert.matches("^%x+$", r.headers["x-request-id"])
  end)

  it("passes the body and headers, and returns the route's headers", function()
    local r = assert(http.request("POST", srv.url .. "/api/hello/x",
      { body = "payload\0with zero",
        headers = { ["X-Test"] = "t1", Authorization = AUTH.Authorization } }))
    assert.are.equal(201, r.status)
    assert.are.equal("payload\0with zero", r.body)
    assert.are.equal("t1", r.headers["x-echo"])
    assert.are.equal("text/plain", r.headers["content-type"])
  end)

  it("sends a string body as text", function()
    local r = assert(http.get(srv.url .. "/text"))
    assert.are.equal(200, r.status)
    assert.are.equal("plain", r.body)
    assert.matches("^text/plain", r.headers["content-type"])
  end)

  it("answers 404 for an unknown path, as JSON", function()
    local r = assert(http.get(srv.url .. "/nope/nothing"))
    assert.are.equal(404, r.status)
    assert.are.equal("not_found", r.json.error.code)
  end)

  it("answers 405 with Allow for a wrong method", function()
    local r = assert(http.request("DELETE", srv.url .. "/api/hello/x",
      { headers = AUTH }))
    assert.are.equal(405, r.status)
    assert.are.equal("GET, POST", r.headers["allow"])
    assert.are.equal("method_not_allowed", r.json.error.code)
  end)

  it("answers 500 with a request id for a route that errors, and logs it", function()
    local r = assert(http.get(srv.url .. "/error"))
    assert.are.equal(500, r.status)
    local id = r.json.error.request_id
    assert.are.equal(r.headers["x-request-id"], id)
    clock.sleep(0.1)
    local log = srv:logtext()
    assert.truthy(log:find("id=" .. id, 1, true))
    assert.truthy(log:find("boom in a route", 1, true))
    assert.are.equal(200, http.get(srv.url .. "/text").status)
  end)

  it("answers a raised failure with its headers", function()
    local r = assert(http.get(srv.url .. "/busy"))
    assert.are.equal(503, r.status)
    assert.are.equal("5", r.headers["retry-after"])
    assert.are.same({ code = "unavailable", message = "busy, ask again" },
      r.json.error)
  end)

  it("answers a route's failure and error raised after a wait, and counts them", function()
    local r = assert(http.get(srv.url .. "/late-failure"))
    assert.are.equal(409, r.status)
    assert.are.same({ code = "conflict", message = "refused after a wait",
      field = "late" }, r.json.error)
    r = assert(http.get(srv.url .. "/late-error"))
    assert.are.equal(500, r.status)
    assert.are.equal("internal", r.json.error.code)
    local id = r.json.error.request_id
    assert.are.equal(r.headers["x-request-id"], id)
    clock.sleep(0.1)
    local line
    for l in srv:logtext():gmatch("[^\n]+") do
      if l:find("id=" .. id, 1, true) and l:find(" error ", 1, true) then
        line = l
      end
    end
    assert.truthy(line, srv:logtext())
    assert.truthy(line:find("GET /late-error: ", 1, true), line)
    assert.truthy(line:find("boom after a wait", 1, true), line)
    -- the traceback of the route's own thread, down to its line
    assert.truthy(line:find("stack traceback:", 1, true), line)
    assert.truthy(line:find("routes.lua:64:", 1, true), line)
    local text = http.get(srv.url .. "/metrics").body
    for route, status in pairs({ ["/late-failure"] = 409,
        ["/late-error"] = 500, ["/error"] = 500 }) do
      assert.truthy(text:find(('horcrux_http_requests_total{method="GET",'
        .. 'route="%s",status="%d"}'):format(route, status), 1, true), text)
    end
  end)

  it("refuses undeclared globals in routes", function()
    local r = assert(http.get(srv.url .. "/global"))
    assert.are.equal(500, r.status)
    clock.sleep(0.1)
    assert.truthy(srv:logtext():find("undeclared global 'leaked_global'", 1, true))
  end)

  it("answers 500 for a bad status and for a missing one", function()
    assert.are.equal(500, http.get(srv.url .. "/bad-status").status)
    assert.are.equal(500, http.get(srv.url .. "/empty").status)
  end)

  it("stops an endless loop with the instruction budget and keeps serving", function()
    local r = assert(http.get(srv.url .. "/loop", { timeout = 20 }))
    assert.are.equal(500, r.status)
    r = assert(http.get(srv.url .. "/pcall-loop", { timeout = 20 }))
    assert.are.equal(500, r.status)
    clock.sleep(0.1)
    assert.truthy(srv:logtext():find("instruction budget", 1, true))
    assert.are.equal(200, http.get(srv.url .. "/text").status)
  end)

  it("stops an unbounded allocation with the memory cap and keeps serving", function()
    local r = assert(http.get(srv.url .. "/alloc", { timeout = 20 }))
    assert.are.equal(500, r.status)
    for _ = 1, 4 do -- every worker still answers
      assert.are.same({ hello = "again" },
        http.get(srv.url .. "/api/hello/again").json)
    end
  end)

  it("builds the request table the route reads: every field", function()
    local r = assert(http.request("POST", srv.url .. "/api/fields/v?a=1&b=2&a=3",
      { body = "the body", headers = { ["X-Test"] = "t", Authorization = AUTH.Authorization } }))
    assert.are.equal(200, r.status)
    local f = r.json
    assert.are.equal("POST", f.method)
    assert.are.equal("/api/fields/v", f.path)
    assert.are.same({ x = "v" }, f.params)
    assert.are.same({ a = "1", b = "2" }, f.query)
    assert.are.same({ { "a", "1" }, { "b", "2" }, { "a", "3" } }, f.args)
    assert.are.equal("t", f.headers["x-test"])
    assert.are.equal("the body", f.body)
    assert.are.equal(r.headers["x-request-id"], f.id)
    assert.are.equal("127.0.0.1", f.remote)
    assert.is_false(f.read_only)
    assert.is_true(f.authenticated)
  end)

  it("shows only request fields to pairs: what was read, nothing of the host's", function()
    local r = assert(http.get(srv.url .. "/pairs"))
    assert.are.equal(200, r.status)
    assert.are.same({ "id", "method", "params", "path" }, r.json)
  end)

  it("checks a route's query before it runs, and answers structured failures", function()
    local r = assert(http.get(srv.url .. "/checked?n=4&all=1&name=ab"))
    assert.are.equal(200, r.status)
    assert.are.same({ n = 4, all = true, name = "ab" }, r.json.query)
    r = assert(http.get(srv.url .. "/checked"))
    assert.are.equal(200, r.status)
    assert.is_table(r.json.query)
    assert.is_nil(next(r.json.query))
    r = assert(http.get(srv.url .. "/checked?foo=1"))
    assert.are.equal(400, r.status)
    assert.are.equal("bad_request", r.json.error.code)
    assert.are.equal("foo", r.json.error.field)
    r = assert(http.get(srv.url .. "/checked?n=1&n=2"))
    assert.are.equal(400, r.status)
    assert.are.equal("n", r.json.error.field)
    r = assert(http.get(srv.url .. "/refuse/conflict"))
    assert.are.equal(409, r.status)
    assert.are.same({ code = "conflict", message = "refused as conflict",
      field = "kind" }, r.json.error)
  end)

  it("matches *name over several segments and serves HEAD from GET routes", function()
    local r = assert(http.get(srv.url .. "/files/a/b/c/raw"))
    assert.are.equal(200, r.status)
    assert.are.equal("a/b/c", r.body)
    -- curl --head: with -X HEAD it would wait for the body
    local h = proc.run({ "curl", "-sS", "--head", "--max-time", "10",
      srv.url .. "/text" }, { timeout = 15 })
    assert.are.equal(0, h.status, h.stderr)
    assert.matches("^HTTP/1.1 200", h.stdout)
    assert.truthy(h.stdout:lower():find("content-length: 5", 1, true), h.stdout)
  end)

  it("takes request headers of 15 KiB, a Cookie of 7 KiB among them, and answers a larger set 431", function()
    local r = assert(http.get(srv.url .. "/api/hello/big",
      { headers = { ["X-Big"] = string.rep("b", 15000) } }))
    assert.are.equal(200, r.status)
    -- A Cookie of 4 KiB and more once got a 431 whose head was sent twice
    -- (libmicrohttpd copies the cookies into the connection's pool).
    for _, n in ipairs({ 4096, 7000 }) do
      r = assert(http.get(srv.url .. "/api/hello/big",
        { headers = { Cookie = "a=" .. string.rep("c", n) .. "; b=2" } }))
      assert.are.equal(200, r.status, "Cookie of " .. n .. " bytes")
      assert.are.same({ hello = "big" }, r.json)
    end
    -- Beyond the pool: one well-formed 431, its body no second head.
    r = assert(http.get(srv.url .. "/api/hello/big",
      { headers = { ["X-Big"] = string.rep("b", 20000) } }))
    assert.are.equal(431, r.status)
    assert.are.equal("close", (r.headers.connection or ""):lower())
    assert.are.equal(tonumber(r.headers["content-length"]), #r.body)
    assert.falsy(r.body:find("HTTP/1", 1, true), r.body)
  end)

  it("does not let waiting routes stall other requests", function()
    -- The peer of the quick request is itself on the idle server, just
    -- before (curl's start, which load slows, is in both figures); a
    -- stall would add most of a waiting route's second.
    local function quick()
      local r = assert(http.get(srv.url .. "/text"))
      assert.are.equal(200, r.status)
      return r.time
    end
    local idle_s = math.min(quick(), quick(), quick())
    -- 8 requests that each wait 1 s, on 2 workers, then a quick one.
    local waiting, outs = {}, {}
    for i = 1, 8 do
      outs[i] = os.tmpname()
      waiting[i] = assert(proc.spawn({ "curl", "-s", "-o", "/dev/null", "-w", "%{time_total}",
        "--max-time", "10", srv.url .. "/sleep?s=1" }, { stdout = outs[i] }))
    end
    clock.sleep(0.2)
    local quick_s = math.min(quick(), quick(), quick())
    local took = {}
    for i = 1, 8 do
      local st = waiting[i]:wait(10)
      assert.are.equal(0, st and st.status)
      took[i] = tonumber(http.read_file(outs[i]))
      os.remove(outs[i])
    end
    table.sort(took)
    assert.is_true(quick_s < idle_s + (took[1] - 0.2) / 2, ("quick request %.1f ms "
      .. "while routes wait, %.1f ms idle"):format(quick_s * 1000, idle_s * 1000))
    -- all 8 waited at once: the last took about what the first did (one
    -- at a time per worker, the last would take 4 times as long)
    assert.is_true(took[8] < 2 * took[1], ("waiting routes took %.2f-%.2f s")
      :format(took[1], took[8]))
  end)
end)

describe("horcrux serve command line", function()
  it("prints the usage on --help and exits 0", function()
    local r = proc.run({ http.bin, "serve", "--help" }, { timeout = 10 })
    assert.are.equal(0, r.status)
    assert.truthy(r.stdout:find("usage: horcrux serve", 1, true))
    assert.are.equal("", r.stderr)
  end)

  it("lists the same flags in --help as the README's Configuration table", function()
    local r = proc.run({ http.bin, "serve", "--help" }, { timeout = 10 })
    local usage = r.stdout:match("^(usage: horcrux serve.-)\n%s*horcrux run")
    assert.truthy(usage, r.stdout)
    local readme = http.read_file("README.md")
    local config = readme:match("\n## Configuration\n(.-)\n## ")
    assert.truthy(config, "the README has no Configuration section")
    local function flags(text, pattern)
      local set = {}
      for f in text:gmatch(pattern) do
        set[f] = true
      end
      return set
    end
    local from_help = flags(usage, "%-%-[%w-]+")
    from_help["--help"] = nil
    assert.is_true(from_help["--listen"] and from_help["--no-access-log"], usage)
    assert.are.same(from_help, flags(config, "\n| `(%-%-[%w-]+)`"))
    assert.are.same(from_help, flags(config:match("```\n(.-)```"), "%-%-[%w-]+"))
  end)

  it("runs one worker without a libmicrohttpd warning", function()
    local srv = http.start({ scripts = FIXTURE, args = { "--workers", "1" } })
    finally(function() srv:stop() end)
    assert.are.equal(200, http.get(srv.url .. "/text").status)
    local log = srv:logtext()
    assert.is_nil(log:find("Warning", 1, true), log)
    assert.is_nil(log:find("ignored", 1, true), log)
  end)

  it("writes one access line per request", function()
    local srv = http.start({ scripts = FIXTURE })
    finally(function() srv:stop() end)
    local r = assert(http.get(srv.url .. "/text?x=1"))
    clock.sleep(0.1)
    local line = srv:logtext():match("[^\n]* access GET /text [^\n]*")
    assert.truthy(line, srv:logtext())
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ access GET /text 200 %d+%.%dms 127%.0%.0%.1 id=" ..
      r.headers["x-request-id"] .. "$", line)
  end)
end)

describe("horcrux serve route threads", function()
  it("keeps a request table a route stashed safe after its request: unread fields are nil", function()
    -- One worker: /kept runs in the state whose route kept the table.
    local srv = http.start({ scripts = FIXTURE, args = { "--workers", "1" } })
    finally(function() srv:stop() end)
    local id = assert(http.get(srv.url .. "/keep")).json.id
    for _ = 1, 4 do
      local r = assert(http.get(srv.url .. "/kept"))
      assert.are.equal(200, r.status)
      assert.are.equal("GET", r.json.method)
      assert.are.equal(id, r.json.id) -- read while it ran
      assert.is_true(r.json.headers)
      assert.is_true(r.json.body)
    end
  end)

  it("sends a large body whole to a slow reader while other requests collect garbage", function()
    -- MHD sends the body from the route's string, not a copy: the string
    -- must live until the last byte went, whatever runs meanwhile on the
    -- worker (under ASan a freed body would fail here).
    local dir = copy_routes([[
route("GET", "/big", function()
  return 200, string.rep("0123456789abcdef", 256 * 1024) -- 4 MiB, new
end)
route("GET", "/gc", function()
  collectgarbage("collect")
  return 200, { ok = true }
end)
]])
    local srv = http.start({ scripts = dir, args = { "--workers", "1" } })
    finally(function() srv:stop() end)
    local out = os.tmpname()
    local reader = assert(proc.spawn({ "python3", "-c", [[
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET /big HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
buf = b""
while True:
    d = s.recv(4096)
    if not d:
        break
    buf += d
    if len(buf) < 1 << 20:
        time.sleep(0.002)
head, _, body = buf.partition(b"\r\n\r\n")
ok = body == b"0123456789abcdef" * (256 * 1024)
print(len(body), "intact" if ok else "damaged")
]], tostring(srv.port) }, { stdout = out, stderr = out }))
    -- while it reads: collections and other answers on the same worker
    for _ = 1, 20 do
      assert.are.equal(200, assert(http.get(srv.url .. "/gc")).status)
      clock.sleep(0.05)
    end
    local st = reader:wait(60)
    assert.are.equal(0, st and st.status, http.read_file(out))
    assert.are.equal(tostring(4 * 1024 * 1024) .. " intact",
      http.read_file(out):match("^(%d+ %a+)"))
    os.remove(out)
  end)

  it("stops every runaway route on a worker whose threads are reused", function()
    -- One worker: the requests below run on the threads of one state. A
    -- thread the budget stopped must not come back with hooks off.
    local srv = http.start({ scripts = FIXTURE,
      args = { "--workers", "1", "--budget", "2000000" } })
    finally(function() srv:stop() end)
    for _, path in ipairs({ "/loop", "/pcall-loop", "/text", "/loop", "/pcall-loop",
      "/error", "/pcall-loop" }) do
      local r = assert(http.get(srv.url .. path, { timeout = 10 }))
      assert.are.equal(path == "/text" and 200 or 500, r.status, path)
    end
    for _ = 1, 20 do
      assert.are.equal(200, http.get(srv.url .. "/text").status)
    end
  end)
end)

describe("horcrux serve reload", function()
  it("serves a route added to routes.lua after SIGHUP, and keeps the old routes when the new file is broken", function()
    local dir = copy_routes()
    local srv = http.start({ scripts = dir })
    finally(function() srv:stop() end)
    assert.are.equal(404, http.get(srv.url .. "/added").status)

    local f = assert(io.open(dir .. "/routes.lua", "a"))
    f:write('\nroute("GET", "/added", function() return 200, { added = true } end)\n')
    f:close()
    srv:signal("HUP")
    local ok = false
    for _ = 1, 50 do
      local r = http.get(srv.url .. "/added")
      if r.status == 200 then
        ok = r.json.added == true
        break
      end
      clock.sleep(0.1)
    end
    assert.is_true(ok, "the added route is not served after SIGHUP\n" .. srv:logtext())

    f = assert(io.open(dir .. "/routes.lua", "a"))
    f:write('\nroute("GET", "/broken", function() return 200 end\n') -- syntax error
    f:close()
    srv:signal("HUP")
    clock.sleep(0.5)
    assert.truthy(srv:logtext():find("reload failed", 1, true))
    for _ = 1, 4 do
      assert.are.equal(200, http.get(srv.url .. "/added").status)
      assert.are.equal(200, http.get(srv.url .. "/text").status)
    end
  end)

  it("refuses to start on scripts that do not load", function()
    local dir = http.scripts_dir({ ["routes.lua"] = "route('GET', '/x', function() end\n" })
    local log = os.tmpname()
    local r = proc.run({ http.bin, "serve", "--listen", "127.0.0.1:0",
      "--scripts", dir }, { timeout = 10 })
    assert.are_not.equal(0, r.status)
    assert.truthy(r.stderr:find("cannot load the scripts", 1, true))
    os.remove(log)
  end)
end)

describe("horcrux serve: a script a check refuses", function()
  it("is refused in the check's own words; an error in the script keeps "
    .. "its traceback", function()
      for _, case in ipairs({
        { "policy.lua", "return { polcy = {} }",
          "cannot load the scripts: policy.lua: unknown setting polcy", false },
        { "hooks.lua", 'return { { name = "x", url = "ftp://h/x" } }',
          "cannot load the scripts: hooks.lua: hook 1", false },
        { "hooks.lua", "local x\nreturn x.y",
          "hooks.lua:2: attempt to index a nil value", true },
      }) do
        local dir = http.scripts_dir({ [case[1]] = case[2] })
        local r = proc.run({ http.bin, "serve", "--listen", "127.0.0.1:0",
          "--scripts", dir }, { timeout = 10 })
        assert.are_not.equal(0, r.status)
        assert.truthy(r.stderr:find(case[3], 1, true), r.stderr)
        assert.are.equal(case[4], r.stderr:find("stack traceback", 1, true)
          ~= nil, r.stderr)
      end
    end)
end)

describe("horcrux serve shutdown", function()
  it("finishes a request in flight on SIGTERM, then exits 0", function()
    local srv = http.start({ scripts = FIXTURE })
    local out = os.tmpname()
    local t0 = clock.mono_ns()
    local client = assert(proc.spawn({ "curl", "-s", "--max-time", "10",
      "-w", "\n%{http_code}", srv.url .. "/sleep?s=2" }, { stdout = out }))
    clock.sleep(0.5) -- curl has connected and the route sleeps
    srv:signal("TERM")
    local cst = client:wait(10)
    local took = (clock.mono_ns() - t0) / 1e9
    local text = http.read_file(out)
    os.remove(out)
    assert.are.equal(0, cst.status)
    -- the route's own answer, after its whole two seconds: it was in
    -- flight when the signal came, and ran to its end
    assert.are.equal('{"slept":true}\n200', text)
    assert.is_true(took >= 2, took)
    local st = srv:stop()
    assert.are.equal(0, st.status)
    assert.truthy(srv:logtext():find("stopped", 1, true))
  end)
end)

describe("horcrux serve guard", function()
  it("refuses a mutating request without a token, with a wrong one, and lets the right one in", function()
    local srv = http.start({ scripts = FIXTURE, env = { "HORCRUX_TOKEN=s3cret-token-0123456789", "PATH=" .. os.getenv("PATH") } })
    finally(function() srv:stop() end)
    local r = assert(http.request("POST", srv.url .. "/api/hello/x", { body = "b" }))
    assert.are.equal(401, r.status)
    assert.are.equal("unauthorized", r.json.error.code)
    r = assert(http.request("POST", srv.url .. "/api/hello/x",
      { body = "b", headers = { Authorization = "Bearer s3cret-token-012345678X" } }))
    assert.are.equal(403, r.status)
    assert.are.equal("forbidden", r.json.error.code)
    -- another scheme, or Bearer with nothing after it, carries no token
    for _, auth in ipairs({ "Basic czNjcmV0OnRva2Vu", "Bearer", "Bearer ",
      "s3cret-token-0123456789" }) do
      r = assert(http.request("POST", srv.url .. "/api/hello/x",
        { body = "b", headers = { Authorization = auth } }))
      assert.are.equal(401, r.status, auth)
      assert.are.equal("send Authorization: Bearer <token>", r.json.error.message)
    end
    r = assert(http.request("POST", srv.url .. "/api/hello/x",
      { body = "b", headers = { Authorization = "Bearer s3cret-token-0123456789" } }))
    assert.are.equal(201, r.status)
    -- reads need no token on loopback
    assert.are.equal(200, http.get(srv.url .. "/text").status)
    -- the token never reaches the log
    clock.sleep(0.1)
    assert.is_nil(srv:logtext():find("s3cret", 1, true))
  end)

  it("refuses every mutating request in read-only mode, and tells routes", function()
    local dir = copy_routes('\nroute("GET", "/read-only", function(req) '
      .. 'return 200, { read_only = req.read_only } end)\n')
    local srv = http.start({ scripts = dir, args = { "--read-only" },
      env = ENV })
    finally(function() srv:stop() end)
    for _, m in ipairs({ "POST", "PUT", "PATCH", "DELETE" }) do
      local r = assert(http.request(m, srv.url .. "/api/hello/x",
        { body = "b", headers = AUTH }))
      assert.are.equal(403, r.status, m)
      assert.truthy(r.json.error.message:find("read-only", 1, true), m)
    end
    local r = assert(http.get(srv.url .. "/read-only"))
    assert.are.equal(200, r.status)
    assert.is_true(r.json.read_only)
  end)

  it("refuses a port out of range, and a port another server holds", function()
    for _, listen in ipairs({ "127.0.0.1:99999", "127.0.0.1:65536",
      "127.0.0.1:-1", "127.0.0.1:80x", "127.0.0.1:" }) do
      local r = proc.run({ http.bin, "serve", "--listen", listen,
        "--scripts", FIXTURE }, { timeout = 10 })
      assert.are.equal(2, r.status, listen)
      assert.truthy(r.stderr:find("a port from 0 to 65535", 1, true), r.stderr)
    end
    -- no SO_REUSEPORT: a second server on the same port would take half
    -- of the first one's connections
    local srv = http.start({ scripts = FIXTURE, env = ENV })
    finally(function() srv:stop() end)
    local r = proc.run({ http.bin, "serve", "--listen", srv.url:match("//(.*)$"),
      "--scripts", FIXTURE }, { timeout = 10, env = ENV })
    assert.are.equal(1, r.status)
    assert.truthy(r.stderr:find("cannot listen on", 1, true), r.stderr)
    assert.truthy(r.stderr:find("Address already in use", 1, true), r.stderr)
  end)

  it("refuses to listen beyond loopback without a token", function()
    local r = proc.run({ http.bin, "serve", "--listen", "0.0.0.0:0",
      "--scripts", FIXTURE }, { timeout = 10, env = { "PATH=" .. os.getenv("PATH") } })
    assert.are.equal(2, r.status)
    assert.truthy(r.stderr:find("needs a bearer token", 1, true))
  end)

  it("answers 413 to a body over the limit without reading it", function()
    local srv = http.start({ scripts = FIXTURE, args = { "--body-max", "1024" },
      env = ENV })
    finally(function() srv:stop() end)
    local r = assert(http.request("POST", srv.url .. "/api/hello/x",
      { body = string.rep("x", 5000), headers = AUTH }))
    assert.are.equal(413, r.status)
    r = assert(http.request("POST", srv.url .. "/api/hello/x",
      { body = string.rep("x", 1000), headers = AUTH }))
    assert.are.equal(201, r.status)
  end)
end)

describe("fallback.lua checks", function()
  it("refuses a policy whose sources are not sources, saying why", function()
    local dir = http.scripts_dir({ ["fallback.lua"] =
      'return { sources = { require "horcrux.sources.docker_api" } }' })
    local r = proc.run({ http.bin, "serve", "--listen", "127.0.0.1:0",
      "--scripts", dir }, { timeout = 10 })
    assert.are_not.equal(0, r.status)
    assert.truthy(r.stderr:find("sources[2] is a string", 1, true))
    assert.truthy(r.stderr:find("two values", 1, true))
  end)
end)

describe("horcrux serve under a slow client", function()
  it("answers another client within a second while 200 connections sit idle", function()
    local srv = http.start({ scripts = FIXTURE, env = ENV, args = { "--workers", "2" } })
    local out = os.tmpname()
    local slow
    -- one finally (busted keeps only the last): the server stops while the
    -- 200 idle connections are still open -- a clean exit then is part of
    -- what this spec checks -- and the slow client goes after it
    finally(function()
      local ok, err = pcall(srv.stop, srv)
      if slow then
        slow:kill("TERM")
        slow:wait(5)
      end
      os.remove(out)
      assert(ok, err)
    end)
    slow = assert(proc.spawn({ "python3", "tests/mocks/slow_client.py",
      "127.0.0.1", tostring(srv.port), "200", "8" }, { stdout = out, stderr = out }))
    local ready = false
    for _ = 1, 100 do
      if http.read_file(out):find("ready 200", 1, true) then
        ready = true
        break
      end
      clock.sleep(0.05)
    end
    assert.is_true(ready, "the slow client opened its connections: " .. http.read_file(out))
    for _ = 1, 5 do
      local t0 = clock.mono_ns()
      local r = assert(http.get(srv.url .. "/api/hello/fast"))
      local ms = (clock.mono_ns() - t0) / 1e6
      assert.are.equal(200, r.status)
      assert.is_true(ms < 1000, ms .. " ms")
    end
  end)

  it("drops a connection that stays idle past --timeout", function()
    local srv = http.start({ scripts = FIXTURE, env = ENV, args = { "--timeout", "1" } })
    finally(function() srv:stop() end)
    local out = os.tmpname()
    local slow = assert(proc.spawn({ "python3", "-c", [[
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET /text HTTP/1.1\r\nHost: x\r\n")
t = time.time()
s.settimeout(10)
data = s.recv(100)
print("closed" if data == b"" else "data", round(time.time() - t, 1))
]], tostring(srv.port) }, { stdout = out }))
    assert(slow:wait(15))
    local text = http.read_file(out)
    os.remove(out)
    local secs = tonumber(text:match("closed ([%d.]+)"))
    assert.is_number(secs, text)
    -- not before the timeout (a second), and not long after it
    assert.is_true(secs >= 0.9 and secs < 5, text)
  end)
end)

describe("a stream of a route's own (README: horcrux.hub)", function()
  it("reaches its SSE subscribers with what another route publishes",
    function()
      local ss = require "stream_support"
      local clock = require "horcrux.clock"
      local dir = http.scripts_dir({ ["routes.lua"] = [[
local hub = require "horcrux.hub"
local json = require "horcrux.json"
route("GET", "/ops/stream", function() return hub.stream{ topic = "ops" } end)
route("POST", "/ops/note/:word", function(req)
  return 200, { id = hub.publish("ops", json.encode({ word = req.params.word }),
    { event = "ops" }), subscribers = hub.subscribers("ops") }
end)
]] })
      local srv = http.start({ scripts = dir, env = ENV, args = { "--interval", "0" } })
      finally(function() srv:stop() end)
      local c = ss.client("sse", srv.url .. "/ops/stream", 3)
      local r
      for _ = 1, 40 do -- until the client has subscribed
        r = assert(http.request("POST", srv.url .. "/ops/note/first", { headers = AUTH }))
        if r.json.subscribers == 1 then
          break
        end
        clock.sleep(0.05)
      end
      assert.are.same({ id = 0, subscribers = 1 }, r.json) -- no ring: id 0
      r = assert(http.request("POST", srv.url .. "/ops/note/second", { headers = AUTH }))
      local got = {}
      for _, m in ipairs(ss.lines(c, true)) do
        if m.event == "ops" then
          got[#got + 1] = require("horcrux.json").decode(m.data).word
        end
      end
      assert.are.same({ "first", "second" }, got)
    end)
end)

describe("what a route logs", function()
  -- one worker: the two requests wait in the same state at once, their
  -- coroutines taking turns, and each line still names its own request
  it("names the request it was logged for, across a wait", function()
    local dir = http.scripts_dir({ ["routes.lua"] = [[
local log = require "horcrux.log"
local clock = require "horcrux.clock"
route("GET", "/say/:word", function(req)
  log.info("before %s", req.params.word)
  clock.sleep(0.3)
  log.warn("after %s", req.params.word)
  return 200, { word = req.params.word }
end)
]] })
    local srv = http.start({ scripts = dir, env = ENV,
      args = { "--interval", "0", "--workers", "1" } })
    finally(function() srv:stop() end)
    local r = assert(proc.run({ "curl", "-sZ", "-o", "/dev/null", "-w",
      "%{url} %header{x-request-id}\n", srv.url .. "/say/one",
      srv.url .. "/say/two" }))
    local ids = {}
    for word, id in r.stdout:gmatch("/say/(%a+) (%x+)\n") do
      ids[word] = id
    end
    assert.truthy(ids.one and ids.two and ids.one ~= ids.two, r.stdout)
    clock.sleep(0.2)
    local log = srv:logtext()
    for word, id in pairs(ids) do
      for _, l in ipairs({ " info id=" .. id .. " before " .. word .. "\n",
        " warn id=" .. id .. " after " .. word .. "\n" }) do
        assert.truthy(log:find(l, 1, true), l .. " in\n" .. log)
      end
    end
  end)
end)

describe("a route that raises a table", function()
  it("is a 500 with the request id, the table in the log as JSON", function()
    local dir = http.scripts_dir({ ["routes.lua"] =
      'route("GET", "/tbl", function() error({ code = 1, why = "x" }) end)\n' })
    local srv = http.start({ scripts = dir, env = ENV, args = { "--interval", "0" } })
    finally(function() srv:stop() end)
    local r = assert(http.get(srv.url .. "/tbl"))
    assert.are.equal(500, r.status)
    assert.are.equal("internal", r.json.error.code)
    local id = r.json.error.request_id
    clock.sleep(0.2)
    local log = srv:logtext()
    assert.truthy(log:find("id=" .. id .. " GET /tbl: a table raised as an "
      .. 'error: {"code":1,"why":"x"}', 1, true), log)
  end)
end)
