--- horcrux.live: stats answered from the live view (horcrux.view, kept
-- fresh by the server's collector), sampled on demand where the view does
-- not hold the container yet (just started, or no collector running, as in
-- `horcrux run` scripts).
local view = require "horcrux.view"
local json = require "horcrux.json"
local metrics = require "horcrux.metrics"
local engine = require "horcrux.engine"
local clock = require "horcrux.clock"

local M = {}

--- Whether the view holds every container's metadata: the collector
-- listed them all from a source that knows every one, and has followed the
-- engine's events without a gap since (at most one round old). Not once
-- the collector's word is past its time (a round stuck on a call), nor
-- while the daemon's breaker is open: then nobody follows the events.
function M.trusted()
  local st = view.status and view.status()
  if type(st) ~= "table" or st.trusted ~= true
      or (math.type(st.until_ns) == "integer"
        and clock.mono_ns() > st.until_ns) then
    return false
  end
  local breaker = engine.breaker()
  return breaker == nil or breaker.state == "closed"
end

-- What is worked out from the metas alone -- the text of a list, the set
-- of ids a filter picks -- kept while view.generation() (which every
-- change of a meta held changes) stays the same: each Lua state (a worker's
-- or the collector's) keeps its own, so no lock is needed. The generation
-- is read before the metas, so what is kept is never older than the
-- generation it is kept under.
local memo = { n = 0, list = {}, want = {} }
local MEMO_MAX = 16 -- answers kept a generation (then all are dropped)

local function memo_of()
  local gen = view.generation()
  if memo.gen ~= gen or memo.n >= MEMO_MAX then
    memo.gen, memo.n, memo.list, memo.want = gen, 0, {}, {}
  end
  return memo
end

-- The memo's key of f (the route's word first): its keys in filters.KEYS'
-- order, each with its values as given.
local function key_of(filters, f, what)
  local parts = { what }
  for _, k in ipairs(filters.KEYS) do
    if f[k] then
      parts[#parts + 1] = k .. "=" .. table.concat(f[k], "\0")
    end
  end
  return table.concat(parts, "\1")
end

-- What filters.match reads of a container, from its meta.
local function matched(filters, f, meta)
  return filters.match(f, { status = meta.status, name = meta.name,
    image = meta.image, image_id = meta.image_id, labels = meta.labels or {},
    networks = meta.networks or {} })
end

--- GET /api/containers from the view: the containers whose metadata
-- matches f (horcrux.filters), in the route's shape; all = false keeps
-- what `docker ps` shows (running, paused, restarting). nil when the view
-- cannot be trusted (M.trusted): the caller asks the sources.
function M.list(f, all)
  if not M.trusted() then
    return nil
  end
  local filters = require "horcrux.filters"
  local out = json.array()
  local shown = { running = true, paused = true, restarting = true }
  local every = filters.none(f)
  for _, meta in ipairs(view.metas()) do
    if (all or shown[meta.status])
        and (every or matched(filters, f, meta)) then
      out[#out + 1] = { id = meta.full_id:sub(1, 12), name = meta.name,
        status = meta.status, image = meta.image }
    end
  end
  return out
end

--- GET /api/containers from the view as JSON text: what M.list(f, all)
-- gives, as the route's answer encodes it (keys sorted), written once a
-- generation of the metas. nil when the view cannot be trusted or
-- format.lua asks for another encoding: the caller goes the table's way.
function M.list_json(f, all)
  local filters = require "horcrux.filters"
  local fmt = require("horcrux.config").format()
  if fmt.pretty or fmt.sort_keys == false or not M.trusted() then
    return nil
  end
  all = all or f.status ~= nil -- as filters.list
  local m = memo_of()
  local key = key_of(filters, f, all and "all" or "shown")
  local text = m.list[key]
  if not text then
    local list = M.list(f, all)
    if not list then
      return nil
    end
    text = assert(json.encode(list, { sort_keys = true }))
    m.list[key], m.n = text, m.n + 1
  end
  return text
end

-- What an action leaves a container as.
local AFTER = { start = "running", restart = "running", unpause = "running",
  stop = "exited", kill = "exited", pause = "paused" }

--- What horcrux itself just changed, told to the view at once, so that a
-- client that creates, drives or removes a container through horcrux sees
-- it in its next answer (the collector's next round confirms it from the
-- engine's events). change: "created" (with the create spec and whether it
-- was started), an action word, or "removed". Nothing when no collector
-- keeps the view.
function M.note(ref, change, spec, started)
  if not M.trusted() then
    return
  end
  local id = #ref == 64 and ref or view.find(ref)
  if not id then
    return
  end
  if change == "removed" then
    view.remove(id)
    return
  end
  -- what the collector already said of it stays (its networks, its
  -- image id): only the state changes
  local meta = view.meta(id)
  if change == "created" and not meta then
    -- the network the daemon attaches it to (bridge unless the body said)
    local net = spec.network or "bridge"
    meta = { id = id:sub(1, 12), name = spec.name or json.null,
      image = spec.image, labels = spec.labels or {},
      networks = net:match("^container:") and {} or { [net] = "" },
      created = require("horcrux.time").format(require("horcrux.clock")
        .now_ns()) }
  end
  local status = change == "created" and (started and "running" or "created")
    or AFTER[change]
  if not meta or not status then
    return
  end
  if meta.status == "running" and status ~= "running" then
    view.remove(id) -- its figures go with its running
  end
  meta.status = status
  -- newer than any event the collector read before it: its next publish
  -- leaves this be (collector.lua)
  meta.at_ns, meta.noted = require("horcrux.clock").now_ns(), true
  view.set_meta(id, meta)
end

--- The stats record of one container (a name, a full id or an id prefix).
function M.stats(ref, sources)
  local id = view.find(ref)
  if id then
    local rec = view.get(id)
    -- The collector's first sample of a container has no CPU % yet; asking
    -- now finds that sample in the shared store as the base.
    if rec and rec.cpu_usage_percent ~= json.null then
      return rec, rec.source
    end
  end
  return metrics.stats(id or ref, sources)
end

--- GET /api/stats as JSON text written from the view in C
-- (view.stats_json): the same answer as json.encode(filters.stats(f,
-- M.all()), {sort_keys = true}) without a Lua table per record. nil when
-- that way does not apply and the caller builds the answer as before:
-- format.lua asks for indented JSON, the view holds nothing (no
-- collector), or f filters while the view cannot be trusted.
function M.stats_json(f)
  local filters = require "horcrux.filters"
  if require("horcrux.config").format().pretty or view.count() == 0 then
    return nil
  end
  local want
  if not filters.none(f) then
    if not M.trusted() then
      return nil
    end
    local m = memo_of()
    local key = key_of(filters, f, "stats")
    want = m.want[key]
    if not want then
      want = {}
      for _, meta in ipairs(view.metas()) do
        if meta.status == "running" and matched(filters, f, meta) then
          want[meta.full_id] = true
        end
      end
      m.want[key], m.n = want, m.n + 1
    end
  end
  local text = view.stats_json(want)
  -- running by the view's word but no figures yet: sampled now, as all()
  local missing = {}
  for _, id in ipairs(view.unsampled()) do
    if not want or want[id] then
      missing[#missing + 1] = id
    end
  end
  if #missing == 0 then
    return text
  end
  local more = {}
  for _, r in ipairs(metrics.stats_many(missing)) do
    if r.record then
      more[#more + 1] = assert(json.encode(r.record, { sort_keys = true }))
    end
  end
  if #more == 0 then
    return text
  end
  return text:sub(1, -2) .. (text == "[]" and "" or ",")
    .. table.concat(more, ",") .. "]"
end

--- GET /api/stats when stats_json cannot answer: the records of the
-- running containers that match f (horcrux.filters). Before the
-- collector's first round (the view holds nothing) a filter samples only
-- the containers it matches, not every one: a label picking a tenth of
-- 1,000 containers waited 5.6 s for all of them.
function M.stats_matching(f, sources)
  local filters = require "horcrux.filters"
  if filters.none(f) then
    return M.all(sources)
  end
  if view.count() == 0 then
    local out, err, kind = filters.stats(f, nil, sources)
    if out or err then
      return out, err, kind
    end
  end
  local all, err, kind, tried = M.all(sources)
  if not all then
    return nil, err, kind, tried
  end
  return filters.stats(f, all, sources)
end

--- The records of every running container, as a JSON array.
function M.all(sources)
  if view.count() > 0 then
    local all = view.all()
    -- running by the view's word but no figures yet (started since the
    -- collector's last round, through horcrux): sampled now
    local missing = view.unsampled()
    if #missing > 0 then
      for _, r in ipairs(metrics.stats_many(missing, sources)) do
        if r.record then
          all[#all + 1] = r.record
        end
      end
    end
    return setmetatable(all, json.array_mt)
  end
  local list, err, kind, tried = metrics.list({ all = false }, sources)
  if not list then
    return nil, err, kind, tried
  end
  -- "running" only: the daemon's list without all=1 holds paused ones too,
  -- and the view (which the collector keeps) never does.
  local ids, names = {}, {}
  for _, c in ipairs(list) do
    if c.status == "running" then
      ids[#ids + 1] = c.id
      names[#ids] = c.name
    end
  end
  local out = json.array()
  for i, r in ipairs(metrics.stats_many(ids, sources)) do
    if r.record then
      -- a record from the cgroup files knows no name (null); the list does
      if type(r.record.name) ~= "string" and type(names[i]) == "string" then
        r.record.name = names[i]
      end
      out[#out + 1] = r.record
    end
  end
  return out
end

return M
