--- tests/bench/view_history_mem.lua: the memory the history of N
-- containers takes once full (900 points, the default 15 minutes at 1 s),
-- idle ones (the same figures every round) and busy ones (every figure
-- changing):
--
--   build/horcrux run tests/bench/view_history_mem.lua [N]
local view = require "horcrux.view"
local clock = require "horcrux.clock"

local N = tonumber(arg and arg[1]) or 1000
local POINTS = view.set_limits({}).history

local function rss_kb()
  local h = assert(io.open("/proc/self/status"))
  local text = h:read("a")
  h:close()
  return tonumber(text:match("VmRSS:%s*(%d+)"))
end

local function fill(busy)
  view.clear()
  local start = clock.mono_ns() - (POINTS + 1) * 1000000000
  local rss0, bytes0 = rss_kb(), view.footprint().bytes
  for i = 1, N do
    local id = ("%064x"):format(i)
    local rec = { cpu_usage_percent = 0.0, memory_usage_bytes = 1048576,
      network_rx_bytes = 1000, network_tx_bytes = 2000,
      block_read_bytes = 4096, block_write_bytes = 0, pids = 1 }
    for k = 1, POINTS do
      if busy then
        rec.cpu_usage_percent = 40 + (k * 7919 % 1000) / 100
        rec.memory_usage_bytes = 50000000 + k * 4096 * (k % 7)
        rec.network_rx_bytes = rec.network_rx_bytes + 1500 * (k % 13)
        rec.network_tx_bytes = rec.network_tx_bytes + 700 * (k % 5)
        rec.block_write_bytes = rec.block_write_bytes + 4096 * (k % 3)
        rec.pids = 3 + k % 4
      end
      view.put(id, rec, k == 1 and { name = "c" .. i, status = "running" }
        or nil, start + k * 1000000000)
    end
  end
  local fp = view.footprint()
  print(("%s: %d containers, %d points each: %.0f bytes a container held "
    .. "(view.footprint), RSS +%.1f MB"):format(busy and "busy" or "idle", N,
    POINTS, (fp.bytes - bytes0) / N, (rss_kb() - rss0) / 1024))
end

fill(false)
fill(true)
