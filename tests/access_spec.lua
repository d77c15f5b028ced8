-- Who may reach the server, and how many at once: the token on every route
-- when listening beyond loopback, --token-file, --max-connections and
-- --max-per-ip, each against the shipped routes and a real engine.
--
-- Beyond loopback means an address of this machine that is not 127.x
-- (http.lan_address(): the first global IPv4 address, eth0's here); a
-- machine without one fails these specs rather than skipping them.
local http = require "http"
local support = require "support"
local proc = require "horcrux.proc"
local clock = require "horcrux.clock"

local PATH = "PATH=" .. os.getenv("PATH")
local TOKEN = "access-spec-token-0123456789abcdef"

-- The request's status, or nil and curl's complaint when no HTTP answer
-- came (a refused or closed connection, or none within `timeout`).
local function status(method, url, token, timeout)
  local r, err = http.request(method, url, { timeout = timeout or 10,
    headers = token and { Authorization = "Bearer " .. token } or nil })
  return r and r.status, r and r.body or err
end

-- Opens n connections to host:port that send half a request and stay
-- open; returns the client process once they are all open (its output in
-- out), or raises.
local function hold(host, port, n, out)
  local p = assert(proc.spawn({ "python3", "tests/mocks/slow_client.py", host,
    tostring(port), tostring(n), "30" }, { stdout = out, stderr = out }))
  for _ = 1, 200 do
    if http.read_file(out):find("ready " .. n, 1, true) then
      return p
    end
    if p:wait(0) then
      break
    end
    clock.sleep(0.05)
  end
  p:kill("TERM")
  p:wait(5)
  error("the slow client did not open its connections: " .. http.read_file(out))
end

describe("listening beyond loopback", function()
  local srv, id, name

  setup(function()
    id, name = support.run_container({ name = "access" })
    srv = http.start({ host = http.lan_address(), env = { PATH, "HORCRUX_TOKEN=" .. TOKEN } })
  end)

  teardown(function()
    local ok, err = true, nil
    if srv then
      ok, err = pcall(srv.stop, srv)
    end
    if id then
      support.remove(id)
    end
    assert(ok, err)
  end)

  it("needs the token on every route, reads and /healthz included", function()
    assert.matches("^http://%d+%.%d+%.%d+%.%d+:", srv.url)
    assert.is_nil(srv.url:find("127.", 1, true))
    local reads = { "/healthz", "/api/containers", "/api/containers/" .. name,
      "/api/containers/" .. name .. "/stats", "/api/containers/" .. name .. "/logs",
      "/api/stats", "/api/stacks", "/api/stacks/hxaccess-none", "/no/such/route" }
    local writes = { "/api/containers/" .. name .. "/stop", "/api/stacks/hxaccess-none/start" }
    local function each(f)
      for _, p in ipairs(reads) do f("GET", p) end
      for _, p in ipairs(writes) do f("POST", p) end
      f("DELETE", "/api/containers/hxaccess-none")
      f("PUT", "/api/containers/" .. name)
      f("PATCH", "/api/containers/" .. name)
    end
    each(function(method, path)
      local what = method .. " " .. path
      local st, body = status(method, srv.url .. path)
      assert.are.equal(401, st, what .. ": " .. tostring(body))
      st, body = status(method, srv.url .. path, TOKEN:upper())
      assert.are.equal(403, st, what .. ": " .. tostring(body))
    end)
    -- with the token, the reads are answered as on loopback
    for _, p in ipairs(reads) do
      local st, body = status("GET", srv.url .. p, TOKEN)
      local want = (p:find("none", 1, true) or p:find("no/such", 1, true)) and 404 or 200
      assert.are.equal(want, st, p .. ": " .. tostring(body))
    end
    assert.are.equal("running", support.docker():inspect(id).State.Status)
    -- no refused request reached the log with the token in it
    clock.sleep(0.1)
    assert.is_nil(srv:logtext():find(TOKEN, 1, true))
    assert.is_nil(srv:logtext():find(TOKEN:upper(), 1, true))
  end)

  it("says so at start, and refuses to start there without a token", function()
    assert.truthy(srv:logtext():find("beyond loopback", 1, true), srv:logtext())
    local r = proc.run({ http.bin, "serve", "--listen", http.lan_address() .. ":0",
      "--scripts", "lua" }, { timeout = 10, env = { PATH } })
    assert.are.equal(2, r.status)
    assert.truthy(r.stderr:find("needs a bearer token", 1, true), r.stderr)
  end)
end)

describe("--token-file", function()
  local dir

  setup(function()
    dir = http.scripts_dir({})
  end)

  teardown(function()
    if dir then
      proc.run({ "rm", "-rf", dir })
    end
  end)

  local function token_file(name, text, mode)
    local path = dir .. "/" .. name
    local f = assert(io.open(path, "w"))
    f:write(text)
    f:close()
    assert.are.equal(0, proc.run({ "chmod", mode or "600", path }).status)
    return path
  end

  it("takes the file's first line as the token, without its line end", function()
    local path = token_file("token", "file-token-0123456789abcdef\r\nsecond-line-token\n")
    local srv = http.start({ args = { "--token-file", path }, env = { PATH } })
    finally(function() srv:stop() end)
    local url = srv.url .. "/api/containers/hxtest-no-such-container/start"
    assert.are.equal(401, status("POST", url))
    assert.are.equal(403, status("POST", url, "second-line-token"))
    assert.are.equal(403, status("POST", url, "file-token-0123456789abcdef\r"))
    -- past the guard: the route itself answers (no such container)
    local st, body = status("POST", url, "file-token-0123456789abcdef")
    assert.are.equal(404, st, body)
    assert.is_nil(srv:logtext():find("readable by other users", 1, true))
    clock.sleep(0.1)
    assert.is_nil(srv:logtext():find("file-token", 1, true))
  end)

  it("warns when others may read it, and refuses a missing or empty file", function()
    local open = token_file("open", "open-token-0123456789abcdef\n", "644")
    local srv = http.start({ args = { "--token-file", open }, env = { PATH } })
    finally(function() srv:stop() end)
    assert.truthy(srv:logtext():find("readable by other users", 1, true), srv:logtext())
    local st = status("POST", srv.url .. "/api/containers/hxtest-no-such-container/start",
      "open-token-0123456789abcdef")
    assert.are.equal(404, st)
    for _, case in ipairs({ { dir .. "/missing", "No such file" },
      { token_file("empty", "\n"), "empty" } }) do
      local r = proc.run({ http.bin, "serve", "--listen", "127.0.0.1:0", "--scripts", "lua",
        "--token-file", case[1] }, { timeout = 10, env = { PATH } })
      assert.are.equal(2, r.status, case[1])
      assert.truthy(r.stderr:find(case[1], 1, true), r.stderr)
      assert.truthy(r.stderr:find(case[2], 1, true), r.stderr)
    end
  end)
end)

describe("connection limits", function()
  it("--max-connections: serves no connection past the limit until one closes", function()
    local srv = http.start({ args = { "--max-connections", "4" }, env = { PATH } })
    local out, got = os.tmpname(), os.tmpname()
    local slow, waiting
    finally(function()
      local ok, err = pcall(srv.stop, srv)
      for _, p in ipairs({ slow or false, waiting or false }) do
        if p then
          p:kill("TERM")
          p:wait(5)
        end
      end
      os.remove(out)
      os.remove(got)
      assert(ok, err)
    end)
    assert.are.equal(200, status("GET", srv.url .. "/healthz"))
    slow = hold("127.0.0.1", srv.port, 4, out)
    -- a fifth: the server does not take it (it waits in the listen queue)
    local t0 = clock.mono_ns()
    waiting = assert(proc.spawn({ "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
      "--max-time", "20", srv.url .. "/healthz" }, { stdout = got }))
    clock.sleep(1.5)
    assert.is_nil(waiting:wait(0), "a fifth connection was answered: "
      .. http.read_file(got))
    -- one of the four closes (all do): the fifth is served at once
    slow:kill("TERM")
    slow:wait(5)
    slow = nil
    local st = waiting:wait(15)
    waiting = nil
    assert.are.equal(0, st and st.status)
    assert.are.equal("200", http.read_file(got))
    assert.is_true((clock.mono_ns() - t0) / 1e9 < 15)
  end)

  it("--max-per-ip: refuses a client address past its limit, serves another address", function()
    local lan = http.lan_address()
    local srv = http.start({ host = "0.0.0.0", args = { "--max-per-ip", "3" },
      env = { PATH, "HORCRUX_TOKEN=" .. TOKEN } })
    local out = os.tmpname()
    local slow
    finally(function()
      local ok, err = pcall(srv.stop, srv)
      if slow then
        slow:kill("TERM")
        slow:wait(5)
      end
      os.remove(out)
      assert(ok, err)
    end)
    local other = "http://" .. lan .. ":" .. srv.port
    slow = hold("127.0.0.1", srv.port, 3, out)
    -- 127.0.0.1 has its 3; a 4th from it gets no answer
    local st0, err = status("GET", srv.url .. "/healthz", TOKEN, 3)
    assert.is_nil(st0, "a 4th connection from 127.0.0.1 was answered")
    assert.truthy(err:find("curl exit", 1, true), err)
    -- the machine's other address is another client: served
    local st, body = status("GET", other .. "/healthz", TOKEN)
    assert.are.equal(200, st, body)
    slow:kill("TERM")
    slow:wait(5)
    slow = nil
    local ok = false
    for _ = 1, 50 do
      if status("GET", srv.url .. "/healthz", TOKEN) == 200 then
        ok = true
        break
      end
      clock.sleep(0.1)
    end
    assert.is_true(ok, "127.0.0.1 not served again once its connections closed")
  end)
end)
