-- Log follow (issue 10): GET /api/containers/:id/logs?follow=1 against the
-- real engine, with real clients: lines as they come (SSE, NDJSON,
-- WebSocket, curl -N), multiplexed and TTY containers, a line the daemon
-- cut into frames, the end when the container stops, a client that goes,
-- a reader that reads nothing, the guard.
local http = require "http"
local support = require "support"
local json = require "horcrux.json"
local proc = require "horcrux.proc"
local clock = require "horcrux.clock"
local time = require "horcrux.time"
local ss = require "stream_support"
local client, lines = ss.client, ss.lines

local function events(list, name)
  local out = {}
  for _, m in ipairs(list) do
    if m.data and m.event == name then
      local v = json.decode(m.data)
      v.t = m.t
      out[#out + 1] = v
    end
  end
  return out
end

local function until_true(seconds, f)
  local deadline = clock.mono_ns() + seconds * 1e9
  repeat
    local v = f()
    if v then
      return v
    end
    clock.sleep(0.05)
  until clock.mono_ns() > deadline
  return nil
end

-- The sockets process pid holds that are not TCP: its connections to the
-- engine (as tests/executor_spec.lua counts them).
local function engine_sockets(pid)
  local tcp = {}
  for _, path in ipairs({ "/proc/net/tcp", "/proc/net/tcp6" }) do
    for line in http.read_file(path):gmatch("[^\n]+") do
      local inode = line:match("^%s*%d+:" .. ("%s+%S+"):rep(8) .. "%s+(%d+)")
      if inode then
        tcp[inode] = true
      end
    end
  end
  local out = assert(proc.run({ "ls", "-l", "/proc/" .. pid .. "/fd" })).stdout
  local n = 0
  for inode in out:gmatch("socket:%[(%d+)%]") do
    if not tcp[inode] then
      n = n + 1
    end
  end
  return n
end

-- sh: n lines of prefix and a counter on stdout (and on stderr with err),
-- one every `every` seconds, after `wait` seconds.
local function ticker(n, every, wait, err)
  return { "sh", "-c", ([[sleep %s; i=0; while [ $i -lt %d ]; do
echo "out $i"; %s i=$((i+1)); sleep %s; done]]):format(wait, n,
    err and [[echo "err $i" >&2;]] or "", every) }
end

describe("log follow", function()
  local srv, ids

  setup(function()
    support.docker()
    srv = http.start({ args = { "--stream-queue", "16", "--stream-bytes",
      "1048576" } })
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

  local function run(opts)
    local id = support.run_container(opts)
    ids[#ids + 1] = id
    return id
  end

  local function url(id, query)
    return srv.url .. "/api/containers/" .. id .. "/logs?follow=1"
      .. (query and "&" .. query or "")
  end

  it("sends stdout and stderr lines as they come and ends when the container stops", function()
    local id = run({ name = "tick", cmd = ticker(15, 0.1, 1, true) })
    local c = client("sse", url(id, "timestamps=1"), 15)
    local got = lines(c, true)
    assert.are.equal(200, got[1].status)
    assert.are.equal("text/event-stream; charset=utf-8", got[1].content_type)
    local logs, worst = events(got, "log"), 0
    local out, err = {}, {}
    for _, l in ipairs(logs) do
      local t = assert(time.parse(l.time))
      worst = math.max(worst, l.t - t / 1e9)
      local list = l.stream == "stdout" and out or err
      list[#list + 1] = l.line
    end
    for i = 0, 14 do
      assert.are.equal("out " .. i, out[i + 1])
      assert.are.equal("err " .. i, err[i + 1])
    end
    assert.are.equal(15, #out)
    assert.are.equal(15, #err)
    print(("  worst latency of a line (daemon's time to the client): %.3f s")
      :format(worst))
    assert.is_true(worst < 0.5, "a line took " .. worst .. " s")
    local last = got[#got - 1]
    assert.are.equal("end", last.event)
    assert.are.equal("ended", json.decode(last.data).reason)
    assert.is_true(got[#got]["end"])
  end)

  it("follows a TTY container over curl -N and WebSocket", function()
    local id = run({ name = "tty", tty = true, cmd = { "sh", "-c",
      "sleep 1; echo one; sleep 0.3; printf 'two'; sleep 0.3; echo ' halves'" } })
    local ws = client("ws", url(id):gsub("^http", "ws"), 10)
    local r = assert(proc.run({ "curl", "-sN", "--max-time", "10", url(id) }))
    assert.truthy(r.stdout:find("^retry: 2000\n\n"), r.stdout)
    assert.truthy(r.stdout:find('event: log\ndata: {"line":"one","stream":'
      .. '"stdout"}\n\nevent: log\ndata: {"line":"two halves","stream":'
      .. '"stdout"}\n\n', 1, true), r.stdout)
    assert.truthy(r.stdout:find('event: end\ndata: {"event":"end","reason":'
      .. '"ended",', 1, true), r.stdout)
    local texts = {}
    for _, m in ipairs(lines(ws, true)) do
      if m.op == 1 then
        for l in m.data:gmatch("[^\n]+") do -- a message: one or more lines
          texts[#texts + 1] = json.decode(l).line or json.decode(l).event
        end
      end
    end
    assert.are.same({ "one", "two halves", "end" }, texts)
  end)

  it("joins a line the daemon cut into frames, cuts one past 64 KiB, over NDJSON", function()
    local id = run({ name = "long", cmd = { "sh", "-c", [[sleep 0.5;
      head -c 40000 /dev/zero | tr '\0' x; echo; head -c 70000 /dev/zero |
      tr '\0' y; echo; echo after]] } })
    local r = assert(proc.run({ "curl", "-sN", "--max-time", "10", "-H",
      "Accept: application/x-ndjson", url(id) }))
    local got = {}
    for l in r.stdout:gmatch("[^\n]+") do
      got[#got + 1] = json.decode(l)
    end
    assert.are.equal(4, #got, r.stdout:sub(1, 300))
    assert.are.equal(("x"):rep(40000), got[1].line)
    assert.is_nil(got[1].truncated)
    assert.are.equal(("y"):rep(65536), got[2].line)
    assert.is_true(got[2].truncated)
    assert.are.equal("after", got[3].line)
    assert.are.equal("end", got[4].event)
  end)

  -- The fewest of pid's engine sockets over a second, taken again until a
  -- second's fewest is no lower than the one before (while transfers are
  -- still being freed it falls).
  local function settled(pid)
    local last = math.huge
    for _ = 1, 10 do
      local least = math.huge
      for _ = 1, 20 do
        least = math.min(least, engine_sockets(pid))
        clock.sleep(0.05)
      end
      if least >= last then
        return least
      end
      last = least
    end
    return last
  end

  it("frees the transfer when the client goes", function()
    local id = run({ name = "busy", cmd = ticker(600, 0.1, 0) })
    -- A server of its own without a collector: a collector samples every
    -- running container of the shared engine at once, and keeps as many
    -- idle connections as it had calls at once, so its count follows the
    -- other specs' containers (10 before, 12 after, with a run beside).
    local own = http.start({ args = { "--interval", "0" } })
    finally(function()
      own:stop()
    end)
    local pid = own.proc:pid()
    -- the transfers under way, as GET /metrics says
    local function follows()
      local r = http.get(own.url .. "/metrics")
      assert.are.equal(200, r.status)
      return tonumber(r.body:match("\nhorcrux_log_follows (%d+)\n"))
    end
    local function six(seconds)
      local cs = {}
      for i = 1, 6 do
        cs[i] = client("sse", own.url .. "/api/containers/" .. id
          .. "/logs?follow=1&tail=0", seconds)
      end
      return cs
    end
    -- A first six, read to their end, so that what stays is counted in
    -- the baseline: the follows' executor with its wake-up socket pair,
    -- started with the first follow, and the idle connections of the
    -- workers' executor, which six inspects at once (each follow inspects
    -- the container first) leave behind.
    for _, c in ipairs(six(1.5)) do
      lines(c, true)
    end
    assert.truthy(until_true(10, function() return follows() == 0 end),
      "the first six follows' transfers ended")
    local before = settled(pid)
    -- each client reads for 4 s: long enough that all six are connected
    -- at once even when a sanitizer build on a loaded machine is slow to
    -- start them (1.5 s fell short once)
    local cs = six(4)
    -- each follow holds a connection of its own to the engine (one that
    -- is cut is closed, not kept idle)
    local most, most_follows = 0, 0
    local during = until_true(4, function()
      local n, f = engine_sockets(pid), follows()
      most, most_follows = math.max(most, n), math.max(most_follows, f)
      return most_follows == 6 and most >= before + 6 and n
    end)
    assert.truthy(during, ("6 follows hold 6 connections to the engine: "
      .. "%d before, at most %d, at most %d follows"):format(before, most,
        most_follows))
    for _, c in ipairs(cs) do
      assert.truthy(#events(lines(c, true), "log") >= 5)
    end
    -- a follow sees its client gone at its next write (a line every
    -- 0.1 s here) and aborts its transfer on the follow executor's next
    -- turn: 10 s for a sanitizer build on a loaded machine (5 s fell
    -- short once at a load average of 11)
    local gone = until_true(10, function() return follows() == 0 end)
    assert.truthy(gone, ("the transfers ended: %d follows left")
      :format(follows()))
    -- and their connections are closed, not kept: the sockets fall back to
    -- the baseline, give or take the idle connections the workers keep
    -- from six inspects at once, which vary with how the inspects met
    -- (a CI run kept 2 more than the first six had)
    local least = math.huge
    local after = until_true(10, function()
      local n = engine_sockets(pid)
      least = math.min(least, n)
      return n <= before + 3 and n
    end)
    print(("  engine sockets: %d before, %d with 6 follows, %s after they went")
      :format(before, most, tostring(after)))
    assert.truthy(after, ("the connections were closed: %d before, %d with "
      .. "the follows, at least %d after"):format(before, most, least))
  end)

  -- 1.6 MB of lines (2,000 of 800 bytes) in 4 s; the queue holds 1 MiB
  -- (and the socket's buffers about 100 KiB)
  it("drops a reader that reads nothing with overflow, and the others get every line in time", function()
    local id = run({ name = "burst", cmd = { "sh", "-c", [[sleep 0.5; i=0
      X=$(head -c 800 /dev/zero | tr '\0' x)
      while [ $i -lt 40 ]; do j=0; while [ $j -lt 50 ]; do
      echo "$i.$j $X"; j=$((j+1)); done; i=$((i+1)); sleep 0.1; done]] } })
    local slow = client("slow", url(id, "timestamps=1"), 6)
    local fast = client("sse", url(id, "timestamps=1"), 15)
    local tail = lines(slow, true)[1]
    assert.truthy(tail.tail:find("event: overflow", 1, true), tail.tail)
    local got = lines(fast, true)
    local logs, worst = events(got, "log"), 0
    assert.are.equal(2000, #logs)
    for k, l in ipairs(logs) do
      local i, j = l.line:match("^(%d+)%.(%d+) ")
      assert.are.equal(k - 1, tonumber(i) * 50 + tonumber(j))
      worst = math.max(worst, l.t - time.parse(l.time) / 1e9)
    end
    print(("  the reader that kept up: 2000 lines, worst latency %.3f s")
      :format(worst))
    assert.is_true(worst < 0.5, "latency " .. worst)
    assert.are.equal("end", got[#got - 1].event)
  end)

  it("is refused with 404 for an unknown container, 400 for a bad value", function()
    local r = http.get(srv.url .. "/api/containers/hxtest-no-such-xyz/logs?follow=1")
    assert.are.equal(404, r.status)
    r = http.get(srv.url .. "/api/containers/x/logs?follow=1&tail=lots")
    assert.are.equal(400, r.status)
  end)
end)

describe("log follow and the guard", function()
  it("needs the token and an allowed Host, and is refused in read-only mode", function()
    local id = support.run_container({ name = "guard" })
    local tok = os.tmpname()
    local f = assert(io.open(tok, "w"))
    f:write("follow-spec-token-0123456789abcdef\n")
    f:close()
    local srv = http.start({ args = { "--token-file", tok, "--require-token" } })
    local ro = http.start({ args = { "--read-only" } })
    local ok, err = pcall(function()
      local u = "/api/containers/" .. id .. "/logs?follow=1"
      local bearer = "Authorization: Bearer follow-spec-token-0123456789abcdef"
      local c = client("sse", srv.url .. u, 1)
      assert.are.equal(401, lines(c, true)[1].status)
      c = client("sse", srv.url .. u, 1, { bearer, "Host: evil.example" })
      assert.are.equal(403, lines(c, true)[1].status)
      c = client("sse", srv.url .. u, 1, { bearer })
      assert.are.equal(200, lines(c, true)[1].status)
      c = client("sse", ro.url .. u, 1)
      assert.are.equal(403, lines(c, true)[1].status)
    end)
    srv:stop()
    ro:stop()
    os.remove(tok)
    pcall(support.remove, id)
    assert(ok, err)
  end)
end)
