--- routes.lua: the HTTP routes of `horcrux serve`. Operators may edit this
-- file; `kill -HUP <pid>` reloads it without a restart (a file that fails
-- to load is refused and the running routes stay).
--
--   route(METHOD, "/path/:param", function(req) ... end)
--
-- req: method, path, params (from the pattern), query (first value of each
-- key), args (every {key, value} in order), headers (lower-case names),
-- body, id (the request id), remote (the client's address).
-- A handler returns status, body (a table is sent as JSON, a string as
-- is), and optionally a table of headers.
local format = require "format"
local metrics = require "horcrux.metrics"
local live = require "horcrux.live"
local health = require "horcrux.health"

route("GET", "/healthz", function(req)
  return 200, health.check()
end)

-- [{"id", "name", "status", "image"}, ...]; ?all=0 lists running ones only.
route("GET", "/api/containers", function(req)
  local list, err, kind, tried = metrics.list({ all = req.query.all ~= "0" })
  if not list then
    return format.fail(err, kind, tried)
  end
  return 200, list
end)

-- {"id", "name", "status", "image", "created", "started"}; :id is a name,
-- a full id or an id prefix.
route("GET", "/api/containers/:id", function(req)
  local info, err, kind, tried = metrics.inspect(req.params.id)
  if not info then
    return format.fail(err, kind, tried)
  end
  return 200, info
end)

-- The stats record (DESIGN.md, Metrics), from the live view when it holds
-- the container (sample_age_ms says how old), else sampled now.
route("GET", "/api/containers/:id/stats", function(req)
  local rec, err, kind, tried = live.stats(req.params.id)
  if not rec then
    return format.fail(err, kind, tried)
  end
  return 200, rec
end)

-- The stats records of every running container: [{record}, ...].
route("GET", "/api/stats", function(req)
  local all, err, kind, tried = live.all()
  if not all then
    return format.fail(err, kind, tried)
  end
  return 200, all
end)
