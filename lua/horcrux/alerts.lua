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
-- container stops running. Alerts live in memory: a restart of horcrux
-- starts over (a condition that still holds fires again with a new
-- starts_at).
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

local function fire(st, rule, id, meta, value, now, out)
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
    starts_at = time.format(now), fingerprint = hooks
      .hmac_sha256("horcrux-alert", key):sub(1, 16),
    order = st.order }
  st.active[key] = a
  local ev = {}
  for k, v in pairs(a) do
    ev[k] = v
  end
  ev.order, ev.time = nil, time.format(now)
  out[#out + 1] = ev
  return a
end

local function resolve(st, key, now, out)
  local a = st.active[key]
  if not a then
    return
  end
  st.active[key] = nil
  local ev = {}
  for k, v in pairs(a) do
    ev[k] = v
  end
  ev.order, ev.expires = nil, nil
  ev.status, ev.ends_at, ev.time = "resolved", time.format(now),
    time.format(now)
  out[#out + 1] = ev
end

local THRESHOLD = { cpu_above = true, memory_above = true, when = true }

local function test(rule, rec, meta)
  if rule.kind == "cpu_above" then
    local v = rec.cpu_usage_percent
    return type(v) == "number" and v > rule.cpu_above, v
  elseif rule.kind == "memory_above" then
    local v = rec.memory_percent
    return type(v) == "number" and v > rule.memory_above, v
  end
  local ok, yes, value = hooks.bounded(BUDGET, rule.when, rec, meta)
  return ok and yes and true or false, value
end

--- The threshold rules over every record of the view; the event rules'
-- alerts that have expired.
function M.evaluate(st, view, now)
  local out, seen, metas = {}, {}, {}
  for _, m in ipairs(view.metas()) do
    metas[m.full_id] = m
  end
  local now_s = now / 1e9
  for _, rec in ipairs(view.all()) do
    local meta = metas[rec.id] or { name = rec.name }
    for _, rule in ipairs(st.rules) do
      if THRESHOLD[rule.kind] and applies(rule, meta) then
        local key = rule.name .. "/" .. rec.id
        local hot, value = test(rule, rec, meta)
        if value == json.null then
          value = nil
        end
        seen[key] = true
        if hot then
          st.pending[key] = st.pending[key] or now_s
          if now_s - st.pending[key] >= rule.for_s then
            fire(st, rule, rec.id, meta, value, now, out)
          end
        else
          st.pending[key] = nil
          resolve(st, key, now, out)
        end
      end
    end
  end
  for key, a in pairs(st.active) do
    if (a.expires == nil and not seen[key]) or (a.expires and now_s >= a.expires) then
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

--- A container event (the collector's {id, action, name, image, attrs,
-- time_ns}) for the event rules.
function M.observe(st, ev, now, view)
  local out = {}
  local id, action = ev.id, ev.action
  if type(id) ~= "string" or type(action) ~= "string" then
    return out
  end
  local now_s = now / 1e9
  local meta
  for _, rule in ipairs(st.rules) do
    local key = rule.name .. "/" .. id
    if action == "destroy" then
      resolve(st, key, now, out)
      st.starts[key] = nil
    elseif rule.kind == "exit_nonzero" then
      meta = meta or meta_of(view, ev)
      local code = tonumber(type(ev.attrs) == "table" and ev.attrs.exitCode)
      if action == "die" and code and code ~= 0 and applies(rule, meta) then
        local a = fire(st, rule, id, meta, code, now, out)
        a.expires = now_s + rule.resolve_after
      elseif action == "start" or action == "restart" then
        resolve(st, key, now, out)
      end
    elseif rule.kind == "restarts" and (action == "start" or action == "restart") then
      meta = meta or meta_of(view, ev)
      if applies(rule, meta) then
        local times = st.starts[key] or {}
        local kept = {}
        for _, t in ipairs(times) do
          if now_s - t < rule.within_s then
            kept[#kept + 1] = t
          end
        end
        kept[#kept + 1] = now_s
        st.starts[key] = kept
        if #kept >= rule.restarts then
          local a = fire(st, rule, id, meta, #kept, now, out)
          a.value = #kept
          a.expires = now_s + rule.resolve_after
        end
      end
    end
  end
  return out
end

--- The firing alerts, oldest first.
function M.active(st)
  local list = {}
  for _, a in pairs(st.active) do
    list[#list + 1] = a
  end
  table.sort(list, function(x, y) return x.order < y.order end)
  local out = setmetatable({}, json.array_mt)
  for i, a in ipairs(list) do
    local c = {}
    for k, v in pairs(a) do
      c[k] = v
    end
    c.order, c.expires = nil, nil
    out[i] = c
  end
  return out
end

return M
