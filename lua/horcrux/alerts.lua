--- horcrux.alerts: alert rules over the live view and the engine's
-- container events. The hooks thread of `horcrux serve` runs them: each
-- collector interval it evaluates the view, and it observes every
-- container event; an alert that fires or resolves is an event of type
-- "alert" that goes through the hooks like any other.
--
--   alerts.check(rules) -> rules (defaults filled) | raises
--   alerts.new(rules)   -> state
--   alerts.observe(state, ev, now_ns)  -> {alert event, ...}
--   alerts.evaluate(state, view, now_ns) -> {alert event, ...}
--   alerts.active(state) -> {alert, ...}   (GET /api/alerts)
--   alerts.dump(state) -> text;  alerts.restore(state, text, now_ns)
--       -> {alert event, ...}   the firing alerts across a restart
--
-- A rule (hooks.lua's alerts = {...}) has a name and one condition:
--
--   cpu_above = P      the container's CPU % (100 = one core) above P
--   memory_above = P   its memory % of its limit above P
--   when = function(record, meta) -> boolean[, value]   your own test
--   exit_nonzero = true   it died with a non-zero exit code (resolved when
--                      it starts again, or resolve_after seconds later,
--                      default 300)
--   restarts = N       it started N times within within_s (default 300)
--                      seconds (resolved within_s after the last start)
--
-- and optionally: for_s (the threshold conditions must hold this long
-- before the alert fires; default 0), severity (default "warning"),
-- summary (text; {name}, {value}, {threshold} are replaced), labels
-- ({k = "v"} added to the alert's labels), label ("key" or "key=value": the
-- containers it applies to), match = function(meta) -> boolean.
--
-- A threshold alert resolves when its condition stops holding or its
-- container stops running; while its figure is unknown (a first sample has
-- no CPU %) it stays as it is. An event rule's alert starts and ends at its
-- events' times (the die, the start), not when the hooks thread saw them;
-- one that expires ends at resolve_after after its start.
--
-- The firing alerts outlive a restart (dump/restore; hooks_run keeps them
-- beside the queues): an alert goes on with its fingerprint and starts_at
-- until its condition ends (what the engine did meanwhile is replayed to
-- observe), as Alertmanager keeps one alert per fingerprint; one whose rule
-- is gone from hooks.lua is resolved.
--
-- An alert event: {type = "alert", status = "firing" | "resolved",
-- alert = rule name, id = container id, name = container name, value,
-- labels = {alertname, container, container_id, image, severity, ...},
-- annotations = {summary}, starts_at, ends_at (resolved only), time,
-- fingerprint}.
local json = require "horcrux.json"
local time = require "horcrux.time"
local hooks = require "horcrux.hooks"
local BUDGET = require("horcrux.hooks_check").BUDGET

local M = {}

local CONDITIONS = { "cpu_above", "memory_above", "when", "exit_nonzero",
  "restarts" }
local KNOWN = {
  name = "string", cpu_above = "number", memory_above = "number",
  when = "function", exit_nonzero = "boolean", restarts = "number",
  within_s = "number", for_s = "number", resolve_after = "number",
  severity = "string", summary = "string", labels = "table",
  label = "string", match = "function",
}

local function fail(i, fmt, ...)
  error(("hooks.lua: alerts[%d]: " .. fmt):format(i, ...), 0)
end

local function check_rule(i, r, names)
  if type(r) ~= "table" then
    fail(i, "a rule is a table {name = ..., cpu_above = ...}, got a %s",
      type(r))
  end
  for k, v in pairs(r) do
    if not KNOWN[k] then
      fail(i, "unknown field %q", tostring(k))
    end
    if type(v) ~= KNOWN[k] then
      fail(i, "%s must be a %s, got a %s", k, KNOWN[k], type(v))
    end
  end
  if not r.name or not r.name:match("^[%a_][%w_:]*$") then
    fail(i, "name is required: letters, digits, _ and : (an Alertmanager "
      .. "alertname)")
  end
  if names[r.name] then
    fail(i, "name %q is alerts[%d]'s too", r.name, names[r.name])
  end
  names[r.name] = i
  local kind
  for _, c in ipairs(CONDITIONS) do
    if r[c] ~= nil then
      if kind then
        fail(i, "one condition per rule: %s and %s", kind, c)
      end
      kind = c
    end
  end
  if not kind then
    fail(i, "no condition: give one of %s", table.concat(CONDITIONS, ", "))
  end
  local out = {}
  for k, v in pairs(r) do
    out[k] = v
  end
  out.kind = kind
  out.for_s = r.for_s or 0
  out.within_s = r.within_s or 300
  out.resolve_after = r.resolve_after or (kind == "restarts" and out.within_s
    or 300)
  out.severity = r.severity or "warning"
  if kind == "exit_nonzero" and r.exit_nonzero ~= true then
    fail(i, "exit_nonzero must be true")
  end
  if kind == "restarts" and (math.type(r.restarts) ~= "integer"
      or r.restarts < 2) then
    fail(i, "restarts must be an integer of at least 2")
  end
  for _, k in ipairs({ "cpu_above", "memory_above", "for_s", "within_s",
    "resolve_after" }) do
    if out[k] ~= nil and (out[k] ~= out[k] or out[k] < 0) then
      fail(i, "%s must be a number >= 0", k)
    end
  end
  for k, v in pairs(r.labels or {}) do
    if type(k) ~= "string" or type(v) ~= "string" or not k:match("^[%a_][%w_]*$") then
      fail(i, "labels: each is name = \"value\" (name: letters, digits, _)")
    end
  end
  if r.label then
    out.label_key, out.label_value = r.label:match("^([^=]+)=(.*)$")
    out.label_key = out.label_key or r.label
  end
  return out
end

function M.check(rules)
  if type(rules) ~= "table" then
    error("hooks.lua: alerts must be a list of rules", 0)
  end
  local out, names = {}, {}
  for k in pairs(rules) do
    if math.type(k) ~= "integer" or k < 1 or k > #rules then
      error("hooks.lua: alerts must be a list of rules", 0)
    end
  end
  for i = 1, #rules do
    out[i] = check_rule(i, rules[i], names)
  end
  return out
end

function M.new(rules)
  return { rules = rules or {}, active = {}, pending = {}, starts = {},
    order = 0 }
end

local function str(v)
  return type(v) == "string" and v or nil
end

local function applies(rule, meta)
  meta = meta or {}
  if rule.label_key then
    local v = type(meta.labels) == "table" and meta.labels[rule.label_key]
    if v == nil or (rule.label_value and v ~= rule.label_value) then
      return false
    end
  end
  if rule.match then
    local ok, yes = hooks.bounded(BUDGET, rule.match, meta)
    return ok and yes and true or false
  end
  return true
end

local function summary(rule, name, value)
  local v = math.type(value) == "float" and ("%.1f"):format(value)
    or tostring(value)
  if rule.summary then
    local subs = { name = name, value = v,
      threshold = tostring(rule.cpu_above or rule.memory_above or "") }
    return (rule.summary:gsub("{(%w+)}", function(k) return subs[k] end))
  end
  if rule.kind == "cpu_above" then
    return ("%s: CPU %s %% above %s %% for %s s"):format(name, v,
      rule.cpu_above, rule.for_s)
  elseif rule.kind == "memory_above" then
    return ("%s: memory %s %% of its limit, above %s %%"):format(name, v,
      rule.memory_above)
  elseif rule.kind == "exit_nonzero" then
    return ("%s died with exit code %s"):format(name, v)
  elseif rule.kind == "restarts" then
    return ("%s started %s times within %s s"):format(name, v, rule.within_s)
  end
  return ("%s: %s"):format(name, rule.name)
end

local function copy(a)
  local ev = {}
  for k, v in pairs(a) do
    ev[k] = v
  end
  ev.order, ev.expires = nil, nil
  return ev
end

local function fire(st, rule, id, meta, value, at, out)
  local key = rule.name .. "/" .. id
  local a = st.active[key]
  if a then
    a.value = value
    return a
  end
  local name = str(meta.name) or id:sub(1, 12)
  local labels = { alertname = rule.name, container = name,
    container_id = id:sub(1, 12), severity = rule.severity,
    image = str(meta.image) }
  for k, v in pairs(rule.labels or {}) do
    labels[k] = v
  end
  st.order = st.order + 1
  a = { type = "alert", status = "firing", alert = rule.name, id = id,
    name = name, value = value, labels = labels,
    annotations = { summary = summary(rule, name, value) },
    starts_at = time.format(at), fingerprint = hooks
      .hmac_sha256("horcrux-alert", key):sub(1, 16),
    order = st.order }
  st.active[key] = a
  local ev = copy(a)
  ev.time = a.starts_at
  out[#out + 1] = ev
  return a
end

-- at: when the condition ended (ns)
local function resolve(st, key, at, out)
  local a = st.active[key]
  if not a then
    return
  end
  st.active[key] = nil
  local ev = copy(a)
  ev.status, ev.ends_at = "resolved", time.format(at)
  ev.time = ev.ends_at
  out[#out + 1] = ev
end

local THRESHOLD = { cpu_above = true, memory_above = true, when = true }

-- hot (nil: the figure is not known yet), value
local function test(rule, rec, meta)
  local field = rule.kind == "cpu_above" and "cpu_usage_percent"
    or rule.kind == "memory_above" and "memory_percent"
  if field then
    local v = rec[field]
    if type(v) ~= "number" then
      return nil
    end
    return v > rule[rule.kind], v
  end
  local ok, yes, value = hooks.bounded(BUDGET, rule.when, rec, meta)
  return ok and yes and true or false, value
end

-- One threshold rule over one record of the view.
local function judge(st, rule, rec, meta, now, out)
  local key = rule.name .. "/" .. rec.id
  local hot, value = test(rule, rec, meta)
  if value == json.null then
    value = nil
  end
  if hot then
    st.pending[key] = st.pending[key] or now
    if now - st.pending[key] >= rule.for_s * 1e9 then
      fire(st, rule, rec.id, meta, value, now, out)
    end
  elseif hot == false then
    st.pending[key] = nil
    resolve(st, key, now, out)
  end
  return key
end

--- The threshold rules over every record of the view; the event rules'
-- alerts that have expired.
function M.evaluate(st, view, now)
  local out, seen, metas = {}, {}, {}
  for _, m in ipairs(view.metas()) do
    metas[m.full_id] = m
  end
  for _, rec in ipairs(view.all()) do
    local meta = metas[rec.id] or { name = rec.name }
    for _, rule in ipairs(st.rules) do
      if THRESHOLD[rule.kind] and applies(rule, meta) then
        seen[judge(st, rule, rec, meta, now, out)] = true
      end
    end
  end
  for key, a in pairs(st.active) do
    if a.expires and now >= a.expires then
      resolve(st, key, a.expires, out)
    elseif a.expires == nil and not seen[key] then
      resolve(st, key, now, out)
    end
  end
  for key in pairs(st.pending) do
    if not seen[key] then
      st.pending[key] = nil
    end
  end
  return out
end

local NOT_LABELS = { name = true, image = true, exitCode = true,
  signal = true, execDuration = true, oldName = true }

local function meta_of(view, ev)
  local m = view and view.meta(ev.id)
  if type(m) == "table" then
    return m
  end
  local labels = {}
  for k, v in pairs(type(ev.attrs) == "table" and ev.attrs or {}) do
    if not NOT_LABELS[k] then
      labels[k] = v
    end
  end
  return { name = ev.name, image = ev.image, labels = labels }
end

-- The restarts rule at a start at `at` (ns): its alert when the starts
-- within within_s reach the count.
local function count_start(st, rule, key, id, meta, at, out)
  local kept = {}
  for _, t in ipairs(st.starts[key] or {}) do
    if at - t < rule.within_s * 1e9 then
      kept[#kept + 1] = t
    end
  end
  kept[#kept + 1] = at
  st.starts[key] = kept
  if #kept >= rule.restarts then
    local a = fire(st, rule, id, meta, #kept, at, out)
    a.value = #kept
    a.expires = at + math.floor(rule.resolve_after * 1e9)
  end
end

--- A container event (the collector's {id, action, name, image, attrs,
-- time_ns}) for the event rules; its alerts start and end at the event's
-- time (now when it has none).
function M.observe(st, ev, now, view)
  local out = {}
  local id, action = ev.id, ev.action
  if type(id) ~= "string" or type(action) ~= "string" then
    return out
  end
  local at = math.type(ev.time_ns) == "integer" and ev.time_ns or now
  local starts = action == "start" or action == "restart"
  local meta
  for _, rule in ipairs(st.rules) do
    local key = rule.name .. "/" .. id
    if action == "destroy" then
      resolve(st, key, at, out)
      st.starts[key] = nil
    elseif rule.kind == "exit_nonzero" then
      meta = meta or meta_of(view, ev)
      local code = tonumber(type(ev.attrs) == "table" and ev.attrs.exitCode)
      if action == "die" and code and code ~= 0 and applies(rule, meta) then
        local a = fire(st, rule, id, meta, code, at, out)
        a.expires = at + math.floor(rule.resolve_after * 1e9)
      elseif starts then
        resolve(st, key, at, out)
      end
    elseif rule.kind == "restarts" and starts then
      meta = meta or meta_of(view, ev)
      if applies(rule, meta) then
        count_start(st, rule, key, id, meta, at, out)
      end
    end
  end
  return out
end

local function by_order(st)
  local list = {}
  for _, a in pairs(st.active) do
    list[#list + 1] = a
  end
  table.sort(list, function(x, y) return x.order < y.order end)
  return list
end

--- The firing alerts, oldest first.
function M.active(st)
  local out = setmetatable({}, json.array_mt)
  for i, a in ipairs(by_order(st)) do
    out[i] = copy(a)
  end
  return out
end

--- The firing alerts as text for restore (expiry and order kept).
function M.dump(st)
  return json.encode({ version = 1,
    alerts = setmetatable(by_order(st), json.array_mt) })
end

local SHAPE = { alert = "string", id = "string", name = "string",
  starts_at = "string", fingerprint = "string", labels = "table",
  annotations = "table" }

local function well_formed(a)
  if type(a) ~= "table" or math.type(a.order) ~= "integer"
      or (a.expires ~= nil and math.type(a.expires) ~= "integer") then
    return false
  end
  for k, t in pairs(SHAPE) do
    if type(a[k]) ~= t then
      return false
    end
  end
  return true
end

-- One alert of dump's text firing again in st; resolved now (its event
-- into out) when its rule is no longer there.
local function take_back(st, a, ruled, now, out)
  a.type, a.status, a.ends_at, a.time = "alert", "firing", nil, nil
  a.value = a.value ~= json.null and a.value or nil
  local key = a.alert .. "/" .. a.id
  st.active[key] = a
  st.order = math.max(st.order, a.order)
  if not ruled then
    resolve(st, key, now, out)
  end
end

--- Takes back the firing alerts of dump's text: those of a rule still in
-- the rules go on as they were; those of a rule gone are resolved now (the
-- events returned). nil, why for a text that is not dump's.
function M.restore(st, text, now)
  local ok, t = pcall(json.decode, text)
  if not ok or type(t) ~= "table" or t.version ~= 1
      or type(t.alerts) ~= "table" then
    return nil, "not a list of alerts"
  end
  local rules, out = {}, {}
  for _, r in ipairs(st.rules) do
    rules[r.name] = true
  end
  for _, a in ipairs(t.alerts) do
    if well_formed(a) then
      take_back(st, a, rules[a.alert], now, out)
    end
  end
  return out
end

return M
