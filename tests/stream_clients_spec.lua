-- Streams with real clients (issue 10's acceptance): headless Chromium's
-- own EventSource and WebSocket (tests/browser_streams.py over the
-- DevTools protocol), curl -N, and a stats subscriber that reads nothing
-- beside one that reads (--stream-queue small): the first is dropped with
-- overflow, the second gets every round.
local http = require "http"
local support = require "support"
local json = require "horcrux.json"
local proc = require "horcrux.proc"
local clock = require "horcrux.clock"
local htime = require "horcrux.time"
local stream = require "stream_support"

local PY = "/usr/bin/python3"
local PATH = "PATH=" .. os.getenv("PATH")

local client = stream.client
local function lines(c) return stream.lines(c, true) end

describe("stream clients", function()
  local srv, ids = nil, {}

  setup(function()
    support.docker()
    srv = http.start({ env = { PATH }, args = { "--interval", "0.5" } })
  end)

  teardown(function()
    for _, id in ipairs(ids) do
      pcall(support.remove, id)
    end
    if srv then
      srv:stop()
    end
  end)

  it("Chromium's EventSource and WebSocket get a busy container's stats at the collector's rate, and EventSource follows logs", function()
    local busy = support.run_container({ name = "cbusy",
      cmd = support.BUSY })
    ids[#ids + 1] = busy
    local logs = support.run_container({ name = "clogs", cmd = { "sh", "-c",
      "sleep 2; for i in 1 2 3; do echo line $i; sleep 0.2; done" } })
    ids[#ids + 1] = logs
    local r = assert(proc.run({ PY, "tests/browser_streams.py", json.encode({
      url = srv.url, busy = busy, logs = logs, seconds = 4 }) },
      { timeout = 60 }))
    assert.are.equal(0, r.status, r.stderr)
    local res = assert(json.decode(r.stdout), r.stdout)
    assert.is_nil(res.error, res.error)
    -- what the server answered the page's streams, should one have failed
    local answered = {}
    for line in srv:logtext():gmatch("[^\n]+") do
      if line:find("/stream", 1, true) or line:find("/logs", 1, true) then
        answered[#answered + 1] = line
      end
    end
    assert.are.same({}, res.errors, table.concat(answered, "\n"))
    -- 4 s at 0.5 s a round: 8, give or take (the first after the page's
    -- own start)
    for _, what in ipairs({ "sse", "ws" }) do
      local got = res[what]
      assert.is_true(#got >= 6 and #got <= 10, what .. ": " .. #got)
      -- a busy loop: well above idle even when other work shares the cores
      assert.is_true(got[#got].cpu > 1, what .. " cpu " .. got[#got].cpu)
      local every = (got[#got].t - got[1].t) / (#got - 1)
      print(("  %s: %d messages, one every %.3f s"):format(what, #got, every))
      assert.is_true(every > 0.35 and every < 0.7, what .. " every " .. every)
    end
    assert.are.same({ "line 1", "line 2", "line 3" }, res.logs)
    assert.are.equal("ended", res["end"])
  end)

  it("streams to curl -N", function()
    local r = assert(proc.run({ "curl", "-sN", "--max-time", "1.8",
      srv.url .. "/api/stats/stream" }))
    assert.are.equal(28, r.status) -- curl's "timed out": it kept reading
    assert.truthy(r.stdout:find("^retry: 2000\n\n"), r.stdout)
    local frames = 0
    for data in r.stdout:gmatch("event: stats\ndata: ([^\n]*)\n\n") do
      frames = frames + 1
      assert.are.equal("table", type(json.decode(data)))
    end
    assert.is_true(frames >= 3 and frames <= 5, "frames " .. frames)
  end)
end)

-- Idle containers of the spec, started by the first with_containers that
-- needs them and kept for the next (each costs the engine about a
-- core-second to run and remove), removed at the file's end.
local idle = {}

teardown(function()
  for _, id in ipairs(idle) do
    pcall(support.remove, id)
  end
end)

-- Runs fn(srv) against a server of args with at least n idle containers
-- of the spec running; stops the server whatever fn does.
local function with_containers(args, n, fn)
  for i = #idle + 1, n do
    idle[i] = support.run_container({ name = "idle" .. i })
  end
  local srv = http.start({ args = args })
  local ok, err = pcall(function()
    clock.sleep(0.5)
    fn(srv)
  end)
  srv:stop()
  assert(ok, err)
end

describe("a stats subscriber that reads nothing", function()
  -- Rounds of 0.1 s of 8 containers' records (about 4 KiB each): the
  -- reader's socket buffers fill in a few seconds, then its queue of 8.
  it("is dropped with overflow while one that reads gets every round", function()
    with_containers({ "--interval", "0.1", "--stream-queue", "8" }, 8,
      function(srv)
      local slow = client("slow", srv.url .. "/api/stats/stream", 7)
      local t_fast = clock.now_ns() / 1e9
      local fast = client("sse", srv.url .. "/api/stats/stream", 7)
      local tail = lines(slow)[1]
      assert.truthy(tail.tail:find("event: overflow", 1, true), tail.tail)
      local got, gaps, worst = lines(fast), 0, 0
      local stats = {}
      for _, m in ipairs(got) do
        assert.is_not.equal("overflow", m.event)
        if m.event == "stats" then
          stats[#stats + 1] = m
        end
      end
      -- a gap is the reader's wait past the collector's own: arrivals apart
      -- by more than their rounds' samples are, plus 0.15 s (a loaded
      -- machine delays the rounds themselves; that is not the stream's doing)
      local function round_t(m)
        local rec = json.decode(m.data)[1]
        local ns = rec and rec.read and htime.parse(rec.read)
        return ns and ns / 1e9 or m.t
      end
      for i = 2, #stats do
        local gap = (stats[i].t - stats[i - 1].t)
          - (round_t(stats[i]) - round_t(stats[i - 1]))
        worst = math.max(worst, gap)
        if gap > 0.15 then
          gaps = gaps + 1
        end
      end
      -- every round: a subscriber's queue loses no message without ending
      -- its stream with overflow (none came), so one that read to its end
      -- got every round the collector made meanwhile (a sanitizer build on
      -- a loaded machine makes fewer than 70 in 7 s; that is not the
      -- stream's doing)
      local last = stats[#stats] and stats[#stats].t or 0
      print(("  the reader that reads: %d rounds in 7 s, the last %.2f s after it connected, longest wait past its round %.3f s")
        :format(#stats, last - t_fast, worst))
      assert.is_true(#stats >= 20, "rounds " .. #stats)
      assert.is_true(last - t_fast > 5.5, "the stream ended early")
      assert.is_true(gaps <= 2, gaps .. " waits over 0.15 s past the rounds")
    end)
  end)
end)

describe("a WebSocket reader whose socket takes a message in parts", function()
  -- A 4 KiB receive buffer and nothing read for 3 s: 30 rounds of 0.1 s
  -- wait, more than the sockets hold, so a message goes out in parts. The
  -- hub wakes a subscriber only after it found its queue empty: the
  -- messages after that one must be taken once its rest went, or the
  -- stream stops there for good (it did, with 200 containers' rounds).
  it("gets the rounds after it at the collector's rate", function()
    with_containers({ "--interval", "0.1" }, 6, function(srv)
      local t0 = clock.now_ns() / 1e9
      -- only this spec's containers: the rounds of a whole suite's would
      -- fill the subscriber's 4 MiB while it reads nothing (overflow, by
      -- design), and this one's 30 rounds still more than the sockets hold
      local c = client("ws-late", srv.url:gsub("^http", "ws")
        .. "/api/stats/stream?label=" .. support.label .. "=" .. support.label_value,
        3, { "3" })
      local got, late = {}, 0
      for _, m in ipairs(lines(c)) do
        if m.op == 1 then
          got[#got + 1] = m
          assert.are.equal("table", type(json.decode(m.data)), m.data:sub(1, 200))
          -- in the last 1.5 s: long after the backlog went
          late = late + (m.t > t0 + 4.5 and 1 or 0)
        end
      end
      print(("  %d messages, %d of them in the last 1.5 s"):format(#got, late))
      -- (fewer than 50 when other containers make each round's message
      -- large: a 4 KiB buffer passes a few MB a second)
      assert.is_true(#got >= 10, "messages " .. #got)
      assert.is_true(late >= 5, late .. " messages in the last 1.5 s")
    end)
  end)

  -- A browser's WebSocket cannot send Authorization: with every route
  -- behind the token, a page sends it in its protocols (README "Guard").
  it("Chromium's WebSocket sends the token in its protocols, and is refused without it", function()
    local token = "the-token/of+this spec, 32 bytes"
    local s = http.start({ env = { PATH, "HORCRUX_TOKEN=" .. token },
      args = { "--interval", "0.5", "--require-token" } })
    local ok, err = pcall(function()
      local r = assert(proc.run({ PY, "tests/browser_ws_token.py",
        json.encode({ url = s.url, token = token }) }, { timeout = 60 }))
      assert.are.equal(0, r.status, r.stderr)
      local res = assert(json.decode(r.stdout), r.stdout)
      assert.is_nil(res.error, res.error)
      local log = s:logtext()
      -- two rounds, and the server selected "horcrux" (else Chromium
      -- fails the handshake), never echoing the token's protocol
      assert.are.same({ messages = 2, protocol = "horcrux", error = false,
        code = 1005 }, res.token, log)
      for _, name in ipairs({ "none", "wrong" }) do
        assert.are.equal(0, res[name].messages, name)
        assert.is_true(res[name].error, name)
        assert.are.equal(1006, res[name].code, name)
      end
      -- the refusals, before any handshake: 401 without it, 403 wrong
      assert.is_truthy(log:find("GET /api/stats/stream 101 ", 1, true), log)
      assert.is_truthy(log:find("GET /api/stats/stream 401 ", 1, true), log)
      assert.is_truthy(log:find("GET /api/stats/stream 403 ", 1, true), log)
    end)
    s:stop()
    assert(ok, err)
  end)
end)
