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

-- The shipped routes plus, while the server has no stream of its own, a
-- /api/stats/stream that answers one SSE message and closes: EventSource
-- reconnects (retry: 300 ms), so the page stays on its stream path.
local function stream_scripts()
  local routes = http.read_file("lua/routes.lua")
  if not routes:find('"/api/stats/stream"', 1, true) then
    routes = routes .. [[

route("GET", "/api/stats/stream", { query = {} }, function()
  local list = hx.check(hx.live.all())
  return 200, "retry: 300\nevent: stats\ndata: " .. hx.json.encode(list)
    .. "\n\n", { ["Content-Type"] = "text/event-stream" }
end)
]]
  end
  return http.scripts_dir({ ["routes.lua"] = routes })
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

describe("the dashboard in headless Chromium", function()
  local busy, busy_name, idle, idle_name, secure, ro, scripts

  setup(function()
    busy, busy_name = support.run_container({ name = "wbusy",
      cmd = { "sh", "-c", "while :; do :; done" } })
    idle, idle_name = support.run_container({ name = "widle" })
  end)

  teardown(function()
    if secure then secure:stop() end
    if ro then ro:stop() end
    if scripts then proc.run({ "rm", "-rf", scripts }) end
    for _, id in ipairs({ busy, idle }) do
      if id then support.remove(id) end
    end
  end)

  it("lists, sorts, charts and stops; read-only hides the buttons", function()
    local path, token = token_file()
    secure = http.start({ env = { PATH }, args = { "--require-token",
      "--token-file", path } })
    scripts = stream_scripts()
    ro = http.start({ env = { PATH }, scripts = scripts, args = { "--read-only" } })
    local shot = os.getenv("HORCRUX_DASHBOARD_SCREENSHOT")
    local r = assert(proc.run({ PYTHON, "tests/dashboard.py", json.encode({
      { scenario = "readonly", url = ro.url, busy = busy_name },
      { scenario = "token", url = secure.url, token = token, busy = busy_name,
        idle = idle_name, screenshot = shot },
    }) }, { timeout = 90 }))
    assert.are.equal(0, r.status, r.stderr)
    local res = assert(json.decode(r.stdout), r.stdout)

    local o = res.readonly
    assert.is_nil(o.error, o.error)
    assert.is_true(o.cpu > 0)
    assert.are.equal("live: stream", o.live)
    assert.is_true(o.read_only_badge)
    assert.are.equal(0, o.buttons_visible)
    assert.are.equal(403, o.post_status)
    assert.are.same({}, o.foreign)

    local t = res.token
    assert.is_nil(t.error, t.error)
    assert.is_true(t.cpu > 0, "busy CPU " .. tostring(t.cpu))
    assert.are.equal("live: polling /api/stats", t.live) -- EventSource sends no token
    assert.are.same({ busy_name, idle_name }, t.order_cpu_desc)
    assert.are.same({ idle_name, busy_name }, t.order_cpu_asc)
    assert.are.equal("page", t.history) -- no /history on this server: its own
    assert.is_true(t.token_in_storage)
    assert.is_false(t.token_in_url)
    assert.is_true(t.buttons_visible >= 4)
    assert.truthy(t.message:find("stop", 1, true))
    assert.are.same({}, t.foreign)
    assert.are.equal("false", inspect(busy))
    assert.are.equal("true", inspect(idle))
  end)
end)
