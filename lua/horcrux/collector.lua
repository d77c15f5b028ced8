--- horcrux.collector: keeps horcrux.view fresh. `horcrux serve` runs it in a
-- thread of its own with its own Lua state; the routes answer from the view.
--
--   collector.run{interval = 1, sources = order, stopping = fn,
--                 relist_every = 10}
--       loops until stopping() is true; returns the state
--   collector.new(opts)   -> state (the same options)
--   collector.step(state) -> summary of one round (what specs call; an
--       options table is made a state in place):
--       {listed_by = source name | nil, running = n, sampled = n,
--        by_source = {name = n}, failed = n, added = n, removed = n,
--        ms = wall time of the round,
--        followed = "list" | "events" | nil (how the set was kept),
--        events = container events applied (an events round),
--        gone = containers dropped because sampling found them gone,
--        first_looks = first records of new containers (see first_look)}
--
-- The sources are fallback.lua's order (horcrux.config), or opts.sources
-- (an array, or a table with .sources). The collector asks them for
-- capabilities (the source contract), never by name.
--
-- Who runs. A round either lists the running containers or follows the
-- engine's events since the last round:
--
--   list    the first source that has running() and answers gives the set
--           (the Engine API: /containers/json with status=running; the
--           cgroup files: the cgroups that are not frozen; the CLI: `docker
--           ps`); the containers that left are dropped from the view (and
--           from horcrux.cpu's store). When no source can list, the known
--           set is kept.
--   events  when the source that listed can also give events(), the next
--           rounds ask it for the events between the last round and now
--           (in the past: the daemon answers at once from its buffer) and
--           apply them in order: start and unpause add a container; die,
--           stop, pause and destroy drop it (cpu.forget too: a restarted
--           container's counters start again); rename renames.
--
-- A full list comes back every relist_every rounds (default 10) and at once
-- when the event call fails (daemon restarting: the list then falls to the
-- next source, and while the API is away every round lists, so the first
-- one after it returns lists through it again), when the daemon's event
-- buffer (256 events of every type) may have overflowed between two rounds
-- (events() therefore counts every event, so the count tells). A container
-- that sampling finds not running or gone is dropped at once, event or not.
-- An event round costs the daemon a walk of its event buffer instead of a
-- walk of every container (scripts/bench view measures both).
--
-- Time. since and until are the host's wall clock in ns; the daemon stamps
-- its events with its own. On a local socket they are the same clock. A
-- remote daemon whose clock lags ours sees `until` in its future and holds
-- the reply until then; past EVENTS_STALL_S of that the call fails and the
-- round lists instead.
--
-- Sampling: every running container from the first source that answers
-- for it, feeding horcrux.cpu's store, the record and the container's
-- metadata going to the view. A source takes part in a round through
-- sample_many(ids) or, for a source that has only stats(id) (an operator's
-- own), one call per container while the round has time left. A round
-- never waits for a second sample: the CPU % of a container's first round
-- is null, the next round has it. A container new to the set gets a first
-- record from an `instant` source (one that never waits on the daemon: the
-- cgroup files) before the round samples (first_look), when the first
-- source is not instant. The errors of one container (or one source) are
-- logged once per change and never stop the loop.
local view = require "horcrux.view"
local cpu = require "horcrux.cpu"
local clock = require "horcrux.clock"
local null = require("horcrux.json").null
local time = require "horcrux.time"
local log = require "horcrux.log"

local M = {}

local SLICE_S = 0.1 -- longest sleep between two looks at stopping()
local RELIST_EVERY = 10 -- rounds: one full list, then events for the rest
-- The daemon keeps its last 256 events (moby daemon/events, eventsLimit);
-- an unfiltered reply this long may have lost the oldest of the window.
local EVENTS_KEPT = 256
local EVENTS_MARGIN = 16 -- events logged after `until` share the buffer
local EVENTS_STALL_S = 2 -- an event call this silent has failed

local function never()
  return false
end

--- A collector state. opts: interval (seconds, default 1), sources (the
-- order; default horcrux.config's), stopping (function),
-- relist_every (rounds between two full lists while events are followed;
-- 1 lists every round).
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
  return {
    interval = interval,
    sources = opts.sources,
    stopping = opts.stopping or never,
    known = {},  -- full id -> meta {id (12), name, status, image}
    said = {},   -- key -> the last message logged for it
    rounds = 0,
    relist_every = relist_every,
    -- {src = the source that listed and gives events, since = wall ns} while
    -- events are followed; nil: the next round lists
    follow = nil,
    listed_ago = 0, -- event rounds since the last list
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

-- The source order: the state's own (specs, the server's reloads), else
-- horcrux.config's.
local function order_of(state)
  return require("horcrux.config").order(state.sources)
end

local function strip(name)
  return type(name) == "string" and (name:gsub("^/", "")) or nil
end

-- The view's metadata of a container; labels, networks and image_id when
-- the lister knows them (filters on /api/stats read them).
local function meta_from(id, name, status, image, c)
  return {
    id = id:sub(1, 12),
    name = name or null,
    status = status or null,
    image = image or null,
    image_id = c and c.image_id or nil,
    labels = c and type(c.labels) == "table" and c.labels or nil,
    networks = c and type(c.networks) == "table" and c.networks or nil,
  }
end

-- ---- who runs --------------------------------------------------------

local function running_of(src)
  if type(src.running) == "function" then
    return src.running()
  end
  return nil, tostring(src.name) .. " cannot list running containers",
    "unsupported"
end

-- id -> meta of every running container, and the source (the table) that
-- said so; or nil when no source could list.
local function list_running(state)
  for _, src in ipairs(order_of(state)) do
    local ok, list, err = pcall(running_of, src)
    if not ok then
      list, err = nil, list
    end
    if list then
      quiet(state, "list")
      local set = {}
      for _, c in ipairs(list) do
        if type(c.id) == "string" and #c.id == 64 then
          set[c.id] = meta_from(c.id, strip(c.name), c.status, c.image, c)
        end
      end
      return set, src
    end
    say(state, "list:" .. tostring(src.name), "warn",
      ("cannot list containers from %s: %s"):format(tostring(src.name),
        tostring(err)))
  end
  say(state, "list", "error",
    "no source could list the running containers; keeping the known set")
  return nil
end

-- Names and images of the containers the lister could not name (the cgroup
-- source knows none of its own): kept from an earlier round, else asked of
-- the other sources -- in the same round for a container new to
-- the set, every ENRICH_EVERY_NS for those still nameless. Runs before the
-- set replaces state.known.
local ENRICH_EVERY_NS = 10 * 1000000000

local function enrich(state, set, lister)
  local missing, new = 0, false
  for id, meta in pairs(set) do
    if meta.name == null then
      local old = state.known[id]
      if old and old.name ~= null then
        meta.name = old.name
        if meta.image == null then
          meta.image = old.image
        end
      else
        missing = missing + 1
        new = new or old == nil
      end
    end
  end
  local now = clock.mono_ns()
  if missing == 0 or (not new and now < (state.enrich_at or 0)) then
    return
  end
  state.enrich_at = now + ENRICH_EVERY_NS
  for _, src in ipairs(order_of(state)) do
    if src ~= lister then
      local ok, list = pcall(running_of, src)
      if ok and list then
        for _, c in ipairs(list) do
          local meta = set[c.id]
          if meta and meta.name == null and type(c.name) == "string" then
            meta.name = strip(c.name)
            if meta.image == null and type(c.image) == "string" then
              meta.image = c.image
            end
          end
        end
        return
      end
    end
  end
end

-- ---- sampling --------------------------------------------------------

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

local function sample_many(src, ids, deadline)
  if type(src.sample_many) == "function" then
    return src.sample_many(ids)
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

local function forget(state, id)
  view.remove(id)
  cpu.forget(id)
  for _, src in ipairs(order_of(state)) do
    if type(src.forget) == "function" then
      pcall(src.forget, id)
    end
  end
  state.known[id] = nil
  quiet(state, "sample:" .. id)
  quiet(state, "put:" .. id)
end

-- A container that sampling found gone (not running, or no such container)
-- before an event or a list said so: dropped now. Its event normally comes
-- with the next round (it stopped while the round sampled); a missed one
-- changes nothing more, as nothing adds it back but a start or a list.
local function gone(state, id, summary, why)
  forget(state, id)
  summary.dropped[id] = true
  summary.gone = summary.gone + 1
  log.info("collector: %s dropped: %s", id:sub(1, 12), why)
end

-- An answer about the container itself: the next source would say the
-- same (it is gone, the ref is wrong); the next listing settles it.
local FINAL = { not_found = true, bad_request = true, conflict = true }

local function sample_round(state, ids, summary)
  local pending = ids
  local deadline = clock.mono_ns() + math.floor(state.interval * 1e9)
  local last_err = {}
  for _, src in ipairs(order_of(state)) do
    if #pending == 0 then
      break
    end
    local ok, recs, errs, kind = pcall(sample_many, src, pending, deadline)
    if not ok then
      recs, errs, kind = nil, recs, "server"
    end
    if recs then
      quiet(state, "source:" .. tostring(src.name))
      local left = {}
      for _, id in ipairs(pending) do
        local rec = recs[id]
        if type(rec) == "table" and rec.read == null then
          -- the API stamps a container that does not run with the zero
          -- time (stats.lua): an exit no event or list told of yet
          gone(state, id, summary, "not running")
        elseif type(rec) == "table" then
          if store(state, id, rec, src) then
            summary.stored[id] = true
            summary.sampled = summary.sampled + 1
            summary.by_source[src.name] = (summary.by_source[src.name] or 0)
              + 1
          end
          quiet(state, "sample:" .. id)
        else
          local e = type(errs) == "table" and errs[id] or nil
          last_err[id] = ("%s: %s"):format(tostring(src.name),
            tostring(e and e.error or "no record"))
          if e and e.kind == "not_found" then
            gone(state, id, summary, "no such container")
          elseif not (e and FINAL[e.kind]) then
            left[#left + 1] = id
          end
        end
      end
      pending = left
    else
      say(state, "source:" .. tostring(src.name),
        kind == "unsupported" and "info" or "warn",
        ("%s skipped: %s"):format(tostring(src.name), tostring(errs)))
    end
  end
  for _, id in ipairs(ids) do
    if not summary.stored[id] and not summary.dropped[id] then
      summary.failed = summary.failed + 1
      say(state, "sample:" .. id, "warn", ("no figures for %s: %s"):format(
        id:sub(1, 12), last_err[id] or "no source answered"))
    end
  end
end

-- ---- who runs: the list ---------------------------------------------

-- Whether src can follow the engine's events (the events capability).
local function can_follow(src)
  return type(src.events) == "function"
end

-- Lists, replaces the known set with what runs, drops what left; sets up
-- following the events from the time just before the list.
local function relist(state, summary)
  local since = clock.now_ns()
  local set, src = list_running(state)
  summary.listed_by = src and src.name
  summary.followed = set and "list" or nil
  state.follow = nil
  state.listed_ago = 0
  if not set then
    return
  end
  if can_follow(src) then
    state.follow = { src = src, since = since }
    say(state, "follow", "info", ("following the engine's events, a full "
      .. "list every %d rounds"):format(state.relist_every))
  else
    quiet(state, "follow")
  end
  enrich(state, set, src)
  for id in pairs(state.known) do
    if not set[id] then
      forget(state, id)
      summary.removed = summary.removed + 1
    end
  end
  -- The view may hold containers this collector never listed (sampled
  -- on demand by a route, or left by an earlier collector): what does
  -- not run goes too.
  for _, id in ipairs(view.ids()) do
    if not set[id] then
      forget(state, id)
    end
  end
  for id, meta in pairs(set) do
    if not state.known[id] then
      summary.added = summary.added + 1
      summary.new[id] = true
    end
    state.known[id] = meta
  end
end

-- ---- who runs: the events --------------------------------------------

local ADD = { start = true, unpause = true }
local DROP = { die = true, stop = true, pause = true, destroy = true }

-- Applies one container event to the known set; true if it was one.
local function apply(state, ev, summary)
  local id, action = ev.id, ev.action
  if type(id) ~= "string" or #id ~= 64 or type(action) ~= "string" then
    return false
  end
  if ADD[action] then
    if not state.known[id] then
      summary.added = summary.added + 1
      summary.new[id] = true
    end
    -- an unpause keeps what a list said of labels and networks
    state.known[id] = meta_from(id, ev.name, "running", ev.image,
      state.known[id])
  elseif DROP[action] then
    if state.known[id] then
      summary.removed = summary.removed + 1
    end
    summary.new[id] = nil
    forget(state, id) -- the view too: a container sampled on demand
  elseif action == "rename" then
    local meta = state.known[id]
    if meta and type(ev.name) == "string" then
      meta.name = ev.name
    end
  end
  return true
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

-- Follows the events since the last round; false when this round must list
-- instead (the reason logged once).
local function follow_events(state, summary)
  local f = state.follow
  if f == nil or state.listed_ago + 1 >= state.relist_every
      or not in_order(state, f.src) then
    return false
  end
  local now = clock.now_ns()
  local ok, evs, n = pcall(f.src.events, f.since, now,
    { stall = EVENTS_STALL_S })
  if not ok or not evs then
    say(state, "events", "warn", ("cannot follow the engine's events (%s); "
      .. "listing instead"):format(tostring(ok and n or evs)))
    return false
  end
  quiet(state, "events")
  if (n or 0) >= EVENTS_KEPT - EVENTS_MARGIN then
    say(state, "overflow", "info", ("%d events in one round: the daemon's "
      .. "buffer may have dropped some; listing again"):format(n))
    return false
  end
  quiet(state, "overflow")
  f.since = now + 1 -- since and until are both inclusive
  state.listed_ago = state.listed_ago + 1
  summary.listed_by = f.src.name
  summary.followed = "events"
  for _, ev in ipairs(evs) do
    if apply(state, ev, summary) then
      summary.events = summary.events + 1
    end
  end
  return true
end

-- A first record, at once, for the containers new this round, from the
-- first instant source (the cgroup files) when the order has one behind a
-- first source that is not. The docker-api source answers at the daemon's next one-second tick
-- on engines before 25.0, so a container started just after a round began
-- would wait for that round and the whole next one (up to 2 s) before the
-- view held it; the cgroup files answer in microseconds. The round's own
-- sampling replaces the record as it ends, and both go through the same
-- CPU store, so the first source's record has a CPU % a round earlier.
local function first_look(state, summary)
  local ids = {}
  for id in pairs(summary.new) do
    if state.known[id] then
      ids[#ids + 1] = id
    end
  end
  local sources = order_of(state)
  if #ids == 0 or sources[1] == nil or sources[1].instant then
    return
  end
  for i = 2, #sources do
    local src = sources[i]
    if src.instant and type(src.sample_many) == "function" then
      table.sort(ids)
      local ok, recs = pcall(src.sample_many, ids)
      if ok and type(recs) == "table" then
        for _, id in ipairs(ids) do
          local rec = recs[id]
          if type(rec) == "table" and store(state, id, rec, src) then
            summary.first_looks = summary.first_looks + 1
          end
        end
      end
      return
    end
  end
end

--- One round: list (or follow the events), drop the containers that left,
-- sample the rest.
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
    events = 0, gone = 0, first_looks = 0, by_source = {}, new = {},
  }
  local ok, followed = pcall(follow_events, state, summary)
  local err
  if not ok then
    say(state, "events", "error", "following events failed: "
      .. tostring(followed))
  end
  if not (ok and followed) then
    relist(state, summary)
  end
  ok, err = pcall(first_look, state, summary)
  summary.new = nil
  if not ok then
    say(state, "first", "error", "first look failed: " .. tostring(err))
  end
  local ids = {}
  for id in pairs(state.known) do
    ids[#ids + 1] = id
  end
  table.sort(ids)
  summary.running = #ids
  summary.stored, summary.dropped = {}, {}
  ok, err = pcall(sample_round, state, ids, summary)
  summary.stored, summary.dropped = nil, nil
  if not ok then
    say(state, "round", "error", "round failed: " .. tostring(err))
  end
  summary.running = summary.running - summary.gone
  state.rounds = state.rounds + 1
  summary.ms = (clock.mono_ns() - t0) / 1e6
  return summary
end

--- Runs rounds every interval until opts.stopping() is true. Sleeps in
-- slices of at most 100 ms, so a stop is noticed quickly.
function M.run(opts)
  local state = M.new(opts)
  local stopping = state.stopping
  local period = math.floor(state.interval * 1e9)
  local due = clock.mono_ns()
  log.info("collector: every %gs", state.interval)
  while not stopping() do
    local ok, err = pcall(M.step, state)
    if not ok then
      say(state, "step", "error", "round failed: " .. tostring(err))
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
