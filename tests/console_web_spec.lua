-- The dashboard in a real browser (Debian's chromium, headless, driven over
-- the DevTools protocol by tests/dashboard.py), against real servers and
-- containers; and the host's file serving on its own, with curl.
local support = require "support"
local http = require "http"
local proc = require "horcrux.proc"
local json = require "horcrux.json"

local PATH = "PATH=" .. os.getenv("PATH")
local PYTHON = io.open("/usr/bin/python3") and "/usr/bin/python3" or "python3"

local function token_file()
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  local t = {}
  for i = 1, 32 do
    t[i] = string.format("%x", math.random(0, 15))
  end
  local token = table.concat(t)
  f:write(token, "\n")
  f:close()
  assert(proc.run({ "chmod", "600", path }).status == 0)
  return path, token
end

-- The shipped routes plus, while the server keeps no history of its own
-- (GET /api/containers/:id/history, horcrux.history), one in its shape
-- built from the container's latest record: the page must draw the
-- server's history when there is one.
local function history_scripts()
  local routes = http.read_file("lua/routes.lua")
  if not routes:find('"/api/containers/:id/history"', 1, true) then
    routes = routes .. [[

route("GET", "/api/containers/:id/history",
  { query = { window = hx.input.string(16), step = hx.input.string(16) } },
  function(req)
    local rec = hx.check(hx.live.stats(req.params.id))
    local now, cpu = hx.clock.now_ns(), rec.cpu_usage_percent or 0
    local points = {}
    for i = 12, 0, -1 do
      points[#points + 1] = { t = hx.time.format(now - i * 5000000000),
        cpu_percent = cpu * (0.9 + i / 120),
        memory_working_set_bytes = rec.memory_usage_bytes,
        network_rx_bytes_per_second = 10 * i, network_tx_bytes_per_second = 0,
        block_read_bytes_per_second = 0, block_write_bytes_per_second = 0,
        pids = rec.pids }
    end
    local s = { min = cpu * 0.9, mean = cpu * 0.95, max = cpu, p90 = cpu,
      p99 = cpu, count = #points }
    return 200, { id = rec.id, window_s = 60, step_s = 5, points = points,
      summary = { cpu_percent = s } }
  end)
]]
  end
  return http.scripts_dir({ ["routes.lua"] = routes })
end

local function free_port()
  local r = assert(proc.run({ PYTHON, "-c", "import socket; s = socket.socket(); "
    .. "s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])" }))
  return assert(tonumber(r.stdout))
end

local function inspect(id)
  local r = assert(proc.run({ "docker", "inspect", "--format",
    "{{.State.Running}}", id }))
  return r.stdout:match("%a+")
end

describe("the dashboard's files", function()
  local srv, tok

  setup(function()
    local path
    path, tok = token_file()
    srv = http.start({ env = { PATH }, args = { "--require-token",
      "--token-file", path, "--interval", "0" } })
  end)

  teardown(function()
    if srv then srv:stop() end
  end)

  it("serves / and /ui/ without the token, the API still needs it", function()
    local r = assert(http.get(srv.url .. "/"))
    assert.are.equal(200, r.status)
    assert.are.equal("text/html; charset=utf-8", r.headers["content-type"])
    assert.truthy(r.body:find("/ui/app.js", 1, true))
    assert.truthy(r.headers["etag"])
    assert.truthy(r.headers["last-modified"])
    assert.truthy(r.headers["content-security-policy"]:find("default-src 'self'", 1, true))
    for file, ctype in pairs({ ["/ui/app.js"] = "text/javascript; charset=utf-8",
      ["/ui/style.css"] = "text/css; charset=utf-8" }) do
      local f = assert(http.get(srv.url .. file))
      assert.are.equal(200, f.status, file)
      assert.are.equal(ctype, f.headers["content-type"])
    end
    assert.are.equal(401, assert(http.get(srv.url .. "/api/stats")).status)
    local s = assert(http.get(srv.url .. "/api/session",
      { headers = { Authorization = "Bearer " .. tok } }))
    assert.are.same({ read_only = false, authenticated = true }, s.json)
  end)

  it("answers 304 to the validators it gave", function()
    local r = assert(http.get(srv.url .. "/"))
    local again = assert(http.get(srv.url .. "/",
      { headers = { ["If-None-Match"] = r.headers["etag"] } }))
    assert.are.equal(304, again.status)
    assert.are.equal("", again.body)
    again = assert(http.get(srv.url .. "/",
      { headers = { ["If-Modified-Since"] = r.headers["last-modified"] } }))
    assert.are.equal(304, again.status)
  end)

  it("refuses names outside the folder's grammar, unknown types, other hosts", function()
    local proc_run = proc.run
    for _, path in ipairs({ "/ui/../routes.lua", "/ui/..%2froutes.lua",
      "/ui/%2e%2e/routes.lua", "/ui/.hidden.js", "/ui//app.js", "/ui/",
      "/ui/nope.js", "/index.html.lua", "/ui/app.js%00.css", "/ui/a/b/c/d/e.js" }) do
      local r = assert(proc_run({ "curl", "-s", "--path-as-is", "-o", "/dev/null",
        "-w", "%{http_code}", srv.url .. path }))
      local code = r.stdout
      -- 404 from the files (or, for a path outside /ui/, the router's 401:
      -- it needs the token like every route here)
      assert.truthy(code == "404" or (code == "401" and not path:find("^/ui/")),
        path .. " -> " .. code)
    end
    local r = assert(http.get(srv.url .. "/", { headers = { Host = "evil.example" } }))
    assert.are.equal(403, r.status)
    -- POST / is not a file request: a route's, with the token rule
    assert.are.equal(401, assert(http.request("POST", srv.url .. "/")).status)
  end)

  it("turns off with --web none, and refuses a --web that is not there", function()
    local s = http.start({ env = { PATH }, args = { "--web", "none", "--interval", "0" } })
    finally(function() s:stop() end)
    assert.are.equal(404, assert(http.get(s.url .. "/")).status)
    local r = assert(proc.run({ http.bin, "serve", "--web", "/nonexistent/web" }))
    assert.are.equal(2, r.status)
    assert.truthy(r.stderr:find("--web /nonexistent/web", 1, true))
  end)
end)

describe("--cors", function()
  local srv, tok
  local ORIGIN = "http://127.0.0.1:9"

  setup(function()
    local path
    path, tok = token_file()
    srv = http.start({ env = { PATH }, args = { "--require-token",
      "--token-file", path, "--cors", ORIGIN, "--cors", "https://dash.example" } })
  end)

  teardown(function()
    if srv then srv:stop() end
  end)

  local function preflight(origin, method)
    return assert(http.request("OPTIONS", srv.url .. "/api/stats", { headers = {
      Origin = origin, ["Access-Control-Request-Method"] = method or "GET",
      ["Access-Control-Request-Headers"] = "authorization" } }))
  end

  it("answers a preflight of a listed origin before the token rule", function()
    local r = preflight(ORIGIN)
    assert.are.equal(204, r.status)
    assert.are.equal(ORIGIN, r.headers["access-control-allow-origin"])
    assert.are.equal("Origin", r.headers["vary"])
    assert.truthy(r.headers["access-control-allow-headers"]:find("Authorization", 1, true))
    assert.truthy(r.headers["access-control-allow-methods"]:find("POST", 1, true))
    assert.are.equal("600", r.headers["access-control-max-age"])
    assert.is_nil(r.headers["access-control-allow-credentials"])
    r = preflight("http://evil.example")
    assert.are.equal(403, r.status)
    assert.is_nil(r.headers["access-control-allow-origin"])
  end)

  it("names a listed origin on answers, refusals and streams; never another", function()
    local auth = "Bearer " .. tok
    local r = assert(http.get(srv.url .. "/api/stats",
      { headers = { Origin = ORIGIN, Authorization = auth } }))
    assert.are.equal(200, r.status)
    assert.are.equal(ORIGIN, r.headers["access-control-allow-origin"])
    assert.are.equal("Origin", r.headers["vary"])
    assert.truthy(r.headers["access-control-expose-headers"]:find("X-Request-Id", 1, true))
    -- a 401 the page must be able to read, to ask for the token
    r = assert(http.get(srv.url .. "/api/stats", { headers = { Origin = ORIGIN } }))
    assert.are.equal(401, r.status)
    assert.are.equal(ORIGIN, r.headers["access-control-allow-origin"])
    r = assert(http.get(srv.url .. "/api/stats",
      { headers = { Origin = "https://dash.example.evil", Authorization = auth } }))
    assert.are.equal(200, r.status)
    assert.is_nil(r.headers["access-control-allow-origin"])
    assert.are.equal("Origin", r.headers["vary"])
    -- the stream: its headers, then curl's time limit ends it
    local s = assert(proc.run({ "curl", "-sS", "-D", "-", "-o", "/dev/null",
      "-m", "1", "-H", "Origin: " .. ORIGIN, "-H", "Authorization: " .. auth,
      srv.url .. "/api/stats/stream" }, { timeout = 10 }))
    assert.truthy(s.stdout:find("text/event-stream", 1, true), s.stdout)
    assert.truthy(s.stdout:find("Access-Control-Allow-Origin: " .. ORIGIN, 1, true), s.stdout)
  end)

  it("refuses a WebSocket from another origin's page, with or without --cors", function()
    local function upgrade(url, origin)
      local r = assert(proc.run({ "curl", "-sS", "-i", "-m", "1", "-H", "Origin: " .. origin,
        "-H", "Connection: Upgrade", "-H", "Upgrade: websocket",
        "-H", "Sec-WebSocket-Version: 13", "-H", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "-H", "Authorization: Bearer " .. tok, url .. "/api/stats/stream" }, { timeout = 10 }))
      return tonumber(r.stdout:match("^HTTP/%S+ (%d+)"))
    end
    assert.are.equal(403, upgrade(srv.url, "http://evil.example"))
    assert.are.equal(101, upgrade(srv.url, ORIGIN))
    assert.are.equal(101, upgrade(srv.url, srv.url)) -- the server's own page
    local plain = http.start({ env = { PATH }, args = { "--interval", "0" } })
    finally(function() plain:stop() end)
    assert.are.equal(403, upgrade(plain.url, "http://evil.example"))
    -- without --cors: no CORS header, and no preflight answer of the host
    local r = assert(http.get(plain.url .. "/api/session", { headers = { Origin = ORIGIN } }))
    assert.is_nil(r.headers["access-control-allow-origin"])
    assert.is_nil(r.headers["vary"])
  end)

  it("refuses a malformed origin at start", function()
    for origin, why in pairs({ ["*"] = "wildcard", ["null"] = "sandboxed",
      ["http://dash.example/"] = "no trailing slash", ["https://dash.example:443"] = "default port",
      ["dash.example"] = "http://HOST", ["http://Dash.example"] = "lower case" }) do
      local r = assert(proc.run({ http.bin, "serve", "--cors", origin }, { timeout = 10 }))
      assert.are.equal(2, r.status, origin)
      assert.truthy(r.stderr:find(why, 1, true), r.stderr)
    end
  end)
end)

describe("the dashboard's buttons and order in headless Chromium", function()
  it("offers unpause for a paused container, and sorts n2 before n10", function()
    local paused, paused_name = support.run_container({ name = "wpaused" })
    local n2, n2_name = support.run_container({ name = "wn2" })
    local n10, n10_name = support.run_container({ name = "wn10" })
    local srv
    finally(function()
      if srv then srv:stop() end
      for _, id in ipairs({ paused, n2, n10 }) do support.remove(id) end
    end)
    assert.are.equal(0, proc.run({ "docker", "pause", paused }).status)
    srv = http.start({ env = { PATH } })
    local r = assert(proc.run({ PYTHON, "tests/dashboard.py", json.encode({
      { scenario = "states", url = srv.url, paused = paused_name,
        numbered = { n10_name, n2_name } },
    }) }, { timeout = 60 }))
    assert.are.equal(0, r.status, r.stderr)
    local s = assert(json.decode(r.stdout), r.stdout).states
    assert.is_nil(s.error, s.error)
    assert.are.same({ "unpause", "stop", "restart" }, s.row_buttons)
    assert.are.same({ "unpause", "stop", "restart" }, s.detail_buttons)
    assert.are.same({ n2_name, n10_name }, s.order)
  end)
end)

describe("the dashboard in headless Chromium", function()
  local busy, busy_name, idle, idle_name, secure, ro, scripts
  local stack = { project = "hxboard-" .. math.random(100000, 999999) }

  setup(function()
    busy, busy_name = support.run_container({ name = "wbusy",
      cmd = support.BUSY })
    idle, idle_name = support.run_container({ name = "widle" })
    for i, service in ipairs({ "web", "db" }) do
      stack[i], stack[service] = support.run_container({ name = "wstack",
        labels = { ["com.docker.compose.project"] = stack.project,
          ["com.docker.compose.service"] = service } })
    end
  end)

  teardown(function()
    if secure then secure:stop() end
    if ro then ro:stop() end
    if scripts then proc.run({ "rm", "-rf", scripts }) end
    for _, id in ipairs({ busy, idle, stack[1], stack[2] }) do
      if id then support.remove(id) end
    end
  end)

  it("lists, groups, charts, follows events and stops, same-origin and by --cors", function()
    local path, token = token_file()
    local port = free_port()
    secure = http.start({ env = { PATH }, args = { "--require-token",
      "--token-file", path, "--cors", "http://127.0.0.1:" .. port } })
    scripts = history_scripts()
    ro = http.start({ env = { PATH }, scripts = scripts, args = { "--read-only" } })
    local shot = os.getenv("HORCRUX_DASHBOARD_SCREENSHOT")
    local started = os.time()
    local r = assert(proc.run({ PYTHON, "tests/dashboard.py", json.encode({
      { scenario = "readonly", url = ro.url, busy = busy_name, idle = idle_name,
        stack = stack.project },
      { scenario = "cors", url = secure.url, token = token, busy = busy_name,
        port = port, web = "lua/web" },
      { scenario = "token", url = secure.url, token = token, busy = busy_name,
        idle = idle_name, screenshot = shot },
    }) }, { timeout = shot and 180 or 90 }))
    assert.are.equal(0, r.status, r.stderr)
    local res = assert(json.decode(r.stdout), r.stdout)
    io.stderr:write(("console_web_spec: chromium scenarios %d s; CPU cell changed after "
      .. "%.2f s (EventSource), %.2f s (fetch)\n"):format(os.time() - started,
      res.readonly.cpu_change_s or -1, res.token.cpu_change_s or -1))

    local o = res.readonly
    assert.is_nil(o.error, o.error)
    assert.is_true(o.cpu > 0)
    assert.are.equal("live: stream", o.live)
    assert.are.equal("eventsource", o.transport) -- no token needed: EventSource
    assert.is_true(o.cpu_change_s <= 3, "CPU cell changed after " .. o.cpu_change_s .. " s")
    -- every running container of our label is in the table
    local ps = assert(proc.run({ "docker", "ps", "--filter", "label=" .. support.label
      .. "=" .. support.label_value, "--format", "{{.Names}}" }))
    local listed = {}
    for _, n in ipairs(o.names) do listed[n] = true end
    for n in ps.stdout:gmatch("%S+") do
      assert.is_true(listed[n], n .. " is not in the table")
    end
    local members = { stack.web, stack.db }
    table.sort(members)
    assert.are.same(members, o.stack_members)
    assert.are.equal("stack: 2/2 running", o.stack_status)
    assert.are.equal("2", o.stack_pids) -- one sleep each: the totals
    assert.are.same({}, o.stack_folded)
    assert.are.same(members, o.stack_unfolded)
    assert.are.equal("server", o.history)
    assert.truthy(o.history_summary:find("mean", 1, true), o.history_summary)
    assert.is_true(o.chart_pixels > 20, "the CPU chart has no line")
    assert.is_true(o.event_seen)
    assert.is_true(o.read_only_badge)
    assert.are.equal(0, o.buttons_visible)
    assert.are.equal(403, o.post_status)
    assert.are.same({}, o.foreign)

    local c = res.cors
    assert.is_nil(c.error, c.error)
    assert.is_true(c.cpu > 0)
    assert.are.equal("fetch", c.transport)
    assert.are.equal(200, c.fetch_status)
    local hosts = { "127.0.0.1:" .. port, secure.url:match("//(.*)") }
    table.sort(hosts) -- the page's own and the API's, no other
    assert.are.same(hosts, c.hosts)
    assert.truthy(tostring(c.unlisted_status):find("^blocked"), tostring(c.unlisted_status))

    local t = res.token
    assert.is_nil(t.error, t.error)
    assert.is_true(t.cpu > 0, "busy CPU " .. tostring(t.cpu))
    assert.are.equal("live: stream", t.live) -- with the token, by fetch()
    assert.are.equal("fetch", t.transport)
    assert.is_true(t.cpu_change_s <= 3, "CPU cell changed after " .. t.cpu_change_s .. " s")
    assert.are.equal("following", t.events_live)
    assert.are.same({ busy_name, idle_name }, t.order_cpu_desc)
    assert.are.same({ idle_name, busy_name }, t.order_cpu_asc)
    -- the shipped routes' history, else (a 404) the page's own
    local shipped = http.read_file("lua/routes.lua"):find('"/api/containers/:id/history"', 1, true)
    assert.are.equal(shipped and "server" or "page", t.history)
    assert.is_true(t.token_in_storage)
    assert.is_false(t.token_in_url)
    assert.is_true(t.buttons_visible >= 4)
    assert.truthy(t.message:find("stop", 1, true))
    assert.are.same({}, t.foreign)
    assert.are.equal("false", inspect(busy))
    assert.are.equal("true", inspect(idle))
  end)
end)
