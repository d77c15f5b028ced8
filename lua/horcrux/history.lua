--- horcrux.history: what each container's history in the live view says
-- (horcrux.view keeps a point a collector round; view_history.c).
--
--   history.duration(text)        -> seconds | nil, why   ("90", "90s",
--                                    "5m", "1h", "500ms"): a query checker
--   history.of(ref, window, step) -> answer | nil, msg, kind
--   history.summary(window, step) -> answer
--
-- An answer of of():
--   {"id", "name", "window_s", "step_s", "figures": [...],
--    "points": [{"t": RFC 3339, "cpu_percent": 12.5, ...}, ...],
--    "summary": {"cpu_percent": {"min", "mean", "max", "p90", "p99",
--                "count"} | null, ...}}
-- A point is one step: gauges (cpu_percent, memory_working_set_bytes,
-- pids) are the mean of the rounds in it, the *_per_second figures the
-- rate of their counter over it; a step without a round gives no point, a
-- figure no round had is null. The summary is worked out from the points.
-- summary() answers {"window_s", "step_s", "figures", "containers":
-- [{"id", "name", "summary"}]} for every container the view holds.
local view = require "horcrux.view"
local json = require "horcrux.json"

local M = {}

M.FIGURES = setmetatable({ "cpu_percent", "memory_working_set_bytes",
  "network_rx_bytes_per_second", "network_tx_bytes_per_second",
  "block_read_bytes_per_second", "block_write_bytes_per_second", "pids" },
  json.array_mt)

local UNITS = { ms = 0.001, s = 1, m = 60, h = 3600 }
local MAX_S = 86400

--- A duration of the query: a number of seconds, or with ms, s, m or h.
function M.duration(text)
  local num, unit = tostring(text):match("^(%d+%.?%d*)(%a*)$")
  local mul = UNITS[unit ~= "" and unit or "s"]
  local v = num and mul and tonumber(num) * mul
  if not v or v <= 0 or v > MAX_S then
    return nil, "a duration up to 24h expected (90, 90s, 5m, 1h, 500ms)"
  end
  return v
end

--- The step when none is asked: 1 s, or coarser so a window has at most
-- 900 points.
local function default_step(window)
  return math.max(1, math.ceil(window / 900))
end

local function steps(window, step)
  window = window or 300
  step = step or default_step(window)
  if step > window then
    return nil, "step is longer than the window", "bad_request"
  end
  if window / step > 10000 then
    return nil, "more than 10000 steps in the window", "bad_request"
  end
  return window, step
end

local function ns(s)
  return math.floor(s * 1e9 + 0.5)
end

function M.of(ref, window, step)
  local w, s = steps(window, step)
  if not w then
    return nil, s, "bad_request"
  end
  local id, err, kind = view.find(ref)
  if not id then
    return nil, err, kind
  end
  local h = assert(view.history(id, { window = ns(w), step = ns(s) }))
  local meta = view.meta(id)
  return {
    id = id,
    name = meta and meta.name and meta.name:gsub("^/", "") or json.null,
    window_s = w, step_s = s, figures = M.FIGURES,
    points = h.points, summary = h.summary,
  }
end

function M.summary(window, step)
  local w, s = steps(window, step)
  if not w then
    return nil, s, "bad_request"
  end
  local out = setmetatable({}, json.array_mt)
  local names = {}
  for _, meta in ipairs(view.metas()) do
    names[meta.full_id] = meta.name and meta.name:gsub("^/", "")
  end
  for _, id in ipairs(view.ids()) do
    local h = view.history(id, { window = ns(w), step = ns(s), points = false })
    if h then
      out[#out + 1] = { id = id, name = names[id] or json.null,
        summary = h.summary }
    end
  end
  return { window_s = w, step_s = s, figures = M.FIGURES, containers = out }
end

return M
