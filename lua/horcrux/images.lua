--- horcrux.images: the engine's images as the /api/images routes show and
-- change them, under policy.lua's `images` section.
--
--   images.LIST_QUERY, images.PRUNE_QUERY, images.REMOVE_QUERY
--                                       the routes' query checkers
--   images.list(query)                -> [{id, tags, digests, created, size,
--                                          labels, containers}]
--   images.inspect(ref)               -> {id, tags, digests, created, size,
--                                          architecture, os, author, config}
--   images.history(ref)               -> [{id, created, created_by, size,
--                                          tags, comment}]
--   images.pull(ref, opts)            -> {image, id, status, messages}
--   images.pull_stream(ref, opts)     -> hub.stream of the pull's progress
--   images.push_stream(ref, opts)     -> hub.stream of the push's progress
--   images.wants_stream(req)          -> whether req's Accept asks for one
--   images.push(ref, opts)            -> {image, digest, size, status,
--                                          messages}
--   images.tag(ref, repo, tag, policy) -> {image, source}
--   images.remove(ref, query)         -> {image, untagged, deleted}
--   images.prune(query)               -> {deleted, untagged,
--                                          space_reclaimed}
-- each answering its value or nil, message, kind[, extra].
--
-- pull and push check the registry against policy.lua (images.pull,
-- images.push) before anything is sent to the daemon. opts: req (whose
-- X-Registry-Auth header may carry credentials), policy, progress. The
-- credentials (horcrux.registry.credentials) go to the daemon in the push
-- body, or for a pull, whose only way in is that header, which this client
-- does not send, through the docker CLI given a private config.json.
--
-- Progress: a plain request waits and answers every message the daemon
-- sent ({status, id, progress} each). opts.progress(message), when given,
-- is called with each one, in order, from the line callback the engine
-- calls per progress line (`messages` below; engine.pull's opts.line),
-- once the reply is complete. A request that accepts text/event-stream or
-- application/x-ndjson gets them as they come instead: pull_stream checks
-- the policy and the credentials as pull does, then hands the transfer to
-- the host's executor (horcrux.docker's c:relay), which publishes each of
-- the daemon's lines to a topic of this request's own, and answers a
-- hub.stream of that topic: the route returns at once and holds neither
-- its worker nor its Lua state while the daemon pulls.
local json = require "horcrux.json"
local null = json.null
local engine = require "horcrux.engine"
local config = require "horcrux.config"
local registry = require "horcrux.registry"
local workdir = require "horcrux.workdir"
local input = require "horcrux.input"
local time = require "horcrux.time"
local cli = require "horcrux.cli"
local fields = require "horcrux.fields"

local M = {}

M.LIST_QUERY = {
  all = input.boolean, dangling = input.boolean,
  label = input.string(512), reference = input.string(512),
}
M.PRUNE_QUERY = { all = input.boolean, label = input.string(512),
  ["until"] = time.param }
M.REMOVE_QUERY = { force = input.boolean, noprune = input.boolean }

--- The bodies of POST /api/images/pull and POST /api/images/*ref/tag
-- (horcrux.fields).
M.PULL_FIELDS = { image = fields.string(512) }
M.TAG_FIELDS = { repo = fields.string(255), tag = fields.string(128) }

-- ---- shapes ------------------------------------------------------------------

local function strings(list, skip)
  local out = json.array()
  for _, s in ipairs(type(list) == "table" and list or {}) do
    if type(s) == "string" and s ~= skip then
      out[#out + 1] = s
    end
  end
  return out
end

local function unix_time(s)
  return math.type(s) == "integer" and time.format(s * 1000000000) or null
end

local function list_item(img)
  return {
    id = img.Id or null,
    tags = strings(img.RepoTags, "<none>:<none>"),
    digests = strings(img.RepoDigests, "<none>@<none>"),
    created = unix_time(img.Created),
    size = img.Size or null,
    labels = type(img.Labels) == "table" and img.Labels or {},
    containers = (img.Containers or -1) >= 0 and img.Containers or null,
  }
end

--- GET /api/images: ?all= (intermediate layers too), ?dangling=,
-- ?label=KEY[=VALUE], ?reference=PATTERN (the daemon's filters).
function M.list(q)
  q = q or {}
  local filters = {}
  if q.dangling ~= nil then
    filters.dangling = json.array({ tostring(q.dangling) })
  end
  if q.label then filters.label = json.array({ q.label }) end
  if q.reference then filters.reference = json.array({ q.reference }) end
  local list, err, kind = engine.images({ all = q.all or nil,
    filters = next(filters) and filters or nil })
  if not list then
    return nil, err, kind
  end
  local out = json.array()
  for i, img in ipairs(list) do
    out[i] = list_item(img)
  end
  return out
end

local function created(s)
  return type(s) == "string" and s or null
end

function M.inspect(ref)
  local img, err, kind = engine.image(ref)
  if not img then
    return nil, err, kind
  end
  local c = type(img.Config) == "table" and img.Config or {}
  return {
    id = img.Id, tags = strings(img.RepoTags), digests = strings(img.RepoDigests),
    created = created(img.Created), size = img.Size or null,
    architecture = img.Architecture or null, os = img.Os or null,
    author = img.Author ~= "" and img.Author or null,
    config = {
      cmd = c.Cmd or null, entrypoint = c.Entrypoint or null,
      env = c.Env or null,
      labels = type(c.Labels) == "table" and c.Labels or {},
      user = c.User ~= "" and c.User or null,
      working_dir = c.WorkingDir ~= "" and c.WorkingDir or null,
      exposed_ports = type(c.ExposedPorts) == "table" and c.ExposedPorts
        or {},
    },
  }
end

function M.history(ref)
  local list, err, kind = engine.image_history(ref)
  if not list then
    return nil, err, kind
  end
  local out = json.array()
  for i, h in ipairs(list) do
    out[i] = { id = h.Id ~= "<missing>" and h.Id or null,
      created = unix_time(h.Created), created_by = h.CreatedBy or null,
      size = h.Size or null, tags = strings(h.Tags),
      comment = h.Comment ~= "" and h.Comment or null }
  end
  return out
end

-- ---- progress ------------------------------------------------------------

-- The kind of an error the daemon met while streaming (after its 200):
-- an image or tag that is not there ("manifest unknown" from a registry,
-- "tag does not exist" of a push of a tag that is not local) is a 404.
local function stream_kind(msg)
  local m = msg:lower()
  if m:find("not found", 1, true) or m:find("manifest unknown", 1, true)
      or m:find("does not exist", 1, true) then
    return "not_found"
  end
  return "server"
end

--- A pull's or push's messages as they come: t.line(m) takes each of the
-- daemon's lines, keeps it as {status, id, progress[, error]} (what is
-- given) in t.messages and hands it to progress(); t.failed is the first
-- error the daemon reported, t.aux its aux record (push: Tag, Digest,
-- Size).
local function messages(progress)
  local t = { messages = json.array(), aux = {} }
  function t.line(m)
    if type(m) ~= "table" then
      return
    end
    local e = m.error or (type(m.errorDetail) == "table"
      and m.errorDetail.message)
    local msg = { status = m.status, id = m.id, progress = m.progress }
    if e then
      msg.error = tostring(e)
      t.failed = t.failed or msg.error
    end
    if type(m.aux) == "table" then
      t.aux = m.aux
    end
    if next(msg) then
      t.messages[#t.messages + 1] = msg
      if progress then
        progress(msg)
      end
    end
  end
  return t
end

local function last_status(messages)
  for i = #messages, 1, -1 do
    if messages[i].status then
      return messages[i].status
    end
  end
  return null
end

-- ---- pull and push -------------------------------------------------------

-- ref parsed, checked against the policy's registries for op, with the
-- tag it means (latest when none: a bare name would pull every tag).
local function target(op, ref, policy)
  local p, err, kind = registry.parse(ref)
  if not p then
    return nil, err, kind, "image"
  end
  local ok
  ok, err, kind = registry.allowed(op, p, policy)
  if not ok then
    return nil, err, kind, "image"
  end
  if not p.tag and not p.digest then
    p.ref = p.ref .. ":latest"
  end
  return p
end

-- A pull with credentials: `docker --config DIR pull REF`, DIR private and
-- holding a config.json for this registry only. Each of its text lines is
-- a message, handed to line().
local function cli_pull(p, auth, policy, line)
  local o = policy.cli or {}
  return workdir.with(function(dir)
    local ok, err, kind = workdir.write(dir .. "/config.json",
      registry.cli_config(p.registry, auth))
    if not ok then
      return nil, err, kind
    end
    local out
    out, err, kind = cli.run({ "--config", dir, "pull", "--", p.ref },
      { docker = o.docker, timeout = math.max(o.timeout or 30, 600),
        env = o.env })
    if not out then
      return nil, err, kind
    end
    for text in out:gmatch("[^\n]+") do
      if text ~= p.ref then -- the CLI's last line names the image
        line({ status = text })
      end
    end
    return true
  end)
end

-- What pull and push do first: the reference checked against the
-- registries policy.lua allows for op, and the credentials for its
-- registry (false: none). Returns p, auth, policy | nil, message, kind,
-- field.
local function begin(op, ref, opts)
  local policy = opts.policy or config.policy()
  local p, err, kind, field = target(op, ref, policy)
  if not p then
    return nil, err, kind, field
  end
  local auth
  auth, err, kind = registry.credentials(p.registry, opts.req, policy)
  if auth == nil then
    return nil, err, kind
  end
  return p, auth, policy
end

-- A pull or a push of ref to its end: its messages (each handed to
-- opts.progress), then done{ref, messages, aux} shapes the answer. A pull
-- with credentials goes through the CLI (cli_pull).
local function transfer(op, ref, opts, done)
  opts = opts or {}
  local p, auth, policy, field = begin(op, ref, opts)
  if not p then
    return nil, auth, policy, field
  end
  local t = messages(opts.progress)
  local ok, err, kind
  if op == "push" then
    ok, err, kind = engine.push(p.ref, { auth = auth or nil, line = t.line })
  elseif auth then
    ok, err, kind = cli_pull(p, auth, policy, t.line)
  else
    ok, err, kind = engine.pull(p.ref, { line = t.line })
  end
  if not ok then
    return nil, err, kind
  end
  if t.failed then
    return nil, ("%s %s: %s"):format(op, p.ref, t.failed),
      stream_kind(t.failed), { messages = t.messages }
  end
  t.ref = p.ref
  return done(t)
end

--- Pulls ref (as given; :latest when it names no tag) from a registry the
-- policy allows.
function M.pull(ref, opts)
  return transfer("pull", ref, opts, function(t)
    local img = engine.image(t.ref)
    return { image = t.ref, id = type(img) == "table" and img.Id or null,
      status = last_status(t.messages), messages = t.messages }
  end)
end

--- Whether req asks for its answer as a stream (Accept: text/event-stream
-- or application/x-ndjson).
function M.wants_stream(req)
  local a = req.headers.accept or ""
  return a:find("text/event-stream", 1, true) ~= nil
    or a:find("application/x-ndjson", 1, true) ~= nil
end

-- A pull or a push of ref streamed: the same registry policy and
-- credentials as the plain one, checked before anything reaches the daemon;
-- then a hub.stream of topic "<op>/<request id>" whose messages are the
-- daemon's lines (`progress`), then `result` {event, image, status [,
-- digest, size]} or `error` {event, error = {code, message}}.
local function stream(op, ref, opts)
  opts = opts or {}
  local p, auth, policy, field = begin(op, ref, opts)
  if not p then
    return nil, auth, policy, field
  end
  local ok, err, kind = engine.admit()
  if not ok then
    return nil, err, kind
  end
  local c
  c, err, kind = engine.client()
  if not c then
    return nil, err, kind
  end
  local path, query, body, headers
  if op == "push" then
    -- the credentials in the body, as engine.push sends them ({}: none)
    path, body = "/images/" .. p.ref .. "/push", json.encode(auth or {})
  else
    path, query = "/images/create", { fromImage = p.ref }
    if auth then -- a pull takes them in this header only (base64url)
      headers = { "X-Registry-Auth: " .. registry.base64(json.encode(auth))
        :gsub("%+", "-"):gsub("/", "_") }
    end
  end
  local topic = op .. "/" .. tostring(opts.req and opts.req.id or
    ("%d"):format(math.random(1, 1 << 48)))
  ok, err, kind = c:relay("POST", path, query, body, { topic = topic,
    image = p.ref, op = op, headers = headers,
    timeout = math.max((policy.cli or {}).timeout or 0, 600) })
  if not ok then
    return nil, err, kind
  end
  return require("horcrux.hub").stream({ topic = topic })
end

--- The pull of ref streamed (see stream above). opts: req (its id names
-- the topic, its X-Registry-Auth is read), policy.
function M.pull_stream(ref, opts)
  return stream("pull", ref, opts)
end

--- The push of ref streamed, as pull_stream; its result carries the
-- digest and size the registry gave.
function M.push_stream(ref, opts)
  return stream("push", ref, opts)
end

--- Pushes ref (:latest when it names no tag) to a registry the policy
-- allows.
function M.push(ref, opts)
  return transfer("push", ref, opts, function(t)
    return { image = t.ref, digest = t.aux.Digest or null,
      size = t.aux.Size or null, status = last_status(t.messages),
      messages = t.messages }
  end)
end

-- ---- tag, remove, prune ----------------------------------------------------

local function matches(patterns, s)
  for _, pat in ipairs(patterns) do
    if s:match(pat) then
      return true
    end
  end
  return false
end

--- POST /api/images/*ref/tag {"repo", "tag"}: ref gets the name repo:tag
-- (tag: latest). When policy.lua's create.images limits what may run, a
-- tag cannot give an image a name it allows when ref is not one it allows
-- (that would let any image run under an allowed name).
function M.tag(ref, repo, tag, policy)
  policy = policy or config.policy()
  local r, err, kind = registry.parse(repo)
  if not r or r.tag or r.digest then
    return nil, "repo: " .. (err or ("%q must name a repository, without a "
      .. "tag or digest"):format(repo)), "bad_request", "repo"
  end
  tag = tag or "latest"
  if not tag:match("^[%w_][%w_.-]*$") or #tag > 128 then
    return nil, "tag: letters, digits and _ . - (at most 128 bytes)",
      "bad_request", "tag"
  end
  local name = repo .. ":" .. tag
  local patterns = (policy.create or {}).images
  if patterns and matches(patterns, name) and not matches(patterns, ref) then
    return nil, ("tag: %s may not be named %s: create.images allows that "
      .. "name but not %s (policy.lua: create.images)"):format(ref, name, ref),
      "forbidden", "repo"
  end
  local ok
  ok, err, kind = engine.tag(ref, repo, tag)
  if not ok then
    return nil, err, kind
  end
  return { image = name, source = ref }
end

--- DELETE /api/images/*ref?force=&noprune=: what the daemon untagged and
-- deleted. An image a container uses is a conflict (409) without force.
function M.remove(ref, q)
  q = q or {}
  local list, err, kind = engine.remove_image(ref,
    { force = q.force or nil, noprune = q.noprune or nil })
  if not list then
    return nil, err, kind
  end
  local untagged, deleted = json.array(), json.array()
  for _, r in ipairs(type(list) == "table" and list or {}) do
    if r.Untagged then untagged[#untagged + 1] = r.Untagged end
    if r.Deleted then deleted[#deleted + 1] = r.Deleted end
  end
  return { image = ref, untagged = untagged, deleted = deleted }
end

--- POST /api/images/prune: dangling images (?all=1: every image no
-- container uses), only those with ?label=, older than ?until=.
function M.prune(q)
  q = q or {}
  local filters = { dangling = json.array({ q.all and "false" or "true" }) }
  if q.label then filters.label = json.array({ q.label }) end
  if q["until"] then filters["until"] = json.array({ q["until"] }) end
  local r, err, kind = engine.prune_images(filters)
  if not r then
    return nil, err, kind
  end
  local untagged, deleted = json.array(), json.array()
  for _, d in ipairs(type(r.ImagesDeleted) == "table" and r.ImagesDeleted
    or {}) do
    if d.Untagged then untagged[#untagged + 1] = d.Untagged end
    if d.Deleted then deleted[#deleted + 1] = d.Deleted end
  end
  return { deleted = deleted, untagged = untagged,
    space_reclaimed = r.SpaceReclaimed or 0 }
end

return M
