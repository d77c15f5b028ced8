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
  local text = hx.live.list_json(f, q.all ~= false) -- the view's, as text
  if text then
    return 200, text, { ["Content-Type"] = "application/json",
      ["X-Horcrux-Source"] = "view" }
  end
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
-- Written from the live view in C when it can (horcrux/live.lua).
route("GET", "/api/stats", function(req)
  local f = check(filters.parse(req.args))
  local text = hx.live.stats_json(f)
  if text then
    return 200, text, { ["Content-Type"] = "application/json" }
  end
  return 200, (check(hx.live.stats_matching(f)))
end)

-- Prometheus: the containers under cAdvisor's names and horcrux's own
-- metrics, from the live view (horcrux/prometheus.lua); OpenMetrics when
-- Accept asks for it, gzip when Accept-Encoding allows it.
route("GET", "/metrics", { query = {} }, function(req)
  return hx.prometheus.answer(req)
end)

-- The history the live view keeps of a container (horcrux/history.lua):
-- ?window=5m&step=5s -> {"id", "name", "window_s", "step_s", "figures",
-- "points": [{"t", "cpu_percent", ...}], "summary": {figure: {"min",
-- "mean", "max", "p90", "p99", "count"}}}
local HISTORY_QUERY = { window = hx.history.duration, step = hx.history.duration }

route("GET", "/api/containers/:id/history", { query = HISTORY_QUERY },
  function(req)
    return 200, (check(hx.history.of(container(req), req.query.window,
      req.query.step)))
  end)

-- The same summary for every container: {"window_s", "step_s", "figures",
-- "containers": [{"id", "name", "summary"}]}
route("GET", "/api/stats/summary", { query = HISTORY_QUERY }, function(req)
  return 200, (check(hx.history.summary(req.query.window, req.query.step)))
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

-- Webhooks (hooks.lua): [{"name", "url" (without credentials or query),
-- "pending", "delivered", "failed", "dropped", "last_error", ...}]
route("GET", "/api/hooks", { query = {} }, function()
  return 200, hx.hooks_run.status().hooks
end)

-- The alerts firing now: [{"alert", "id", "name", "value", "labels",
-- "annotations", "starts_at", "fingerprint"}]
route("GET", "/api/alerts", { query = {} }, function()
  return 200, hx.hooks_run.status().alerts
end)

-- ==== images, exec, networks, volumes, stacks from compose files (issue 12):
-- one block to the end of the file.
local images, fields = hx.images, hx.fields

-- The JSON body of a route, every field checked (horcrux/fields.lua).
local function body(req, spec, required)
  return (check(fields.check(check(input.json_body(req)), spec, required)))
end

-- ---- images (README: "Images") ----------------------------------------------
-- An image reference goes in the path as it is, / and : included:
-- /api/images/127.0.0.1:5000/team/app:1.2/push.

-- [{"id", "tags", "digests", "created", "size", "labels", "containers"}];
-- ?all= ?dangling= ?label=KEY[=VALUE] ?reference=PATTERN
route("GET", "/api/images", { query = images.LIST_QUERY }, function(req)
  return 200, (check(images.list(req.query)))
end)

-- {"image": "repo:tag"} -> {"image", "id", "status", "messages"}, from a
-- registry policy.lua allows (images.pull), refused before the daemon is
-- asked otherwise. Credentials: X-Registry-Auth, or policy.lua. With
-- Accept: text/event-stream (or application/x-ndjson) the daemon's
-- progress messages as they come, then `result` or `error`.
route("POST", "/api/images/pull", { query = {} }, function(req)
  local b = body(req, images.PULL_FIELDS, { "image" })
  if images.wants_stream(req) then
    return (check(images.pull_stream(b.image, { req = req })))
  end
  return 200, (check(images.pull(b.image, { req = req })))
end)

-- ?all=1: every image no container uses, not only dangling ones; ?label=
-- ?until= -> {"deleted", "untagged", "space_reclaimed"}
route("POST", "/api/images/prune", { query = images.PRUNE_QUERY },
  function(req)
    check(input.no_body(req))
    return 200, (check(images.prune(req.query)))
  end)

route("GET", "/api/images/*ref/history", { query = {} }, function(req)
  return 200, (check(images.history(req.params.ref)))
end)

-- {"repo", "tag"} -> 201 {"image", "source"}
route("POST", "/api/images/*ref/tag", { query = {} }, function(req)
  local b = body(req, images.TAG_FIELDS, { "repo" })
  return 201, (check(images.tag(req.params.ref, b.repo, b.tag)))
end)

-- -> {"image", "digest", "size", "status", "messages"}, to a registry
-- policy.lua allows (images.push); streamed as a pull is with Accept:
-- text/event-stream (or application/x-ndjson).
route("POST", "/api/images/*ref/push", { query = {} }, function(req)
  check(input.no_body(req))
  if images.wants_stream(req) then
    return (check(images.push_stream(req.params.ref, { req = req })))
  end
  return 200, (check(images.push(req.params.ref, { req = req })))
end)

route("GET", "/api/images/*ref", { query = {} }, function(req)
  return 200, (check(images.inspect(req.params.ref)))
end)

-- ?force=1&noprune=1 -> {"image", "untagged", "deleted"}; 409 when a
-- container uses it (without force).
route("DELETE", "/api/images/*ref", { query = images.REMOVE_QUERY },
  function(req)
    check(input.no_body(req))
    return 200, (check(images.remove(req.params.ref, req.query)))
  end)

-- ---- exec (README: "Exec") --------------------------------------------------

-- {"cmd": [...], "timeout": S, "user", "env", "workdir", "privileged"} ->
-- {"exit_code", "stdout", "stderr", "timed_out", "killed", "truncated",
-- "duration"}, in a running container policy.lua lets take exec
-- (exec.containers: by default those labelled horcrux.exec=true).
-- An interactive exec (a TTY) over a WebSocket: ?cmd=sh (or a JSON array),
-- ?user= ?workdir= ?privileged= ?rows= ?cols=; the client's messages are
-- its input (but xterm's ESC [ 8 ; ROWS ; COLS t alone resizes the TTY), the
-- binary messages back its output, and {"event":"exit","exit_code"} the
-- last. The token is needed (Authorization), read-only mode refuses it,
-- and policy.lua's exec rules apply before the exec is created.
route("GET", "/api/containers/:id/exec/ws", { query = hx.exec.TERMINAL_QUERY },
  function(req)
    return (check(hx.exec.terminal(container(req), req)))
  end)

route("POST", "/api/containers/:id/exec", { query = {} }, function(req)
  local b = check(input.json_body(req))
  return 200, (check(hx.exec.run(container(req), b, { req = req })))
end)

-- ---- networks and volumes (README: "Networks and volumes") ------------------

local networks, volumes = hx.networks, hx.volumes

route("GET", "/api/networks", { query = networks.LIST_QUERY }, function(req)
  return 200, (check(networks.list(req.query)))
end)

-- {"name", "driver", "internal", "attachable", "ipv6", "labels", "options",
-- "subnet", "gateway", "ip_range"} -> 201 {"id", "name", "warning"}, as
-- policy.lua's networks section allows.
route("POST", "/api/networks", { query = {} }, function(req)
  local spec = body(req, networks.FIELDS, { "name" })
  return 201, (check(networks.create(spec)))
end)

route("POST", "/api/networks/prune", { query = networks.PRUNE_QUERY },
  function(req)
    check(input.no_body(req))
    return 200, (check(networks.prune(req.query)))
  end)

route("GET", "/api/networks/:name", { query = {} }, function(req)
  return 200, (check(networks.inspect(req.params.name)))
end)

-- 409 while containers are on it.
route("DELETE", "/api/networks/:name", { query = {} }, function(req)
  check(input.no_body(req))
  return 200, (check(networks.remove(req.params.name)))
end)

-- {"container", "aliases", "ipv4"} -> {"network", "container",
-- "connected": true}, on a network create's rules let containers join.
route("POST", "/api/networks/:name/connect", { query = {} }, function(req)
  local spec = body(req, networks.CONNECT_FIELDS, { "container" })
  return 200, (check(networks.connect(req.params.name, spec, nil, req)))
end)

route("POST", "/api/networks/:name/disconnect", { query = {} }, function(req)
  local spec = body(req, networks.DISCONNECT_FIELDS, { "container" })
  return 200, (check(networks.disconnect(req.params.name, spec, nil, req)))
end)

route("GET", "/api/volumes", { query = volumes.LIST_QUERY }, function(req)
  return 200, (check(volumes.list(req.query)))
end)

-- {"name", "driver", "labels", "options"} -> 201 {"name", "driver",
-- "mountpoint"}; a bind of a host path is checked as create.binds.
route("POST", "/api/volumes", { query = {} }, function(req)
  return 201, (check(volumes.create(body(req, volumes.FIELDS))))
end)

-- Every volume no container uses (?label= narrows) -> {"deleted",
-- "space_reclaimed"}
route("POST", "/api/volumes/prune", { query = volumes.PRUNE_QUERY },
  function(req)
    check(input.no_body(req))
    return 200, (check(volumes.prune(req.query)))
  end)

route("GET", "/api/volumes/:name", { query = {} }, function(req)
  return 200, (check(volumes.inspect(req.params.name)))
end)

-- ?force=1; 409 while a container uses it.
route("DELETE", "/api/volumes/:name", { query = volumes.REMOVE_QUERY },
  function(req)
    check(input.no_body(req))
    return 200, (check(volumes.remove(req.params.name, req.query)))
  end)

-- ---- stacks from compose files (README: "Deploying stacks") -----------------

local compose, swarm = hx.compose, hx.swarm

local function deployed(req)
  return (check(compose.name(req.params.name)))
end

-- {"name", "compose": "<file text>"} -> 201 (200 for an update) {"name",
-- "mode": "compose" | "swarm", "created", "services", "output"}. Every
-- service is checked against policy.lua first; a refused file makes
-- nothing.
route("POST", "/api/stacks", { query = {} }, function(req)
  local spec = body(req, compose.FIELDS, { "name", "compose" })
  local res = check(compose.deploy(spec, { req = req }))
  return res.created and 201 or 200, res
end)

-- ?volumes=1 also removes its volumes -> {"name", "mode", "removed"}
route("DELETE", "/api/stacks/:name", { query = { volumes = input.boolean } },
  function(req)
    check(input.no_body(req))
    return 200, (check(compose.down(deployed(req),
      { volumes = req.query.volumes, req = req })))
  end)

-- The checked file as deployed -> {"name", "mode", "file"}
route("GET", "/api/stacks/:name/config", { query = {} }, function(req)
  return 200, (check(compose.config(deployed(req))))
end)

-- Pulls its images, each from a registry policy.lua allows -> {"name",
-- "images": [{"image", "status"}]}
route("POST", "/api/stacks/:name/pull", { query = {} }, function(req)
  check(input.no_body(req))
  return 200, (check(compose.pull(deployed(req), { req = req })))
end)

-- [{"service", "container", "stream", "line", "time"}]; refused in
-- read-only mode, as container logs are.
route("GET", "/api/stacks/:name/logs", { query = compose.LOGS_QUERY },
  function(req)
    check(input.writable(req, "stack logs are"))
    return 200, (check(compose.logs(deployed(req), req.query)))
  end)

-- The swarm: {"node_state", "manager", "node_id", "nodes"}
route("GET", "/api/swarm", { query = {} }, function()
  return 200, (check(swarm.state()))
end)

-- [{"id", "name", "stack", "image", "mode", "replicas": {"desired",
-- "running"}, "ports"}]; ?stack=
route("GET", "/api/swarm/services", { query = swarm.QUERY_SERVICES },
  function(req)
    return 200, (check(swarm.services(req.query.stack)))
  end)

-- [{"id", "service", "slot", "node", "desired_state", "state", "message",
-- "error", "container"}]; ?stack= ?service= ?node=
route("GET", "/api/swarm/tasks", { query = swarm.QUERY_TASKS }, function(req)
  return 200, (check(swarm.tasks(req.query)))
end)

-- The swarm's stacks: [{"name", "services", "replicas"}]
route("GET", "/api/swarm/stacks", { query = {} }, function()
  return 200, (check(swarm.stacks()))
end)
