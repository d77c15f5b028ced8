-- Streams (issue 10): /api/stats/stream, /api/containers/:id/stats/stream,
-- /api/events, /api/events/stream over SSE (curl and a Python client) and
-- WebSocket (python3-websocket), against the real engine.
local http = require "http"
local support = require "support"
local json = require "horcrux.json"
local proc = require "horcrux.proc"
local clock = require "horcrux.clock"
local hub = require "horcrux.hub"

local PY = "/usr/bin/python3"

local ss = require "stream_support"
local client, lines = ss.client, ss.lines

local function until_true(seconds, f)
  local deadline = clock.mono_ns() + seconds * 1e9
  repeat
    local v = f()
    if v then
      return v
    end
    clock.sleep(0.02)
  until clock.mono_ns() > deadline
  return nil
end

local function messages(list, event)
  local out = {}
  for _, m in ipairs(list) do
    if m.data and (event == nil or m.event == event) then
      out[#out + 1] = m
    end
  end
  return out
end

describe("hub (the module alone)", function()
  it("frames SSE once: id, event, one data line per line", function()
    assert.are.equal("id: 7\nevent: stats\ndata: [1]\n\n",
      hub.sse(7, "stats", "[1]"))
    assert.are.equal("data: a\ndata: b\ndata: c\n\n", hub.sse(0, nil, "a\nb\r\nc"))
  end)

  it("gives ring ids one by one and reads them back after an id", function()
    hub.ring("spec-ring", 3)
    for i = 1, 5 do
      assert.are.equal(i, hub.publish("spec-ring", ('{"n":%d}'):format(i)))
    end
    local r = hub.recent("spec-ring", 0)
    assert.are.equal(3, #r)
    assert.are.same({ 3, 4, 5 }, { r[1].id, r[2].id, r[3].id })
    assert.are.same({ event_id = 4, n = 4 }, json.decode(r[2].data))
    assert.are.equal(1, #hub.recent("spec-ring", 4))
    assert.are.equal(0, hub.publish("nobody-listens", "{}"))
  end)
end)

describe("streams", function()
  local srv, ids

  setup(function()
    support.docker()
    srv = http.start({ args = { "--interval", "0.5" } })
    ids = {}
  end)

  teardown(function()
    for _, id in ipairs(ids) do
      pcall(support.remove, id)
    end
    if srv then
      srv:stop()
    end
  end)

  it("shows a docker run on /api/events/stream within 1 s", function()
    local c = client("sse", srv.url .. "/api/events/stream", 6)
    assert.truthy(until_true(3, function()
      return lines(c)[1]
    end))
    local id = support.run_container({ name = "ev" })
    ids[#ids + 1] = id
    local t_run = clock.now_ns() / 1e9
    local seen = until_true(3, function()
      for _, m in ipairs(messages(lines(c), "event")) do
        local ev = json.decode(m.data)
        if ev.id == id and ev.action == "start" then
          return m
        end
      end
    end)
    assert.truthy(seen, "no start event on the stream")
    local ev = json.decode(seen.data)
    assert.are.equal(tonumber(seen.id), ev.event_id)
    assert.are.equal("container", ev.type)
    print(("  start event %.3f s after docker run returned"):format(
      seen.t - t_run))
    assert.is_true(seen.t - t_run < 1.0, "took " .. (seen.t - t_run) .. " s")
    c.proc:kill("TERM")
  end)

  it("sends a busy container's stats at the collector's rate, over SSE and WebSocket", function()
    local id = support.run_container({ name = "busy",
      cmd = support.BUSY })
    ids[#ids + 1] = id
    local ws_url = srv.url:gsub("^http", "ws")
    -- the kernel's count of the busy loop over the streams' window: the
    -- peer of its CPU % (on a loaded machine a busy loop gets what is left)
    local h = assert(require("horcrux.cgroup").open(id))
    local c0 = assert(h:stats())
    local s = client("sse", srv.url .. "/api/stats/stream", 3.2)
    local one = client("sse", srv.url .. "/api/containers/" .. id ..
      "/stats/stream", 3.2)
    local w = client("ws", ws_url .. "/api/stats/stream", 3.2)
    local got_s, got_w = messages(lines(s, true), "stats"), {}
    for _, m in ipairs(lines(w, true)) do
      if m.op == 1 then
        got_w[#got_w + 1] = m
      end
    end
    local got_one = messages(lines(one, true), "stats")
    local c1 = assert(h:stats())
    h:close()
    local kernel = (c1.cpu_ns - c0.cpu_ns) / (c1.mono_ns - c0.mono_ns) * 100
    -- 3.2 s at 0.5 s a round: 6 messages, give or take one
    for what, got in pairs({ sse = got_s, ws = got_w, one = got_one }) do
      assert.is_true(#got >= 5 and #got <= 8, what .. ": " .. #got)
    end
    local function busy_in(msg)
      for _, rec in ipairs(json.decode(msg.data)) do
        if rec.id == id then
          return rec
        end
      end
    end
    -- the stream's rounds after the first (whose window began before c0)
    -- cover the kernel's window: their mean is the figure to compare (the
    -- last round alone is half a second of a loop that gets what is left)
    local sum, n = 0, 0
    for i = 2, #got_s do
      local busy = busy_in(got_s[i])
      assert.truthy(busy, "the busy container is in the stats array")
      -- null in a container's first round (no window yet)
      if type(busy.cpu_usage_percent) == "number" then
        sum, n = sum + busy.cpu_usage_percent, n + 1
      end
    end
    assert.is_true(n >= 3, "rounds with a CPU %: " .. n)
    assert.is_true(kernel > 0, "the kernel counted no CPU time")
    assert.is_true(math.abs(sum / n - kernel) <= 10 + 0.15 * kernel,
      ("busy loop: %.1f %% in the stream (mean of %d rounds), the kernel %.1f %% over it"):format(
        sum / n, n, kernel))
    local rec = json.decode(got_one[#got_one].data)
    assert.are.equal(id, rec.id)
    assert.are.equal("[", got_w[#got_w].data:sub(1, 1))
    -- ?interval=1: half as many
    local slow = client("sse", srv.url .. "/api/stats/stream?interval=1", 3.2)
    local n = #messages(lines(slow, true), "stats")
    assert.is_true(n >= 3 and n <= 4, "interval=1: " .. n)
  end)

  it("resumes from Last-Event-ID without a gap, and /api/events reads the ring", function()
    local id = support.run_container({ name = "resume", labels = {
      ["hx.stream"] = "yes" } })
    ids[#ids + 1] = id
    support.remove(id)
    local mine = until_true(3, function()
      local r = http.get(srv.url .. "/api/events?label=hx.stream=yes&container="
        .. id:sub(1, 12))
      local acts = {}
      for _, ev in ipairs(r.json or {}) do
        acts[#acts + 1] = ev.action
      end
      return acts[#acts] == "destroy" and r.json
    end)
    assert.truthy(mine, "the container's events in /api/events")
    assert.are.equal("create", mine[1].action)
    local all = http.get(srv.url .. "/api/events").json
    local last = all[#all].event_id
    local from = mine[1].event_id - 1
    local c = client("sse", srv.url .. "/api/events/stream", 1.5,
      { "Last-Event-ID: " .. from })
    local got = messages(lines(c, true), "event")
    assert.is_true(#got >= last - from)
    for i, m in ipairs(got) do
      assert.are.equal(from + i, tonumber(m.id))
    end
    -- an id the ring never held: a gap message first
    c = client("sse", srv.url .. "/api/events/stream", 0.8,
      { "Last-Event-ID: 999999999" })
    local first = messages(lines(c, true))[1]
    assert.are.equal("gap", first.event)
  end)

  it("answers NDJSON for Accept: application/x-ndjson", function()
    local r = http.get(srv.url .. "/api/stats/stream", { timeout = 1.5,
      headers = { Accept = "application/x-ndjson" } })
    -- curl's --max-time ends it: the status line came
    assert.is_nil(r)
    local c = client("sse", srv.url .. "/api/stats/stream", 1.2,
      { "Accept: application/x-ndjson" })
    assert.are.equal("application/x-ndjson", lines(c, true)[1].content_type)
  end)
end)

describe("a slow subscriber", function()
  local srv, ids = nil, {}

  setup(function()
    support.docker()
    srv = http.start({ args = { "--interval", "0.5", "--events-ring", "32" } })
  end)

  teardown(function()
    for _, id in ipairs(ids) do
      pcall(support.remove, id)
    end
    if srv then
      srv:stop()
    end
  end)

  -- A subscriber of `events` reads the shared ring: it is dropped once the
  -- ring (32 events here) overwrote what it had not read. The server's
  -- socket takes part of that reader's backlog before it holds the server
  -- up, a varying number of these events (24 were once not enough with a
  -- ring of 16; 30 were): 102 of ours leave it well over 32 behind,
  -- whatever else happens on the engine. The fast one must never be 32
  -- behind: a round publishes its events at once, and with a ring of 16 a
  -- late round on a loaded machine once dropped it too. (A ring of 64 and
  -- 150 renames, tried for failures whose cause was elsewhere, sent other
  -- slots' event streams half as many 60 KiB events again.)
  local RENAMES = 100
  it("is dropped with overflow and does not delay the others", function()
    local url = srv.url .. "/api/events/stream"
    -- the slow one reads nothing until the fast one has every event of
    -- ours (go file): no fixed window to race
    local go = os.tmpname()
    os.remove(go)
    local slow = client("slow", url, 60, { go })
    local fast = client("sse", url, 60)
    -- both subscribed before the first event: a subscriber gets the events
    -- after it subscribed, and under load the Python clients took more
    -- than the half second this spec once gave them (the fast one then
    -- missed the create and the first renames)
    assert.truthy(until_true(15, function()
      local r = http.get(srv.url .. "/metrics")
      for line in (r and r.body or ""):gmatch("[^\n]+") do
        if line:find("^horcrux_stream_subscribers{")
            and line:find('topic="events"', 1, true)
            and line:find('transport="sse"', 1, true) then
          return tonumber(line:match("(%d+)$")) >= 2
        end
      end
    end), "the two clients did not subscribe within 15 s")
    -- events of 60 KiB each (labels travel in their attributes): a create,
    -- 100 renames (each an event, about 7 a round) and a destroy
    local labels = {}
    for i = 1, 60 do
      labels["hx.big" .. i] = string.rep("x", 1000)
    end
    local id, name = support.run_container({ name = "big", labels = labels,
      start = false })
    ids[#ids + 1] = id
    local docker = support.docker()
    for i = 1, RENAMES do
      local st = docker:request("POST", "/containers/" .. id .. "/rename",
        { name = name .. "-" .. i })
      assert.are.equal(204, st)
      -- paced: the collector publishes a round's events at once, and a
      -- round of more than 32 would overflow every subscriber's ring
      clock.sleep(0.05)
    end
    support.remove(id)
    -- ours only: the shared engine's events of other specs come too, and
    -- the collector publishes events by round
    local function ours()
      local n = 0
      for _, m in ipairs(messages(lines(fast), "event")) do
        n = n + (json.decode(m.data).id == id and 1 or 0)
      end
      return n
    end
    local all = until_true(15, function()
      return ours() >= RENAMES + 2
    end)
    fast.proc:kill("TERM")
    assert(io.open(go, "w")):close()
    local tail = lines(slow, true)[1]
    os.remove(go)
    if not all then -- which ones, and what the collector said meanwhile
      local seen, missing = {}, {}
      for _, m in ipairs(messages(lines(fast), "event")) do
        local ev = json.decode(m.data)
        if ev.id == id then
          seen[ev.action .. " " .. tostring(ev.name)] = true
        end
      end
      for i = 1, RENAMES do
        if not seen["rename " .. name .. "-" .. i] then
          missing[#missing + 1] = i
        end
      end
      local said = {}
      for line in srv:logtext():gmatch("[^\n]+") do
        if line:find("collector", 1, true) or line:find("event", 1, true) then
          said[#said + 1] = line
        end
      end
      error(("the fast one got %d of our %d events%s; renames missing: %s; "
        .. "create %s, destroy %s\n%s"):format(ours(), RENAMES + 2,
        #messages(lines(fast), "overflow") > 0 and ", then overflow" or "",
        table.concat(missing, " "), tostring(seen["create " .. name]),
        tostring(seen["destroy " .. name .. "-" .. RENAMES]),
        table.concat(said, "\n", math.max(1, #said - 40))))
    end
    assert.truthy(tail, "the slow client printed nothing")
    assert.truthy(tail.tail:find("event: overflow", 1, true), tail.tail)
    -- the stream ended: the last chunk of the response came
    assert.truthy(tail.eof or tail.tail:find("\r\n0\r\n\r\n$"), tail.tail)
    local lag = 0
    local got = messages(lines(fast, true), "event")
    for _, m in ipairs(got) do
      local ev = json.decode(m.data)
      lag = math.max(lag, m.t - ev.time_ns / 1e9)
    end
    print(("  fast subscriber's worst lag behind the daemon: %.3f s"):format(lag))
    assert.is_true(lag < 0.5 + 1.0, "lag " .. lag)
  end)
end)

describe("streams and the guard, SIGHUP and SIGTERM", function()
  it("applies the token and Host rules to streams", function()
    local tok = os.tmpname()
    local f = assert(io.open(tok, "w"))
    f:write("streams-spec-token-0123456789abcdef\n")
    f:close()
    local srv = http.start({ args = { "--token-file", tok, "--require-token" } })
    local ok, err = pcall(function()
      local c = client("sse", srv.url .. "/api/events/stream", 1)
      local l = lines(c, true)
      assert.are.equal(401, l[1].status)
      c = client("sse", srv.url .. "/api/events/stream", 1, {
        "Authorization: Bearer streams-spec-token-0123456789abcdef",
        "Host: evil.example" })
      assert.are.equal(403, lines(c, true)[1].status)
      c = client("sse", srv.url .. "/api/events/stream", 1, {
        "Authorization: Bearer streams-spec-token-0123456789abcdef" })
      assert.are.equal(200, lines(c, true)[1].status)
      local r = proc.run({ PY, "-c", ([[
import websocket
try:
    websocket.create_connection("%s/api/events/stream", timeout=3)
    print("open")
except websocket.WebSocketBadStatusException as e:
    print(e.status_code)
]]):format(srv.url:gsub("^http", "ws")) })
      assert.are.equal("401", r.stdout:match("%S+"))
    end)
    srv:stop()
    os.remove(tok)
    assert(ok, err)
  end)

  it("keeps streams open across a reload and closes them on SIGTERM", function()
    -- queues that other specs' events cannot fill
    local srv = http.start({ args = { "--interval", "0.3", "--stream-queue",
      "100000", "--stream-bytes", "268435456" } })
    -- 30 s: both end when the server closes them; a shorter window could
    -- end first on a loaded machine. The WebSocket follows this run's
    -- containers' stats, not the events stream: that one carries every
    -- event of the shared engine, and behind another run's 60 KiB renames
    -- its queue was not drained within the shutdown's grace (the close
    -- frame came without the close message, in a CI run on a loaded
    -- machine; an overflow before that)
    local s = client("sse", srv.url .. "/api/stats/stream", 30)
    local w = client("ws", srv.url:gsub("^http", "ws") .. "/api/stats/stream?label="
      .. support.label .. "%3D" .. support.label_value, 30)
    clock.sleep(0.8)
    srv:signal("HUP")
    assert.truthy(until_true(3, function()
      return srv:logtext():find("reloaded the scripts", 1, true)
    end))
    local before = #messages(lines(s), "stats")
    clock.sleep(1)
    assert.is_true(#messages(lines(s), "stats") > before,
      "stats keep coming after the reload")
    local t0 = clock.mono_ns()
    srv:stop()
    local stop_s = (clock.mono_ns() - t0) / 1e9
    local got = lines(s, true)
    assert.are.equal("close", got[#got - 1].event)
    assert.is_true(got[#got]["end"])
    local wl = lines(w, true)
    assert.are.equal('{"event":"close","reason":"shutdown"}', wl[#wl - 2].data,
      ("%d messages"):format(#wl))
    assert.are.equal(8, wl[#wl - 1].op)
    print(("  SIGTERM to exit with two streams open: %.2f s"):format(stop_s))
    assert.is_true(stop_s < 3)
  end)
end)
