-- horcrux.proc: running programs without a shell.
local proc = require("horcrux.proc")

-- Seconds since boot, to 10 ms: enough to time a timeout without a clock
-- module.
local function uptime()
  local f = assert(io.open("/proc/uptime"))
  local s = f:read("n")
  f:close()
  return s
end

local function read_file(path)
  local f = io.open(path)
  if not f then
    return nil
  end
  local s = f:read("a")
  f:close()
  return s
end

local mypid = assert(read_file("/proc/self/stat")):match("^(%d+)")

-- The pids of this process's children (zombies included): after a run
-- returns, there must be none.
local function children()
  local s = read_file(("/proc/%s/task/%s/children"):format(mypid, mypid))
  if s == nil then -- kernels without CONFIG_PROC_CHILDREN: scan /proc
    local r = assert(proc.run({ "ls", "/proc" }))
    local list = {}
    for pid in r.stdout:gmatch("%d+") do
      local stat = read_file("/proc/" .. pid .. "/stat")
      local ppid = stat and stat:match("%) %a (%d+)")
      if ppid == mypid then
        list[#list + 1] = pid
      end
    end
    return list
  end
  local list = {}
  for pid in s:gmatch("%d+") do
    list[#list + 1] = pid
  end
  return list
end

local function process_state(pid)
  local stat = read_file("/proc/" .. pid .. "/stat")
  return stat and stat:match("%) (%a) ")
end

-- The descriptor numbers in an `ls -l /proc/self/fd` listing, without the
-- one ls opened to read that directory.
local function fds_of(listing)
  local fds = {}
  for fd, target in listing:gmatch(" (%d+) %-> ([^\n]*)") do
    if not target:match("^/proc/%d+/fd$") then
      fds[#fds + 1] = tonumber(fd)
    end
  end
  table.sort(fds)
  return fds
end

-- An environment list for a lua5.4 child that loads this build's modules
-- (and keeps the sanitizer run's settings).
local function lua_env(extra)
  local env = { "PATH=" .. os.getenv("PATH"), "LUA_CPATH_5_4=" .. package.cpath,
    "LUA_PATH_5_4=" .. package.path }
  for _, k in ipairs({ "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS" }) do
    local v = os.getenv(k)
    if v then
      env[#env + 1] = k .. "=" .. v
    end
  end
  for _, kv in ipairs(extra or {}) do
    env[#env + 1] = kv
  end
  return env
end

describe("horcrux.proc", function()
  after_each(function()
    assert.same({}, children())
  end)

  describe("run", function()
    it("captures stdout", function()
      local r = assert(proc.run({ "echo", "hello", "world" }))
      assert.equal("hello world\n", r.stdout)
      assert.equal("", r.stderr)
      assert.equal(0, r.status)
      assert.is_nil(r.signal)
      assert.is_false(r.timed_out)
      assert.is_false(r.truncated)
    end)

    it("captures stderr apart from stdout", function()
      local r = assert(proc.run({ "sh", "-c", "echo out; echo err >&2" }))
      assert.equal("out\n", r.stdout)
      assert.equal("err\n", r.stderr)
    end)

    it("reports exit codes", function()
      assert.equal(0, proc.run({ "true" }).status)
      assert.equal(1, proc.run({ "false" }).status)
      assert.equal(42, proc.run({ "sh", "-c", "exit 42" }).status)
      assert.equal(255, proc.run({ "sh", "-c", "exit 255" }).status)
    end)

    it("reports a death by signal", function()
      local r = assert(proc.run({ "sh", "-c", "kill -KILL $$" }))
      assert.is_nil(r.status)
      assert.equal(9, r.signal)
      -- Not SEGV: under ASan, LD_PRELOAD reaches the child and catches it.
      r = assert(proc.run({ "sh", "-c", "kill -USR1 $$" }))
      assert.equal(10, r.signal)
    end)

    it("says not_found for a missing program", function()
      local r, msg, kind = proc.run({ "horcrux-no-such-program", "x" })
      assert.is_nil(r)
      assert.equal("not_found", kind)
      assert.matches("horcrux%-no%-such%-program: program not found", msg)
      r, msg, kind = proc.run({ "/nonexistent/bin/prog" })
      assert.is_nil(r)
      assert.equal("not_found", kind)
    end)

    it("says unavailable for a program it may not run", function()
      local path = os.tmpname() -- mode 0600
      finally(function()
        os.remove(path)
      end)
      local r, msg, kind = proc.run({ path })
      assert.is_nil(r)
      assert.equal("unavailable", kind)
      assert.matches(path, msg, 1, true)
    end)

    it("never hands a script without #! to a shell", function()
      -- execvp would run this with /bin/sh; posix_spawnp must not.
      local path = os.tmpname()
      finally(function()
        os.remove(path)
      end)
      local f = assert(io.open(path, "w"))
      f:write("echo ran by a shell\n")
      f:close()
      assert.equal(0, proc.run({ "chmod", "755", path }).status)
      local r, msg, kind = proc.run({ path })
      assert.is_nil(r, r and r.stdout)
      assert.equal("unavailable", kind)
      assert.matches("Exec format error", msg)
    end)

    it("passes argv literally: there is no shell", function()
      local odd = {
        "a b",
        "'single'",
        '"double"',
        "x;y",
        "$(id)",
        "`id`",
        "*",
        "$HOME",
        "a|b&&c>d",
        "",
        "new\nline",
      }
      local argv = { "printf", "[%s]" }
      for _, s in ipairs(odd) do
        argv[#argv + 1] = s
      end
      local r = assert(proc.run(argv))
      assert.equal("[" .. table.concat(odd, "][") .. "]", r.stdout)
      assert.equal(0, r.status)
    end)

    it("takes numbers in argv", function()
      assert.equal("3\n", proc.run({ "echo", 3 }).stdout)
    end)

    it("kills a program at the timeout and reaps it", function()
      local t0 = uptime()
      local r = assert(proc.run({ "sleep", "10" }, { timeout = 0.5 }))
      local took = uptime() - t0
      assert.is_true(r.timed_out)
      assert.equal(15, r.signal) -- SIGTERM was enough
      assert.is_nil(r.status)
      assert.is_true(took >= 0.4 and took < 1.5, "took " .. took)
    end)

    it("kills with SIGKILL a program that ignores SIGTERM", function()
      local t0 = uptime()
      local r = assert(proc.run(
        { "sh", "-c", "trap '' TERM; echo ready; while :; do :; done" },
        { timeout = 0.3 }
      ))
      local took = uptime() - t0
      assert.is_true(r.timed_out)
      assert.equal(9, r.signal)
      assert.equal("ready\n", r.stdout) -- what came before the kill is kept
      assert.is_true(took < 2, "took " .. took)
    end)

    it("kills what the program started when the timeout comes", function()
      -- The background sleep holds stdout open after sh exits.
      local t0 = uptime()
      local r = assert(proc.run(
        { "sh", "-c", "sleep 30 & echo $!" },
        { timeout = 0.5 }
      ))
      assert.is_true(uptime() - t0 < 2)
      assert.is_true(r.timed_out)
      assert.equal(0, r.status) -- sh itself had exited
      local pid = r.stdout:match("%d+")
      assert.truthy(pid)
      local state
      for _ = 1, 50 do
        state = process_state(pid)
        if state == nil or state == "Z" then
          break
        end
        proc.run({ "sleep", "0.05" })
      end
      assert.is_true(state == nil or state == "Z", "grandchild " .. tostring(state))
    end)

    it("times out a program that closed its outputs but keeps running", function()
      local r = assert(proc.run(
        { "sh", "-c", "exec >&- 2>&-; sleep 10" },
        { timeout = 0.3 }
      ))
      assert.is_true(r.timed_out)
    end)

    it("caps each stream and drains the rest", function()
      local r = assert(proc.run(
        { "dd", "if=/dev/zero", "bs=1M", "count=5" },
        { max_output = 100000 }
      ))
      assert.equal(100000, #r.stdout)
      assert.is_true(r.truncated)
      assert.equal(0, r.status) -- it could write everything: no SIGPIPE
      assert.matches("5242880 bytes", r.stderr)
    end)

    it("caps at 1 MiB by default", function()
      local r = assert(proc.run({ "dd", "if=/dev/zero", "bs=1M", "count=3" }))
      assert.equal(1024 * 1024, #r.stdout)
      assert.is_true(r.truncated)
      assert.equal(0, r.status)
    end)

    it("takes max_output = 0 as keep nothing", function()
      local r = assert(proc.run({ "echo", "x" }, { max_output = 0 }))
      assert.equal("", r.stdout)
      assert.is_true(r.truncated)
    end)

    it("does not deadlock on a child that fills stderr first", function()
      local r = assert(proc.run(
        { "sh", "-c", "dd if=/dev/zero bs=1M count=2 >&2 2>/dev/null; dd if=/dev/zero bs=1M count=2 >&2; echo done" },
        { max_output = 8 * 1024 * 1024, timeout = 5 }
      ))
      assert.is_false(r.timed_out)
      assert.equal("done\n", r.stdout)
      assert.is_true(#r.stderr >= 2 * 1024 * 1024)
      assert.is_false(r.truncated)
    end)

    it("writes stdin and reads it back through cat", function()
      local r = assert(proc.run({ "cat" }, { stdin = "round\0trip\n" }))
      assert.equal("round\0trip\n", r.stdout)
      -- Bigger than any pipe buffer, both ways at once.
      local big = string.rep("0123456789abcdef", 256 * 1024) -- 4 MiB
      r = assert(proc.run({ "cat" }, { stdin = big, max_output = #big }))
      assert.equal(#big, #r.stdout)
      assert.is_true(r.stdout == big)
      assert.is_false(r.truncated)
    end)

    it("gives an empty stdin as EOF, and no stdin as /dev/null", function()
      assert.equal("", proc.run({ "cat" }, { stdin = "" }).stdout)
      local r = proc.run({ "cat" }, { timeout = 2 })
      assert.is_false(r.timed_out)
      assert.equal("", r.stdout)
    end)

    it("survives a child that exits without reading its stdin", function()
      -- Without SIGPIPE handled the host would die here.
      local big = string.rep("x", 4 * 1024 * 1024)
      local r = assert(proc.run({ "true" }, { stdin = big }))
      assert.equal(0, r.status)
      r = assert(proc.run({ "head", "-c", "3" }, { stdin = big }))
      assert.equal("xxx", r.stdout)
    end)

    it("sets the environment from a map or a list", function()
      local r = assert(proc.run({ "env" }, { env = { A = "1", B = "two words" } }))
      local got = {}
      for line in r.stdout:gmatch("[^\n]+") do
        got[#got + 1] = line
      end
      table.sort(got)
      assert.same({ "A=1", "B=two words" }, got)
      r = assert(proc.run({ "env" }, { env = { "X=y=z" } }))
      assert.equal("X=y=z\n", r.stdout)
      r = assert(proc.run({ "env" }, { env = {} }))
      assert.equal("", r.stdout)
    end)

    it("inherits the environment by default", function()
      local r = assert(proc.run({ "env" }))
      assert.matches("PATH=", r.stdout)
    end)

    it("runs in cwd", function()
      local r = assert(proc.run({ "pwd" }, { cwd = "/tmp" }))
      assert.equal("/tmp\n", r.stdout)
      local _, msg, kind = proc.run({ "pwd" }, { cwd = "/nonexistent/dir" })
      assert.equal("unavailable", kind)
      assert.matches("cwd '/nonexistent/dir'", msg)
      _, msg, kind = proc.run({ "pwd" }, { cwd = "/etc/hostname" })
      assert.equal("unavailable", kind)
      assert.matches("not a directory", msg)
    end)

    it("gives the child default signal dispositions", function()
      -- yes | head: yes must die of SIGPIPE, not spin on EPIPE.
      local r = assert(proc.run({ "sh", "-c", "yes | head -c 4; echo" }, { timeout = 5 }))
      assert.equal("y\ny\n\n", r.stdout)
      assert.is_false(r.timed_out)
    end)

    it("raises on misuse", function()
      assert.has_error(function()
        proc.run("ls")
      end)
      assert.has_error(function()
        proc.run({})
      end)
      assert.has_error(function()
        proc.run({ "" })
      end)
      assert.has_error(function()
        proc.run({ "ls", {} })
      end)
      assert.has_error(function()
        proc.run({ "ls\0x" })
      end)
      assert.has_error(function()
        proc.run({ "ls" }, { timeout = 0 })
      end)
      assert.has_error(function()
        proc.run({ "ls" }, { timeout = "soon" })
      end)
      assert.has_error(function()
        proc.run({ "ls" }, { max_output = -1 })
      end)
      assert.has_error(function()
        proc.run({ "ls" }, { env = { "NOEQUALS" } })
      end)
      assert.has_error(function()
        proc.run({ "ls" }, { env = { ["A=B"] = "c" } })
      end)
      assert.has_error(function()
        proc.run({ "ls" }, { stdin = 5 })
      end)
    end)

    it("runs many programs without leaking descriptors", function()
      -- The pipes this process holds: what proc.run would leak. (Counting
      -- every descriptor, or the bytes of a listing, also counts sockets
      -- that other specs' clients open and the garbage collector closes.)
      local function fds()
        collectgarbage()
        collectgarbage()
        local out = assert(proc.run({ "ls", "-l", "/proc/" .. mypid .. "/fd" })).stdout
        local n = 0
        for _ in out:gmatch("pipe:%[") do
          n = n + 1
        end
        return n
      end
      local before = fds()
      for _ = 1, 200 do
        proc.run({ "true" }, { stdin = "x" })
      end
      proc.run({ "sleep", "5" }, { timeout = 0.05 })
      proc.run({ "nope-nope" })
      -- 202 runs of 2-3 pipes each: a leak of even one end a run shows as
      -- hundreds. A few pipes may come and go meanwhile in this process
      -- (busted runs every spec in it; curl's multi handles hold one each).
      local grew = fds() - before
      assert.is_true(grew < 10, grew .. " pipes more after 202 runs")
    end)
  end)

  describe("what a child inherits (issue 8 #9)", function()
    -- io.open's FILE is not close-on-exec (fopen without "e"): a descriptor
    -- of ours that a careless library could hold at any time.
    it("closes every descriptor above 2 in a child of run", function()
      local f = assert(io.open("/etc/hostname"))
      finally(function() f:close() end)
      local r = assert(proc.run({ "ls", "-l", "/proc/self/fd" }))
      assert.same({ 0, 1, 2 }, fds_of(r.stdout), r.stdout)
      r = assert(proc.run({ "ls", "-l", "/proc/self/fd" }, { stdin = "x" }))
      assert.same({ 0, 1, 2 }, fds_of(r.stdout), r.stdout)
    end)

    it("closes every descriptor above 2 in a child of spawn", function()
      local f = assert(io.open("/etc/hostname"))
      local out = os.tmpname()
      finally(function()
        f:close()
        os.remove(out)
      end)
      local c = assert(proc.spawn({ "ls", "-l", "/proc/self/fd" }, { stdout = out }))
      assert.equal(0, c:wait(10).status)
      local text = read_file(out)
      assert.same({ 0, 1, 2 }, fds_of(text), text)
    end)

    it("passes HORCRUX_TOKEN only to a child whose env names it", function()
      -- A lua5.4 with the token in its environment runs `env`, inheriting.
      local code = [[
        local proc = require "horcrux.proc"
        io.write(proc.run({ "env" }).stdout, "--\n")
        local out = os.tmpname()
        proc.spawn({ "env" }, { stdout = out }):wait(10)
        local f = io.open(out)
        io.write(f:read("a"))
        f:close()
        os.remove(out)
      ]]
      local r = assert(proc.run({ "lua5.4", "-e", code }, { env = lua_env({
        "HORCRUX_TOKEN=a-token-of-24-characters", "KEPT=yes" }) }))
      assert.equal(0, r.status, r.stderr)
      local run, spawned = r.stdout:match("^(.*)%-%-\n(.*)$")
      for _, text in ipairs({ run, spawned }) do
        assert.truthy(text:find("KEPT=yes", 1, true), text)
        assert.is_nil(text:find("HORCRUX_TOKEN", 1, true), text)
      end
      -- Named in env, it is passed: env is exactly what the child gets.
      r = assert(proc.run({ "env" }, { env = { "HORCRUX_TOKEN=x" } }))
      assert.equal("HORCRUX_TOKEN=x\n", r.stdout)
    end)

    it("closes each pipe end once when one cannot be moved above stdio", function()
      -- With stdio closed and room for four descriptors, the first pipe is
      -- 0 and 1: 0 moves to 3, 1 cannot move. Whatever proc opened must be
      -- closed exactly once: a second close(2) of a number closes whatever
      -- another thread has opened under it meanwhile.
      local code = [[
        local proc = require "horcrux.proc"
        os.exit(proc.run({ "true" }) and 3 or 0)
      ]]
      local log = os.tmpname()
      finally(function() os.remove(log) end)
      local env = lua_env()
      if os.getenv("HORCRUX_TEST_SANITIZE") then
        env[#env + 1] = "ASAN_OPTIONS=detect_leaks=0" -- LSan needs descriptors
      end
      local r = assert(proc.run({ "sh", "-c", 'exec strace -f -qq -o "$0" '
        .. '-e trace=pipe2,fcntl,close prlimit --nofile=4 "$1" -e "$2" '
        .. "<&- >&- 2>&-", log, "lua5.4", code }, { env = env, timeout = 60 }))
      assert.equal(0, r.status, r.stderr)
      local trace = read_file(log)
      local from = trace:find("pipe2%(%[0, 1%]")
      assert.truthy(from, trace)
      local after = trace:sub(from)
      assert.truthy(after:find("F_DUPFD_CLOEXEC, 3%)%s+= 3"), after)
      assert.is_nil(after:find("EBADF", 1, true), after)
    end)
  end)

  describe("which", function()
    it("finds a program in PATH", function()
      local p = proc.which("sh")
      assert.truthy(p)
      assert.matches("/sh$", p)
    end)

    it("says nil for a missing one", function()
      assert.is_nil(proc.which("horcrux-no-such-program"))
      assert.is_nil(proc.which(""))
      local path = os.tmpname() -- mode 0600
      finally(function()
        os.remove(path)
      end)
      assert.is_nil(proc.which(path)) -- not executable
      assert.is_nil(proc.which("/etc")) -- a directory
    end)

    it("checks a path as given", function()
      assert.equal("/bin/sh", proc.which("/bin/sh"))
    end)
  end)

  describe("spawn", function()
    it("leaves a program running, signals it and reaps it", function()
      local out = os.tmpname()
      local c = assert(proc.spawn({ "sh", "-c", "echo started; exec sleep 30" },
        { stdout = out }))
      assert.is_true(c:running())
      assert.is_true(c:pid() > 1)
      local st, err, kind = c:wait(0.2)
      assert.is_nil(st)
      assert.equal("timeout", kind)
      assert.truthy(err:find("still running", 1, true))
      assert.is_true(c:kill("TERM"))
      st = assert(c:wait(5))
      assert.equal(15, st.signal)
      assert.is_false(c:running())
      assert.equal("started\n", read_file(out))
      local _, _, k2 = c:kill("TERM")
      assert.equal("not_found", k2)
      os.remove(out)
    end)

    it("reports the exit status and a missing program", function()
      local c = assert(proc.spawn({ "sh", "-c", "exit 7" }))
      assert.equal(7, c:wait(5).status)
      local r, err, kind = proc.spawn({ "/nonexistent/prog" })
      assert.is_nil(r)
      assert.equal("not_found", kind)
      assert.truthy(err:find("/nonexistent/prog", 1, true))
    end)

    it("kills and reaps a child still running when the handle is closed", function()
      local pid
      do
        local c <close> = assert(proc.spawn({ "sleep", "30" }))
        pid = c:pid()
      end
      -- reaped: no such process, not even a zombie
      assert.is_nil(read_file("/proc/" .. pid .. "/stat"))
    end)

    it("sends stdout and stderr to one file when both name it", function()
      local out = os.tmpname()
      local c = assert(proc.spawn({ "sh", "-c", "echo a; echo b >&2" },
        { stdout = out, stderr = out }))
      assert.equal(0, c:wait(5).status)
      local text = read_file(out)
      assert.truthy(text:find("a\n", 1, true) and text:find("b\n", 1, true))
      os.remove(out)
    end)
  end)
end)

