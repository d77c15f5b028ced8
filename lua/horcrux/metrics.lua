--- horcrux.metrics: asks the sources, in fallback.lua's order
-- (horcrux.config), for a container list, one container, or its stats.
--
--   metrics.list(opts)      metrics.inspect(ref)      metrics.stats(ref)
--       -> answer, source name | nil, message, kind, {tried = ...}
--   metrics.stats_many(ids) -> {{record =, source =} | {error =, kind =
--                               [, tried =]}, ...} aligned with ids
--   metrics.try(what, sources, ...)   any capability: answer, source name
--   metrics.ask(what, sources, ...)   any capability: every value the
--                                     answering source returned
--
-- A source that cannot answer (unavailable, timeout, server, protocol,
-- limit, unsupported: it lacks the capability) hands over to the next; an
-- answer about the container itself (not_found, bad_request, conflict) is
-- final. A source may answer in part (its second value "partial"): the
-- next ones are asked, and the partial answer is given only when none of
-- them answers completely. When every source fails the kind is
-- "metrics_unavailable" and `tried` lists what each one said -- unless only
-- one had the capability (or there was only one), whose own words are the
-- clearest answer (`tried` still lists them all).
local config = require "horcrux.config"
local log = require "horcrux.log"
local errors = require "horcrux.errors"
local cpu = require "horcrux.cpu"
local clock = require "horcrux.clock"
local json = require "horcrux.json"

local M = {}

local HAND_OVER = {
  unavailable = true, timeout = true, server = true, protocol = true,
  limit = true, unsupported = true, io = true,
}
M.HAND_OVER = HAND_OVER

-- What src says to `what`: every value it returns (a packed table), or
-- nil, message, kind.
local function attempt(src, what, ...)
  local fn = src[what]
  if type(fn) ~= "function" then
    return nil, tostring(src.name) .. " cannot give " .. what, "unsupported"
  end
  local r = table.pack(pcall(fn, ...))
  if not r[1] then
    local e = r[2]
    if errors.is(e) then -- a failure a source raised keeps its kind
      return nil, e.message, e.kind
    end
    log.error("source %s failed: %s", tostring(src.name), tostring(e))
    return nil, tostring(src.name) .. ": " .. tostring(e), "server"
  end
  if r[2] == nil then
    return nil, r[3], r[4]
  end
  return r
end

local function give_up(tried)
  if #tried == 1 then
    return nil, tried[1].error, tried[1].kind
  end
  -- the sources that lack the capability said nothing about the engine:
  -- when one source alone could have answered, its words are the answer
  local able
  for _, t in ipairs(tried) do
    if t.kind ~= "unsupported" then
      if able then
        able = false
        break
      end
      able = t
    end
  end
  if able then
    return nil, able.error, able.kind, { tried = tried }
  end
  return nil, "no metric source could answer", "metrics_unavailable",
    { tried = tried }
end

-- The first source that answers `what` completely: its packed values and
-- itself, or nil, message, kind[, extra] when none does. A source that can
-- answer only in part (its second value is "partial": the cgroup files
-- know no stopped container, and names only from the collector) is kept
-- and given when no later source answers completely.
local function first(what, sources, ...)
  local tried, partial = {}, nil
  for _, src in ipairs(config.order(sources)) do
    local r, err, kind = attempt(src, what, ...)
    if r ~= nil and r[3] == "partial" then
      partial = partial or { r, src }
    elseif r ~= nil then
      return r, src
    else
      kind = kind or "server"
      if not HAND_OVER[kind] then
        if partial then
          break
        end
        return nil, err, kind
      end
      tried[#tried + 1] = { source = src.name, error = err, kind = kind }
    end
  end
  if partial then
    return partial[1], partial[2]
  end
  return give_up(tried)
end

--- Like try, but the answering source's own values come back whole (a
-- source's logs() gives the stream and what it knows of the container).
function M.ask(what, sources, ...)
  local r, err, kind, extra = first(what, sources, ...)
  if r == nil then
    return nil, err, kind, extra
  end
  return table.unpack(r, 2, r.n)
end

function M.try(what, sources, ...)
  local r, src, kind, extra = first(what, sources, ...)
  if r == nil then
    return nil, src, kind, extra
  end
  local res = r[2]
  if what == "stats" and type(res) == "table" and res.source == nil then
    res.source = src.name
  end
  return res, src.name
end

local function batch(src, ids)
  local ok, r, e = pcall(src.sample_many, ids)
  if ok and type(r) == "table" then
    return r, type(e) == "table" and e or {}
  end
  return nil
end

-- sample_many, then again after the CPU window for the running containers
-- that had no CPU % (no base sample in the store yet): one wait for all,
-- so N containers cost about what one does.
local function sample_twice(src, ids)
  local recs, errs = batch(src, ids)
  if not recs then
    return nil
  end
  local again = {}
  for _, id in ipairs(ids) do
    local r = recs[id]
    if r and r.cpu_usage_percent == json.null and r.read ~= json.null then
      again[#again + 1] = id
    end
  end
  if #again > 0 then
    clock.sleep((cpu.window() + 1) / 1000)
    local r2 = batch(src, again)
    for _, id in ipairs(again) do
      if r2 and r2[id] then
        recs[id] = r2[id]
      end
    end
  end
  return recs, errs
end

-- One source's answers for the ids of todo: out gets the final ones, the
-- rest are returned (to try the next source) with what this one said.
local function many_from(src, ids, todo, out, tried)
  local sub = {}
  for j, i in ipairs(todo) do
    sub[j] = ids[i]
  end
  local recs, errs
  if type(src.sample_many) == "function" then
    recs, errs = sample_twice(src, sub)
  end
  local rest = {}
  for _, i in ipairs(todo) do
    local rec, err, kind
    if recs then
      local e = errs[ids[i]]
      rec, err, kind = recs[ids[i]], e and e.error, e and e.kind
    else
      local r
      r, err, kind = attempt(src, "stats", ids[i])
      rec = r and r[2]
    end
    if rec then
      rec.source = rec.source or src.name
      out[i] = { record = rec, source = src.name }
    elseif kind and not HAND_OVER[kind] then
      out[i] = { error = err, kind = kind }
    else
      tried[i] = tried[i] or {}
      table.insert(tried[i], { source = src.name, error = err, kind = kind })
      rest[#rest + 1] = i
    end
  end
  return rest
end

--- Stats of many containers. A source with sample_many answers them all at
-- once (no second sample: a container it sees for the first time may have
-- no CPU % yet); one without is asked per id.
function M.stats_many(ids, sources)
  if type(ids) ~= "table" then
    error(("bad argument #1 to 'stats_many' (table expected, got %s)")
      :format(type(ids)), 2)
  end
  local out, todo, tried = {}, {}, {}
  for i = 1, #ids do
    if type(ids[i]) ~= "string" then
      error(("bad argument #1 to 'stats_many' (ids[%d]: string expected, got %s)")
        :format(i, type(ids[i])), 2)
    end
    todo[i] = i
  end
  for _, src in ipairs(config.order(sources)) do
    if #todo == 0 then
      break
    end
    todo = many_from(src, ids, todo, out, tried)
  end
  for _, i in ipairs(todo) do
    local _, err, kind, extra = give_up(tried[i] or {})
    out[i] = { error = err or "no metric source could answer",
      kind = kind or "metrics_unavailable", tried = extra and extra.tried }
  end
  return out
end

-- A ref that is not a string is the caller's mistake: it raises, as a
-- wrong argument to horcrux.docker does (else a nil would reach the
-- docker-cli source as no argument, and `docker stats` with none answers
-- with some other container).
local function check_ref(fname, ref)
  if type(ref) ~= "string" then
    error(("bad argument #1 to '%s' (string expected, got %s)")
      :format(fname, type(ref)), 3)
  end
end

function M.list(opts, sources) return M.try("list", sources, opts) end
function M.inspect(ref, sources)
  check_ref("inspect", ref)
  return M.try("inspect", sources, ref)
end
function M.stats(ref, sources)
  check_ref("stats", ref)
  return M.try("stats", sources, ref)
end

return M
