--- horcrux.hooks_run: the webhook thread of `horcrux serve` (its own
-- thread and Lua state, like the collector's; rebuilt after a reload).
--
--   hooks_run.run{hooks = checked hooks.lua (horcrux.hooks_check),
--                 state_dir = DIR, interval = s, stopping = fn}
--   hooks_run.status() -> {hooks = [...], alerts = [...]}   (any state)
--
-- Each turn: takes the container events the collector fed
-- (horcrux.hooks.feed), runs the alert rules (horcrux.alerts: on every
-- event, and over the view every interval), and for each hook whose filter
-- takes the event appends its body to the hook's queue on disk
-- (DIR/hooks/<name>/queue); the batch is fsynced before anything is
-- delivered. Then every hook whose oldest pending delivery is due and
-- that has none in flight gets it POSTed (one delivery per hook at a time:
-- in order), and the POSTs that ended since are settled. POSTs go on
-- across turns (horcrux.hooks.poster): a receiver that hangs until its
-- timeout holds its own hook only, never the others, the events taken
-- meanwhile nor the alert rules. A 2xx acks a delivery; anything else is
-- retried after an exponential backoff with jitter (retry_min *
-- 2^(attempt-1), capped at retry_max, times a random 0.5 .. 1). A
-- delivery a receiver refuses with a 4xx other than 408 and 429 is dropped
-- after give_up_after attempts (it would block the hook's queue forever);
-- errors of the network, timeouts and 5xx are retried for as long as it
-- takes.
--
-- The first hooks thread of a process first queues the engine's container
-- events that came after the mark on disk (DIR/hooks/events.mark, the
-- newest event accepted): what the engine did while horcrux was down
-- ("events while horcrux was down" below).
--
-- Headers of a delivery: Content-Type: application/json,
-- X-Horcrux-Delivery: <uuid> (the same on every attempt: receivers
-- deduplicate with it), X-Horcrux-Event: container | alert,
-- X-Horcrux-Signature: sha256=<hex HMAC-SHA256 of the body with the
-- hook's secret> when it has one, and the hook's own headers.
--
-- The status (GET /api/hooks, /api/alerts) goes to horcrux.hooks'
-- process-wide slot after every turn that changed something; the pending
-- counts go to GET /metrics with it, and each delivered, failed or dropped
-- delivery as it happens (horcrux.prometheus: the registry is process-wide).
local hooks = require "horcrux.hooks"
local hooks_check = require "horcrux.hooks_check"
local alerts = require "horcrux.alerts"
local json = require "horcrux.json"
local clock = require "horcrux.clock"
local time = require "horcrux.time"
local log = require "horcrux.log"
local prometheus = require "horcrux.prometheus"
local config = require "horcrux.config"

local M = {}

local TURN_S = 0.2 -- longest wait for events between two looks at stopping()
local POLL_S = 0.05 -- the same while a POST runs (waiting on its socket)

local function deep_copy(v)
  if type(v) ~= "table" then
    return v
  end
  local c = {}
  for k, x in pairs(v) do
    c[k] = deep_copy(x)
  end
  return setmetatable(c, getmetatable(v))
end

--- The body of an event for a hook of format "json": the event itself.
-- Container events from the collector's record.
function M.container_event(ev)
  local attrs = type(ev.attrs) == "table" and ev.attrs or {}
  return {
    type = "container", action = ev.action, id = ev.id,
    name = ev.name, image = ev.image,
    time = math.type(ev.time_ns) == "integer" and time.format(ev.time_ns)
      or nil,
    time_ns = ev.time_ns,
    exit_code = tonumber(attrs.exitCode),
    attributes = attrs,
  }
end

--- Alertmanager's webhook body (version 4) for one alert event.
function M.alertmanager(hook, ev)
  local base = hook.external_url or ""
  return {
    version = "4",
    groupKey = ('{}:{alertname="%s"}'):format(ev.alert),
    truncatedAlerts = 0,
    status = ev.status,
    receiver = hook.receiver,
    groupLabels = { alertname = ev.alert },
    commonLabels = ev.labels,
    commonAnnotations = ev.annotations,
    externalURL = base,
    alerts = setmetatable({ {
      status = ev.status,
      labels = ev.labels,
      annotations = ev.annotations,
      startsAt = ev.starts_at,
      endsAt = ev.ends_at or "0001-01-01T00:00:00Z",
      generatorURL = base ~= "" and (base .. "/api/alerts") or "",
      fingerprint = ev.fingerprint,
    } }, json.array_mt),
  }
end

-- The body a hook gets for ev, or nil (not for it) and why.
local function body_for(h, ev)
  if h.format == "alertmanager" and ev.type ~= "alert" then
    return nil
  end
  local e = deep_copy(ev)
  if h.filter then
    local ok, yes = hooks.bounded(hooks_check.BUDGET, h.filter, e)
    if not ok then
      return nil, "filter: " .. tostring(yes)
    end
    if not yes then
      return nil
    end
  end
  local out = e
  if h.format == "alertmanager" then
    out = M.alertmanager(h, e)
  end
  if h.transform then
    local ok, t = hooks.bounded(hooks_check.BUDGET, h.transform, out)
    if not ok then
      return nil, "transform: " .. tostring(t)
    end
    if type(t) ~= "table" then
      return nil, "transform returned a " .. type(t) .. ", not a table"
    end
    out = t
  end
  local ok, text = pcall(json.encode, out)
  if not ok or type(text) ~= "string" then
    return nil, "cannot encode the body: " .. tostring(text)
  end
  return text
end

-- ---- the state of each hook ----------------------------------------------

-- How many bits n takes: bits(a) < bits(b) when b passed a power of two
-- that a had not reached.
local function bits(n)
  local k = 0
  while n > 0 do
    n, k = n >> 1, k + 1
  end
  return k
end

local function say(w, msg, level)
  if w.said ~= msg then
    w.said = msg
    log[level or "warn"]("hooks: %s: %s", w.hook.name, msg)
  end
end

local function open_queues(list, dir, before)
  local ws = {}
  for i, h in ipairs(list) do
    local old = before[h.name] or {}
    local w = { hook = h, delivered = old.delivered or 0,
      failed = old.failed or 0, dropped = old.dropped or 0,
      errors = old.errors or 0, last_error = old.last_error,
      last_error_at = old.last_error_at,
      last_delivered_at = old.last_delivered_at,
      attempts = 0, next_at = 0 }
    local q, err, _, cut = hooks.open(dir .. "/hooks/" .. h.name, h.queue_max)
    if q then
      w.q = q
      if cut and cut > 0 then
        log.warn("hooks: %s: %d bytes cut from the end of its queue (a torn "
          .. "or damaged record)", h.name, cut)
      end
      local n = q:pending()
      if n > 0 then
        log.info("hooks: %s: %d deliveries pending from before", h.name, n)
      end
    else
      w.last_error = err
      say(w, "cannot open its queue: " .. tostring(err), "error")
    end
    ws[i] = w
  end
  return ws
end

local function note_error(w, msg)
  w.last_error = msg
  w.last_error_at = time.format(clock.now_ns())
end

-- Appends ev's body to every hook that takes it (not yet fsynced).
local function enqueue(ws, ev)
  for _, w in ipairs(ws) do
    local body, why = body_for(w.hook, ev)
    if why then
      w.errors = w.errors + 1
      note_error(w, why)
      say(w, why)
    elseif body and not w.q then
      w.dropped = w.dropped + 1
      prometheus.webhook(w.hook.name, "dropped")
    elseif body then
      -- the record: the event's type (X-Horcrux-Event), a newline, the body
      local id, dropped, kind = w.q:append(ev.type .. "\n" .. body)
      if not id then
        w.dropped = w.dropped + 1
        prometheus.webhook(w.hook.name, "dropped")
        note_error(w, tostring(dropped))
        say(w, ("cannot queue a delivery (%s): %s"):format(tostring(kind),
          tostring(dropped)), "error")
      else
        w.dirty = true
        if dropped > 0 then
          local before = w.dropped
          w.dropped = w.dropped + dropped
          prometheus.webhook(w.hook.name, "dropped", dropped)
          -- a line each time the count passes a power of two: a hung
          -- receiver drops one a delivery (/api/hooks counts each)
          if bits(before) < bits(w.dropped) then
            log.error("hooks: %s: queue full (queue_max %d bytes): %d oldest "
              .. "deliveries dropped so far", w.hook.name, w.hook.queue_max,
              w.dropped)
          end
        end
      end
    end
  end
end

local function sync(ws)
  local all = true
  for _, w in ipairs(ws) do
    if w.dirty then
      w.dirty = nil
      local ok, err = w.q:sync()
      if not ok then
        all = false
        note_error(w, err)
        say(w, "fsync: " .. tostring(err), "error")
      end
    end
  end
  return all
end

-- ---- delivery ------------------------------------------------------------

local function backoff(h, attempts)
  local d = math.min(h.retry_max, h.retry_min * 2 ^ (attempts - 1))
  return d * (0.5 + 0.5 * math.random())
end

local function retryable(status)
  return status == nil or status >= 500 or status == 408 or status == 429
    or status < 400
end

local function request_for(w, record, id)
  local h = w.hook
  local nl = record:find("\n", 1, true) or 0
  local kind, body = record:sub(1, nl - 1), record:sub(nl + 1)
  local headers = {}
  for k, v in pairs(h.headers or {}) do
    headers[k] = v
  end
  headers["Content-Type"] = "application/json"
  headers["X-Horcrux-Delivery"] = id
  headers["X-Horcrux-Event"] = kind ~= "" and kind or nil
  if h.secret then
    headers["X-Horcrux-Signature"] = "sha256=" .. hooks.hmac_sha256(h.secret,
      body)
  end
  return { url = h.url, body = body, headers = headers, timeout = h.timeout }
end

local function settle(w, seq, id, res, now)
  local h = w.hook
  if res.status and res.status >= 200 and res.status < 300 then
    local ok, err = w.q:ack(seq)
    if not ok then
      note_error(w, err)
      say(w, "ack: " .. tostring(err), "error")
    end
    w.delivered = w.delivered + 1
    prometheus.webhook(h.name, "delivered")
    w.last_delivered_at = time.format(clock.now_ns())
    w.attempts, w.next_at = 0, 0
    if w.said then
      log.info("hooks: %s: delivering again", h.name)
      w.said = nil
    end
    return
  end
  w.failed = w.failed + 1
  prometheus.webhook(h.name, "failed")
  w.attempts = w.attempts + 1
  local why = res.status and ("HTTP " .. res.status) or tostring(res.error)
  note_error(w, why)
  if not retryable(res.status) and w.attempts >= h.give_up_after then
    w.q:ack(seq)
    w.dropped = w.dropped + 1
    prometheus.webhook(h.name, "dropped")
    log.error("hooks: %s: delivery %s refused %d times (%s): dropped",
      h.name, id, w.attempts, why)
    w.attempts, w.next_at = 0, 0
    return
  end
  local d = backoff(h, w.attempts)
  w.next_at = now + d
  say(w, ("%s; retrying (attempt %d in %.1f s, then backing off up to "
    .. "%g s)"):format(why, w.attempts + 1, d, h.retry_max))
end

-- Starts the oldest pending delivery of every hook that is due and has
-- none in flight; settles the POSTs that ended, waiting up to wait_s for
-- one to end. True when one ended.
local function deliver(st, wait_s)
  local ws, poster = st.ws, st.poster
  local now = clock.mono_ns() / 1e9
  for i, w in ipairs(ws) do
    if w.q and not w.inflight and w.next_at <= now then
      local body, id, seq = w.q:head()
      if body then
        poster:start(i, request_for(w, body, id))
        w.inflight = { id = id, seq = seq }
      end
    end
  end
  local ended = poster:poll(wait_s)
  now = clock.mono_ns() / 1e9
  for _, res in ipairs(ended) do
    local w = ws[res.key]
    local d = w.inflight
    w.inflight = nil
    settle(w, d.seq, d.id, res, now)
  end
  return #ended > 0
end

-- Seconds until a hook has something due (0: now), at most TURN_S; at
-- most POLL_S while a POST runs.
local function next_wait(st)
  local now = clock.mono_ns() / 1e9
  local wait = st.poster:running() > 0 and POLL_S or TURN_S
  for _, w in ipairs(st.ws) do
    if w.q and not w.inflight and w.q:pending() > 0 then
      wait = math.min(wait, math.max(0, w.next_at - now))
    end
  end
  return wait
end

-- ---- status ----------------------------------------------------------------

-- Every hook's series at /metrics from its start (at 0: a rate works from
-- the first delivery); a hook a reload removed has nothing pending here.
local function metrics_series(ws, before)
  for _, w in ipairs(ws) do
    local name = w.hook.name
    prometheus.webhook(name, "delivered", 0)
    prometheus.webhook(name, "dropped", 0)
    prometheus.webhook(name, "failed", 0)
    before[name] = nil
  end
  for name in pairs(before) do
    prometheus.webhook_pending(name, 0)
  end
end

local function status_of(ws, al, dir)
  local list = setmetatable({}, json.array_mt)
  local now = clock.mono_ns() / 1e9
  for i, w in ipairs(ws) do
    local n, bytes, file = 0, 0, 0
    if w.q then
      n, bytes, file = w.q:pending()
    end
    prometheus.webhook_pending(w.hook.name, n)
    list[i] = {
      name = w.hook.name, url = w.hook.public_url, format = w.hook.format,
      signed = w.hook.secret ~= nil, pending = n, pending_bytes = bytes,
      queue_file_bytes = file, delivered = w.delivered, failed = w.failed,
      dropped = w.dropped, errors = w.errors,
      last_error = w.last_error or json.null,
      last_error_at = w.last_error_at or json.null,
      last_delivered_at = w.last_delivered_at or json.null,
      attempts = w.attempts,
      next_attempt_in_s = (n > 0 and w.next_at > now)
        and math.floor((w.next_at - now) * 10 + 0.5) / 10 or 0,
    }
  end
  return json.encode({ hooks = list, alerts = alerts.active(al),
    feed = hooks.feed_stats(), state_dir = dir })
end

local function previous()
  local text = hooks.status()
  local ok, t = pcall(json.decode, text or "")
  local by = {}
  if ok and type(t) == "table" and type(t.hooks) == "table" then
    for _, h in ipairs(t.hooks) do
      if type(h) == "table" and type(h.name) == "string" then
        for k, v in pairs(h) do
          if v == json.null then
            h[k] = nil
          end
        end
        by[h.name] = h
      end
    end
  end
  return by
end

--- What the hooks thread said last: {hooks = [...], alerts = [...], feed,
-- state_dir}; empty lists when no hooks thread runs (or before its first
-- word).
function M.status()
  local ok, t = pcall(json.decode, hooks.status() or "")
  if not ok or type(t) ~= "table" then
    t = {}
  end
  t.hooks = type(t.hooks) == "table" and t.hooks or json.array()
  t.alerts = type(t.alerts) == "table" and t.alerts or json.array()
  return t
end

-- ---- events while horcrux was down --------------------------------------
--
-- The collector feeds the events it reads while horcrux runs. So that a
-- kill -9, a crash or a restart does not lose what the engine did
-- meanwhile, the hooks thread keeps a mark on disk (DIR/hooks/events.mark,
-- hooks.mark_save): the time of the newest container event it accepted,
-- saved once the batch that held it is fsynced in the queues. The first
-- hooks thread of a process asks the engine (the first source of
-- fallback.lua's order that gives events) for the events after the mark,
-- up to a moment after the collector began to feed every event
-- (hooks.feed_since: its first list; with no collector, at once), and
-- accepts them first; the feed waits meanwhile, and an event of that
-- window that the collector feeds as well is taken once. The
-- engine keeps its last 256 events of every type (moby's eventsLimit):
-- what happened before those while horcrux was down is gone, and the log
-- says when that may be the case.

local EVENTS_KEPT, EVENTS_MARGIN = 256, 16 -- as the collector's

local function event_key(ev)
  return tostring(ev.time_ns) .. " " .. tostring(ev.id) .. " "
    .. tostring(ev.action)
end

local function events_source()
  for _, src in ipairs(config.sources()) do
    if type(src) == "table" and type(src.events) == "function" then
      return src
    end
  end
end

-- Saves ns as the mark when it is newer; a failure is logged once.
local function save_mark(st, ns)
  if not st.mark_dir or math.type(ns) ~= "integer"
      or (st.mark and ns <= st.mark) then
    return
  end
  local ok, err = hooks.mark_save(st.mark_dir, ns)
  if ok then
    st.mark, st.mark_error = ns, nil
  elseif st.mark_error ~= tostring(err) then
    st.mark_error = tostring(err)
    log.error("hooks: %s: events that happen while horcrux is down will "
      .. "not be replayed after this point", st.mark_error)
  end
end

-- The mark's time; nil when there was none (the first start with hooks)
-- or it was damaged, and now is saved as the mark instead.
local function load_mark(st, now)
  local mark, err = hooks.mark_load(st.mark_dir)
  if mark == nil then
    log.error("hooks: %s; a new mark saved: only the events since horcrux "
      .. "started are replayed", tostring(err))
  end
  if not mark then
    save_mark(st, now)
    return nil
  end
  st.mark = mark
  return mark
end

-- The engine's container events after the mark, up to now (once the
-- collector's feed began, or the wait for it ended): {ev, ...}, remembered
-- in st.replayed.
local function replay(st, now)
  -- no mark (the first start with hooks, or a damaged one): the events
  -- since horcrux started, which the collector, listing first, does not feed
  local mark = load_mark(st, now)
  local since = mark and "while horcrux was down" or "when horcrux started"
  mark = mark or st.started_ns
  local src = mark and events_source()
  if not mark or mark >= now then
    return {}
  elseif not src then
    log.warn("hooks: no source gives events: the events since %s (%s) "
      .. "are not replayed", time.format(mark), since)
    return {}
  end
  local ok, evs, n = pcall(src.events, mark + 1, now, { stall = 2 })
  if not ok or type(evs) ~= "table" then
    log.warn("hooks: cannot ask the engine for the events since %s (%s): %s",
      time.format(mark), since, tostring(ok and n or evs))
    return {}
  end
  local out = {}
  for _, ev in ipairs(evs) do
    if math.type(ev.time_ns) == "integer" and ev.time_ns > mark then
      out[#out + 1] = ev
      st.replayed[event_key(ev)] = true
    end
  end
  st.replay_until = now
  if (n or 0) >= EVENTS_KEPT - EVENTS_MARGIN then
    log.warn("hooks: the engine gave %d events since %s: it keeps its last "
      .. "%d, so the oldest of that time may be missing", n,
      time.format(mark), EVENTS_KEPT)
  end
  log.info("hooks: %d container events since %s (%s) replayed", #out,
    time.format(mark), since)
  return out
end

-- ---- the firing alerts across a restart -----------------------------------
--
-- Kept beside the mark (DIR/hooks/alerts.json, replaced whole and fsynced
-- after the queues that hold their notifications are): a restart, a kill -9
-- or a reload goes on with the same alerts, so one that fired gets its
-- resolved, with its own fingerprint and starts_at, and one that still
-- holds is not fired twice. A crash before the save replays the events
-- (the mark comes after), which fire the same alert again.

local ALERTS_FILE = "alerts.json"

-- The alerts a previous thread or process left; the resolutions of those
-- whose rule is gone go out first.
local function restore_alerts(st, now)
  local f = io.open(st.mark_dir .. "/" .. ALERTS_FILE, "rb")
  if not f then
    return
  end
  local text = f:read("a")
  f:close()
  local out, err = alerts.restore(st.al, text or "", now)
  if not out then
    log.error("hooks: %s/%s: %s; the alerts that fired before are "
      .. "forgotten", st.mark_dir, ALERTS_FILE, err)
    return
  end
  st.restored = out
  log.info("hooks: %d firing alerts taken over, %d of rules gone resolved",
    #alerts.active(st.al) + #out, #out)
end

local function save_alerts(st)
  if not st.alerts_dirty or not st.mark_dir then
    return
  end
  local ok, err = hooks.file_save(st.mark_dir, ALERTS_FILE,
    alerts.dump(st.al))
  if ok then
    st.alerts_dirty, st.alerts_error = nil, nil
  elseif st.alerts_error ~= tostring(err) then
    st.alerts_error = tostring(err)
    log.error("hooks: %s: the firing alerts would be forgotten by a restart",
      st.alerts_error)
  end
end

-- The view after a start holds nothing until the collector's first list
-- and round of samples: a restored threshold alert judged over it would
-- end at once. True once the view can be judged.
local function view_ready(st)
  if not st.view_wait then
    return true
  end
  local now = clock.mono_ns()
  if hooks.feed_since() ~= nil and not st.listed_at then
    st.listed_at = now + math.floor(st.interval * 1e9)
  end
  if now >= st.view_wait or (st.listed_at and now >= st.listed_at) then
    st.view_wait = nil
  end
  return st.view_wait == nil
end

-- ---- the loop ----------------------------------------------------------------

-- Alert events into the batch; the alerts are saved once it is on disk.
local function add_alerts(st, batch, list)
  for _, a in ipairs(list) do
    batch[#batch + 1] = a
    st.alerts_dirty = true
  end
end

-- One container event into the batch, with the alerts it fires.
local function accept(st, ev, batch, now)
  batch[#batch + 1] = M.container_event(ev)
  add_alerts(st, batch, alerts.observe(st.al, ev, now, st.view))
  if math.type(ev.time_ns) == "integer" and ev.time_ns > (st.newest or 0) then
    st.newest = ev.time_ns
  end
end

-- An event the replay gave already (the collector read it too).
local function replayed(st, ev)
  return st.replay_until ~= nil and ev.time_ns <= st.replay_until
    and st.replayed[event_key(ev)] == true
end

-- The replay of a start, once the collector feeds every event (or it
-- waited long enough: an engine that does not answer, or no collector):
-- true while it still waits.
local function replay_waits(st)
  if not st.replay_wait then
    return false
  end
  if hooks.feed_since() == nil and clock.mono_ns() < st.replay_wait then
    return true
  end
  st.replay_wait = nil
  st.replay = replay(st, clock.now_ns())
  return false
end

-- The rules over the view, once per interval.
local function evaluate(st, batch, now)
  if clock.mono_ns() < st.eval_at or not view_ready(st) then
    return
  end
  st.eval_at = clock.mono_ns() + math.floor(st.interval * 1e9)
  local ok, fired = pcall(alerts.evaluate, st.al, st.view, now)
  if ok then
    add_alerts(st, batch, fired)
    st.changed = st.changed or #fired > 0
  else
    log.error("hooks: alert rules failed: %s", tostring(fired))
  end
end

local function turn(st)
  -- while a POST runs the turn waits on its socket, not on the feed: its
  -- end is settled at once (an event waits up to POLL_S)
  local wait = next_wait(st)
  local posting = st.poster:running() > 0
  local evs = {}
  if replay_waits(st) then -- the feed waits for the replay
    if not posting then
      clock.sleep(POLL_S)
    end
  else
    evs = hooks.take(posting and 0 or wait)
  end
  local now = clock.now_ns()
  local batch = {}
  add_alerts(st, batch, st.restored or {})
  st.restored = nil
  for _, ev in ipairs(st.replay or {}) do
    accept(st, ev, batch, now)
  end
  st.replay = nil
  for _, text in ipairs(evs) do
    local ok, ev = pcall(json.decode, text)
    -- the collector's {id, action = "network"} is not an event of the
    -- engine: it has no time
    if ok and type(ev) == "table" and math.type(ev.time_ns) == "integer"
        and not replayed(st, ev) then
      accept(st, ev, batch, now)
    end
  end
  evaluate(st, batch, now)
  for _, ev in ipairs(batch) do
    enqueue(st.ws, ev)
  end
  if sync(st.ws) then -- accepted from here on: on disk
    save_alerts(st) -- before the mark: a crash between replays the events
    save_mark(st, st.newest)
  end
  local delivered = deliver(st, posting and wait or 0)
  if #batch > 0 or delivered or st.changed or clock.mono_ns() >= st.status_at then
    hooks.set_status(status_of(st.ws, st.al, st.dir))
    st.changed = false
    st.status_at = clock.mono_ns() + 1e9
  end
end

function M.run(opts)
  local cfg = opts.hooks or { hooks = {}, alerts = {} }
  local stopping = opts.stopping or function() return false end
  local st = {
    dir = opts.state_dir or "/var/lib/horcrux",
    interval = (opts.interval and opts.interval > 0) and opts.interval or 1,
    view = require "horcrux.view",
    al = alerts.new(cfg.alerts),
    eval_at = 0, status_at = 0,
    replayed = {}, -- event_key -> true: the events the replay gave
    -- when serve began: a first start replays the events since (replay)
    started_ns = math.type(opts.started_ns) == "integer"
      and opts.started_ns > 0 and opts.started_ns or nil,
  }
  -- the process's first hooks thread: nothing said a status before it (a
  -- reload's thread finds what the collector fed meanwhile in the feed)
  local first = hooks.status() == nil
  local before = previous()
  st.ws = open_queues(cfg.hooks, st.dir, before)
  -- the mark sits beside the queues, kept by whoever holds one of them
  -- (not by a second horcrux on the same --state-dir, refused its queues)
  for _, w in ipairs(st.ws) do
    if w.q then
      st.mark_dir = st.dir .. "/hooks"
    end
  end
  metrics_series(st.ws, before)
  hooks.set_status(status_of(st.ws, st.al, st.dir))
  if #cfg.hooks == 0 and #cfg.alerts == 0 then
    while not stopping() do -- nothing to do until a reload brings some
      while #hooks.take(0) > 0 do end
      clock.sleep(TURN_S)
    end
    return
  end
  log.info("hooks: %d hooks, %d alert rules, queues in %s/hooks",
    #cfg.hooks, #cfg.alerts, st.dir)
  st.poster = hooks.poster()
  hooks.attach()
  if first then
    -- the collector's first list may take a few rounds (a slow engine);
    -- without a collector (--interval 0) nothing is fed: no wait
    st.view_wait = clock.mono_ns() + (opts.interval and opts.interval > 0
      and math.floor(math.max(10, 3 * opts.interval) * 1e9) or 0)
  end
  if st.mark_dir then
    restore_alerts(st, clock.now_ns())
    if first then
      st.replay_wait = st.view_wait
    else
      load_mark(st, clock.now_ns())
    end
  end
  local ok, err = pcall(function()
    while not stopping() do
      turn(st)
    end
  end)
  hooks.detach() -- what is fed meanwhile waits for the next generation
  st.poster:close() -- a POST cut short stays pending on disk
  sync(st.ws)
  hooks.set_status(status_of(st.ws, st.al, st.dir))
  for _, w in ipairs(st.ws) do
    if w.q then
      w.q:close() -- before the next generation opens it (flock)
    end
  end
  if not ok then
    error(err, 0)
  end
end

return M
