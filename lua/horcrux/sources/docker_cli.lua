--- The `docker-cli` metric source: the docker CLI run without a shell
-- (horcrux.cli), the last resort when neither the API client nor the cgroup
-- files can answer (a remote engine reached only through a CLI context, a
-- host without cgroup access).
--
--   list(opts)       -> array of {id (12), name, status, image}
--   inspect(ref)     -> {id, name, status, image, created, started}
--   stats(ref)       -> the stats record, approximate = true
--   running()        -> array of {id (full), name, status, image}
--   sample_many(ids) -> {id = record}, {id = {error, kind}} | nil, msg, kind
-- each returning its answer or nil, message, kind; a missing docker binary
-- is kind "unavailable" with a message that says so.
--
-- What it cannot do. The CLI prints rounded figures ("%.4g" sizes, two
-- decimals for percentages), so every record says approximate = true. It
-- prints no cumulative CPU counter, so its CPU % is the CLI's own two-sample
-- figure and does not go through horcrux.cpu's store; cpu_usage_ns and
-- online_cpus are null. `docker stats --no-stream` takes about 2 s (for one
-- container or 50: it samples them together), so sample_many makes one call
-- for all the ids of a round.
local cli = require "horcrux.cli"
local clock = require "horcrux.clock"
local json = require "horcrux.json"
local shapes = require "horcrux.shapes"
local record = require "horcrux.record"
local or_null = record.or_null

local M = {
  name = "docker-cli",
  filters = { status = true }, -- list() applies status itself
}

--- Options for horcrux.cli: docker (path of the CLI), timeout (seconds).
M.options = {}

local function opts_with(extra)
  local o = {}
  for k, v in pairs(M.options) do
    o[k] = v
  end
  for k, v in pairs(extra or {}) do
    o[k] = v
  end
  return o
end

-- The record of one parsed stats line. The CLI prints no cumulative CPU
-- counter and no CPU count: cpu_usage_ns and online_cpus are null; its
-- memory figure is already docker's "used".
local function complete(r, read_ns)
  return record.new({
    id = r.id, name = or_null(r.name), source = M.name, approximate = true,
    read_ns = read_ns,
    cpu_percent = r.cpu_usage_percent,
    memory_usage = r.memory_usage_bytes,
    memory_limit = r.memory_limit_bytes,
    net_rx = r.network_rx_bytes, net_tx = r.network_tx_bytes,
    blk_read = r.block_read_bytes, blk_write = r.block_write_bytes,
    pids = r.pids,
  })
end

function M.stats(ref)
  local list, err, kind = cli.stats(ref, M.options)
  if not list then
    return nil, err, kind
  end
  if #list == 0 then
    return nil, M.name .. ": docker stats printed nothing for " .. ref,
      "not_found"
  end
  return complete(list[1], clock.now_ns())
end

--- One `docker stats` call for every id. The CLI prints 12-digit ids; each
-- is matched back to the full id it abbreviates.
function M.sample_many(ids)
  local list, err, kind = cli.stats(ids, M.options)
  if not list then
    return nil, err, kind
  end
  local now = clock.now_ns()
  local recs, errs = {}, {}
  for _, r in ipairs(list) do
    for _, full in ipairs(ids) do
      if full:sub(1, #r.id) == r.id then
        local rec = complete(r, now)
        rec.id = full
        recs[full] = rec
        break
      end
    end
  end
  for _, id in ipairs(ids) do
    if not recs[id] then
      errs[id] = { error = M.name .. ": no stats line for " .. id:sub(1, 12),
        kind = "not_found" }
    end
  end
  return recs, errs
end


--- Containers in the route's shape. opts.all (default true) and
-- opts.filters.status are honoured; other filters are not passed on.
function M.list(opts)
  local want = shapes.wanted_status(opts)
  local all = not (opts and opts.all == false)
  if want and not (want.exited or want.created or want.dead) then
    all = false -- running, paused, restarting: `docker ps` without -a
  end
  local items, err, kind = cli.ps(opts_with({ all = all }))
  if not items then
    return nil, err, kind
  end
  local out = json.array()
  for _, it in ipairs(items) do
    if not want or want[it.status] then
      out[#out + 1] = {
        id = it.id:sub(1, 12),
        name = or_null(it.name),
        status = or_null(it.status),
        image = or_null(it.image),
      }
    end
  end
  return out
end

--- The containers that run (not paused), with full ids, for the collector.
function M.running()
  local items, err, kind = cli.ps(opts_with({ all = false }))
  if not items then
    return nil, err, kind
  end
  local out = {}
  for _, it in ipairs(items) do
    if it.status == "running" then
      out[#out + 1] = {
        id = it.id,
        name = or_null(it.name),
        status = it.status,
        image = or_null(it.image),
      }
    end
  end
  return out
end

function M.inspect(ref)
  local info, err, kind = cli.inspect(ref, M.options)
  if not info then
    return nil, err, kind
  end
  return shapes.inspect(info), info
end

return M
