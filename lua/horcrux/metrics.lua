--- horcrux.metrics: asks the sources of fallback.lua, in order, for a
-- container list, one container, or its stats.
--
--   local rec, src = metrics.stats(id)
--   -- or nil, message, kind, tried
--
-- A source that cannot answer (unavailable, timeout, server, protocol,
-- limit) hands over to the next; an answer about the container itself
-- (not_found, bad_request, conflict) is final. When every source fails the
-- kind is "metrics_unavailable" and `tried` lists what each one said.
local log = require "horcrux.log"

local M = {}

local HAND_OVER = {
  unavailable = true, timeout = true, server = true, protocol = true,
  limit = true, unsupported = true,
}

--- The sources of fallback.lua, or of `policy` when given.
function M.sources(policy)
  policy = policy or require("fallback")
  return policy.sources or {}
end

local function attempt(src, what, ...)
  local fn = src[what]
  if type(fn) ~= "function" then
    return nil, src.name .. " cannot give " .. what, "unsupported"
  end
  local ok, res, err, kind = pcall(fn, ...)
  if not ok then
    log.error("source %s failed: %s", tostring(src.name), tostring(res))
    return nil, tostring(res), "server"
  end
  return res, err, kind
end

--- Tries `what` ("list", "inspect", "stats") on each source in turn.
function M.try(what, policy, ...)
  local tried = {}
  for _, src in ipairs(M.sources(policy)) do
    local res, err, kind = attempt(src, what, ...)
    if res ~= nil then
      if what == "stats" and type(res) == "table" and res.source == nil then
        res.source = src.name
      end
      return res, src.name
    end
    kind = kind or "server"
    if not HAND_OVER[kind] then
      return nil, err, kind
    end
    tried[#tried + 1] = { source = src.name, error = err, kind = kind }
  end
  if #tried == 1 then -- one source: its own words are the clearest answer
    return nil, tried[1].error, tried[1].kind, tried
  end
  return nil, "no metric source could answer", "metrics_unavailable", tried
end

--- Stats of many containers: {record = ..., source = ...} or {error =
-- message, kind = kind} for each id, in order. A source with stats_many
-- answers them all at once (concurrently); one without is asked per id.
function M.stats_many(ids, policy)
  local out, todo = {}, {}
  for i = 1, #ids do
    todo[i] = i
  end
  local tried = {}
  for _, src in ipairs(M.sources(policy)) do
    if #todo == 0 then
      break
    end
    local sub = {}
    for j, i in ipairs(todo) do
      sub[j] = ids[i]
    end
    local results
    if type(src.stats_many) == "function" then
      local ok, res = pcall(src.stats_many, sub)
      results = ok and type(res) == "table" and res or nil
    end
    local rest = {}
    for j, i in ipairs(todo) do
      local rec, err, kind
      if results then
        rec, err, kind = results[j] and results[j].record,
          results[j] and results[j].error, results[j] and results[j].kind
      else
        rec, err, kind = attempt(src, "stats", ids[i])
      end
      if rec then
        if rec.source == nil then
          rec.source = src.name
        end
        out[i] = { record = rec, source = src.name }
      elseif kind and not HAND_OVER[kind] then
        out[i] = { error = err, kind = kind }
      else
        tried[i] = tried[i] or {}
        table.insert(tried[i], { source = src.name, error = err, kind = kind })
        rest[#rest + 1] = i
      end
    end
    todo = rest
  end
  for _, i in ipairs(todo) do
    local t = tried[i] or {}
    out[i] = #t == 1 and { error = t[1].error, kind = t[1].kind }
      or { error = "no metric source could answer", kind = "metrics_unavailable", tried = t }
  end
  return out
end

function M.list(opts, policy) return M.try("list", policy, opts) end
function M.inspect(id, policy) return M.try("inspect", policy, id) end
function M.stats(id, policy) return M.try("stats", policy, id) end

return M
