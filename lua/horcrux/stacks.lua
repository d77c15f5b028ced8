--- horcrux.stacks: Compose projects -- the containers labelled
-- com.docker.compose.project (and .service) -- seen and driven as one.
--
--   stacks.list()                 -> [{name, count, states, services}]
--   stacks.get(name)              -> {name, count, states, stats, services}
--   stacks.action(name, action, opts, policy, req) -> {name, action, count,
--                                    changed_count, results}
-- each returning its answer or nil, message, kind[, extra]; when some
-- containers of an action fail, extra is {results = ...}.
--
-- Which containers belong to a stack is asked of the sources that list
-- containers with their labels (the `containers` capability: the daemon's
-- label filter). Figures come from the live view (horcrux.view), and a
-- running container it does not hold yet is sampled now through the
-- sources (metrics.stats_many).
local json = require "horcrux.json"
local null = json.null
local view = require "horcrux.view"
local metrics = require "horcrux.metrics"
local manage = require "horcrux.manage"

local M = {}

M.PROJECT = "com.docker.compose.project"
M.SERVICE = "com.docker.compose.service"

--- The figures summed over a stack's (or a service's) containers.
M.SUMMED = {
  "cpu_usage_percent", "memory_usage_bytes", "network_rx_bytes",
  "network_tx_bytes", "block_read_bytes", "block_write_bytes", "pids",
}

-- Every container of the stacks (of one, when name is given), as the
-- sources' container records plus project and service: asked of the first
-- source that can list containers with their labels (the `containers`
-- capability; the Engine API).
local function containers(name)
  local label = name and (M.PROJECT .. "=" .. name) or M.PROJECT
  local items, err, kind, extra = metrics.try("containers", nil, {
    all = true, filters = { label = json.array({ label }) } })
  if not items then
    return nil, err, kind, extra -- extra.tried: what each source said
  end
  local out = {}
  for _, rec in ipairs(items) do
    rec.project = type(rec.labels) == "table" and rec.labels[M.PROJECT]
    rec.service = rec.project and rec.labels[M.SERVICE] or ""
    if rec.project and (name == nil or rec.project == name) then
      out[#out + 1] = rec
    end
  end
  table.sort(out, function(a, b)
    if a.service ~= b.service then
      return a.service < b.service
    end
    return (a.name or "") < (b.name or "")
  end)
  return out
end

-- The containers of stack `name`; a stack without any is not found.
local function members(name)
  local list, err, kind, extra = containers(name)
  if list and #list == 0 then
    return nil, ("no stack %q (no container is labelled %s=%s)"):format(
      name, M.PROJECT, name), "not_found"
  end
  return list, err, kind, extra
end

local function count_state(states, status)
  local s = type(status) == "string" and status or "unknown"
  states[s] = (states[s] or 0) + 1
end

-- The services of a stack's containers, in name order:
-- {name, count, states, members}.
local function services_of(list)
  local by, order = {}, {}
  for _, rec in ipairs(list) do
    local s = by[rec.service]
    if not s then
      s = { name = rec.service, count = 0, states = {}, members = {} }
      by[rec.service] = s
      order[#order + 1] = s
    end
    s.count = s.count + 1
    count_state(s.states, rec.status)
    s.members[#s.members + 1] = rec
  end
  return order
end

--- GET /api/stacks: every project with its services and how many of their
-- containers are in each state.
function M.list()
  local list, err, kind, extra = containers(nil)
  if not list then
    return nil, err, kind, extra
  end
  local by, order = {}, {}
  for _, rec in ipairs(list) do
    local p = by[rec.project]
    if not p then
      p = { name = rec.project, recs = {} }
      by[rec.project] = p
      order[#order + 1] = p
    end
    p.recs[#p.recs + 1] = rec
  end
  table.sort(order, function(a, b) return a.name < b.name end)
  local out = json.array()
  for _, p in ipairs(order) do
    local states, services = {}, json.array()
    for _, rec in ipairs(p.recs) do
      count_state(states, rec.status)
    end
    for _, s in ipairs(services_of(p.recs)) do
      services[#services + 1] = { name = s.name, count = s.count,
        states = s.states }
    end
    out[#out + 1] = { name = p.name, count = #p.recs, states = states,
      services = services }
  end
  return out
end

-- Sums the SUMMED fields of records; a field no record has is null.
local function sum(records)
  local out = { sampled = #records }
  for _, k in ipairs(M.SUMMED) do
    local total
    for _, r in ipairs(records) do
      local v = r[k]
      if type(v) == "number" then
        total = (total or 0) + v
      end
    end
    out[k] = total == nil and null or total
  end
  return out
end

-- The stats record of every running container of list, by full id: from
-- the live view, else sampled now (all of those at once).
local function records_of(list)
  local recs, missing = {}, {}
  for _, rec in ipairs(list) do
    if rec.status == "running" then
      local r = view.get(rec.id)
      if r then
        recs[rec.id] = r
      else
        missing[#missing + 1] = rec.id
      end
    end
  end
  if #missing > 0 then
    for i, r in ipairs(metrics.stats_many(missing)) do
      if r.record then
        recs[missing[i]] = r.record
      end
    end
  end
  return recs
end

--- GET /api/stacks/:name: each service's containers with their stats
-- record (null when not running or not sampled), and the figures summed
-- per service and for the stack.
function M.get(name)
  local list, err, kind, extra = members(name)
  if not list then
    return nil, err, kind, extra
  end
  local recs = records_of(list)
  local states, all, services = {}, {}, json.array()
  for _, s in ipairs(services_of(list)) do
    local members, srecs = json.array(), {}
    for _, rec in ipairs(s.members) do
      count_state(states, rec.status)
      local r = recs[rec.id]
      if r then
        srecs[#srecs + 1] = r
        all[#all + 1] = r
      end
      members[#members + 1] = {
        id = rec.id:sub(1, 12),
        name = rec.name or null,
        status = rec.status or null,
        image = rec.image or null,
        stats = r or null,
      }
    end
    services[#services + 1] = { name = s.name, count = s.count,
      states = s.states, stats = sum(srecs), containers = members }
  end
  return { name = name, count = #list, states = states, stats = sum(all),
    services = services }
end

--- The actions a stack takes.
M.ACTIONS = { start = true, stop = true, restart = true }

--- POST /api/stacks/:name/{start,stop,restart}: the action on each
-- container, one after the other (start in service order, stop in the
-- reverse order). opts.timeout for stop and restart. When some fail, the
-- 4th value is the results (each {id, name, service, changed} or {id,
-- name, service, error = {code, message}}).
function M.action(name, action, opts, policy, req)
  if not M.ACTIONS[action] then
    error("stacks.action: unknown action " .. tostring(action), 2)
  end
  local list, err, kind, extra = members(name)
  if not list then
    return nil, err, kind, extra
  end
  for _, rec in ipairs(list) do
    local ok, msg, k = manage.may(action, { id = rec.id,
      name = rec.name or null, image = rec.image or null,
      labels = rec.labels, status = rec.status or null }, policy, req)
    if not ok then
      return nil, msg, k
    end
  end
  local from, to, step = 1, #list, 1
  if action == "stop" then
    from, to, step = #list, 1, -1
  end
  local results, changed, failed, first = json.array(), 0, 0, nil
  for i = from, to, step do
    local rec = list[i]
    local r = { id = rec.id:sub(1, 12), name = rec.name or null,
      service = rec.service }
    local res, msg, k = manage.action(rec.id, action, opts, policy)
    if res then
      r.changed = res.changed
      if res.changed == true then
        changed = changed + 1
      end
    else
      r.error = { code = k, message = msg }
      failed = failed + 1
      first = first or { msg, k }
    end
    results[#results + 1] = r
  end
  local out = { name = name, action = action, count = #list,
    changed_count = changed, results = results }
  if failed > 0 then
    return nil, ("%s of stack %q: %d of %d containers failed; first: %s")
      :format(action, name, failed, #list, first[1]), first[2],
      { results = results }
  end
  return out
end

return M
