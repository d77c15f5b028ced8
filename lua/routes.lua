--- routes.lua: the HTTP routes of `horcrux serve`. Operators may edit this
-- file; `kill -HUP <pid>` reloads it without a restart (a file that fails
-- to load is refused and the running routes stay).
--
--   route(METHOD, "/path/:param", function(req) ... end)
--
-- req: method, path, params (from the pattern), query (first value of each
-- key), args (every {key, value} in order), headers (lower-case names),
-- body, id (the request id), remote (the client's address), read_only
-- (the server runs with --read-only), authenticated (a valid bearer token
-- came with the request).
-- A handler returns status, body (a table is sent as JSON, a string as
-- is), and optionally a table of headers.
--
-- The server itself refuses, before a route runs: a POST, PUT, PATCH or
-- DELETE without the bearer token (401) or with a wrong one (403), any of
-- them in read-only mode (403), a body over the limit (413).
local format = require "format"
local metrics = require "horcrux.metrics"
local live = require "horcrux.live"
local health = require "horcrux.health"
local input = require "horcrux.input"
local filters = require "horcrux.filters"
local manage = require "horcrux.manage"
local logs = require "horcrux.logs"
local stacks = require "horcrux.stacks"

-- What the management routes may do (policy.lua), loaded with the routes:
-- a policy.lua that fails to load fails a reload the same way.
local policy = manage.policy()

local fail = input.fail

route("GET", "/healthz", function(req)
  return 200, health.check()
end)

-- [{"id", "name", "status", "image"}, ...]; ?all=0 lists running ones only.
-- Filters: ?status= ?label=KEY ?label=KEY=VALUE ?network= ?name= ?ancestor=
-- (horcrux/filters.lua), each repeatable.
route("GET", "/api/containers", function(req)
  local f, err, kind, key = filters.parse(req.args, { all = true })
  if f == nil then
    return fail(err, kind, { field = key })
  end
  local all = true
  if req.query.all ~= nil then
    all = input.boolean(req.query.all)
    if all == nil then
      return fail(("query all=%q: must be 1, 0, true or false")
        :format(req.query.all), "bad_request", { field = "all" })
    end
  end
  local list, tried
  list, err, kind, tried = filters.list(f, all)
  if not list then
    return format.fail(err, kind, tried)
  end
  return 200, list
end)

-- POST /api/containers: creates a container from the body that
-- horcrux/manage.lua describes, as policy.lua allows. 201 {"id", "name",
-- "started", "warnings"}.
route("POST", "/api/containers", function(req)
  local body, err, kind = input.json_body(req)
  if not body then
    return fail(err, kind)
  end
  local spec, field
  spec, err, kind, field = manage.validate(body)
  if not spec then
    return fail(err, kind, { field = field })
  end
  local ok
  ok, err, kind, field = manage.allowed(spec, policy, req)
  if not ok then
    return fail(err, kind, { field = field })
  end
  local res, extra
  res, err, kind, extra = manage.create(spec, policy)
  if not res then
    return fail(err, kind, extra)
  end
  return 201, res
end)

-- {"id", "name", "status", "image", "created", "started"}; :id is a name,
-- a full id or an id prefix.
route("GET", "/api/containers/:id", function(req)
  local ref, err, kind = input.ref(req.params.id)
  if not ref then
    return fail(err, kind)
  end
  local info, tried
  info, err, kind, tried = metrics.inspect(ref)
  if not info then
    return format.fail(err, kind, tried)
  end
  return 200, info
end)

-- DELETE /api/containers/:id?force=1&volumes=1 -> {"id", "removed": true};
-- a running container without force is 409.
route("DELETE", "/api/containers/:id", function(req)
  local ref, err, kind = input.ref(req.params.id)
  if not ref then
    return fail(err, kind)
  end
  local q, key
  q, err, kind, key = input.query(req.args,
    { force = input.boolean, volumes = input.boolean })
  if not q then
    return fail(err, kind, { field = key })
  end
  local ok
  ok, err, kind = input.no_body(req)
  if not ok then
    return fail(err, kind)
  end
  ok, err, kind = manage.may("remove", ref, policy, req)
  if not ok then
    return fail(err, kind)
  end
  local res
  res, err, kind = manage.remove(ref, q, policy)
  if not res then
    return fail(err, kind)
  end
  return 200, res
end)

-- POST /api/containers/:id/{start,stop,restart,kill,pause,unpause} ->
-- {"id", "action", "changed"}; changed is false when it already was so
-- (starting a running container, stopping a stopped one). stop and restart
-- take ?timeout= (seconds before SIGKILL), kill ?signal= (a name like TERM
-- or SIGTERM, or a number).
local SIGNALS = {}
for _, s in ipairs({ "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS",
  "FPE", "KILL", "USR1", "SEGV", "USR2", "PIPE", "ALRM", "TERM", "STKFLT",
  "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG", "XCPU", "XFSZ",
  "VTALRM", "PROF", "WINCH", "IO", "POLL", "PWR", "SYS" }) do
  SIGNALS[s] = true
end

local function signal(v)
  local n = v:match("^%d+$") and tonumber(v)
  if n and n >= 1 and n <= 64 then
    return tostring(math.tointeger(n))
  end
  local name = v:upper():gsub("^SIG", "")
  if SIGNALS[name] or name:match("^RTMIN%+?%d?%d?$")
      or name:match("^RTMAX%-?%d?%d?$") then
    return "SIG" .. name
  end
  return nil, "must be a signal name (TERM, SIGKILL, ...) or number 1-64"
end

local ACTION_QUERY = {
  start = {}, pause = {}, unpause = {},
  stop = { timeout = input.integer(0, 86400) },
  restart = { timeout = input.integer(0, 86400) },
  kill = { signal = signal },
}

for _, action in ipairs({ "start", "stop", "restart", "kill", "pause",
  "unpause" }) do
  route("POST", "/api/containers/:id/" .. action, function(req)
    local ref, err, kind = input.ref(req.params.id)
    if not ref then
      return fail(err, kind)
    end
    local q, key
    q, err, kind, key = input.query(req.args, ACTION_QUERY[action])
    if not q then
      return fail(err, kind, { field = key })
    end
    local ok
    ok, err, kind = input.no_body(req)
    if not ok then
      return fail(err, kind)
    end
    ok, err, kind = manage.may(action, ref, policy, req)
    if not ok then
      return fail(err, kind)
    end
    local res
    res, err, kind = manage.action(ref, action, q, policy)
    if not res then
      return fail(err, kind)
    end
    return 200, res
  end)
end

-- The stats record (DESIGN.md, Metrics), from the live view when it holds
-- the container (sample_age_ms says how old), else sampled now.
route("GET", "/api/containers/:id/stats", function(req)
  local ref, err, kind = input.ref(req.params.id)
  if not ref then
    return fail(err, kind)
  end
  local rec, tried
  rec, err, kind, tried = live.stats(ref)
  if not rec then
    return format.fail(err, kind, tried)
  end
  return 200, rec
end)

-- GET /api/containers/:id/logs?tail=&since=&until=&timestamps=&stdout=&stderr=
-- [{"stream": "stdout"|"stderr", "line", "time" (with timestamps=1)}, ...]
-- oldest first; with Accept: text/plain, the lines as text. Past the cap
-- (horcrux/logs.lua) the newest lines are kept and X-Horcrux-Truncated: 1
-- says so. Refused in read-only mode: logs often carry secrets.
route("GET", "/api/containers/:id/logs", function(req)
  local err, kind = input.read_only(req, "container logs are")
  if err then
    return fail(err, kind)
  end
  local ref
  ref, err, kind = input.ref(req.params.id)
  if not ref then
    return fail(err, kind)
  end
  local opts, key
  opts, err, kind, key = logs.params(req.args)
  if not opts then
    return fail(err, kind, { field = key })
  end
  local lines, info
  lines, info, kind = logs.fetch(ref, opts)
  if not lines then
    return fail(info, kind)
  end
  local headers = { ["X-Horcrux-Truncated"] = info.truncated and "1" or "0" }
  local accept = (req.headers.accept or ""):lower()
  if accept:find("text/plain", 1, true) and
      not accept:find("application/json", 1, true) then
    headers["Content-Type"] = "text/plain; charset=utf-8"
    return 200, logs.text(lines), headers
  end
  return 200, lines, headers
end)

-- The stats records of every running container: [{record}, ...]; the
-- filters of GET /api/containers pick some.
route("GET", "/api/stats", function(req)
  local f, err, kind, key = filters.parse(req.args)
  if f == nil then
    return fail(err, kind, { field = key })
  end
  local all, tried
  all, err, kind, tried = live.all()
  if not all then
    return format.fail(err, kind, tried)
  end
  all, err, kind = filters.stats(f, all)
  if not all then
    return format.fail(err, kind)
  end
  return 200, all
end)

-- Compose stacks: containers labelled com.docker.compose.project.
-- [{"name", "count", "states", "services": [{"name", "count", "states"}]}]
route("GET", "/api/stacks", function(req)
  local q, err, kind, key = input.query(req.args, {})
  if not q then
    return fail(err, kind, { field = key })
  end
  local list
  list, err, kind = stacks.list()
  if not list then
    return fail(err, kind)
  end
  return 200, list
end)

-- {"name", "count", "states", "stats", "services": [{"name", "count",
-- "states", "stats", "containers": [{"id", "name", "status", "image",
-- "stats"}]}]}; stats sum the live view's records.
route("GET", "/api/stacks/:name", function(req)
  local name, err, kind = input.stack_name(req.params.name)
  if not name then
    return fail(err, kind)
  end
  local q, key
  q, err, kind, key = input.query(req.args, {})
  if not q then
    return fail(err, kind, { field = key })
  end
  local stack
  stack, err, kind = stacks.get(name)
  if not stack then
    return fail(err, kind)
  end
  return 200, stack
end)

-- POST /api/stacks/:name/{start,stop,restart}[?timeout=] -> {"name",
-- "action", "count", "changed_count", "results": [{"id", "name", "service",
-- "changed"}]}; when some fail, the error answer carries the results.
for _, action in ipairs({ "start", "stop", "restart" }) do
  route("POST", "/api/stacks/:name/" .. action, function(req)
    local name, err, kind = input.stack_name(req.params.name)
    if not name then
      return fail(err, kind)
    end
    local q, key
    q, err, kind, key = input.query(req.args, ACTION_QUERY[action])
    if not q then
      return fail(err, kind, { field = key })
    end
    local ok
    ok, err, kind = input.no_body(req)
    if not ok then
      return fail(err, kind)
    end
    local res, extra
    res, err, kind, extra = stacks.action(name, action, q, policy, req)
    if not res then
      return fail(err, kind, extra and { results = extra.results })
    end
    return 200, res
  end)
end
