--- horcrux.engine: the Docker Engine for scripts. It owns this Lua state's
-- client (horcrux.docker, connected on first use) and answers every call
-- as `value` or `nil, message, kind`, so a route can hand a failure to
-- horcrux.errors.check and let it propagate.
--
--   engine.call(method, template, params, query, body [, content_type])
--       -> value, status | nil, message, kind, status
--   engine.client()                   -> the state's client | nil, msg, kind
--   engine.configure(opts)            the client's options, for this state
--   engine.version()  engine.ping()
--   engine.containers{all =, filters =, limit =}     /containers/json
--   engine.inspect(ref)  engine.top(ref [, ps_args])  engine.stats(ref)
--   engine.stats_many(ids [, opts])  one-shot stats of many at once;
--                                    opts.timeout bounds the batch
--   engine.logs(ref, query [, max_bytes])  the raw log stream (a string)
--   engine.action(ref, action [, query])  -> {changed = boolean}
--   engine.remove(ref [, query])     -> true
--   engine.create(body [, name])     -> {Id, Warnings}
--   engine.events(opts, callback)    -> true, how | nil, msg, kind
--   engine.health()                  -> {reachable, version, api_version |
--                                        error, kind}
--   engine.breaker()                 -> the daemon's circuit breaker
--                                       (horcrux.docker's c:breaker()) | nil
--   engine.admit([host])             -> true | nil, msg, "unavailable" while
--                                       the breaker (of host: default the
--                                       state's daemon) is not closed
--
-- The breaker is the process's memory of the daemon (every Lua state of
-- `horcrux serve` and the collector share it): after calls that got no
-- answer, every call fails at once with kind "unavailable" and a message
-- that says why and when the next probe is, so a source hands over to the
-- next one at once. Inside `horcrux serve` every call also ends by the
-- request's deadline (kind "timeout").
--
-- Images, exec, networks, volumes and swarm (typed helpers over call; each
-- answers the daemon's decoded reply or nil, message, kind, status):
--   engine.images(query)  engine.image(ref)  engine.image_history(ref)
--   engine.pull(ref, opts)  engine.push(ref, opts)   -> true, each
--                                    progress message to opts.line(m)
--   engine.tag(ref, repo, tag)  engine.remove_image(ref, query)
--   engine.prune_images(filters)
--   engine.exec_create(ref, body)  engine.exec_inspect(id)
--   engine.exec_start(id, opts)      -> the raw (multiplexed) output
--   engine.networks(filters)  engine.network(name)  engine.network_create(body)
--   engine.network_remove(name)  engine.network_prune(filters)
--   engine.network_connect(name, body)  engine.network_disconnect(name, body)
--   engine.volumes(filters)  engine.volume(name)  engine.volume_create(body)
--   engine.volume_remove(name, query)  engine.volume_prune(filters)
--   engine.info()  engine.nodes(filters)  engine.services(filters)
--   engine.tasks(filters)
-- A call that may take long (pull, push, exec_start) runs on a client of
-- its own with the timeout (and reply cap) it is given, closed after it.
--
-- `template` is an Engine API path with {placeholders} ("/containers/{id}
-- /top") filled from `params` and checked against Docker's grammar before
-- any request is made (horcrux.docker's c:call); the version prefix is
-- added by the client. A reply that is not a success is `nil, message,
-- kind, status` with the daemon's own message; the status -> kind table is
-- the client's, in C.
local docker = require "horcrux.docker"
local clock = require "horcrux.clock"

local M = {}

local client, client_err, client_kind
-- Clients with other limits, by what differs: "max_response=N" (logs:
-- replies that stop at a cap), "health" (short timeouts).
local special = {}

local function special_client(key, opts)
  local c = special[key]
  if not c then
    local err, kind
    c, err, kind = docker.connect(opts)
    if not c then
      return nil, err, kind
    end
    special[key] = c
  end
  return c
end

--- The state's client. connect() only reads DOCKER_HOST and friends, so a
-- failure here is a configuration error and is remembered.
-- Options of this state's client (set by configure()).
local client_opts = nil

function M.client()
  if client == nil and client_err == nil then
    client, client_err, client_kind = docker.connect(client_opts)
  end
  if client == nil then
    return nil, client_err, client_kind
  end
  return client
end

-- The client of options `opts`, kept under `key`; the state's client when
-- key is nil.
local function client_for(key, opts)
  if key then
    return special_client(key, opts)
  end
  return M.client()
end

--- Sets the options of this state's client (horcrux.docker.connect's:
-- timeout, connect_timeout...) and drops the one it had: the collector's
-- thread keeps its calls short, so a daemon that stops answering holds a
-- round (and a stop) for seconds, not the default 30 s.
function M.configure(opts)
  M.reset()
  client_opts = opts
end

--- Forgets the state's client (specs that change DOCKER_HOST).
function M.reset()
  if client then
    client:close()
  end
  for _, c in pairs(special) do
    c:close()
  end
  client, client_err, client_kind, special = nil, nil, nil, {}
end

local function with_client(fn)
  return function(...)
    local c, err, kind = M.client()
    if not c then
      return nil, err, kind
    end
    return fn(c, ...)
  end
end

M.call = with_client(function(c, method, template, params, query, body,
                              ctype)
  return c:call(method, template, params, query, body, ctype)
end)

M.version = with_client(function(c) return c:version() end)
M.ping = with_client(function(c) return c:ping() end)
M.containers = with_client(function(c, opts) return c:containers(opts) end)
M.inspect = with_client(function(c, ref) return c:inspect(ref) end)
M.stats = with_client(function(c, ref) return c:stats(ref) end)
--- One-shot stats of many containers at once; opts.timeout (seconds) bounds
-- the whole batch (a client of its own with that timeout). That client
-- does not feed the daemon's breaker: a batch cut by its own short bound
-- (Docker before 25.0 answers a one-shot stats at its next one-second
-- tick, later on a loaded engine) is not a daemon that stopped answering,
-- and opening the breaker for it failed every route at once; the
-- caller's other calls (the collector's list and events) still feed it.
function M.stats_many(ids, opts)
  local t, key, copts = opts and opts.timeout, nil, nil
  if t then
    local ms = math.max(50, math.floor(t * 1000))
    key = "timeout=" .. ms
    copts = { timeout = ms / 1000, connect_timeout = math.min(1, ms / 1000),
      breaker = false }
  end
  local c, err, kind = client_for(key, copts)
  if not c then
    return nil, err, kind
  end
  return c:stats_many(ids)
end
M.events = with_client(function(c, opts, cb) return c:events(opts, cb) end)

--- `ps` inside a running container: {Titles = {...}, Processes = {{...}}}.
function M.top(ref, ps_args)
  return M.call("GET", "/containers/{id}/top", { id = ref },
    ps_args and { ps_args = ps_args } or nil)
end

--- The raw logs reply (multiplexed frames, or a TTY's bytes). A reply past
-- max_bytes fails with kind "limit" as it passes the cap, so a huge log is
-- never held whole.
function M.logs(ref, query, max_bytes)
  local c, err, kind = client_for(max_bytes and "max_response=" .. max_bytes,
    max_bytes and { max_response = max_bytes })
  if not c then
    return nil, err, kind
  end
  local body, status
  body, err, kind, status = c:call("GET", "/containers/{id}/logs",
    { id = ref }, query)
  if body == nil then
    return nil, err, kind, status
  end
  if body == true then
    return ""
  end
  return body
end

-- Replies that mean "it already was so": 304 for start and stop; for pause
-- and unpause the daemon says it in words (409, and 500 before 23.0).
local function already(action, status, msg)
  if status == 304 then
    return true
  end
  msg = msg or ""
  if action == "pause" and status == 409 then
    return msg:find("is already paused", 1, true) ~= nil
  end
  return false
end

local ACTIONS = { start = true, stop = true, restart = true, kill = true,
  pause = true, unpause = true }

--- POST /containers/{ref}/{action} (start, stop, restart, kill, pause,
-- unpause): {changed = false} when it already was so. Another word is
-- nil, message, "bad_request", nothing sent (the daemon's 404 for a path
-- it does not know would read as "no such container").
function M.action(ref, action, query)
  if type(action) ~= "string" then
    error(("bad argument #2 to 'action' (string expected, got %s)")
      :format(type(action)), 2)
  end
  if not ACTIONS[action] then
    return nil, ("engine.action: unknown action %q (start, stop, restart, "
      .. "kill, pause or unpause)"):format(action), "bad_request"
  end
  local v, err, kind, status = M.call("POST", "/containers/{id}/" .. action,
    { id = ref }, query)
  if v ~= nil then
    local got = err -- a success's second value is its status
    return { changed = got ~= 304 }
  end
  if already(action, status, err) then
    return { changed = false }
  end
  if action == "unpause" and (status == 409 or status == 500)
      and (err or ""):find("is not paused", 1, true) then
    -- not paused: unchanged when it runs; a container that does not run
    -- cannot be unpaused (the daemon's own 409 for a created one)
    local info = M.inspect(ref)
    local state = type(info) == "table" and type(info.State) == "table"
      and info.State or {}
    if state.Running == true then
      return { changed = false }
    end
    return nil, err, "conflict", 409
  end
  return nil, err, kind, status
end

--- Whether the engine answers a versioned call (so a DOCKER_API_VERSION
-- the daemon does not speak shows, with its reason), asked with short
-- timeouts (2 s, connecting 1 s): {reachable, version, api_version} or
-- {reachable = false, error, kind}.
function M.health()
  local c, err, kind = special_client("health",
    { timeout = 2, connect_timeout = 1 })
  local v
  if c then
    v, err, kind = c:call("GET", "/version")
  end
  if type(v) ~= "table" then
    return { reachable = false, error = err, kind = kind }
  end
  return { reachable = true, version = v.Version,
    api_version = c:api_version() }
end

--- The breaker of the state's daemon: {host, state = "closed" | "open" |
-- "probing", failures, last_error, last_kind, and while not closed:
-- message, opened, next_probe, next_probe_in}; nil without a client.
function M.breaker()
  local c = M.client()
  return c and c:breaker() or nil
end

--- Whether calls reach the daemon now (its breaker is closed): true, or
-- nil, the breaker's message, "unavailable". For code that reaches a
-- daemon another way (the docker CLI); `host` names another daemon than
-- the state's (a DOCKER_HOST of the CLI's own).
function M.admit(host)
  if host then
    local b = docker.breaker(host)
    if b.state ~= "closed" then
      return nil, b.message, "unavailable"
    end
    return true
  end
  local c = M.client()
  if not c then
    return true -- no client: the caller's own call will say why
  end
  return c:admit()
end

function M.remove(ref, query)
  local v, err, kind, status = M.call("DELETE", "/containers/{id}", { id = ref },
    query)
  if v == nil then
    return nil, err, kind, status
  end
  return true
end

function M.create(body, name)
  local v, err, kind, status = M.call("POST", "/containers/create", nil,
    name and { name = name } or nil, body, "application/json")
  if v == nil then
    return nil, err, kind, status
  end
  if type(v) ~= "table" or type(v.Id) ~= "string" then
    return nil, "docker: create answered without an Id", "protocol", status
  end
  return v
end

-- ---- images, exec, networks, volumes, swarm -------------------------------

-- A call's value, or its failure (nil, message, kind, status); a success's
-- status is dropped.
local function value(v, err, kind, status)
  if v == nil then
    return nil, err, kind, status
  end
  return v
end

local function get(template, params, query)
  return value(M.call("GET", template, params, query))
end

-- {filters = f} when f has any key (the daemon takes filters as JSON).
local function filtered(filters, query)
  query = query or {}
  if type(filters) == "table" and next(filters) ~= nil then
    query.filters = filters
  end
  return query
end

-- A client of its own for a call that may take long (opts: timeout,
-- max_response), so the state's client keeps its limits; the caller closes
-- it (`local c <close> = ...`).
-- POST path (a /prune) with filters, asked again while the daemon is
-- running another prune of the same objects: it runs them one at a time
-- and refuses the next with 409 "a prune operation is already running"
-- (another client's, or two requests of ours at once), which is not the
-- caller's conflict. For up to PRUNE_WAIT_S, within the request's deadline.
local PRUNE_WAIT_S = 5
local function prune(path, filters)
  local deadline = clock.mono_ns() + PRUNE_WAIT_S * 1000000000
  while true do
    local v, err, kind, status = M.call("POST", path, nil, filtered(filters))
    if v ~= nil or kind ~= "conflict" or clock.mono_ns() > deadline
        or not tostring(err):find("prune operation is already running", 1,
          true) then
      return value(v, err, kind, status)
    end
    clock.sleep(0.1)
  end
end

local function own_client(opts)
  return docker.connect(opts)
end

--- GET /images/json; query: all, filters (dangling, label, reference...),
-- digests.
function M.images(query) return get("/images/json", nil, query) end
function M.image(ref) return get("/images/{image}/json", { image = ref }) end
function M.image_history(ref)
  return get("/images/{image}/history", { image = ref })
end

-- A call to an endpoint that answers progress messages (pull, push), on a
-- client of its own: opts.timeout (s, 600), opts.max_response (bytes of
-- messages, 32 MiB). opts.line(message) is called with each of the
-- daemon's JSON lines, in order, once the reply is complete (a request's
-- coroutine cannot hold a stream, docker_stream.c). A pull streamed to its
-- client does not come here: images.pull_stream hands the transfer to the
-- host's executor (the client's c:relay, docker_relay.c).
local function progress_call(opts, template, params, query, body)
  local c <close>, err, kind = own_client({ timeout = opts.timeout or 600,
    max_response = opts.max_response or 32 * 1024 * 1024 })
  if not c then
    return nil, err, kind
  end
  local lines, e, k, status = c:call("POST", template, params, query, body)
  if lines == nil then
    return nil, e, k, status
  end
  if opts.line then
    for _, m in ipairs(type(lines) == "table" and lines or {}) do
      opts.line(m)
    end
  end
  return true
end

--- POST /images/create?fromImage=ref: true, each of the daemon's
-- progress messages handed to opts.line (an error the daemon met while
-- pulling is one of them, {error =, errorDetail =}). ref must name a tag
-- or a digest: a bare name pulls every tag. opts: line, timeout,
-- max_response, platform.
function M.pull(ref, opts)
  opts = opts or {}
  return progress_call(opts, "/images/create", nil,
    { fromImage = ref, platform = opts.platform })
end

--- POST /images/{ref}/push: true, the progress messages to opts.line as
-- pull's. The registry's credentials go in the body ({username, password,
-- serveraddress} or {identitytoken}), the form the daemon takes when no
-- X-Registry-Auth header comes: opts.auth, else {} (anonymous). opts:
-- line, timeout, max_response, as pull.
function M.push(ref, opts)
  opts = opts or {}
  return progress_call(opts, "/images/{image}/push", { image = ref }, nil,
    opts.auth or {})
end

function M.tag(ref, repo, tag)
  return value(M.call("POST", "/images/{image}/tag", { image = ref },
    { repo = repo, tag = tag }))
end

--- DELETE /images/{ref}; query: force, noprune. [{Untagged} | {Deleted}].
function M.remove_image(ref, query)
  return value(M.call("DELETE", "/images/{image}", { image = ref }, query))
end

function M.prune_images(filters) return prune("/images/prune", filters) end

--- POST /containers/{ref}/exec: {Id}.
function M.exec_create(ref, body)
  return value(M.call("POST", "/containers/{id}/exec", { id = ref }, nil,
    body))
end

function M.exec_inspect(id) return get("/exec/{exec}/json", { exec = id }) end

--- POST /exec/{id}/start, attached: the output as the daemon sends it (a
-- TTY's bytes, else multiplexed frames; "" when there was none), once the
-- command ended. opts: timeout (s: the transfer fails with kind "timeout"
-- past it, the command still running), max_response (bytes: "limit").
function M.exec_start(id, opts)
  opts = opts or {}
  local c <close>, err, kind = own_client({ timeout = opts.timeout,
    max_response = opts.max_response })
  if not c then
    return nil, err, kind
  end
  local v, status
  v, err, kind, status = c:call("POST", "/exec/{exec}/start", { exec = id },
    nil, { Detach = false, Tty = opts.tty == true })
  if v == nil then
    return nil, err, kind, status
  end
  return v == true and "" or v
end

function M.networks(filters) return get("/networks", nil, filtered(filters)) end
function M.network(name)
  return get("/networks/{network}", { network = name })
end
--- body: {Container, EndpointConfig} (connect), {Container, Force}
-- (disconnect).
function M.network_connect(name, body)
  return value(M.call("POST", "/networks/{network}/connect",
    { network = name }, nil, body))
end
function M.network_disconnect(name, body)
  return value(M.call("POST", "/networks/{network}/disconnect",
    { network = name }, nil, body))
end

--- GET /volumes: {Volumes = [...], Warnings}.
function M.volumes(filters) return get("/volumes", nil, filtered(filters)) end
function M.volume(name) return get("/volumes/{volume}", { volume = name }) end

-- network_create(body), network_remove(name[, query]),
-- network_prune(filters), and the same three of volume_: one shape.
for kind, path in pairs({ network = "/networks", volume = "/volumes" }) do
  local one = path .. "/{" .. kind .. "}"
  M[kind .. "_create"] = function(body)
    return value(M.call("POST", path .. "/create", nil, nil, body))
  end
  M[kind .. "_remove"] = function(name, query)
    return value(M.call("DELETE", one, { [kind] = name }, query))
  end
  M[kind .. "_prune"] = function(filters)
    return prune(path .. "/prune", filters)
  end
end

--- GET /info: the engine, and its swarm state (Swarm.LocalNodeState,
-- Swarm.ControlAvailable: a manager).
function M.info() return get("/info") end
function M.nodes(filters) return get("/nodes", nil, filtered(filters)) end
--- GET /services?status=true: each with ServiceStatus {RunningTasks,
-- DesiredTasks} (API 1.41).
function M.services(filters)
  return get("/services", nil, filtered(filters, { status = true }))
end
function M.tasks(filters) return get("/tasks", nil, filtered(filters)) end

return M
