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
  if h.version == "v2" then
    add(p.unified, { "cpu.stat", "memory.current", "memory.max",
      "memory.stat", "memory.events", "io.stat", "pids.current", "pids.max",
      "cgroup.freeze", "cgroup.procs", "cpu.max", "cpuset.cpus.effective",
      "cpu.pressure", "memory.pressure", "io.pressure" })
  else
    add(p.cpuacct, { "cpuacct.usage", "cpuacct.stat", "cpuacct.usage_percpu",
      "cgroup.procs" })
    if p.cpu then
      add(p.cpu, { "cpu.stat", "cpu.cfs_quota_us", "cpu.cfs_period_us" })
    end
    if p.cpuset then
      add(p.cpuset, { "cpuset.effective_cpus" })
    end
    add(p.memory, { "memory.usage_in_bytes", "memory.limit_in_bytes",
      "memory.stat", "memory.oom_control", "cgroup.procs" })
    add(p.blkio, { "blkio.throttle.io_service_bytes_recursive" })
    add(p.pids, { "pids.current", "pids.max" })
    if p.freezer then
      add(p.freezer, { "freezer.state" })
    end
    if p.unified then -- a hybrid host's pressure files
      add(p.unified, { "cpu.pressure", "memory.pressure", "io.pressure" })
    end
  end
  files[#files + 1] = "/proc/stat" -- the boot time, for the start
  if pid then
    files[#files + 1] = "/proc/" .. pid .. "/stat"
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
