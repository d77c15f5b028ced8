-- Container logs: the query, the demultiplexing of the daemon's frames, and
-- GET /api/containers/:id/logs against the real engine.
local logs = require "horcrux.logs"
local clock = require "horcrux.clock"

local function frame(stream, payload)
  return string.pack(">BBBBI4", stream, 0, 0, 0, #payload) .. payload
end

local function args(q)
  local out = {}
  for pair in q:gmatch("[^&]+") do
    out[#out + 1] = { pair:match("^([^=]+)=(.*)$") }
  end
  return out
end

describe("horcrux.logs.params", function()
  it("defaults to every line of both streams, without timestamps", function()
    assert.are.same({ tail = "all", timestamps = false, stdout = true,
      stderr = true }, logs.params({}))
  end)

  it("reads each parameter", function()
    local o = assert(logs.params(args(
      "tail=10&since=1700000000&until=1700000100.5&timestamps=1&stdout=0")))
    assert.are.equal(10, o.tail)
    assert.are.equal("1700000000", o.since)
    assert.are.equal("1700000100.5", o.until_)
    assert.is_true(o.timestamps)
    assert.is_false(o.stdout)
    assert.is_true(o.stderr)
  end)

  it("takes RFC 3339 times and durations before now", function()
    assert.are.equal("1767322800", logs.time_param("2026-01-02T03:00:00Z"))
    assert.are.equal("1767315600.25", logs.time_param("2026-01-02T03:00:00.25+02:00"))
    assert.are.equal("0", logs.time_param("1970-01-01T00:00:00Z"))
    local now = clock.now_ns() // 1000000000
    local t = tonumber(logs.time_param("1h30m"))
    assert.is_true(math.abs(t - (now - 5400)) <= 2)
    t = tonumber(logs.time_param("45s"))
    assert.is_true(math.abs(t - (now - 45)) <= 2)
  end)

  it("refuses bad values and unknown parameters, naming them", function()
    for _, q in ipairs({ "tail=-1", "tail=ten", "tail=", "since=yesterday",
      "since=2026-13-01T00:00:00Z", "since=2026-01-01T00:00:00",
      "until=10x", "timestamps=yes", "stdout=2", "stderr=",
      "follow=1", "tail=1&tail=2" }) do
      local o, err, kind, key = logs.params(args(q))
      assert.is_nil(o, q)
      assert.are.equal("bad_request", kind, q)
      assert.are.equal(q:match("^[^=]+"), key, q)
      assert.truthy(err, q)
    end
    local o, err = logs.params(args("stdout=0&stderr=false"))
    assert.is_nil(o)
    assert.truthy(err:find("nothing", 1, true))
  end)
end)

describe("horcrux.logs.demux", function()
  -- Work that grows with the square of a line's length runs inside one C
  -- call, where the instruction budget cannot stop it (an audit measured
  -- 21.8 s for 256 KiB). The cost must grow with the input. Time per byte
  -- is not a constant at these sizes (caches, and the allocator handing
  -- large strings back to the kernel: 32 KiB to 256 KiB measured up to 40
  -- times the time for 8 times the bytes), so each size is measured against
  -- a peer of the same size in the same run: copying the input into a new
  -- string, which has the same cache and allocation costs. A linear walk
  -- costs a few copies (measured 1-8, the allocator's moods included); the
  -- quadratic one cost 400,000 at 256 KiB.
  local function cost(f)
    local best = math.huge
    for _ = 1, 3 do -- the least of three runs of 20 ms at least
      local n, t0 = 0, os.clock()
      repeat
        f()
        n = n + 1
      until os.clock() - t0 >= 0.02
      best = math.min(best, (os.clock() - t0) / n)
    end
    return best
  end
  -- demux's cost over a copy's for raw
  local function relative(raw, tty, timestamps)
    local d = cost(function() logs.demux(raw, tty, timestamps) end)
    local c = cost(function() return raw:sub(2) .. "\n" end)
    return d / c
  end

  it("walks long TTY lines and progress bars in linear time", function()
    local bar = ("#"):rep(60) .. "\r"
    for _, unit in ipairs({ ("x"):rep(16384) .. "\n", bar, ("y"):rep(1024) }) do
      for _, kib in ipairs({ 32, 256 }) do
        local r = relative(unit:rep(math.ceil(kib * 1024 / #unit)), true, true)
        assert.is_true(r < 50, ("%d-byte units, %d KiB: %.1f copies"):format(#unit, kib, r))
      end
    end
  end)

  it("joins a line split over many frames in linear time", function()
    -- 2 MiB in frames of 1 KiB: joined once, 10-20 copies' worth (a frame
    -- costs a header and a piece); joined frame by frame, 1,400
    local function framed(total, size)
      local parts = {}
      for i = 1, total // size do
        parts[i] = frame(1, ("z"):rep(size))
      end
      return table.concat(parts) .. frame(1, "\n")
    end
    local r = relative(framed(2048 * 1024, 1024), false, false)
    assert.is_true(r < 200, ("2 MiB in 1 KiB frames: %.1f copies"):format(r))
    local lines = logs.demux(framed(64 * 1024, 16384), false, false)
    assert.are.equal(1, #lines)
    assert.are.equal(64 * 1024, #lines[1].line)
  end)

  it("tags each line with its stream, in order", function()
    local raw = frame(1, "one\n") .. frame(2, "err one\n") .. frame(1, "two\n")
    assert.are.same({
      { stream = "stdout", line = "one" },
      { stream = "stderr", line = "err one" },
      { stream = "stdout", line = "two" },
    }, logs.demux(raw, false, false))
    assert.are.equal(3, select(3, logs.demux(raw, false, false)))
  end)

  it("joins a long line split over frames, per stream", function()
    local raw = frame(1, "aaa") .. frame(2, "x\n") .. frame(1, "bbb") ..
      frame(1, "ccc\n")
    assert.are.same({
      { stream = "stderr", line = "x" },
      { stream = "stdout", line = "aaabbbccc" },
    }, logs.demux(raw, false, false))
  end)

  it("keeps a line without a final newline, empty lines and binary bytes", function()
    local raw = frame(1, "\n") .. frame(1, "a\0b\255\n") .. frame(2, "tail")
    assert.are.same({
      { stream = "stdout", line = "" },
      { stream = "stdout", line = "a\0b\255" },
      { stream = "stderr", line = "tail" },
    }, logs.demux(raw, false, false))
  end)

  it("splits the timestamps off, one per line even when it is in parts", function()
    local t1, t2 = "2026-11-29T05:36:09.096460804Z", "2026-11-29T05:36:09.1Z"
    local raw = frame(1, t1 .. " hello world\n") .. frame(2, t2 .. " part1") ..
      frame(2, t2 .. " part2\n")
    assert.are.same({
      { stream = "stdout", time = t1, line = "hello world" },
      { stream = "stderr", time = t2, line = "part1part2" },
    }, logs.demux(raw, false, true))
  end)

  it("reads a TTY's raw output as stdout, without the CRs", function()
    assert.are.same({
      { stream = "stdout", line = "one" },
      { stream = "stdout", line = "two" },
      { stream = "stdout", line = "three" },
    }, logs.demux("one\r\ntwo\r\nthree", true, false))
    local t = "2026-11-29T05:36:09.1Z"
    assert.are.same({ { stream = "stdout", time = t, line = "x y" } },
      logs.demux(t .. " x y\r\n", true, true))
  end)

  it("stops at bytes that are not a frame, with what came before", function()
    local lines, bad = logs.demux(frame(1, "ok\n") .. "garbage!", false, false)
    assert.are.same({ { stream = "stdout", line = "ok" } }, lines)
    assert.truthy(bad:find("offset 11", 1, true))
    -- a frame cut short is taken as far as it goes
    local cut = frame(1, "whole line\n"):sub(1, 12)
    lines = logs.demux(cut, false, false)
    assert.are.same({ { stream = "stdout", line = "whol" } }, lines)
  end)

  it("gives plain text, with timestamps when asked", function()
    assert.are.equal("a\nb\n", logs.text({ { line = "a" }, { line = "b" } }))
    assert.are.equal("T a\n", logs.text({ { line = "a", time = "T" } }))
    assert.are.equal("", logs.text({}))
  end)
end)

-- ---- against the real engine -------------------------------------------------

describe("GET /api/containers/:id/logs", function()
  local ms = require "manage_support"
  local support = require "support"
  local http = require "http"
  local srv, id, tty_id

  -- 3 lines on stdout and 2 on stderr, interleaved, then a wait (a line
-- without its newline is not logged until the stream ends)
  local SCRIPT = "echo out-1; echo err-1 >&2; echo out-2; echo err-2 >&2; " ..
    "echo out-3; sleep 600"

  local function get(path, opts)
    return ms.call(srv, "GET", path, nil, opts)
  end

  setup(function()
    support.docker()
    srv = ms.start()
    id = ms.create(srv, { cmd = { "sh", "-c", SCRIPT }, start = true })
    tty_id = ms.create(srv, { cmd = { "sh", "-c", "echo tty-1; echo tty-2 >&2; sleep 600" },
      tty = true, start = true })
    -- the lines are written at start; wait until the daemon has them all
    ms.eventually(10, function()
      local r = get("/api/containers/" .. id .. "/logs")
      return r.status == 200 and #r.json == 5
    end)
    ms.eventually(10, function()
      local r = get("/api/containers/" .. tty_id .. "/logs")
      return r.status == 200 and #r.json == 2
    end)
  end)

  teardown(function()
    ms.cleanup()
    if srv then
      srv:stop()
    end
  end)

  it("tags each line with its stream, oldest first", function()
    local r = get("/api/containers/" .. id .. "/logs")
    assert.are.equal(200, r.status, r.body)
    assert.are.equal("0", r.headers["x-horcrux-truncated"])
    local outs, errs = {}, {}
    for _, l in ipairs(r.json) do
      if l.stream == "stdout" then
        outs[#outs + 1] = l.line
      else
        assert.are.equal("stderr", l.stream)
        errs[#errs + 1] = l.line
      end
    end
    assert.are.same({ "out-1", "out-2", "out-3" }, outs)
    assert.are.same({ "err-1", "err-2" }, errs)
  end)

  it("answers text with Accept: text/plain", function()
    local r = get("/api/containers/" .. id .. "/logs?stderr=0",
      { headers = { Accept = "text/plain" } })
    assert.are.equal(200, r.status)
    assert.matches("^text/plain", r.headers["content-type"])
    assert.are.equal("out-1\nout-2\nout-3\n", r.body)
  end)

  it("takes tail, stdout/stderr, timestamps, since and until", function()
    -- tail counts the lines of both streams, as the daemon does (which
    -- of two streams' lines came first is the daemon's to say)
    local r = get("/api/containers/" .. id .. "/logs?tail=5&stdout=0")
    assert.are.same({ { stream = "stderr", line = "err-1" },
      { stream = "stderr", line = "err-2" } }, r.json)
    r = get("/api/containers/" .. id .. "/logs?tail=1")
    assert.are.equal(1, #r.json)
    r = get("/api/containers/" .. id .. "/logs?tail=0")
    assert.are.same({}, r.json)
    r = get("/api/containers/" .. id .. "/logs?stderr=false&timestamps=1")
    assert.are.equal(3, #r.json)
    for _, l in ipairs(r.json) do
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT[%d:.]+Z$", l.time)
    end
    r = get("/api/containers/" .. id .. "/logs?since=" .. (os.time() + 3600))
    assert.are.same({}, r.json)
    assert.are.equal("[]", r.body)
    r = get("/api/containers/" .. id .. "/logs?until=1000000000")
    assert.are.same({}, r.json)
    r = get("/api/containers/" .. id .. "/logs?since=1h")
    assert.are.equal(5, #r.json)
  end)

  it("reads a TTY container's output as it is", function()
    local r = get("/api/containers/" .. tty_id .. "/logs")
    assert.are.equal(200, r.status)
    assert.are.same({
      { stream = "stdout", line = "tty-1" },
      { stream = "stdout", line = "tty-2" },
    }, r.json)
  end)

  it("refuses bad parameters and bad ids with 400, an unknown container with 404", function()
    local r = get("/api/containers/" .. id .. "/logs?tail=lots")
    assert.are.equal(400, r.status)
    assert.are.equal("tail", r.json.error.field)
    r = get("/api/containers/" .. id .. "/logs?follow=1")
    assert.are.equal(400, r.status)
    r = get("/api/containers/bad!id/logs")
    assert.are.equal(400, r.status)
    r = get("/api/containers/%2e%2e/logs")
    assert.are.equal(400, r.status)
    r = get("/api/containers/hxtest-no-such-container-xyz/logs")
    assert.are.equal(404, r.status)
    assert.are.equal("not_found", r.json.error.code)
  end)

  it("keeps the newest lines past the size cap and says it truncated", function()
    -- the shipped routes with a 4 KiB cap
    local dir = http.scripts_dir({
      ["routes.lua"] = 'require("horcrux.logs").MAX_BYTES = 4096\n' ..
        http.read_file("lua/routes.lua"),
    })
    local small = ms.start({ scripts = dir })
    local few
    -- one finally per `it` (busted keeps only the last one given)
    finally(function()
      small:stop()
      if few then
        few:stop()
      end
    end)
    local big = ms.create(srv, { cmd = { "sh", "-c",
      "i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done; sleep 600" },
      start = true })
    ms.eventually(10, function()
      local r = get("/api/containers/" .. big .. "/logs?tail=1")
      return r.json and r.json[1] and r.json[1].line == "line-1999"
    end)
    local r = ms.call(small, "GET", "/api/containers/" .. big .. "/logs")
    assert.are.equal(200, r.status, r.body)
    assert.are.equal("1", r.headers["x-horcrux-truncated"])
    assert.is_true(#r.json > 0 and #r.json < 2000)
    assert.are.equal("line-1999", r.json[#r.json].line)
    local first = tonumber(r.json[1].line:match("%d+"))
    assert.are.equal(2000 - #r.json, first)
    -- under the cap nothing is cut
    r = ms.call(small, "GET", "/api/containers/" .. big .. "/logs?tail=5")
    assert.are.equal("0", r.headers["x-horcrux-truncated"])
    assert.are.equal(5, #r.json)

    -- the line cap: the newest MAX_LINES
    few = ms.start({ scripts = http.scripts_dir({
      ["routes.lua"] = 'require("horcrux.logs").MAX_LINES = 100\n' ..
        http.read_file("lua/routes.lua"),
    }) })
    r = ms.call(few, "GET", "/api/containers/" .. big .. "/logs")
    assert.are.equal("1", r.headers["x-horcrux-truncated"])
    assert.are.equal(100, #r.json)
    assert.are.equal("line-1900", r.json[1].line)
    assert.are.equal("line-1999", r.json[100].line)
    r = ms.call(few, "GET", "/api/containers/" .. big .. "/logs?tail=100")
    assert.are.equal("0", r.headers["x-horcrux-truncated"])
    assert.are.equal(100, #r.json)
  end)
end)
