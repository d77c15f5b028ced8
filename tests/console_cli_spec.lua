-- horcrux stats (live) and horcrux events against the real engine: the
-- commands run as children, their output read as a user's pipe or terminal
-- gets it.
-- scripts/test: serial (horcrux stats, docker stats and the kernel each see
-- a busy loop over a different second: beside three other slots' loops on
-- two cores the three disagreed by 15 points in a CI run)
local support = require "support"
local http = require "http"
local proc = require "horcrux.proc"
local clock = require "horcrux.clock"
local cli = require "horcrux.cli"
local json = require "horcrux.json"

local BIN = http.bin
local read = http.read_file
local PYTHON = io.open("/usr/bin/python3") and "/usr/bin/python3" or "python3"

local function tmpfile()
  local p = os.tmpname()
  return p
end

-- The frames of non-terminal output: each starts at its header line.
local function frames(text)
  local out = {}
  for line in text:gmatch("[^\n]+") do
    if line:find("^CONTAINER ID") then
      out[#out + 1] = {}
    elseif #out > 0 then
      -- cells are separated by 3 or more spaces (tabwriter)
      local cells = {}
      local i = 1
      while i <= #line do
        local s, e = line:find("   +", i)
        cells[#cells + 1] = line:sub(i, (s or #line + 1) - 1)
        if not s then break end
        i = e + 1
      end
      table.insert(out[#out], cells)
    end
  end
  return out
end

local function row_of(frame, name)
  for _, r in ipairs(frame) do
    if r[2] == name then
      return r
    end
  end
end

-- docker stats --no-stream for one container, in the background.
local function docker_stats_async(name)
  local out = tmpfile()
  local p = assert(proc.spawn({ "docker", "stats", "--no-stream", "--format",
    "{{json .}}", name }, { stdout = out }))
  return function()
    assert(p:wait(20))
    local line = read(out):match("[^\n]+")
    os.remove(out)
    return assert(cli.parse_stats_line(line))
  end
end

-- Waits up to `secs` for pred(text of path) to be true; the text.
local function wait_for(path, secs, pred)
  local deadline = clock.mono_ns() + secs * 1e9
  local text
  repeat
    text = read(path)
    if pred(text) then
      return text, true
    end
    clock.sleep(0.05)
  until clock.mono_ns() > deadline
  return text, false
end

describe("horcrux stats", function()
  local busy, busy_name

  setup(function()
    busy, busy_name = support.run_container({ name = "cbusy",
      cmd = support.BUSY })
  end)

  teardown(function()
    if busy then support.remove(busy) end
  end)

  it("prints one table with --no-stream and exits 0", function()
    local r = assert(proc.run({ BIN, "stats", "--no-stream", busy_name },
      { timeout = 20 }))
    assert.are.equal(0, r.status, r.stderr)
    local f = frames(r.stdout)
    assert.are.equal(1, #f)
    local row = assert(row_of(f[1], busy_name), r.stdout)
    assert.are.equal(busy:sub(1, 12), row[1])
    assert.are.equal(8, #row)
    assert.is_nil(r.stdout:find("\27", 1, true))
  end)

  it("appends frames to a pipe, figures within 10 points of docker stats", function()
    local last
    for _ = 1, 3 do -- the host's load moves between the two windows
      local out, err = tmpfile(), tmpfile()
      -- the kernel's count of the loop over both windows: the peer that
      -- says how busy it was (on a loaded machine it gets what is left)
      local h = assert(require("horcrux.cgroup").open(busy))
      local c0 = assert(h:stats())
      local theirs = docker_stats_async(busy_name)
      local p = assert(proc.spawn({ BIN, "stats", "--interval", "0.5",
        busy_name }, { stdout = out, stderr = err }))
      local d = theirs() -- docker takes about 2 s: 3 frames or more meanwhile
      local text = wait_for(out, 5, function(t) return #frames(t) >= 2 end)
      p:kill("INT")
      local st = assert(p:wait(5))
      local c1 = assert(h:stats())
      h:close()
      local kernel = (c1.cpu_ns - c0.cpu_ns) / (c1.mono_ns - c0.mono_ns) * 100
      os.remove(out)
      local f = frames(text)
      assert.is_true(#f >= 2, text)
      assert.is_nil(text:find("\27", 1, true)) -- no escapes in a pipe
      assert.are.equal(2, st.signal or 2) -- Ctrl-C (SIGINT): gone at once
      assert.are.equal("", read(err))
      os.remove(err)
      local row = assert(row_of(f[#f], busy_name), text)
      -- docker measured about its last second: our frames from the second
      -- on cover the same seconds (each its own 0.5 s), so their mean is
      -- what to compare on a host whose load moves from second to second
      local sum, n = 0, 0
      for k = 2, #f do
        local cell = assert(row_of(f[k], busy_name), text)[3]
        sum, n = sum + assert(cli.parse_percent(cell), cell), n + 1
      end
      local ours = sum / n
      assert.are.equal(tostring(d.pids), row[8])
      local mem = cli.parse_size(row[4]:match("^(.-) /"))
      -- a busy loop holds a few hundred KiB, which move by a couple of
      -- pages from one second to the next: 10 % (routes_spec's bound) plus
      -- 512 KiB of slack
      assert.is_true(math.abs(mem - d.memory_usage_bytes) <= 0.10 *
        d.memory_usage_bytes + 512 * 1024,
        row[4] .. " vs docker " .. d.memory_usage_bytes)
      if math.abs(ours - d.cpu_usage_percent) <= 10 and kernel > 0
          and math.abs(ours - kernel) <= 10 + 0.15 * kernel then
        return
      end
      last = ("horcrux %.1f vs docker %.1f, the kernel %.1f"):format(ours,
        d.cpu_usage_percent, kernel)
    end
    error(last)
  end)

  it("redraws a terminal's screen with docker's escapes", function()
    -- a pseudo-terminal from Python's pty module: the child's stdout is a
    -- terminal, what it writes comes back here
    local script = [[
import os, pty, sys, time, select, signal
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
out, end = b"", time.time() + 4
while time.time() < end and out.count(b"\x1b[2J\x1b[H") < 2:
    r, _, _ = select.select([fd], [], [], 0.1)
    if r:
        try:
            out += os.read(fd, 65536)
        except OSError:
            break
os.kill(pid, signal.SIGINT)
os.waitpid(pid, 0)
sys.stdout.write(out.decode("utf-8", "replace"))
]]
    local r = assert(proc.run({ PYTHON, "-c", script, BIN, "stats",
      "--interval", "0.3", busy_name }, { timeout = 15 }))
    assert.are.equal(0, r.status, r.stderr)
    local n = select(2, r.stdout:gsub("\27%[2J\27%[H", ""))
    assert.is_true(n >= 2, r.stdout)
    assert.truthy(r.stdout:find(busy_name, 1, true))
  end)

  it("refuses a bad interval and an unknown option", function()
    for _, argv in ipairs({ { "--interval", "0" }, { "--interval", "x" },
      { "--bogus" } }) do
      local r = assert(proc.run({ BIN, "stats", table.unpack(argv) }))
      assert.are.equal(2, r.status)
      assert.truthy(r.stderr:find("usage:", 1, true))
    end
  end)
end)

describe("horcrux events", function()
  it("prints a docker run's create, start and die as they come, to a pipe", function()
    local fifo, out, err = tmpfile(), tmpfile(), tmpfile()
    os.remove(fifo)
    assert.are.equal(0, proc.run({ "mkfifo", fifo }).status)
    -- cat reads the pipe horcrux writes: a real pipe, not a file
    local reader = assert(proc.spawn({ "cat", fifo }, { stdout = out }))
    local p = assert(proc.spawn({ BIN, "events", "--filter",
      "label=" .. support.label_arg }, { stdout = fifo, stderr = err }))
    local id
    finally(function()
      p:kill("KILL")
      p:wait(5)
      reader:wait(5)
      if id then support.remove(id) end
      for _, f in ipairs({ fifo, out, err }) do os.remove(f) end
    end)
    clock.sleep(0.5) -- the stream is open before the container is made
    local name = support.unique_name("cev")
    local r = assert(proc.run({ "docker", "run", "-d", "--label",
      support.label_arg, "--name", name, support.image, "sh", "-c", "exit 3" },
      { timeout = 30 }))
    assert.are.equal(0, r.status, r.stderr)
    id = r.stdout:match("%x+")
    local t0 = clock.mono_ns()
    local text, ok = wait_for(out, 5, function(t)
      return t:find("container die " .. id, 1, true) ~= nil
    end)
    local took = (clock.mono_ns() - t0) / 1e9
    assert.is_true(ok, text .. read(err))
    assert.is_true(took < 2, ("die came %.2f s after docker run returned"):format(took))
    -- docker's line: time, type, action, id, (sorted attributes)
    local stamp = "%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%d%d%d%d%d%d%d%S* "
    for _, action in ipairs({ "create", "start", "die" }) do
      local attrs = text:match(stamp .. "container " .. action .. " " .. id
        .. " %((.-)%)\n")
      assert.truthy(attrs, action .. " in:\n" .. text)
      assert.truthy(attrs:find("name=" .. name, 1, true))
    end
    assert.truthy(text:find("(exitCode=3, " .. support.label_arg, 1, true), text)
    assert.is_true(p:running()) -- it follows until stopped
    p:kill("INT")
    assert.truthy(p:wait(5))
    assert.are.equal("", read(err))

    -- the same, afterwards: --since/--until end by themselves; JSON lines
    local now = clock.now_ns()
    local j = assert(proc.run({ BIN, "events", "--since", "1m", "--until",
      ("%d.%09d"):format(now // 1000000000, now % 1000000000), "--filter", "container=" .. id, "--format", "json" },
      { timeout = 20 }))
    assert.are.equal(0, j.status, j.stderr)
    local actions = {}
    for line in j.stdout:gmatch("[^\n]+") do
      local ev = assert(json.decode(line))
      assert.are.equal(id, ev.Actor.ID)
      actions[#actions + 1] = ev.Action
    end
    assert.are.same({ "create", "start", "die" }, { actions[1], actions[2],
      actions[3] })
  end)

  it("refuses a bad time, filter or format", function()
    for _, argv in ipairs({ { "--since", "yesterday" }, { "--filter", "x" },
      { "--format", "{{.ID}}" }, { "--until" } }) do
      local r = assert(proc.run({ BIN, "events", table.unpack(argv) }))
      assert.are.equal(2, r.status, table.concat(argv, " "))
      assert.truthy(r.stderr:find("usage:", 1, true))
    end
  end)
end)
