--- The `cgroup` metric source: a container's figures read straight from its
-- cgroup files (horcrux.cgroup), with no daemon involved, so it answers
-- while the daemon is down, slow or unreachable.
--
--   list(opts)       -> array of {id (12), name, status, image}
--   inspect(ref)     -> {id, name, status, image, created, started}
--   stats(ref)       -> the stats record (DESIGN.md, Metrics)
--   running()        -> array of {id (full), name, status, image}: the
--                       containers that run (not paused); the collector's
--                       list
--   sample(id)       -> the record without waiting for a second sample
--   sample_many(ids) -> {id = record}, {id = {error, kind}}
--   resolve(ref)     -> full id | nil, message, kind
-- each returning its answer or nil, message, kind.
--
-- What the cgroup files cannot say. A container without a cgroup is not
-- running or does not exist, and a name means nothing to the kernel: such a
-- ref is resolved through horcrux.view (the collector's metadata) or, for a
-- hex ref, by id prefix over the cgroups; what is left is "unavailable"
-- (hand over to the next source), never "not_found", which only the daemon
-- can say. Names, images and start times come from the view's metadata
-- when the collector has seen the container, else they are json.null.
--
-- The figures are the `docker stats` arithmetic on the same kernel files
-- the daemon reads, so they agree with the docker-api source: CPU % through
-- horcrux.cpu's shared store (the same store and math as every source, so a
-- switch of source shows no jump), memory used = usage − inactive file
-- pages, the limit capped at host memory (as the daemon caps it), network
-- over every interface but lo, block I/O summed over devices, PIDs; and
-- the figures beside them (horcrux.record): CPU split, per CPU and
-- throttling, the limits, RSS, cache, OOM kills, processes, pressure (v2
-- and hybrid), per interface and per device, the first process's start.
local cgroup = require "horcrux.cgroup"
local cpu = require "horcrux.cpu"
local clock = require "horcrux.clock"
local json = require "horcrux.json"
local null = json.null
local shapes = require "horcrux.shapes"
local view = require "horcrux.view"
local record = require "horcrux.record"

local M = {
  name = "cgroup",
  -- its answers never wait on the daemon: the collector's first look at a
  -- container new to the set
  instant = true,
  filters = { status = true }, -- list() applies status itself
}

--- Options for horcrux.cgroup (root, proc, sys), nil for the real ones;
-- specs point them at fixture trees.
M.options = nil

-- Host CPUs and memory change rarely (hotplug, balloon); read again after
-- this long rather than on every record.
local HOST_TTL_NS = 10 * 1000000000
local host = {}

local function host_figures()
  local now = clock.mono_ns()
  if host.at == nil or now - host.at > HOST_TTL_NS then
    host.cpus = cgroup.online_cpus(M.options)
    host.memory = cgroup.host_memory(M.options)
    host.at = now
  end
  return host.cpus, host.memory
end

local function is_full_id(s)
  return #s == 64 and s:match("^[0-9a-f]+$") ~= nil
end

local function meta_of(id)
  return view.meta(id) or {}
end

local function cgroup_ids()
  local ids, err = cgroup.list(M.options)
  if not ids then
    return nil, "cgroup: " .. tostring(err), "unavailable"
  end
  return ids
end

--- A name, full id or id prefix to the full id of a container that has a
-- cgroup, as far as it can be told without the daemon.
function M.resolve(ref)
  if type(ref) ~= "string" then
    error("bad argument #1 to 'resolve' (string expected, got " .. type(ref)
      .. ")", 2)
  end
  ref = ref:gsub("^/", "")
  if ref == "" then
    return nil, "cgroup: empty container reference", "bad_request"
  end
  local id, err, kind = view.find(ref)
  if id then
    return id
  elseif kind == "bad_request" then
    return nil, "cgroup: " .. err, kind
  end
  if #ref <= 64 and ref:match("^[0-9a-f]+$") then
    local ids
    ids, err, kind = cgroup_ids()
    if not ids then
      return nil, err, kind
    end
    local found, n = nil, 0
    for _, full in ipairs(ids) do
      if full:sub(1, #ref) == ref then
        found, n = full, n + 1
      end
    end
    if n == 1 then
      return found
    elseif n > 1 then
      return nil, ("cgroup: id prefix '%s' is ambiguous (%d containers)")
        :format(ref, n), "bad_request"
    end
  end
  return nil, ("cgroup: no running container '%s' known without the daemon "
    .. "(names of containers the collector has not seen, and containers "
    .. "that are not running, need the daemon)"):format(ref), "unavailable"
end

-- Open handles by full id: opening finds the container's directories
-- (about 40 % of a read), so the collector's rounds reuse them. A handle
-- whose read fails is closed and opened again next time; forget(id) closes
-- one, and past MAX_HANDLES they are all closed (ids of long-gone
-- containers that nobody forgot).
local MAX_HANDLES = 4096
local handles, nhandles, handles_opts = {}, 0, nil

local function drop_handle(id)
  local h = handles[id]
  if h then
    h:close()
    handles[id] = nil
    nhandles = nhandles - 1
  end
end

local function handle(id)
  if handles_opts ~= M.options or nhandles >= MAX_HANDLES then
    for k in pairs(handles) do
      drop_handle(k)
    end
    handles_opts = M.options
  end
  local h = handles[id]
  if h then
    return h
  end
  local err, kind
  h, err, kind = cgroup.open(id, M.options)
  if not h then
    return nil, err, kind
  end
  handles[id], nhandles = h, nhandles + 1
  return h
end

-- Whether the container's cgroup is frozen (`docker pause`): true, false,
-- or nil when there is no freezer to ask (horcrux.cgroup's h:frozen()).
local function frozen(id)
  local h = handle(id)
  if not h then
    return nil
  end
  local f = h:frozen()
  if f == nil then
    return nil
  end
  return f
end

local function status_of(id, meta)
  local f = frozen(id)
  if f ~= nil then
    return f and "paused" or "running"
  end
  -- no freezer to ask: what the collector last saw, if it is a live state
  if meta.status == "paused" or meta.status == "running" then
    return meta.status
  end
  return "running"
end

--- Closes what the source keeps for a container that is gone.
function M.forget(id)
  drop_handle(id)
end

-- The raw figures of a full id; any failure hands over to the next source
-- (the container may have stopped: the daemon can still describe it). The
-- 4th value is the cgroup reader's own kind (not_found: the cgroup is gone).
local function read(id)
  local h, err, kind = handle(id)
  local s
  if h then
    s, err, kind = h:stats()
    if not s then
      drop_handle(id)
    end
  end
  if not s then
    return nil, ("cgroup: %s (%s)"):format(tostring(err), tostring(kind)),
      "unavailable", kind
  end
  return s
end

-- Feeds the sample of s to the shared store; returns pct | nil, reason.
-- cpu.observe of raw figures s; a third value, the sample stored (nil
-- when s has no counter).
local function observe(id, s)
  local ns = s.cpu_ns
  if math.type(ns) ~= "integer" or math.type(s.time_ns) ~= "integer" then
    return nil, "no_counter"
  end
  local cpus = host_figures()
  local sample = {
    cpu_ns = ns,
    system_ns = cgroup.system_cpu_ns(M.options) or nil,
    online_cpus = cpus or nil,
    time_ns = s.time_ns,
  }
  local pct, why = cpu.observe(id, sample)
  return pct, why, sample
end

local or_null = record.or_null

--- The stats record of full id `id` from raw figures s (cgroup.stats) and a
-- CPU % (nil: null).
function M.record(id, s, pct)
  local cpus, host_mem = host_figures()
  return record.new({
    id = id,
    name = or_null(meta_of(id).name),
    source = M.name,
    read_ns = s.time_ns,
    cpu_percent = pct,
    cpu_ns = s.cpu_ns,
    online_cpus = cpus,
    memory_usage = s.memory_usage,
    inactive_file = s.inactive_file,
    memory_limit = s.memory_limit,
    host_memory = host_mem,
    net_rx = s.net_rx, net_tx = s.net_tx,
    blk_read = s.blkio_read, blk_write = s.blkio_write,
    pids = s.pids,
    cpu_user_ns = s.cpu_user_ns, cpu_system_ns = s.cpu_system_ns,
    cpu_percpu_ns = s.cpu_percpu_ns, cpu_periods = s.cpu_periods,
    cpu_throttled_periods = s.cpu_throttled_periods,
    cpu_throttled_ns = s.cpu_throttled_ns, cpu_quota_us = s.cpu_quota_us,
    cpu_period_us = s.cpu_period_us, cpuset_cpus = s.cpuset_cpus,
    memory_rss = s.memory_rss, memory_cache = s.memory_cache,
    memory_oom_events = s.memory_oom_events, processes = s.processes,
    pids_limit = s.pids_limit, pressure = s.pressure,
    networks = s.networks, block_devices = s.block_devices,
    started_ns = s.started_ns,
  })
end

--- One sample of a full id, no waiting: the CPU % is against the newest
-- stored sample at least the window old, null when there is none yet (the
-- collector's next round gives it).
function M.sample(id)
  local s, err, kind, why = read(id)
  if not s then
    return nil, err, kind, why
  end
  return M.record(id, s, (observe(id, s)))
end

--- Every id at once; per id a record or {error =, kind =} where kind is
-- the cgroup reader's own (not_found: the cgroup is gone). An id that is
-- not a full one (a name, a prefix) is resolved first; one that cannot be
-- is "unavailable" here: the next source may know it.
function M.sample_many(ids)
  local recs, errs = {}, {}
  for _, ref in ipairs(ids) do
    local id, err, kind = ref, nil, nil
    if not is_full_id(ref) then
      id, err, kind = M.resolve(ref)
    end
    local rec, why
    if id then
      rec, err, _, why = M.sample(id)
    end
    if rec then
      recs[ref] = rec
    else
      errs[ref] = { error = err,
        kind = id and (why or "unavailable") or
          (kind == "bad_request" and kind or "unavailable") }
    end
  end
  return recs, errs
end

--- The collector's round in C: every container the view holds as running
-- sampled from its cgroup straight into the view (horcrux.view.sample):
-- its summary {sampled, unreadable, gone, paused, us, fds}. opts.followed:
-- the caller learns pauses from the engine's events, so the freezer is
-- read only with the seldom-read figures.
function M.sample_view(opts)
  local o = {}
  for k, v in pairs(M.options or {}) do
    o[k] = v
  end
  o.freezer = not (opts and opts.followed)
  return view.sample(o)
end

--- The stats record with a true CPU %: when the store has no sample at
-- least the window old, a second one is read once the window has passed
-- (horcrux.clock.sleep yields to the host inside `horcrux serve`).
function M.stats(ref)
  local id, err, kind = M.resolve(ref)
  if not id then
    return nil, err, kind
  end
  local s
  s, err, kind = read(id)
  if not s then
    return nil, err, kind
  end
  local prev = cpu.latest(id)
  local pct, why, first = observe(id, s)
  if pct == nil and (why == "no_base" or why == "reset" or why == "clock") then
    local wait_ms = cpu.window()
    if why == "no_base" and prev and prev.time_ns < s.time_ns then
      -- an earlier sample becomes old enough sooner than this one
      wait_ms = wait_ms - (clock.now_ns() - prev.time_ns) / 1e6
    end
    if wait_ms > 0 then
      clock.sleep((wait_ms + 1) / 1000)
    end
    s, err, kind = read(id)
    if not s then
      return nil, err, kind
    end
    local second
    pct, why, second = observe(id, s)
    if pct == nil and why == "no_base" and first and second then
      -- concurrent requests stored more samples than the store keeps
      -- (cpu.RING) within the window and pushed this one's base out: the
      -- window this request waited is still its own two samples
      pct = cpu.percent(first, second)
    end
  end
  return M.record(id, s, pct)
end

--- The containers that run: a cgroup and not frozen.
function M.running()
  local ids, err, kind = cgroup_ids()
  if not ids then
    return nil, err, kind
  end
  local out = {}
  for _, id in ipairs(ids) do
    local meta = meta_of(id)
    local status = status_of(id, meta)
    if status == "running" then
      out[#out + 1] = {
        id = id,
        name = or_null(meta.name),
        status = status,
        image = or_null(meta.image),
      }
    end
  end
  return out
end


--- Every container that has a cgroup (running or paused; the others are
-- unknown to the kernel), in the route's shape. opts.filters.status is
-- applied; other filters need the daemon and are ignored. The answer is
-- "partial" (second value) unless only running ones were asked for and the
-- collector named every one: the next source is asked first.
function M.list(opts)
  local ids, err, kind = cgroup_ids()
  if not ids then
    return nil, err, kind
  end
  local want = shapes.wanted_status(opts)
  local complete = opts ~= nil and opts.all == false
  local out = json.array()
  for _, id in ipairs(ids) do
    local meta = meta_of(id)
    local status = status_of(id, meta)
    if not want or want[status] then
      -- `source` says where the item came from: without the daemon, a
      -- name and an image are known only if the collector saw them
      out[#out + 1] = {
        id = id:sub(1, 12),
        name = or_null(meta.name),
        status = status,
        image = or_null(meta.image),
        source = M.name,
      }
      complete = complete and meta.name ~= nil and meta.name ~= null
    end
  end
  return out, not complete and "partial" or nil
end

--- What can be told of a container with a cgroup: its full id, state, and
-- the collector's metadata; "partial" (second value) when the collector
-- has not told its name, image and times.
function M.inspect(ref)
  local id, err, kind = M.resolve(ref)
  if not id then
    return nil, err, kind
  end
  local h
  h, err, kind = cgroup.open(id, M.options)
  if not h then
    return nil, ("cgroup: %s (%s)"):format(tostring(err), tostring(kind)),
      "unavailable"
  end
  h:close()
  local meta = meta_of(id)
  local out = {
    id = id,
    name = or_null(meta.name),
    status = status_of(id, meta),
    image = or_null(meta.image),
    created = or_null(meta.created),
    started = or_null(meta.started),
  }
  for _, k in ipairs({ "name", "image", "created", "started" }) do
    if out[k] == null then
      return out, "partial"
    end
  end
  return out
end

M.is_full_id = is_full_id

return M
