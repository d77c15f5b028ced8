-- The host's executor (core/executor.c) under a burst: its shared curl
-- multi keeps a bounded number of idle connections to the engine (4 per
-- worker), not one per request of the burst's peak (issue 8's soak: 470
-- idle sockets after 512 concurrent requests, kept about 2 minutes).
local http = require "http"
local support = require "support"
local proc = require "horcrux.proc"

local PATH = "PATH=" .. os.getenv("PATH")
local WORKERS, BURST = 2, 48

-- The number of sockets process pid holds.
local function sockets(pid)
  local out = assert(proc.run({ "ls", "-l", "/proc/" .. pid .. "/fd" })).stdout
  local n = 0
  for _ in out:gmatch("socket:%[") do
    n = n + 1
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
    -- count before are the connections it keeps idle.
    local kept = sockets(srv.proc:pid()) - before
    print(("\nexecutor: %d sockets before the burst of %d, %d more after"):format(
      before, BURST, kept))
    assert.is_true(kept <= 4 * WORKERS, kept .. " idle sockets kept")
  end)
end)
