-- The host's executor (core/executor.c) under a burst: its shared curl
-- multi keeps a bounded number of idle connections to the engine (4 per
-- worker), not one per request of the burst's peak (issue 8's soak: 470
-- idle sockets after 512 concurrent requests, kept about 2 minutes).
local http = require "http"
local support = require "support"
local proc = require "horcrux.proc"
local clock = require "horcrux.clock"

local PATH = "PATH=" .. os.getenv("PATH")
local WORKERS, BURST = 2, 48

-- The inodes of the TCP sockets on this host (the clients' connections).
local function tcp_inodes()
  local set = {}
  for _, path in ipairs({ "/proc/net/tcp", "/proc/net/tcp6" }) do
    local f = io.open(path)
    if f then
      for line in f:lines() do
        local inode = line:match("^%s*%d+:%s+%S+%s+%S+%s+%S+%s+%S+%s+%S+%s+%S+%s+%S+%s+%S+%s+(%d+)")
        if inode then
          set[inode] = true
        end
      end
      f:close()
    end
  end
  return set
end

-- The number of sockets process pid holds that are not TCP: its
-- connections to the engine and curl's socketpairs.
local function sockets(pid)
  local out = assert(proc.run({ "ls", "-l", "/proc/" .. pid .. "/fd" })).stdout
  local tcp, n = tcp_inodes(), 0
  for inode in out:gmatch("socket:%[(%d+)%]") do
    if not tcp[inode] then
      n = n + 1
    end
  end
  return n
end

describe("the executor", function()
  it("keeps at most 4 idle connections to the engine per worker", function()
    support.docker()
    local id = support.run_container({ name = "exec-idle" })
    local srv
    finally(function()
      if srv then
        srv:stop()
      end
      support.remove(id)
    end)
    srv = http.start({ args = { "--workers", tostring(WORKERS), "--interval", "0" },
      env = { PATH } })
    local url = srv.url .. "/api/containers/" .. id .. "/stats"
    assert.equal(200, assert(http.get(url)).status)
    local before = sockets(srv.proc:pid())
    local argv = { "curl", "-sS", "--parallel", "--parallel-immediate",
      "--parallel-max", tostring(BURST), "-w", "%{http_code}\n" }
    for _ = 1, BURST do
      argv[#argv + 1] = "-o"
      argv[#argv + 1] = "/dev/null"
      argv[#argv + 1] = url
    end
    local r = assert(proc.run(argv, { timeout = 120 }))
    local ok = select(2, r.stdout:gsub("200\n", ""))
    assert.equal(BURST, ok, r.stdout .. r.stderr)
    -- The burst's answers are all in: what the server holds now beyond its
    -- count before are the connections it keeps idle (a slow build may take
    -- a moment to put the last transfers' connections back).
    local kept
    for _ = 1, 25 do
      kept = sockets(srv.proc:pid()) - before
      if kept <= 4 * WORKERS then
        break
      end
      clock.sleep(0.2)
    end
    print(("\nexecutor: %d sockets before the burst of %d, %d more after"):format(
      before, BURST, kept))
    assert.is_true(kept <= 4 * WORKERS, kept .. " idle sockets kept")
  end)
end)
