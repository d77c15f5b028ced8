--- horcrux.collector: keeps horcrux.view fresh. `horcrux serve` runs it in a
-- thread of its own with its own Lua state; the routes answer from the view.
--
--   collector.run{interval = 1, sources = order, stopping = fn,
--                 relist_every = 60}
--       loops until stopping() is true; returns the state
--   collector.new(opts)   -> state (the same options)
--   collector.step(state) -> summary of one round (what specs call; an
--       options table is made a state in place):
--       {listed_by = source name | nil, running = n, sampled = n,
--        by_source = {name = n}, failed = n, added = n, removed = n,
--        ms = wall time of the round,
--        followed = "list" | "events" | nil (how the set was kept),
--        events = container events applied (an events round),
--        gone = containers sampling found stopped or removed,
--        trusted = whether the view now holds every container's metadata}
--
-- The sources are fallback.lua's order (horcrux.config), or opts.sources
-- (an array, or a table with .sources). The collector asks them for
-- capabilities (the source contract), never by name.
--
-- What the view holds. Every container the engine has, in every state,
-- with its metadata (name, status, image, image id, labels, networks, and
-- the times of its creation and start when an event told them); the
-- figures of the running ones. GET /api/containers and the filters of
-- /api/stats answer from it while it can be trusted (summary.trusted,
-- view.status()): a full list came from a source that knows every
-- container, and its events were followed without a gap since.
--
-- Who exists. A round either lists or follows the engine's events since
-- the last round:
--
--   list    the first source with containers() that answers gives every
--           container (the Engine API: /containers/json?all=1); failing
--           that, the first with running() gives the running ones (the
--           cgroup files: those not frozen), and the view is not trusted.
--           What left the list is dropped from the view (and from
--           horcrux.cpu's store).
--   events  when the source that listed can also give events(), the next
--           rounds ask it for the events between the last round and now
--           (in the past: the daemon answers at once from its buffer) and
--           apply them in order: create adds a container (its labels are
--           the event's attributes), start, restart and unpause make it
--           running (start: its start time), die and stop exited, pause
--           paused, rename renames, destroy drops it.
--
-- A full list comes back every relist_every rounds (default 60: the list is
-- a check on the events, and at 1,000 containers each costs the daemon
-- ~0.1 s of CPU and this thread the decoding of its ~1 MB) and at once
-- when the event call fails (the daemon restarting: while it is away every
-- round lists, through the next source that can), or when the daemon's
-- event buffer (256 events of every type) may have overflowed between two
-- rounds (events() counts every event, so the count tells).
--
-- Figures. Every running container, from the first source of the order
-- that answers for it. A source with sample_view() (the cgroup files, read
-- in C by horcrux.view.sample straight into the view, no Lua table per
-- container) samples the whole running set at once when it comes first;
-- what it cannot read (another host's engine, a container without a
-- cgroup here) goes on to the next source. Any other source takes part
-- through sample_many(ids) or, with stats(id) only (an operator's own), one
-- call per container while the round has time. A round never waits for
-- the daemon longer than the interval (at least 1.1 s: Docker before 25.0
-- answers a one-shot stats request at its next one-second tick): a
-- container the daemon has not answered for keeps its last figures, and
-- their age says so. The errors
-- of one container (or one source) are logged once per change and never
-- stop the loop.
--
-- Time. since and until are the host's wall clock in ns; the daemon stamps
-- its events with its own. On a local socket they are the same clock. A
-- remote daemon whose clock lags ours sees `until` in its future and holds
-- the reply until then; past EVENTS_STALL_S of that the call fails and the
-- round lists instead.
local view = require "horcrux.view"
local prometheus = require "horcrux.prometheus"
local cpu = require "horcrux.cpu"
local clock = require "horcrux.clock"
local null = require("horcrux.json").null
local time = require "horcrux.time"
local log = require "horcrux.log"
-- each container event also goes to the webhooks (a no-op unless the hooks
-- thread of `horcrux serve` takes them)
local hooks_feed = require("horcrux.hooks").feed
local hooks_feed_since = require("horcrux.hooks").feed_since
local streams = require "horcrux.streams"

local M = {}

local SLICE_S = 0.1 -- longest sleep between two looks at stopping()
local RELIST_EVERY = 60 -- rounds: one full list, then events for the rest
-- The daemon keeps its last 256 events (moby daemon/events, eventsLimit);
-- an unfiltered reply this long may have lost the oldest of the window.
local EVENTS_KEPT = 256
local EVENTS_MARGIN = 16 -- events logged after `until` share the buffer
local EVENTS_STALL_S = 2 -- an event call this silent has failed
-- The daemon stamps an event before it enters the buffer a query reads:
-- on a loaded machine an event stamped before one query's `until` can
-- enter after that query, and the next one, from `until` on, would never
-- see it. So each query reaches back this far before the last one's end,
-- and what an earlier query gave is dropped (events_seen).
local EVENTS_OVERLAP_NS = 1000000000

local function never()
  return false
end

-- How long a source's batch may take: the interval, but at least what
-- Docker before 25.0 needs to answer a one-shot stats request at all (its
-- next one-second tick). A fixed figure per state: the API source keeps a
-- client per timeout.
local function batch_timeout(interval)
  return math.max(interval, 1.1)
end

-- How long one of the collector thread's calls to the daemon may take: a
-- few rounds at most, so a daemon that stops answering holds the loop (and
-- a SIGTERM) for seconds; the process-wide breaker then answers for it at
-- once.
local function call_timeout(interval)
  return math.max(3, 2 * batch_timeout(interval))
end

--- A collector state. opts: interval (seconds, default 1), sources (the
-- order; default horcrux.config's), stopping (function), relist_every
-- (rounds between two full lists while events are followed; 1 lists every
-- round), history (seconds each container's history in the view reaches
-- back, a point a round; nil leaves the view's setting, 900 points).
function M.new(opts)
  opts = opts or {}
  local interval = opts.interval or 1
  if type(interval) ~= "number" or interval <= 0 then
    error("collector: interval must be a positive number of seconds", 2)
  end
  local relist_every = opts.relist_every or RELIST_EVERY
  if math.type(relist_every) ~= "integer" or relist_every < 1 then
    error("collector: relist_every must be a positive integer", 2)
  end
  if opts.stopping ~= nil and type(opts.stopping) ~= "function" then
    error("collector: stopping must be a function", 2)
  end
  if opts.history ~= nil then
    if type(opts.history) ~= "number" or opts.history < 0 then
      error("collector: history must be seconds (>= 0)", 2)
    end
    view.set_limits({ history = math.min(86400, math.ceil(opts.history / interval)),
      history_gap_ms = math.floor(interval * 500) })
  end
  return {
    interval = interval,
    sources = opts.sources,
    stopping = opts.stopping or never,
    known = {}, -- full id -> meta, every container the view holds
    said = {},  -- key -> the last message logged for it
    rounds = 0,
    relist_every = relist_every,
    -- {src = the source that listed and gives events, since = wall ns}
    -- while events are followed; nil: the next round lists
    follow = nil,
    listed_ago = 0, -- event rounds since the last list
    events_seen = {}, -- "time id action" -> time_ns of the events given
    trusted = false,
    -- how long the view's word "trusted" holds unless a round renews it:
    -- a round that follows the events takes an interval and a call or
    -- two; one that takes longer is stuck on a call the routes must not
    -- wait on (horcrux.live.trusted)
    trust_ns = math.floor((interval + 2 * call_timeout(interval)) * 1e9),
    refresh = {}, -- ids whose networks the next event round asks for
  }
end

-- Logs msg under key unless it is what was logged last for that key.
local function say(state, key, level, msg)
  if state.said[key] ~= msg then
    state.said[key] = msg
    log[level]("collector: %s", msg)
  end
end

local function quiet(state, key)
  state.said[key] = nil
end

local function order_of(state)
  return require("horcrux.config").order(state.sources)
end

local function strip(name)
  return type(name) == "string" and (name:gsub("^/", "")) or nil
end

-- ---- metadata ----------------------------------------------------------

-- The view's metadata of a container from a source's record c (what it
-- does not say is kept from old): name, status, image, image_id, labels,
-- networks, created (RFC 3339: a create event's, else a list's, to the
-- second) and started (from events).
local function meta_from(id, c, old)
  old = old or {}
  local function pick(v, o)
    if v == nil or v == null then
      return o
    end
    return v
  end
  return {
    id = id:sub(1, 12),
    name = pick(strip(c.name), old.name) or null,
    status = pick(c.status, old.status) or null,
    image = pick(c.image, old.image) or null,
    image_id = pick(c.image_id, old.image_id),
    labels = type(c.labels) == "table" and c.labels or old.labels,
    networks = type(c.networks) == "table" and c.networks or old.networks,
    -- a container's creation never moves: the first time known stays (an
    -- event's, to the nanosecond, is known before any list has the
    -- container; a list's is to the second)
    created = pick(old.created, pick(c.created)),
    started = pick(c.started, old.started),
    -- when what this meta says became true (wall ns): an event's time, a
    -- list's; a route's note (horcrux.live.note) newer than it stays
    at_ns = c.at_ns or old.at_ns,
  }
end

local function same_table(a, b)
  if a == b then
    return true
  end
  if type(a) ~= "table" or type(b) ~= "table" then
    return false
  end
  for k, v in pairs(a) do
    if b[k] ~= v then
      return false
    end
  end
  for k in pairs(b) do
    if a[k] == nil then
      return false
    end
  end
  return true
end

local META_FIELDS = { "id", "name", "status", "image", "image_id", "created",
  "started" } -- at_ns is not compared: it only orders the writers

local function same_meta(a, b)
  for _, k in ipairs(META_FIELDS) do
    if a[k] ~= b[k] then
      return false
    end
  end
  return same_table(a.labels, b.labels) and same_table(a.networks, b.networks)
end

-- Drops every trace of a container that no longer exists.
local function forget(state, id)
  view.remove(id)
  cpu.forget(id)
  for _, src in ipairs(order_of(state)) do
    if type(src.forget) == "function" then
      pcall(src.forget, id)
    end
  end
  state.known[id] = nil
  state.changed[id] = nil
  quiet(state, "sample:" .. id)
  quiet(state, "put:" .. id)
end

-- Sets the metadata of a container; a container that stops running loses
-- its figures (and what the sampler keeps for it) and its CPU samples: a
-- restart starts its counters again.
local function set(state, id, meta, summary)
  local old = state.known[id]
  if old and same_meta(old, meta) then
    return
  end
  if not old then
    summary.added = summary.added + 1
  elseif old.status == "running" and meta.status ~= "running" then
    view.remove(id)
    cpu.forget(id)
  end
  state.known[id] = meta
  state.changed[id] = true
end

-- Hands the round's changes to the view -- but where a route told the view
-- of a state newer than what the collector saw (horcrux.live.note: a start
-- that came after the create event this round read), the view keeps it
-- until the collector's word agrees on the state.
local function publish(state, summary)
  for id in pairs(state.changed) do
    local meta = state.known[id]
    local cur = meta.at_ns and view.meta(id)
    if not (cur and cur.noted and cur.at_ns and cur.at_ns > meta.at_ns
        and cur.status ~= meta.status) then
      local ok, err = view.set_meta(id, meta)
      if not ok then
        say(state, "put:" .. id, "error", ("%s: %s"):format(id:sub(1, 12),
          err))
      end
    end
  end
  state.changed = {}
  if view.set_status then
    view.set_status({ trusted = state.trusted, listed_by = summary.listed_by,
      followed = summary.followed,
      until_ns = clock.mono_ns() + state.trust_ns })
  end
end

-- ---- who exists: the list ---------------------------------------------

-- The first answer of capability `what` in the order: list, source; or nil.
local function first_list(state, what, arg)
  for _, src in ipairs(order_of(state)) do
    if type(src[what]) == "function" then
      local ok, list, err = pcall(src[what], arg)
      if ok and type(list) == "table" then
        quiet(state, "list:" .. tostring(src.name))
        return list, src
      end
      say(state, "list:" .. tostring(src.name), "warn",
        ("cannot list containers from %s: %s"):format(tostring(src.name),
          tostring(ok and err or list)))
    end
  end
  return nil
end

-- Every container event the collector reads goes through here, once, in
-- order (whether or not the view needs it): the `events` stream and its
-- ring (horcrux.streams), and the webhooks.
local function emit(ev)
  local ok, err = pcall(streams.publish_event, ev)
  if not ok then
    log.error("collector: publishing an event: %s", tostring(err))
  end
  hooks_feed(ev)
end

-- Whether src is still one of the sources (a state outlives a change of
-- state.sources in specs; the server makes a new state on reload).
local function in_order(state, src)
  for _, s in ipairs(order_of(state)) do
    if s == src then
      return true
    end
  end
  return false
end

-- The events an earlier query did not give, remembered (by time, id and
-- action) for two overlaps.
local function unseen(state, evs, until_ns)
  local seen, out = state.events_seen, {}
  for _, ev in ipairs(evs) do
    local t = ev.time_ns
    local key = t and (t .. " " .. tostring(ev.id) .. " " .. tostring(ev.action))
    if not key or not seen[key] then
      out[#out + 1] = ev
      if key then
        seen[key] = t
      end
    end
  end
  local horizon = until_ns - 2 * EVENTS_OVERLAP_NS
  for key, t in pairs(seen) do
    if t < horizon then
      seen[key] = nil
    end
  end
  return out
end

-- The events of f's source up to until_ns, from EVENTS_OVERLAP_NS before
-- f.since (never before f.floor, the first list's time), less those seen:
-- ok, events, how many the daemon sent (as the source's events()).
local function query_events(state, f, until_ns)
  local from = math.max(f.floor or f.since, f.since - EVENTS_OVERLAP_NS)
  local ok, evs, n = pcall(f.src.events, from, until_ns,
    { stall = EVENTS_STALL_S })
  if ok and type(evs) == "table" then
    evs = unseen(state, evs, until_ns)
  end
  return ok, evs, n
end

-- The events between the last round that followed them and a list about
-- to be taken: the list settles the view, but the `events` stream must
-- not lose them. Whether they came.
local function catch_up(state, until_ns)
  local f = state.follow
  if f == nil or not in_order(state, f.src) then
    return false
  end
  local ok, evs = query_events(state, f, until_ns)
  if not ok or type(evs) ~= "table" then
    return false
  end
  for _, ev in ipairs(evs) do
    emit(ev)
  end
  return true
end

-- A catch-up that could not be made (the engine away, or restarting):
-- where the events were followed up to, kept until a list succeeds
-- again. A restarted engine's first events come before that list.
local function keep_gap(state, caught)
  local f = state.follow
  if f and not caught and not state.gap then
    state.gap = { since = f.since, floor = f.floor }
  end
end

-- The events of the gap, from src up to until_ns, given as catch_up gives
-- them (the list has settled the view); the gap is closed once they came.
local function give_gap(state, src, until_ns)
  local g = state.gap
  if not g then
    return
  end
  local ok, evs, n = query_events(state, { src = src, since = g.since,
    floor = g.floor }, until_ns)
  if not ok or type(evs) ~= "table" then
    return
  end
  state.gap = nil
  for _, ev in ipairs(evs) do
    emit(ev)
  end
  log.info("collector: %d events of while the engine did not answer given%s",
    #evs, (n or 0) >= EVENTS_KEPT - EVENTS_MARGIN
    and " (its buffer keeps 256: the oldest may be lost)" or "")
end

-- Lists every container (or, failing that, the running ones), replaces
-- the known set, sets up following the events from just before the list.
local function relist(state, summary)
  local since = clock.now_ns()
  keep_gap(state, catch_up(state, since))
  -- the next follow reaches back over what this one read, never before
  local floor = state.follow and state.follow.floor or since
  state.follow, state.listed_ago, state.trusted = nil, 0, false
  local list, src = first_list(state, "containers", { all = true })
  local full = list ~= nil
  if not list then
    list, src = first_list(state, "running")
  end
  summary.listed_by = src and src.name
  summary.followed = list and "list" or nil
  if not list then
    say(state, "list", "error",
      "no source could list the containers; keeping the known set")
    return
  end
  quiet(state, "list")
  local seen = {}
  for _, c in ipairs(list) do
    if type(c.id) == "string" and #c.id == 64 then
      seen[c.id] = true
      c.at_ns = since
      set(state, c.id, meta_from(c.id, c, state.known[c.id]), summary)
    end
  end
  -- a list also hands every container's metadata to the view again, so
  -- what a route told the view meanwhile (horcrux.live.note) never
  -- outlives a list
  for id in pairs(seen) do
    state.changed[id] = true
  end
  for id, meta in pairs(state.known) do
    if not seen[id] and (full or meta.status == "running") then
      if full then
        forget(state, id)
        summary.removed = summary.removed + 1
      else -- not running any more; what it is now, only the daemon knows
        local m = meta_from(id, { status = null }, meta)
        m.status = null
        set(state, id, m, summary)
      end
    end
  end
  -- the view may hold containers this collector never listed (sampled on
  -- demand by a route, or left by an earlier collector)
  for _, id in ipairs(view.ids()) do
    if not state.known[id] then
      view.remove(id)
    end
  end
  if type(src.events) == "function" then
    if full then
      give_gap(state, src, since)
    end
    state.follow = { src = src, since = since, floor = floor }
    -- every event from floor on is fed from here: the hooks thread's
    -- replay of a start reaches up to that (horcrux.hooks_run)
    hooks_feed_since(floor)
    state.trusted = full
    say(state, "follow", "info", ("following the engine's events, a full "
      .. "list every %d rounds"):format(state.relist_every))
  else
    quiet(state, "follow")
  end
end

-- ---- who exists: the events ---------------------------------------------

local STATUS = {
  create = "created", start = "running", restart = "running",
  unpause = "running", die = "exited", stop = "exited", pause = "paused",
}

-- Event attributes that are not labels.
local NOT_LABELS = { name = true, image = true, exitCode = true,
  signal = true, execDuration = true, oldName = true }

local function labels_of(attrs)
  local labels = {}
  for k, v in pairs(attrs or {}) do
    if not NOT_LABELS[k] then
      labels[k] = v
    end
  end
  return labels
end

-- Applies one container event; true if it was one.
local function apply(state, ev, summary)
  local id, action = ev.id, ev.action
  if type(id) ~= "string" or #id ~= 64 or type(action) ~= "string" then
    return false
  end
  if action == "destroy" then
    if state.known[id] then
      summary.removed = summary.removed + 1
    end
    forget(state, id)
    return true
  end
  local old = state.known[id]
  local c = { name = ev.name, image = ev.image, status = STATUS[action],
    at_ns = ev.time_ns }
  if action == "create" or not old then
    c.labels = labels_of(ev.attrs)
  end
  local at = ev.time_ns and time.format(ev.time_ns) or nil
  if action == "create" then
    c.created = at
  elseif action == "start" or action == "restart" then
    c.started = at
  end
  if action == "network" or action == "create" then
    state.refresh[id] = true -- its networks: the list tells them
  end
  if not STATUS[action] and not old then
    return true -- another action of a container we never saw: the next list
  end
  set(state, id, meta_from(id, c, old), summary)
  return true
end

-- What events do not say of a container (its networks, its image id, all
-- its labels), asked of the source that lists for the containers created
-- or (dis)connected this round: one list call, filtered by their ids.
local REFRESH_MAX = 100

local function refresh(state, src, summary)
  local ids = {}
  for id in pairs(state.refresh) do
    if #ids < REFRESH_MAX and state.known[id] then
      ids[#ids + 1] = id
    end
    state.refresh[id] = nil
  end
  if #ids == 0 or type(src.containers) ~= "function" then
    return
  end
  local ok, list = pcall(src.containers, { all = true,
    filters = { id = ids } })
  if ok and type(list) == "table" then
    for _, c in ipairs(list) do
      if state.known[c.id] then
        set(state, c.id, meta_from(c.id, c, state.known[c.id]), summary)
      end
    end
  end
end

-- Follows the events since the last round; false when this round must list
-- instead (the reason logged once).
local function follow_events(state, summary)
  local f = state.follow
  if f == nil or not in_order(state, f.src) then
    return false
  end
  local now = clock.now_ns()
  local ok, evs, n = query_events(state, f, now)
  if not ok or not evs then
    say(state, "events", "warn", ("cannot follow the engine's events (%s); "
      .. "listing instead"):format(tostring(ok and n or evs)))
    state.trusted = false
    -- said at once, not at the round's end: the list that follows may wait
    -- on the same daemon for as long as its calls may take, and until then
    -- the routes would answer from a view nobody follows
    if view.set_status then
      view.set_status({ trusted = false })
    end
    return false
  end
  quiet(state, "events")
  f.since = now + 1 -- since and until are both inclusive
  for _, ev in ipairs(evs) do
    emit(ev)
  end
  if (n or 0) >= EVENTS_KEPT - EVENTS_MARGIN then
    say(state, "overflow", "info", ("%d events in one round: the daemon's "
      .. "buffer may have dropped some; listing again"):format(n))
    return false
  end
  quiet(state, "overflow")
  state.listed_ago = state.listed_ago + 1
  summary.listed_by = f.src.name
  summary.followed = "events"
  for _, ev in ipairs(evs) do
    if apply(state, ev, summary) then
      summary.events = summary.events + 1
    end
  end
  refresh(state, f.src, summary)
  -- a full list every relist_every rounds: it comes after this round's
  -- events, so none is skipped (the webhooks get every one)
  return state.listed_ago < state.relist_every
end

-- ---- figures -------------------------------------------------------------

-- A source with stats(id) only: one call per container while the round
-- has time; the ids it did not reach go to the next source.
local function each_sample(src, ids, deadline)
  local recs, errs = {}, {}
  for _, id in ipairs(ids) do
    if clock.mono_ns() > deadline then
      errs[id] = { error = tostring(src.name) .. ": no time left this round",
        kind = "timeout" }
    else
      local rec, err, kind = src.stats(id)
      if type(rec) == "table" then
        recs[id] = rec
      else
        errs[id] = { error = tostring(err), kind = kind or "server" }
      end
    end
  end
  return recs, errs
end

local function sample_many(src, ids, deadline, interval)
  if type(src.sample_many) == "function" then
    return src.sample_many(ids, { timeout = batch_timeout(interval) })
  elseif type(src.stats) == "function" then
    return each_sample(src, ids, deadline)
  end
  return nil, tostring(src.name) .. " cannot give stats", "unsupported"
end

-- Monotonic ns at which the record's figures were read (its `read` time,
-- moved to the monotonic clock), or now.
local function taken_ns(rec)
  local now = clock.mono_ns()
  local t = type(rec.read) == "string" and time.parse(rec.read)
  if not t then
    return now
  end
  local age = clock.now_ns() - t
  if age < 0 then
    return now
  end
  return now - age
end

local function store(state, id, rec, src)
  local meta = state.known[id]
  rec.id = id
  if rec.source == nil then
    rec.source = src.name
  end
  if meta.name ~= null then
    rec.name = meta.name
  elseif rec.name == nil then
    rec.name = null
  end
  local ok, err = view.put(id, rec, meta, taken_ns(rec))
  if not ok then
    say(state, "put:" .. id, "error", ("%s: %s"):format(id:sub(1, 12), err))
  end
  return ok
end

-- A container sampling found not running any more, before an event or a
-- list said so: its figures go now; the next list or event tells what it
-- has become.
local function gone(state, id, summary)
  local meta = state.known[id]
  if meta and meta.status == "running" then
    local m = meta_from(id, {}, meta)
    m.status = null
    set(state, id, m, summary)
  end
  summary.gone = summary.gone + 1
end

local function count(summary, src, n)
  summary.sampled = summary.sampled + n
  summary.by_source[src.name] = (summary.by_source[src.name] or 0) + n
end

-- The whole running set through src.sample_view (horcrux.view.sample):
-- the ids left for the next source.
local function sample_in_view(state, src, ids, summary)
  -- while the events are followed, a pause comes with its event
  local ok, s = pcall(src.sample_view, { followed = state.trusted == true })
  if not ok or type(s) ~= "table" then
    prometheus.source_error(src.name, "server")
    say(state, "source:" .. tostring(src.name), "warn",
      ("%s skipped: %s"):format(tostring(src.name), tostring(s)))
    return ids
  end
  quiet(state, "source:" .. tostring(src.name))
  count(summary, src, s.sampled or 0)
  summary.sample_us = s.us
  local left, skip = {}, {}
  for _, id in ipairs(s.gone or {}) do
    gone(state, id, summary)
    skip[id] = true
  end
  for _, id in ipairs(s.paused or {}) do
    skip[id] = true -- its pause event says so next round
  end
  for _, id in ipairs(s.unreadable or {}) do
    if not skip[id] and state.known[id] then
      left[#left + 1] = id
    end
  end
  return left
end

-- An answer about the container itself: the next source would say the
-- same (it is gone, the ref is wrong); the next listing settles it.
local FINAL = { not_found = true, bad_request = true, conflict = true }

local function sample_with(state, src, pending, deadline, summary)
  local ok, recs, errs, kind = pcall(sample_many, src, pending, deadline,
    state.interval)
  if not ok then
    recs, errs, kind = nil, recs, "server"
  end
  if not recs then
    prometheus.source_error(src.name, kind)
    say(state, "source:" .. tostring(src.name),
      kind == "unsupported" and "info" or "warn",
      ("%s skipped: %s"):format(tostring(src.name), tostring(errs)))
    return pending
  end
  quiet(state, "source:" .. tostring(src.name))
  local left = {}
  for _, id in ipairs(pending) do
    local rec = recs[id]
    if type(rec) == "table" and rec.read == null then
      gone(state, id, summary) -- the API's zero time: it does not run
    elseif type(rec) == "table" then
      if store(state, id, rec, src) then
        count(summary, src, 1)
      end
      quiet(state, "sample:" .. id)
    else
      local e = type(errs) == "table" and errs[id] or nil
      prometheus.source_error(src.name, e and e.kind)
      summary.last_err[id] = ("%s: %s"):format(tostring(src.name),
        tostring(e and e.error or "no record"))
      if e and e.kind == "not_found" then
        gone(state, id, summary)
      elseif not (e and FINAL[e.kind]) then
        left[#left + 1] = id
      end
    end
  end
  return left
end

local function sample_round(state, ids, summary)
  local pending = ids
  local deadline = clock.mono_ns() + math.floor(state.interval * 1e9)
  summary.last_err = {}
  for i, src in ipairs(order_of(state)) do
    if #pending == 0 then
      break
    end
    if i == 1 and type(src.sample_view) == "function" then
      pending = sample_in_view(state, src, pending, summary)
    else
      -- in id order for the sources asked one by one or in batches; the
      -- view samples the whole running set itself, so a round with
      -- nothing left for them sorts nothing (1 us a container at 500)
      table.sort(pending)
      pending = sample_with(state, src, pending, deadline, summary)
    end
  end
  for _, id in ipairs(pending) do
    summary.failed = summary.failed + 1
    say(state, "sample:" .. id, "warn", ("no figures for %s: %s"):format(
      id:sub(1, 12), summary.last_err[id] or "no source answered"))
  end
  summary.last_err = nil
end

--- One round: list (or follow the events), hand the metadata to the view,
-- sample the running containers.
function M.step(state)
  if type(state) ~= "table" then
    error("collector.step: state expected (collector.new)", 2)
  end
  if state.known == nil then -- an options table: make it a state in place
    local fresh = M.new(state)
    for k, v in pairs(fresh) do
      state[k] = v
    end
  end
  local t0 = clock.mono_ns()
  local summary = {
    running = 0, sampled = 0, failed = 0, added = 0, removed = 0,
    events = 0, gone = 0, by_source = {},
  }
  state.changed = {}
  local ok, followed = pcall(follow_events, state, summary)
  if not ok then
    say(state, "events", "error", "following events failed: "
      .. tostring(followed))
  end
  if not (ok and followed) then
    ok, followed = pcall(relist, state, summary)
    if not ok then
      say(state, "list", "error", "listing failed: " .. tostring(followed))
    end
  end
  publish(state, summary)
  local ids = {}
  for id, meta in pairs(state.known) do
    if meta.status == "running" then
      ids[#ids + 1] = id
    end
  end
  summary.running = #ids
  local err
  ok, err = pcall(sample_round, state, ids, summary)
  if not ok then
    say(state, "round", "error", "round failed: " .. tostring(err))
  end
  publish(state, summary) -- what sampling found stopped
  summary.running = summary.running - summary.gone
  summary.trusted = state.trusted
  state.rounds = state.rounds + 1
  summary.ms = (clock.mono_ns() - t0) / 1e6
  pcall(prometheus.round, summary)
  return summary
end

-- The round's figures to the stats streams (horcrux.streams): encoded
-- once per topic someone reads, and built (live.all) only when one is.
local function all_records()
  return require("horcrux.live").all() or {}
end

local function publish_streams()
  streams.publish_round(all_records)
end

--- Runs rounds every interval until opts.stopping() is true. Sleeps in
-- slices of at most 100 ms, so a stop is noticed quickly.
function M.run(opts)
  local state = M.new(opts)
  require("horcrux.engine").configure({
    timeout = call_timeout(state.interval),
    connect_timeout = 1,
  })
  local stopping = state.stopping
  local period = math.floor(state.interval * 1e9)
  local due = clock.mono_ns()
  log.info("collector: every %gs", state.interval)
  while not stopping() do
    local ok, err = pcall(M.step, state)
    if not ok then
      say(state, "step", "error", "round failed: " .. tostring(err))
    end
    ok, err = pcall(publish_streams)
    if not ok then
      say(state, "streams", "error", "streams: " .. tostring(err))
    end
    due = due + period
    local now = clock.mono_ns()
    if due < now then -- a round longer than the interval: no catching up
      due = now
    end
    while not stopping() do
      local left = (due - clock.mono_ns()) / 1e9
      if left <= 0 then
        break
      end
      clock.sleep(left < SLICE_S and left or SLICE_S)
    end
  end
  log.info("collector: stopped after %d rounds", state.rounds)
  return state
end

return M
