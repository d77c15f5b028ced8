--- horcrux.streams: the stats and events streams over horcrux.hub -- what
-- the routes ask for and what the collector publishes each round.
--
--   streams.QUERY_STATS        the query checkers of the stats streams
--   streams.stats(req)         -> hub.stream for GET /api/stats/stream
--                                 (the /api/stats filters, ?interval=)
--   streams.container(id, req) -> hub.stream for one container (full id)
--   streams.events(req)        -> hub.stream of `events` (Last-Event-ID,
--                                 or ?last_event_id= for WebSocket clients)
--   streams.follow(ref, opts)  -> hub.follow for GET /api/containers/:id/
--                                 logs?follow=1 (opts: horcrux.logs'
--                                 options) | nil, message, kind
--   streams.recent(q)          -> the ring's events matching q (GET
--                                 /api/events: type, action, container,
--                                 label, since)
--   streams.publish_round(all) the collector, after each round: `stats`,
--                              each active filtered topic, each followed
--                              container (nothing is encoded for a topic
--                              nobody reads; all may be a function giving
--                              the records, called only when a topic needs
--                              them)
--   streams.publish_event(ev)  the collector, for each container event
--
-- Topics: "stats", "stats?<filters as canonical JSON>", "stats/<full id>",
-- "events". The message shape is the README's ("Streams").
local hub = require "horcrux.hub"
local json = require "horcrux.json"
local filters = require "horcrux.filters"
local input = require "horcrux.input"
local time = require "horcrux.time"
local view = require "horcrux.view"
local errors = require "horcrux.errors"
local engine = require "horcrux.engine"

local M = {}

local ENC = { sort_keys = true } -- as /api/stats answers with format.lua's
                                 -- defaults

--- ?interval=S: seconds between two messages, 0.1 to 3600.
function M.interval(v)
  local n = tonumber(v)
  if not n or n ~= n or n < 0.1 or n > 3600 or #v > 16 then
    return nil, "interval must be seconds from 0.1 to 3600"
  end
  return n
end

M.QUERY_STATS = { interval = M.interval }

-- The filters as a canonical text: keys and values sorted, so the same
-- filters in any order share one topic (and one encoding per round).
local function canonical(f)
  local keys = {}
  for k, vs in pairs(f) do
    local sorted = {}
    for i, v in ipairs(vs) do
      sorted[i] = v
    end
    table.sort(sorted)
    keys[k] = setmetatable(sorted, json.array_mt)
  end
  return json.encode(keys, ENC)
end

--- The stream of GET /api/stats/stream: every running container, or the
-- filtered ones; raises a bad_request failure on a bad query.
function M.stats(req)
  local f, q, kind, key = filters.parse(req.args, M.QUERY_STATS)
  if not f then
    errors.raise(kind, q, key)
  end
  local topic = "stats"
  if not filters.none(f) then
    topic = "stats?" .. canonical(f)
    if #topic > 255 then
      errors.raise("bad_request",
        "these filters are too long for a stream (255 bytes)")
    end
  end
  return hub.stream({ topic = topic, interval = q.interval })
end

--- One container's stream: `stats/<full id>`.
function M.container(full_id, req)
  return hub.stream({ topic = "stats/" .. full_id,
    interval = req.query and req.query.interval })
end

--- The events stream, resuming after Last-Event-ID (or ?last_event_id=).
function M.events(req)
  local last = req.headers["last-event-id"]
  if last == nil and req.query then
    last = req.query.last_event_id
  end
  return hub.stream({ topic = "events", last_id = last })
end

M.QUERY_EVENTS_STREAM = { last_event_id = input.integer(0, 1e15) }

-- ---- log follow ----------------------------------------------------------

--- The log follow of ref: the daemon's own stream (follow=1), split into
-- lines by the host (core/follow.c). Asks the daemon first, so an unknown
-- container is a 404 and the TTY (raw stream or frames) is known.
function M.follow(ref, opts)
  local info, err, kind = engine.inspect(ref)
  if not info then
    return nil, err, kind
  end
  local c
  c, err, kind = engine.client()
  if not c then
    return nil, err, kind
  end
  local q = { "stdout=" .. (opts.stdout and 1 or 0),
    "stderr=" .. (opts.stderr and 1 or 0) }
  if opts.timestamps then
    q[#q + 1] = "timestamps=1"
  end
  if opts.tail ~= nil and opts.tail ~= "all" then
    q[#q + 1] = "tail=" .. opts.tail
  end
  if opts.since then
    q[#q + 1] = "since=" .. opts.since
  end
  if opts.until_ then
    q[#q + 1] = "until=" .. opts.until_
  end
  local config = type(info.Config) == "table" and info.Config or {}
  return hub.follow({ client = c, id = info.Id, query = table.concat(q, "&"),
    tty = config.Tty == true, timestamps = opts.timestamps == true })
end

-- ---- GET /api/events ----------------------------------------------------

M.QUERY_EVENTS = {
  type = input.one_of({ "container" }),
  action = input.string(64),
  container = input.string(255),
  label = input.string(1300),
  since = input.string(40),
  after = input.integer(0, 1e15),
}

-- `since`: an event id is `after`; else RFC 3339 or Unix seconds.
local function since_ns(v)
  if v == nil then
    return nil
  end
  local secs = tonumber(v)
  if secs then
    return math.floor(secs * 1e9)
  end
  return time.parse(v)
end

local function label_matches(attrs, want)
  local k, v = want:match("^([^=]*)=(.*)$")
  k = k or want
  local have = type(attrs) == "table" and attrs[k] or nil
  return have ~= nil and (v == nil or have == v)
end

--- The events the ring holds that match q (checked by QUERY_EVENTS),
-- oldest first; nil, message, "bad_request" for a since that is no time.
function M.recent(q)
  local from = since_ns(q.since)
  if q.since and not from then
    return nil, "since must be RFC 3339 or Unix seconds", "bad_request"
  end
  local out = json.array()
  for _, m in ipairs(hub.recent("events", q.after or 0)) do
    local ev = json.decode(m.data)
    if (q.action == nil or ev.action == q.action)
        and (q.container == nil or ev.name == q.container
          or (type(ev.id) == "string"
            and ev.id:sub(1, #q.container) == q.container))
        and (q.label == nil or label_matches(ev.attributes, q.label))
        and (from == nil or (ev.time_ns or 0) >= from) then
      out[#out + 1] = ev
    end
  end
  return out
end

-- ---- publishing (the collector's thread) ------------------------------------

--- Publishes one container event (a source's events() record) to
-- `events`; returns its id (0: not a container event).
function M.publish_event(ev)
  if type(ev) ~= "table" or type(ev.id) ~= "string"
      or type(ev.action) ~= "string" or ev.action == "network" then
    return 0
  end
  local body = {
    type = "container", action = ev.action, id = ev.id,
    name = ev.name or json.null, image = ev.image or json.null,
    attributes = ev.attrs or {},
    time_ns = ev.time_ns or json.null,
    time = ev.time_ns and time.format(ev.time_ns) or json.null,
  }
  local text = json.encode(body, ENC)
  if not text then
    return 0
  end
  return hub.publish("events", text, { event = "event" })
end

local function decode_filters(topic)
  local f = json.decode(topic:sub(#"stats?" + 1))
  return type(f) == "table" and f or nil
end

--- After a round: `stats` and what subscribers follow, each encoded once.
-- all: the records of every running container (live.all()), or a function
-- that gives them, called only when `stats` or a filtered topic is read (a
-- table a record for every container each round cost the collector more
-- than its cgroup reads).
function M.publish_round(all)
  hub.keepalive(15)
  if hub.subscribers() == 0 then
    return
  end
  local filtered = hub.topics("stats?")
  local whole = hub.subscribers("stats") > 0
  if type(all) == "function" and (whole or #filtered > 0) then
    all = all() or {}
  end
  if type(all) == "table" then
    setmetatable(all, json.array_mt)
  end
  if whole then
    hub.publish("stats", json.encode(all, ENC), { event = "stats" })
  end
  for _, topic in ipairs(filtered) do
    local f = decode_filters(topic)
    local ok, list = pcall(filters.stats, f, all)
    if f and ok and list then
      hub.publish(topic, json.encode(list, ENC), { event = "stats" })
    end
  end
  for _, topic in ipairs(hub.topics("stats/")) do
    local rec = view.get(topic:sub(#"stats/" + 1))
    if rec then
      hub.publish(topic, json.encode(rec, ENC), { event = "stats" })
    end
  end
end

return M
