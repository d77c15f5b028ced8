-- horcrux.docker under issue 8's audit: C buffers freed when results are
-- pushed (#7), sockets that children do not inherit (#9). Against the mock
-- daemon (tests/mocks/docker_mock.py, real HTTP on a real socket) for the
-- faults the engine cannot show, and the real engine.
local docker = require "horcrux.docker"
local proc = require "horcrux.proc"
local ds = require "docker_support"
local support = require "support"

local MIB = 1024 * 1024

local function rss_kib()
  for line in io.lines("/proc/self/status") do
    local kib = line:match("^VmRSS:%s+(%d+) kB")
    if kib then
      return tonumber(kib)
    end
  end
  error("no VmRSS in /proc/self/status")
end

local function own_pid()
  local f = assert(io.open("/proc/self/stat"))
  local pid = f:read("l"):match("^(%d+)")
  f:close()
  return pid
end

-- The socket descriptors of process `pid`: fd -> "socket:[inode]".
local function sockets(pid)
  local out = assert(proc.run({ "ls", "-l", "/proc/" .. pid .. "/fd" })).stdout
  local fds = {}
  for fd, inode in out:gmatch(" (%d+) %-> (socket:%[%d+%])") do
    fds[tonumber(fd)] = inode
  end
  return fds
end

-- True when our descriptor fd has O_CLOEXEC (02000000) in its flags.
local function cloexec(fd)
  local f = assert(io.open("/proc/self/fdinfo/" .. fd))
  local text = f:read("a")
  f:close()
  local flags = assert(text:match("flags:%s+(%d+)"), text)
  return tonumber(flags, 8) & 0x80000 ~= 0
end

-- Our sockets that were not open in `before`.
local function new_sockets(before)
  local new = {}
  for fd, inode in pairs(sockets(own_pid())) do
    if before[fd] ~= inode then
      new[#new + 1] = fd
    end
  end
  table.sort(new)
  return new
end

-- A child (ls, run by horcrux.proc) holds descriptors 0, 1 and 2 only,
-- whatever we hold: proc closes every other one in the child. Returns how
-- many of our sockets opened since `before` are close-on-exec themselves:
-- curl's connections are (defence in depth for a program started by other
-- means); curl's wakeup socketpairs (before curl 8.8) need not be.
local function none_inherited(before)
  local out = assert(proc.run({ "ls", "-l", "/proc/self/fd" })).stdout
  local fds = {}
  for fd, target in out:gmatch(" (%d+) %-> ([^\n]*)") do
    if not target:match("^/proc/%d+/fd$") then -- the one ls reads
      fds[#fds + 1] = tonumber(fd)
    end
  end
  table.sort(fds)
  assert.same({ 0, 1, 2 }, fds, out)
  local n = 0
  for _, fd in ipairs(new_sockets(before)) do
    if cloexec(fd) then
      n = n + 1
    end
  end
  return n
end

describe("horcrux.docker hardening", function()
  describe("against the mock", function()
    local host, stop, tcp_host, tcp_stop
    setup(function()
      -- /bigtrunc: 8 MiB of a reply announced one byte longer, then close.
      host, stop = ds.mock { args = "--big " .. 8 * MIB }
      tcp_host, tcp_stop = ds.mock { tcp = true }
    end)
    teardown(function()
      stop()
      tcp_stop()
    end)

    it("frees a failed transfer's buffers at once, not at the next GC (#7)", function()
      if os.getenv("HORCRUX_TEST_SANITIZE") then
        -- ASan keeps freed memory in its quarantine: RSS says nothing.
        pending("RSS is not measurable under ASan")
        return
      end
      local c = assert(docker.connect { host = host, api_version = "1.41" })
      local capped = assert(docker.connect { host = host, api_version = "1.41",
        max_response = 4 * MIB })
      collectgarbage()
      collectgarbage()
      -- No GC at all: a buffer is freed when its results are pushed, or
      -- never in this loop.
      collectgarbage("stop")
      finally(function() collectgarbage("restart") end)
      local before = rss_kib()
      local calls = {
        function() return c:request("GET", "/bigtrunc") end,
        function() return c:inspect("bigtrunc") end,
        function() return c:call("GET", "/bigtrunc") end,
        function() return capped:call("GET", "/big") end, -- over max_response
        function() return c:stats_many { "bigtrunc" }[1].value end,
      }
      for i = 1, 30 do
        local v, msg, kind = calls[i % #calls + 1]()
        assert.is_nil(v)
        if kind then -- (stats_many's element carries its own)
          assert.is_true(kind == "protocol" or kind == "limit", msg)
        end
      end
      local grown = (rss_kib() - before) / 1024
      -- 30 failures of 4-8 MiB each: about 200 MiB if their buffers waited
      -- for a GC; what is left now is the allocator's reuse.
      assert.is_true(grown < 48, string.format("RSS grew by %.0f MiB", grown))
      c:close()
      capped:close()
    end)

    it("lets a child inherit none of its sockets; connections close-on-exec (#9)", function()
      local before = sockets(own_pid())
      local c = assert(docker.connect { host = host, api_version = "1.41" })
      local t = assert(docker.connect { host = tcp_host, api_version = "1.41" })
      assert.is_true(c:ping()) -- unix socket, kept alive
      assert(t:request("GET", "/echo")) -- TCP, kept alive
      local r = t:stats_many { "echo", "echo", "echo" } -- a multi's handles
      assert.is_table(r[3].value)
      -- The unix and the TCP connection, kept alive, each close-on-exec.
      local n = none_inherited(before)
      assert.is_true(n >= 2, "close-on-exec sockets opened: " .. n)
      c:close()
      t:close()
    end)
  end)

  describe("against the engine", function()
    it("lets a child inherit none of its sockets; its connection close-on-exec (#9)", function()
      support.docker()
      local before = sockets(own_pid())
      local c = assert(docker.connect())
      assert(c:containers())
      assert.is_true(none_inherited(before) >= 1)
      c:close()
    end)
  end)
end)
