--- The `docker-api` metric source: the Engine API over its socket.
--
-- Each function returns its answer, or nil, message, kind (the client's
-- kinds: not_found, bad_request, unavailable, timeout, server, protocol).
-- Inside `horcrux serve` the client's transfers yield to the server, so a
-- stats request that the daemon holds for a second holds no worker.
local docker = require "horcrux.docker"
local cpu = require "horcrux.cpu"
local clock = require "horcrux.clock"
local stats = require "horcrux.stats"
local shapes = require "horcrux.shapes"

local M = { name = "docker-api" }

local client, client_err, client_kind

--- The state's client: one per Lua state, connected lazily (connect only
-- reads DOCKER_HOST and friends; nothing is sent until the first call).
function M.client()
  if client == nil and client_err == nil then
    client, client_err, client_kind = docker.connect()
  end
  if client == nil then
    return nil, client_err, client_kind
  end
  return client
end

function M.list(opts)
  local c, err, kind = M.client()
  if not c then
    return nil, err, kind
  end
  local items
  items, err, kind = c:containers({
    all = opts == nil or opts.all ~= false,
    filters = opts and opts.filters or nil,
  })
  if not items then
    return nil, err, kind
  end
  return shapes.list(items)
end

function M.inspect(id)
  local c, err, kind = M.client()
  if not c then
    return nil, err, kind
  end
  local info
  info, err, kind = c:inspect(id)
  if not info then
    return nil, err, kind
  end
  return shapes.inspect(info), info
end

--- One-shot stats with a true CPU %: the delta against the newest stored
-- sample that is at least the store's window old; with none, a second
-- sample once the window has passed (on engines before 25.0 the daemon
-- answers at its next one-second tick anyway).
function M.stats(id)
  local c, err, kind = M.client()
  if not c then
    return nil, err, kind
  end
  local raw
  raw, err, kind = c:stats(id)
  if not raw then
    return nil, err, kind
  end
  local full = type(raw.id) == "string" and raw.id or id
  local rec, reason = stats.record(full, raw)
  if stats.needs_second_sample(reason) then
    local first = stats.sample_from_api(raw)
    local wait_ms = cpu.window() - (clock.now_ns() - first.time_ns) / 1e6
    if wait_ms > 0 then
      clock.sleep(wait_ms / 1000)
    end
    raw, err, kind = c:stats(full)
    if not raw then
      return nil, err, kind
    end
    rec = stats.record(full, raw)
  end
  rec.id = full
  rec.name = type(raw.name) == "string" and raw.name:gsub("^/", "") or nil
  return rec
end

--- Stats of many containers, concurrently (the client's stats_many: one
-- batch of transfers, so N containers cost about one daemon tick). Returns
-- an array aligned with ids of {record = ...} or {error = msg, kind = kind}.
-- Containers without a base sample get a second batch after the window.
function M.stats_many(ids)
  local c, err, kind = M.client()
  if not c then
    return nil, err, kind
  end
  if type(c.stats_many) ~= "function" then
    return nil, "docker-api: this client cannot fetch stats concurrently",
      "unsupported"
  end
  local function batch(refs)
    local res, e, k = c:stats_many(refs)
    if type(res) ~= "table" then
      return nil, e, k
    end
    return res
  end
  local res
  res, err, kind = batch(ids)
  if not res then
    return nil, err, kind
  end
  local out, again, again_ids, oldest = {}, {}, {}, nil
  for i, r in ipairs(res) do
    local raw = r.value
    if raw then
      local full = type(raw.id) == "string" and raw.id or ids[i]
      local rec, reason = stats.record(full, raw)
      rec.id = full
      rec.name = type(raw.name) == "string" and raw.name:gsub("^/", "") or nil
      out[i] = { record = rec }
      if stats.needs_second_sample(reason) then
        again[#again + 1] = i
        again_ids[#again_ids + 1] = full
        local s = stats.sample_from_api(raw)
        if s and (oldest == nil or s.time_ns < oldest) then
          oldest = s.time_ns
        end
      end
    else
      out[i] = { error = r.error, kind = r.kind }
    end
  end
  if #again > 0 then
    local wait_ms = cpu.window() - (clock.now_ns() - (oldest or 0)) / 1e6
    if oldest and wait_ms > 0 then
      clock.sleep(wait_ms / 1000)
    end
    local res2 = batch(again_ids)
    for j, i in ipairs(again) do
      local raw = res2 and res2[j] and res2[j].value
      if raw then
        local rec = stats.record(again_ids[j], raw)
        rec.id = again_ids[j]
        rec.name = out[i].record.name
        out[i] = { record = rec }
      end
    end
  end
  return out
end

return M
