--- The `docker-api` source: the Engine API over its socket (horcrux.engine).
--
-- It can answer everything (the source contract: horcrux/sources/README
-- in the README's "Where the figures come from"): list with the daemon's
-- own filters, inspect, stats (with a true CPU %), sample_many (one
-- concurrent batch of one-shot stats: N containers cost about one daemon
-- tick), running, events and logs. Each returns its answer or nil,
-- message, kind. Inside `horcrux serve` the client's transfers yield to
-- the server, so a stats request that the daemon holds for a second holds
-- no worker thread.
local engine = require "horcrux.engine"
local cpu = require "horcrux.cpu"
local clock = require "horcrux.clock"
local stats = require "horcrux.stats"
local shapes = require "horcrux.shapes"
local time = require "horcrux.time"

local M = {
  name = "docker-api",
  -- list() applies every filter key itself (the daemon's own filters)
  filters = { status = true, label = true, network = true, name = true,
    ancestor = true },
}

-- /containers/json with opts.all (default true) and the daemon's filters.
local function fetch(opts)
  return engine.containers({
    all = opts == nil or opts.all ~= false,
    filters = opts and opts.filters or nil,
  })
end

function M.list(opts)
  local items, err, kind = fetch(opts)
  if not items then
    return nil, err, kind
  end
  return shapes.list(items)
end

function M.inspect(ref)
  local info, err, kind = engine.inspect(ref)
  if not info then
    return nil, err, kind
  end
  return shapes.inspect(info), info
end

-- The record of a reply, or what is missing for its CPU %.
local function record_of(ref, raw)
  local full = type(raw.id) == "string" and raw.id or ref
  return stats.record(full, raw)
end

--- One-shot stats with a true CPU %: the delta against the newest stored
-- sample that is at least the store's window old; with none, a second
-- sample once the window has passed (on engines before 25.0 the daemon
-- answers at its next one-second tick anyway).
function M.stats(ref)
  local raw, err, kind = engine.stats(ref)
  if not raw then
    return nil, err, kind
  end
  local rec, reason = record_of(ref, raw)
  if stats.needs_second_sample(reason) then
    local first = stats.sample_from_api(raw)
    local wait_ms = cpu.window() - (clock.now_ns() - first.time_ns) / 1e6
    if wait_ms > 0 then
      clock.sleep(wait_ms / 1000)
    end
    raw, err, kind = engine.stats(rec.id)
    if not raw then
      return nil, err, kind
    end
    rec = record_of(rec.id, raw)
  end
  return rec
end

--- One concurrent batch of one-shot stats, no second sample: a container
-- seen for the first time has no CPU % yet (the next round gives it).
-- {[id] = record}, {[id] = {error =, kind =}}. opts.timeout: seconds the
-- batch may take (the collector's round); a container the daemon has not
-- answered by then is a "timeout".
function M.sample_many(ids, opts)
  local res, err, kind = engine.stats_many(ids, opts)
  if type(res) ~= "table" then
    return nil, err or "docker-api: stats_many gave no answer",
      kind or "server"
  end
  local recs, errs = {}, {}
  for i, id in ipairs(ids) do
    local r = res[i] or {}
    if type(r.value) == "table" then
      recs[id] = (record_of(id, r.value))
    else
      errs[id] = { error = tostring(r.error or "docker-api: no reply"),
        kind = r.kind or "server" }
    end
  end
  return recs, errs
end

local function strip(name)
  return type(name) == "string" and (name:gsub("^/", "")) or nil
end

--- One item of /containers/json as the library's container record: full
-- id, name, status, image, image_id, labels, networks ({name = id}), and
-- created (RFC 3339, to the second: the list's Created is Unix seconds).
function M.record(item)
  local names = type(item.Names) == "table" and item.Names or {}
  local networks = {}
  local ns = type(item.NetworkSettings) == "table"
    and item.NetworkSettings.Networks
  for name, n in pairs(type(ns) == "table" and ns or {}) do
    networks[name] = type(n) == "table" and n.NetworkID or true
  end
  return {
    id = item.Id,
    name = strip(names[1]),
    status = item.State,
    image = item.Image,
    image_id = item.ImageID,
    labels = type(item.Labels) == "table" and item.Labels or {},
    networks = networks,
    created = math.type(item.Created) == "integer" and item.Created > 0
      and time.format(item.Created * 1000000000) or nil,
  }
end

--- Containers as full records (M.record), the daemon applying opts.filters
-- (Docker's {key = {values}}); opts.all: stopped ones too.
function M.containers(opts)
  local items, err, kind = fetch(opts)
  if not items then
    return nil, err, kind
  end
  local out = {}
  for _, it in ipairs(items) do
    if type(it.Id) == "string" then
      out[#out + 1] = M.record(it)
    end
  end
  return out
end

--- The containers that run, with full ids and what the daemon knows of
-- them (the collector's list).
function M.running()
  return M.containers({ all = false, filters = { status = { "running" } } })
end

-- Docker's timestamp syntax, seconds.nanoseconds, exact (a float is not).
local function timestamp(ns)
  return ("%d.%09d"):format(ns // 1000000000, ns % 1000000000)
end

--- The engine's events between since_ns and until_ns (wall clock, both in
-- the past: the daemon answers at once from its buffer). Returns the
-- container events, in order, as {id, action, name, image, attrs (the
-- event's attributes: the container's labels with name and image),
-- time_ns} -- and {id, action = "network"} when a container was connected
-- to a network or disconnected -- and
-- how many events of every type came (the daemon keeps its last 256: a
-- count that high may have lost the oldest). opts.stall: seconds of
-- silence before the call fails (a daemon whose clock lags ours).
function M.events(since_ns, until_ns, opts)
  local evs, n = {}, 0
  local ok, err, kind = engine.events({
    since = timestamp(since_ns), ["until"] = timestamp(until_ns),
    stall = opts and opts.stall or 2,
  }, function(ev)
    n = n + 1
    if type(ev) == "table" and ev.Type == "network"
        and (ev.Action == "connect" or ev.Action == "disconnect") then
      local attrs = type(ev.Actor) == "table"
        and type(ev.Actor.Attributes) == "table" and ev.Actor.Attributes or {}
      if type(attrs.container) == "string" then
        evs[#evs + 1] = { id = attrs.container, action = "network",
          time_ns = math.type(ev.timeNano) == "integer" and ev.timeNano
            or nil }
      end
    elseif type(ev) == "table" and ev.Type == "container" then
      local actor = type(ev.Actor) == "table" and ev.Actor or {}
      local attrs = type(actor.Attributes) == "table" and actor.Attributes
        or {}
      if type(actor.ID) == "string" and type(ev.Action) == "string" then
        evs[#evs + 1] = {
          id = actor.ID, action = ev.Action, name = strip(attrs.name),
          image = type(attrs.image) == "string" and attrs.image or nil,
          attrs = attrs,
          time_ns = math.type(ev.timeNano) == "integer" and ev.timeNano
            or nil,
        }
      end
    end
    return true
  end)
  if not ok then
    return nil, err, kind
  end
  return evs, n
end

--- The raw log stream of a container and whether it has a TTY: what
-- horcrux.logs demultiplexes. query as the Engine API takes it.
function M.logs(ref, query, max_bytes)
  local info, err, kind = engine.inspect(ref)
  if not info then
    return nil, err, kind
  end
  local tty = type(info.Config) == "table" and info.Config.Tty == true
  local raw
  raw, err, kind = engine.logs(info.Id, query, max_bytes)
  if not raw then
    return nil, err, kind
  end
  return raw, { id = info.Id, tty = tty }
end

return M
