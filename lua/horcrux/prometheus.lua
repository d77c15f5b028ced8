--- horcrux.prometheus: GET /metrics. The containers under cAdvisor's names
-- (horcrux.view.prometheus, from the live view: no daemon call), then
-- horcrux's own metrics (horcrux.telemetry, one registry for the process).
--
--   prometheus.answer(req) -> status, body, headers
--       the Prometheus text format 0.0.4, or OpenMetrics 1.0.0 when the
--       Accept header asks for application/openmetrics-text; gzip when
--       Accept-Encoding allows it
--   prometheus.request(route, method, status, seconds)   the dispatcher's
--   prometheus.round(summary)                            the collector's
--   prometheus.source_error(source, kind)                the collector's
--   prometheus.webhook(hook, outcome [, n])              the hooks thread's:
--       outcome "delivered" | "dropped" (a delivery's end) or "failed" (an
--       attempt that got no 2xx); n = 0 makes the series at 0
--   prometheus.webhook_pending(hook, n)                  the hooks thread's
--
-- horcrux's own families:
--   horcrux_http_requests_total{route,method,status}     counter
--   horcrux_http_request_duration_seconds{route}         histogram
--   horcrux_collector_round_duration_seconds             histogram
--   horcrux_collector_samples_total{source}              counter
--   horcrux_source_errors_total{source,kind}             counter
--   horcrux_view_containers, horcrux_view_bytes          gauges (at scrape)
--   horcrux_stream_subscribers{topic,transport}          gauge (at scrape,
--   horcrux_stream_overflows_total{topic,transport}      counter  the hub's)
--   horcrux_log_follows                                  gauge (at scrape)
--   horcrux_webhook_deliveries_total{hook,outcome}       counter
--   horcrux_webhook_failed_attempts_total{hook}          counter
--   horcrux_webhook_pending{hook}                        gauge
--
-- Another part of horcrux adds its own figures the same way (the hook):
--   local telemetry = require "horcrux.telemetry"
--   telemetry.gauge("horcrux_stream_subscribers", "Clients following ...")
--   telemetry.set("horcrux_stream_subscribers", {stream = "stats"}, n)
--   telemetry.counter("horcrux_webhook_deliveries_total", "...")
--   telemetry.inc("horcrux_webhook_deliveries_total", {outcome = "ok"})
-- A family appears at /metrics once it has a series; declaring is
-- idempotent, so each state (each worker) may declare at load.
local telemetry = require "horcrux.telemetry"
local view = require "horcrux.view"
local hub = require "horcrux.hub"
local cgroup = require "horcrux.cgroup"

local M = {}

local DURATION_BUCKETS = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
  0.1, 0.25, 0.5, 1, 2.5, 5, 10 }
local ROUND_BUCKETS = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
  0.5, 1, 2.5, 5 }

local declared = false

local function declare()
  if declared then
    return
  end
  telemetry.counter("horcrux_http_requests_total",
    "Requests answered, by route pattern, method and status.")
  telemetry.histogram("horcrux_http_request_duration_seconds",
    "Time from a request's start (its head read) to its answer, by route pattern.",
    DURATION_BUCKETS)
  telemetry.histogram("horcrux_collector_round_duration_seconds",
    "Wall time of a collector round (list or events, then sampling).",
    ROUND_BUCKETS)
  telemetry.counter("horcrux_collector_samples_total",
    "Containers sampled by the collector, by the source that answered.")
  telemetry.counter("horcrux_source_errors_total",
    "Failures of a source asked by the collector, by source and kind.")
  telemetry.gauge("horcrux_view_containers",
    "Containers the live view holds.")
  telemetry.gauge("horcrux_view_bytes",
    "Bytes the live view holds (records, metas, history, the sampler's).")
  telemetry.gauge("horcrux_stream_subscribers",
    "Clients following a stream now, by topic family and transport.")
  telemetry.gauge("horcrux_log_follows",
    "Log follows' transfers from the engine under way (a connection each).")
  telemetry.counter("horcrux_stream_overflows_total",
    "Stream subscribers ended because they fell behind (overflow).")
  telemetry.counter("horcrux_webhook_deliveries_total",
    "Webhook deliveries ended, by hook and outcome (delivered, dropped).")
  telemetry.counter("horcrux_webhook_failed_attempts_total",
    "Webhook POSTs that got no 2xx answer (retried, or then dropped).")
  telemetry.gauge("horcrux_webhook_pending",
    "Webhook deliveries queued on disk and not yet delivered, by hook.")
  declared = true
end
M.declare = declare

-- The handles of the request series this state has used (telemetry.series):
-- counts[route][method][status] and durations[route]. A request then costs
-- a few table reads and one telemetry.bump, not two label tables to build,
-- sort and look up under the lock (a tenth of a small request's
-- instructions). Bounded as the series are (a series with no room gets no
-- handle and goes the slow way, counted under the family's overflow).
local counts, durations = {}, {}
local series, bump = telemetry.series, telemetry.bump

-- The slow way: a stale handle (a reset) or a series with no room.
local function request_slow(route, method, status, seconds)
  counts, durations = {}, {}
  declare()
  telemetry.inc("horcrux_http_requests_total",
    { route = route, method = method, status = status })
  telemetry.observe("horcrux_http_request_duration_seconds",
    { route = route }, seconds)
end

--- Never raises (the dispatcher calls it for every request, unprotected):
-- a failure of the slow way is dropped.
function M.request(route, method, status, seconds)
  route = route or "(none)"
  local by_method = counts[route]
  local by_status = by_method and by_method[method]
  local c, d = by_status and by_status[status], durations[route]
  if c and d and bump(c, 1, d, seconds) then
    return
  end
  if math.type(status) ~= "integer" then
    status = 200 -- a stream object (hub.stream{}): it answers 200
    by_status = by_method and by_method[method]
  end
  if by_status == nil then
    by_method = by_method or {}
    counts[route] = by_method
    by_status = {}
    by_method[method] = by_status
  end
  local ok = pcall(function()
    declare()
    c = series("horcrux_http_requests_total",
      { route = route, method = method, status = status })
    d = series("horcrux_http_request_duration_seconds", { route = route })
  end)
  if not ok then
    pcall(request_slow, route, method, status, seconds)
    return
  end
  -- a series with no room has no handle: counted under the overflow
  by_status[status], durations[route] = c, d
  if c and d then
    bump(c, 1, d, seconds)
  elseif c or d then
    bump(c or d, c and 1 or seconds)
  end
end

function M.round(summary)
  declare()
  telemetry.observe("horcrux_collector_round_duration_seconds", nil,
    (summary.ms or 0) / 1000)
  for source, n in pairs(summary.by_source or {}) do
    telemetry.inc("horcrux_collector_samples_total",
      { source = tostring(source) }, n)
  end
end

function M.source_error(source, kind)
  declare()
  telemetry.inc("horcrux_source_errors_total",
    { source = tostring(source), kind = tostring(kind or "unknown") })
end

function M.webhook(hook, outcome, n)
  declare()
  if outcome == "failed" then
    telemetry.inc("horcrux_webhook_failed_attempts_total",
      { hook = tostring(hook) }, n)
  else
    telemetry.inc("horcrux_webhook_deliveries_total",
      { hook = tostring(hook), outcome = outcome }, n)
  end
end

function M.webhook_pending(hook, n)
  declare()
  telemetry.set("horcrux_webhook_pending", { hook = tostring(hook) }, n)
end

-- The hub's counts, read at scrape (the hub keeps them where subscribers
-- come and go: nothing is counted per message).
local function streams()
  for _, c in ipairs(hub.counts()) do
    local labels = { topic = c.topic, transport = c.transport }
    telemetry.set("horcrux_stream_subscribers", labels, c.subscribers)
    telemetry.set("horcrux_stream_overflows_total", labels, c.overflows)
  end
  telemetry.set("horcrux_log_follows", nil, hub.follows())
end

local TEXT = "text/plain; version=0.0.4; charset=utf-8"
local OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"

-- Whether header h lists token t with a q that is not 0.
local function accepts(h, t)
  if type(h) ~= "string" then
    return false
  end
  for part in h:gmatch("[^,]+") do
    local name = part:match("^%s*([^;%s]+)")
    local q = part:match(";%s*q%s*=%s*([%d.]+)")
    if name and name:lower() == t and (q == nil or tonumber(q) ~= 0) then
      return true
    end
  end
  return false
end
M.accepts = accepts

-- cAdvisor's machine families that dashboards divide by (a container's
-- share of the host: rate(cpu) / machine_cpu_cores, working set /
-- machine_memory_bytes), read at each scrape (two small files); a figure
-- the host does not give is left out. cAdvisor's boot_id, machine_id and
-- system_uuid labels are not given.
local MACHINE = {
  { "machine_cpu_cores", "Number of logical CPU cores.", cgroup.online_cpus },
  { "machine_memory_bytes", "Amount of memory installed on the machine.",
    cgroup.host_memory },
}

local function machine()
  local out = {}
  for _, m in ipairs(MACHINE) do
    local ok, v = pcall(m[3])
    v = ok and math.tointeger(v)
    if v and v > 0 then
      out[#out + 1] = ("# HELP %s %s\n# TYPE %s gauge\n%s %d\n"):format(
        m[1], m[2], m[1], m[1], v)
    end
  end
  return table.concat(out)
end
M.machine = machine

--- The text of /metrics: (body, openmetrics, containers).
function M.text(openmetrics)
  declare()
  local fp = view.footprint()
  telemetry.set("horcrux_view_containers", nil, fp.containers)
  telemetry.set("horcrux_view_bytes", nil, fp.bytes)
  streams()
  local body, n = view.prometheus({ openmetrics = openmetrics })
  body = body .. machine() .. telemetry.render(openmetrics)
  if openmetrics then
    body = body .. "# EOF\n"
  end
  return body, n
end

function M.answer(req)
  local h = req.headers or {}
  local om = accepts(h.accept, "application/openmetrics-text")
  local body = M.text(om)
  local headers = { ["Content-Type"] = om and OPENMETRICS or TEXT,
    Vary = "Accept, Accept-Encoding" }
  if accepts(h["accept-encoding"], "gzip") then
    body = telemetry.gzip(body)
    headers["Content-Encoding"] = "gzip"
  end
  return 200, body, headers
end

return M
