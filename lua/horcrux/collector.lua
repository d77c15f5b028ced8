--- horcrux.collector: keeps horcrux.view fresh. `horcrux serve` runs it in a
-- thread of its own with its own Lua state; the routes answer from the view.
--
--   collector.run{interval = 1, policy = fallback, stopping = fn}
--       loops until stopping() is true; returns the state
--   collector.new(opts)   -> state (the same options)
--   collector.step(state) -> summary of one round (what specs call; an
--       options table is made a state in place):
--       {listed_by = source name | nil, running = n, sampled = n,
--        by_source = {name = n}, failed = n, added = n, removed = n,
--        ms = wall time of the round}
--
-- One round: ask the first source of the policy that can list which
-- containers run (docker-api: /containers/json with status=running; cgroup:
-- the cgroups that are not frozen; docker-cli: `docker ps`); drop from the
-- view (and from horcrux.cpu's store) the containers that left, then sample
-- every running one from the first source of the policy that answers for
-- it, feeding horcrux.cpu's store, and put the record and the container's
-- metadata in the view. When no source can list, the known set is kept.
--
-- A source takes part in a round through sample_many(ids) (cgroup,
-- docker-cli), through the API client's concurrent stats_many (docker-api),
-- or, for a source that has only stats(id) (an operator's own), one call per
-- container while the round has time left. A round never waits for a
-- second sample: the CPU % of a container's first round is null, the next
-- round has it. The errors of one container (or one source) are logged
-- once per change and never stop the loop.
local view = require "horcrux.view"
local cpu = require "horcrux.cpu"
local clock = require "horcrux.clock"
local json = require "horcrux.json"
local stats = require "horcrux.stats"
local log = require "horcrux.log"

local null = json.null

local M = {}

local SLICE_S = 0.1 -- longest sleep between two looks at stopping()

local function never()
  return false
end

--- A collector state. opts: interval (seconds, default 1), policy (a table
-- with .sources, default require "fallback"), stopping (function).
function M.new(opts)
  opts = opts or {}
  local interval = opts.interval or 1
  if type(interval) ~= "number" or interval <= 0 then
    error("collector: interval must be a positive number of seconds", 2)
  end
  if opts.stopping ~= nil and type(opts.stopping) ~= "function" then
    error("collector: stopping must be a function", 2)
  end
  return {
    interval = interval,
    policy = opts.policy,
    stopping = opts.stopping or never,
    known = {},  -- full id -> meta {id (12), name, status, image}
    said = {},   -- key -> the last message logged for it
    rounds = 0,
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

local function policy_sources(state)
  local policy = state.policy or require("fallback")
  return policy.sources or {}
end

local function strip(name)
  return type(name) == "string" and (name:gsub("^/", "")) or nil
end

local function meta_from(id, name, status, image)
  return {
    id = id:sub(1, 12),
    name = name or null,
    status = status or null,
    image = image or null,
  }
end

-- ---- who runs --------------------------------------------------------

-- The docker-api source lists through its client, which gives full ids.
local function api_running(src)
  local c, err, kind = src.client()
  if not c then
    return nil, err, kind
  end
  local items
  items, err, kind = c:containers({
    all = false, filters = { status = { "running" } },
  })
  if not items then
    return nil, err, kind
  end
  local out = {}
  for _, it in ipairs(items) do
    if type(it.Id) == "string" then
      local names = type(it.Names) == "table" and it.Names or {}
      out[#out + 1] = {
        id = it.Id, name = strip(names[1]), status = it.State,
        image = it.Image,
      }
    end
  end
  return out
end

local function running_of(src)
  if type(src.running) == "function" then
    return src.running()
  elseif src.name == "docker-api" and type(src.client) == "function" then
    return api_running(src)
  end
  return nil, tostring(src.name) .. " cannot list running containers",
    "unsupported"
end

-- id -> meta of every running container, and the source that said so; or
-- nil when no source could list.
local function list_running(state)
  for _, src in ipairs(policy_sources(state)) do
    local ok, list, err = pcall(running_of, src)
    if not ok then
      list, err = nil, list
    end
    if list then
      quiet(state, "list")
      local set = {}
      for _, c in ipairs(list) do
        if type(c.id) == "string" and #c.id == 64 then
          set[c.id] = meta_from(c.id, strip(c.name), c.status, c.image)
        end
      end
      return set, src.name
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
-- the policy's other sources -- in the same round for a container new to
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
  for _, src in ipairs(policy_sources(state)) do
    if src.name ~= lister then
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

-- The docker-api source, for many containers at once. A one-shot stats
-- request waits up to a second on engines before 25.0 (the daemon answers
-- at its collector's tick), so requests one after the other would make a
-- round of 50 containers take 50 s. Only the client's concurrent
-- stats_many (curl multi: 50 in ~1.1 s) is used here; a client without it
-- sits the round out ("unsupported") and the next source of the policy,
-- normally cgroup, samples the containers instead.
--
-- stats_many(ids) is taken to return a table indexed by position or by id
-- whose values are decoded replies, or error entries ({error|message =,
-- kind =} or a string); both shapes are accepted.
local function api_sample_many(src, ids)
  local c, err, kind = src.client()
  if not c then
    return nil, err, kind
  end
  local many = c.stats_many
  if type(many) ~= "function" then
    return nil, "docker-api: the client has no concurrent stats_many; "
      .. "sampling with the next source", "unsupported"
  end
  local res
  res, err, kind = many(c, ids)
  if type(res) ~= "table" then
    return nil, err or "docker-api: stats_many gave no answer",
      kind or "server"
  end
  local recs, errs = {}, {}
  for i, id in ipairs(ids) do
    local raw = res[id]
    if raw == nil then
      raw = res[i]
    end
    if type(raw) == "table" and type(raw.value) == "table" then
      raw = raw.value -- the client's shape: {value = reply} or {error, kind}
    end
    if type(raw) == "table" and raw.read ~= nil then
      local rec = stats.record(id, raw)
      rec.id = id
      rec.name = strip(raw.name) or null
      recs[id] = rec
    else
      local e = type(raw) == "table" and (raw.error or raw.message) or raw
      errs[id] = {
        error = tostring(e or "docker-api: no reply"),
        kind = type(raw) == "table" and raw.kind or "server",
      }
    end
  end
  return recs, errs
end

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
  elseif src.name == "docker-api" and type(src.client) == "function" then
    return api_sample_many(src, ids)
  elseif type(src.stats) == "function" then
    return each_sample(src, ids, deadline)
  end
  return nil, tostring(src.name) .. " cannot give stats", "unsupported"
end

-- Monotonic ns at which the record's figures were read (its `read` time,
-- moved to the monotonic clock), or now.
local function taken_ns(rec)
  local now = clock.mono_ns()
  local t = type(rec.read) == "string" and stats.parse_time(rec.read)
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

-- An answer about the container itself: the next source would say the
-- same (it is gone, the ref is wrong); the next listing settles it.
local FINAL = { not_found = true, bad_request = true, conflict = true }

local function sample_round(state, ids, summary)
  local pending = ids
  local deadline = clock.mono_ns() + math.floor(state.interval * 1e9)
  local last_err = {}
  for _, src in ipairs(policy_sources(state)) do
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
        if type(rec) == "table" then
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
          if not (e and FINAL[e.kind]) then
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
    if not summary.stored[id] then
      summary.failed = summary.failed + 1
      say(state, "sample:" .. id, "warn", ("no figures for %s: %s"):format(
        id:sub(1, 12), last_err[id] or "no source answered"))
    end
  end
end

local function forget(state, id)
  view.remove(id)
  cpu.forget(id)
  for _, src in ipairs(policy_sources(state)) do
    if type(src.forget) == "function" then
      pcall(src.forget, id)
    end
  end
  state.known[id] = nil
  quiet(state, "sample:" .. id)
  quiet(state, "put:" .. id)
end

--- One round: list, drop the containers that left, sample the rest.
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
    by_source = {},
  }
  local set, lister = list_running(state)
  summary.listed_by = lister
  if set then
    enrich(state, set, lister)
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
      end
      state.known[id] = meta
    end
  end
  local ids = {}
  for id in pairs(state.known) do
    ids[#ids + 1] = id
  end
  table.sort(ids)
  summary.running = #ids
  summary.stored = {}
  local ok, err = pcall(sample_round, state, ids, summary)
  summary.stored = nil
  if not ok then
    say(state, "round", "error", "round failed: " .. tostring(err))
  end
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
