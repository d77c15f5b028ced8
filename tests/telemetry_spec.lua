-- horcrux's own metrics of the streams and the webhooks (issue 11) at
-- GET /metrics, with real clients: SSE, NDJSON and WebSocket subscribers
-- (tests/stream_client.py) counted while they follow and gone when they
-- leave, a subscriber dropped for overflow, webhook deliveries to real
-- receivers (tests/hook_receiver.py) delivered, refused and pending; the
-- text checked by promtool.
local http = require "http"
local support = require "support"
local json = require "horcrux.json"
local proc = require "horcrux.proc"
local clock = require "horcrux.clock"
local receiver = require "hook_receiver"

local PY = "/usr/bin/python3"

local function tmpdir()
  local d = os.tmpname()
  os.remove(d)
  assert(proc.run({ "mkdir", "-p", d }).status == 0)
  return d
end

local function wait_until(what, timeout, fn)
  local deadline = clock.mono_ns() + timeout * 1e9
  repeat
    local v = fn()
    if v then
      return v
    end
    clock.sleep(0.05)
  until clock.mono_ns() > deadline
  error("timed out after " .. timeout .. " s waiting for " .. what, 2)
end

local function spawn(argv)
  local out = os.tmpname()
  local p = assert(proc.spawn(argv, { stdout = out, stderr = out }))
  return { proc = p, out = out }
end

local function stop(c)
  if c and c.proc:running() then
    c.proc:kill("TERM")
    c.proc:wait(5)
  end
end

local function scrape(srv)
  local r = assert(http.get(srv.url .. "/metrics"))
  assert.are.equal(200, r.status)
  return r.body
end

-- The value of the series `name{labels}` (labels as written: key order),
-- or nil.
local function value(text, series)
  local at = text:find("\n" .. series .. " ", 1, true)
  if not at then
    return nil
  end
  return tonumber(text:match("^(%S+)", at + #series + 2))
end

local function subs(text, topic, transport)
  return value(text, ('horcrux_stream_subscribers{topic="%s",transport="%s"}')
    :format(topic, transport))
end

local function promtool(text)
  assert(proc.which("promtool"), "promtool is needed (scripts/lib.sh installs it)")
  local r = proc.run({ "promtool", "check", "metrics" },
    { stdin = text, timeout = 30 })
  assert.are.equal(0, r.status, r.stdout .. r.stderr)
  assert.are.equal("", r.stdout .. r.stderr)
end

describe("horcrux.telemetry: a counter kept elsewhere", function()
  it("is raised by set and never lowered (two scrapes may race)", function()
    local telemetry = require "horcrux.telemetry"
    telemetry.counter("hx_telem_kept_total", "A count kept elsewhere.")
    telemetry.set("hx_telem_kept_total", { a = "b" }, 5)
    telemetry.set("hx_telem_kept_total", { a = "b" }, 3)
    assert.are.equal(5, value("\n" .. telemetry.render(),
      'hx_telem_kept_total{a="b"}'))
    assert.has_error(function()
      telemetry.set("hx_telem_kept_total", nil, -1)
    end)
  end)

  it("hub.counts() is empty in a process that serves no stream", function()
    assert.are.same({}, require("horcrux.hub").counts())
  end)
end)

describe("GET /metrics: streams and webhooks #docker", function()
  it("counts stream subscribers by topic and transport while they follow", function()
    local srv, sse, nd, ws
    finally(function()
      stop(sse); stop(nd); stop(ws)
      if srv then srv:stop() end
    end)
    srv = http.start({ args = { "--interval", "0.5", "--no-access-log" } })
    local stats = srv.url .. "/api/stats/stream"
    sse = spawn({ PY, "tests/stream_client.py", "sse", stats, "30" })
    nd = spawn({ PY, "tests/stream_client.py", "sse", stats, "30",
      "Accept: application/x-ndjson" })
    ws = spawn({ PY, "tests/stream_client.py", "ws",
      srv.url:gsub("^http", "ws") .. "/api/events/stream", "30" })
    local text = wait_until("three subscribers", 10, function()
      local t = scrape(srv)
      return subs(t, "stats", "sse") == 1 and subs(t, "stats", "ndjson") == 1
        and subs(t, "events", "websocket") == 1 and t
    end)
    assert.truthy(text:find("# TYPE horcrux_stream_subscribers gauge\n", 1, true))
    assert.are.equal(0, value(text,
      'horcrux_stream_overflows_total{topic="stats",transport="sse"}'))
    promtool(text)

    -- a client that leaves is gone by the next round (stats), at once
    -- (WebSocket: its thread sees the socket close)
    stop(sse)
    stop(ws)
    wait_until("the SSE and WebSocket clients gone", 10, function()
      local t = scrape(srv)
      return subs(t, "stats", "sse") == 0 and subs(t, "events", "websocket") == 0
    end)
    assert.are.equal(1, subs(scrape(srv), "stats", "ndjson"))
    local om = http.request("GET", srv.url .. "/metrics", { headers = {
      Accept = "application/openmetrics-text; version=1.0.0" } }).body
    assert.truthy(om:find("# TYPE horcrux_stream_overflows counter\n", 1, true))
  end)

  it("counts a subscriber dropped for overflow", function()
    local srv, c
    finally(function()
      stop(c)
      if srv then srv:stop() end
    end)
    -- every stats message is more than a queue of 1 byte holds
    srv = http.start({ args = { "--interval", "0.5", "--stream-bytes", "1",
      "--no-access-log" } })
    -- it reads until the server ends the stream (the overflow does): 5 s
    -- were too few once, under a sanitizer build beside other specs (its
    -- output: the status line, no overflow and no end of stream)
    c = spawn({ PY, "tests/stream_client.py", "sse",
      srv.url .. "/api/stats/stream", "30" })
    local text = wait_until("the overflow counted", 20, function()
      local t = scrape(srv)
      return (value(t, 'horcrux_stream_overflows_total{topic="stats",'
        .. 'transport="sse"}') or 0) >= 1 and subs(t, "stats", "sse") == 0 and t
    end)
    promtool(text)
    c.proc:wait(10)
    assert.truthy(http.read_file(c.out):find('"event": "overflow"', 1, true),
      http.read_file(c.out))
  end)

  it("counts webhook deliveries by hook and outcome, and what is pending", function()
    local run = support.unique_name("telem")
    local srv, okr, badr, id
    finally(function()
      if id then support.remove(id) end
      if srv then srv:stop() end
      if okr then okr:stop() end
      if badr then badr:stop() end
    end)
    -- each on a port the kernel gives it: a random one may be held by a
    -- client socket, and the receiver then never listened (its "Address
    -- already in use" passed for "ready": 'ok' failed every attempt)
    okr = receiver.start({ status = 200 })
    badr = receiver.start({ status = 400 })
    local ok_port, bad_port, ok_log = okr.port, badr.port, okr.log
    local filter = ('filter = function(ev) return (ev.attributes or {})'
      .. '["hx.run"] == %q end'):format(run)
    local scripts = http.scripts_dir({ ["hooks.lua"] = ([[
return {
  { name = "ok", url = "http://127.0.0.1:%d/", retry_min = 0.2, %s },
  { name = "refused", url = "http://127.0.0.1:%d/", give_up_after = 1, %s },
  -- nothing listens on port 1 (and only root could make something do so)
  { name = "down", url = "http://127.0.0.1:1/", retry_min = 0.2,
    retry_max = 0.5, %s },
}
]]):format(ok_port, filter, bad_port, filter, filter) })
    srv = http.start({ scripts = scripts, args = { "--interval", "0.5",
      "--state-dir", tmpdir(), "--no-access-log" } })
    -- every hook's series is there before its first delivery
    local text = wait_until("the hooks' series", 10, function()
      local t = scrape(srv)
      return value(t, 'horcrux_webhook_pending{hook="down"}') and t
    end)
    assert.are.equal(0, value(text,
      'horcrux_webhook_deliveries_total{hook="ok",outcome="delivered"}'))

    id = support.run_container({ name = "telem", labels = { ["hx.run"] = run } })
    local series = 'horcrux_webhook_%s{hook="%s"%s}'
    local function v(t, family, hook, outcome)
      return value(t, series:format(family, hook,
        outcome and (',outcome="' .. outcome .. '"') or "")) or -1
    end
    local last = ""
    local ok
    ok, text = pcall(wait_until, "create and start delivered, refused, pending", 30, function()
      local t = scrape(srv)
      last = t
      return v(t, "deliveries_total", "ok", "delivered") >= 2
        and v(t, "deliveries_total", "refused", "dropped") >= 2
        and v(t, "failed_attempts_total", "refused") >= 2
        and v(t, "pending", "down") >= 2
        and v(t, "failed_attempts_total", "down") >= 1 and t
    end)
    if not ok then -- which series fell short, and what the server said
      local series = {}
      for line in last:gmatch("[^\n]+") do
        if line:find("^horcrux_webhook") then series[#series + 1] = line end
      end
      local said = {} -- what the server said of the two receivers
      for line in srv:logtext():gmatch("[^\n]+") do
        if not line:find("hooks: down:", 1, true) then
          said[#said + 1] = line
        end
      end
      local hooks = http.get(srv.url .. "/api/hooks")
      error(tostring(text) .. "\n" .. table.concat(series, "\n") .. "\n"
        .. (hooks and hooks.body or "") .. "\n"
        .. table.concat(said, "\n", math.max(1, #said - 30))
        .. "\nreceiver ok: " .. okr:said()
        .. "\nreceiver refused: " .. badr:said())
    end
    assert.are.equal(0, v(text, "pending", "ok"))
    assert.are.equal(0, v(text, "deliveries_total", "down", "delivered"))
    assert.are.equal(0, v(text, "failed_attempts_total", "ok"))
    -- what the receiver got is what was counted: by delivery id, as a
    -- receiver deduplicates (an attempt that timed out on a loaded machine
    -- after the receiver had it comes again, with the same id)
    local got, ids = 0, {}
    for line in http.read_file(ok_log):gmatch("[^\n]+") do
      local r = json.decode(line)
      if r.event == "container" and not ids[r.delivery] then
        ids[r.delivery] = true
        got = got + 1
      end
    end
    assert.are.equal(v(text, "deliveries_total", "ok", "delivered"), got)
    promtool(text)
  end)
end)
