--- Helpers of the specs that measure horcrux.cgroup's readers against a
-- peer: the files a handle's stats() reads, read bare.
--
--   local cs = require "cgroup_support"
--   local files = cs.files(h, pid)   -- paths stats() reads for handle h
--   cs.read_bare(files)              -- open, read, close each from Lua
local M = {}

--- The files h:stats() reads for one container (v1 or v2), and its
-- process's net/dev (pid: the stats record's pid).
function M.files(h, pid)
  local p, files = h:paths(), {}
  local function add(dir, names)
    for _, n in ipairs(names) do
      files[#files + 1] = dir .. "/" .. n
    end
  end
  if h.version == "v2" or p.unified then
    add(p.unified or p.cpu or p.memory, { "cpu.stat", "memory.current", "memory.max",
      "memory.stat", "io.stat", "pids.current", "cgroup.freeze", "cgroup.procs" })
  else
    add(p.cpuacct, { "cpuacct.usage", "cgroup.procs" })
    add(p.memory, { "memory.usage_in_bytes", "memory.limit_in_bytes", "memory.stat" })
    add(p.blkio, { "blkio.throttle.io_service_bytes_recursive" })
    add(p.pids, { "pids.current" })
    if p.freezer then
      add(p.freezer, { "freezer.state" })
    end
  end
  if pid then
    files[#files + 1] = "/proc/" .. pid .. "/net/dev"
  end
  return files
end

--- Reads every file of the list whole, as plainly as Lua can.
function M.read_bare(files)
  for _, f in ipairs(files) do
    local fh = assert(io.open(f))
    fh:read("a")
    fh:close()
  end
end

return M
