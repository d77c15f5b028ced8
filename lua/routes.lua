--- routes.lua: the HTTP routes of `horcrux serve`. Operators may edit this
-- file; `kill -HUP <pid>` reloads it without a restart (a file that fails
-- to load is refused and the running routes stay). The README's "Writing a
-- route" explains every piece used here.
--
--   route(METHOD, "/path/:param", [{query = {key = checker}},] handler)
--
-- A handler returns status, body[, headers]; a failure it does not decide
-- about propagates: check(value, message, kind) returns the value or
-- raises, and the server answers with the kind's status and the error
-- shape. The server itself refuses, before a route runs: a POST, PUT, PATCH
-- or DELETE without the bearer token (401) or with a wrong one (403), any
-- of them in read-only mode (403), a body over the limit (413).
local hx = require "horcrux" -- hx.NAME is require("horcrux.NAME")
local check, input, filters = hx.check, hx.input, hx.filters
local manage, logs, stacks = hx.manage, hx.logs, hx.stacks

-- The container a route names: a name, a full id or an id prefix,
-- refused (400) before any source is asked when it is not Docker's grammar.
local function container(req)
  return (check(input.ref(req.params.id)))
end

local function stack(req)
  return (check(input.stack_name(req.params.name)))
end

route("GET", "/healthz", { query = {} }, function()
  return 200, hx.health.check()
end)

-- What the dashboard (the files at /, served by the host) asks first:
-- {"read_only", "authenticated"}: whether this server refuses every change,
-- and whether this request carried the token.
route("GET", "/api/session", { query = {} }, function(req)
  return 200, { read_only = req.read_only == true,
    authenticated = req.authenticated == true }
end)

-- [{"id", "name", "status", "image"}, ...]; ?all=0: running ones only.
-- Filters (horcrux/filters.lua): ?status= ?label=KEY[=VALUE] ?network=
-- ?name= ?ancestor=, each repeatable. X-Horcrux-Source: the source that
-- answered (without the daemon, the cgroup files: items say so too).
route("GET", "/api/containers", function(req)
  local f, q = check(filters.parse(req.args, { all = input.boolean }))
  local list, source = check(filters.list(f, q.all ~= false))
  return 200, list, { ["X-Horcrux-Source"] = source }
end)

-- Creates a container from the body that horcrux/manage/validate.lua
-- describes, as policy.lua allows: 201 {"id", "name", "started", "warnings"}.
route("POST", "/api/containers", { query = {} }, function(req)
  local spec = check(manage.validate(check(input.json_body(req))))
  spec = check(manage.allowed(spec, nil, req))
  return 201, (check(manage.create(spec)))
end)

-- {"id", "name", "status", "image", "created", "started"};
-- X-Horcrux-Source: the source that answered.
route("GET", "/api/containers/:id", { query = {} }, function(req)
  local c, source = check(hx.metrics.inspect(container(req)))
  return 200, c, { ["X-Horcrux-Source"] = source }
end)

-- ?force=1&volumes=1 -> {"id", "removed": true}; a running container
-- without force is 409.
route("DELETE", "/api/containers/:id",
  { query = { force = input.boolean, volumes = input.boolean } },
  function(req)
    local ref = container(req)
    check(input.no_body(req))
    check(manage.may("remove", ref, nil, req))
    return 200, (check(manage.remove(ref, req.query)))
  end)

-- POST /api/containers/:id/{start,stop,restart,kill,pause,unpause} ->
-- {"id", "action", "changed"}; changed is false when it already was so.
-- stop and restart take ?timeout= (seconds before SIGKILL), kill ?signal=.
local ACTION_QUERY = {
  start = {}, pause = {}, unpause = {},
  stop = { timeout = input.integer(0, 86400) },
  restart = { timeout = input.integer(0, 86400) },
  kill = { signal = input.signal },
}

for action, query in pairs(ACTION_QUERY) do
  route("POST", "/api/containers/:id/" .. action, { query = query },
    function(req)
      local ref = container(req)
      check(input.no_body(req))
      check(manage.may(action, ref, nil, req))
      return 200, (check(manage.action(ref, action, req.query)))
    end)
end

-- The stats record (README: "GET /api/containers/:id/stats"), from the live
-- view when it holds the container, else sampled now.
route("GET", "/api/containers/:id/stats", { query = {} }, function(req)
  return 200, (check(hx.live.stats(container(req))))
end)

-- [{"stream": "stdout"|"stderr", "line", "time" (timestamps=1)}, ...],
-- oldest first; Accept: text/plain gives the lines as text. Past the cap
-- the newest lines are kept and X-Horcrux-Truncated: 1 says so. Refused in
-- read-only mode: logs often carry secrets. ?follow=1: the lines as they
-- come (README "Streams"), until the container stops.
local LOGS_QUERY = { follow = input.boolean }
for k, checker in pairs(logs.QUERY) do
  LOGS_QUERY[k] = checker
end

route("GET", "/api/containers/:id/logs", { query = LOGS_QUERY }, function(req)
  check(input.writable(req, "container logs are"))
  local opts = check(logs.options(req.query))
  if req.query.follow then
    return check(hx.streams.follow(container(req), opts))
  end
  local lines, info = check(logs.fetch(container(req), opts))
  local headers = { ["X-Horcrux-Truncated"] = info.truncated and "1" or "0" }
  if input.accepts_text(req) then
    headers["Content-Type"] = "text/plain; charset=utf-8"
    return 200, logs.text(lines), headers
  end
  return 200, lines, headers
end)

-- The records of every running container; the filters of /api/containers.
route("GET", "/api/stats", function(req)
  local f = check(filters.parse(req.args))
  return 200, (check(filters.stats(f, check(hx.live.all()))))
end)

-- Compose stacks: [{"name", "count", "states", "services": [...]}]
route("GET", "/api/stacks", { query = {} }, function()
  return 200, (check(stacks.list()))
end)

-- One stack: its services' containers with their stats, and the sums.
route("GET", "/api/stacks/:name", { query = {} }, function(req)
  return 200, (check(stacks.get(stack(req))))
end)

-- POST /api/stacks/:name/{start,stop,restart}[?timeout=] -> {"name",
-- "action", "count", "changed_count", "results": [...]}; when some fail,
-- the error answer carries the results.
for _, action in ipairs({ "start", "stop", "restart" }) do
  route("POST", "/api/stacks/:name/" .. action,
    { query = ACTION_QUERY[action] }, function(req)
      check(input.no_body(req))
      return 200, (check(stacks.action(stack(req), action, req.query, nil,
        req)))
    end)
end

-- ---- Streams (README: "Streams") ------------------------------------------
-- A route that returns hub.stream{...} answers with a live stream: Server-
-- Sent Events, WebSocket when the client asks for an upgrade, NDJSON for
-- Accept: application/x-ndjson. The stream holds no Lua state: a reload
-- keeps it open.
local streams = hx.streams

-- The /api/stats array once per collector round (?interval=S: less often);
-- the /api/stats filters.
route("GET", "/api/stats/stream", function(req)
  return streams.stats(req)
end)

-- One container's stats record once per round.
route("GET", "/api/containers/:id/stats/stream",
  { query = streams.QUERY_STATS }, function(req)
    local c = check(hx.metrics.inspect(container(req)))
    return streams.container(c.id, req)
  end)

-- The container events the server has seen (the last 10,000: --events-ring),
-- oldest first; ?type= ?action= ?container= (name or id prefix)
-- ?label=KEY[=VALUE] ?since= (RFC 3339 or Unix seconds) ?after= (event id).
route("GET", "/api/events", { query = streams.QUERY_EVENTS }, function(req)
  return 200, (check(streams.recent(req.query)))
end)

-- Each container event as it comes, with ids; Last-Event-ID (or
-- ?last_event_id=) resumes after that event.
route("GET", "/api/events/stream", { query = streams.QUERY_EVENTS_STREAM },
  function(req)
    return streams.events(req)
  end)
