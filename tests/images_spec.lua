-- Images: references read as Docker reads them, the registry policy and
-- credentials, and the routes against the real engine and real registries
-- (Debian's docker-registry on loopback ports): an image tagged and pushed
-- through horcrux, removed, pulled back with its progress messages, pruned;
-- a pull from a registry policy.lua does not allow refused before any
-- request reaches the daemon; credentials from X-Registry-Auth and from
-- policy.lua used and never shown.
local registry = require "horcrux.registry"
local json = require "horcrux.json"
local proc = require "horcrux.proc"
local http = require "http"
local ms = require "manage_support"
local support = require "support"
local reg_support = require "registry"

local function parsed(ref)
  local p, err = registry.parse(ref)
  assert(p, err)
  return p
end

describe("horcrux.registry", function()
  it("reads a reference's registry, path, tag and digest as Docker does", function()
    local p = parsed("127.0.0.1:5000/team/app:1.2")
    assert.are.same({ "127.0.0.1:5000", "team/app", "1.2" },
      { p.registry, p.path, p.tag })
    p = parsed("busybox")
    assert.are.same({ "docker.io", "library/busybox" }, { p.registry, p.path })
    assert.is_nil(p.tag)
    assert.are.equal("docker.io", parsed("team/app:1").registry)
    assert.are.equal("localhost", parsed("localhost/app").registry)
    assert.are.equal("docker.io", parsed("index.docker.io/x/y").registry)
    assert.are.equal("reg.example.com", parsed("Reg.Example.com/x").registry)
    local d = parsed("r:5000/a/b@sha256:" .. string.rep("ab", 32))
    assert.are.same({ "r:5000", "a/b" }, { d.registry, d.path })
    assert.truthy(d.digest)
    for _, bad in ipairs({ "", "-x", "a b", "x/Y", "x:tag:more", "a//b",
      "x@sha256:12", string.rep("a", 513), "../x" }) do
      local r, _, kind = registry.parse(bad)
      assert.is_nil(r, bad)
      assert.are.equal("bad_request", kind)
    end
  end)

  it("lets op reach only the registries policy.lua lists", function()
    local policy = { images = { pull = { "127.0.0.1:5000", "Docker.io" } } }
    assert.is_true(registry.allowed("pull", parsed("127.0.0.1:5000/a:1"), policy))
    assert.is_true(registry.allowed("pull", parsed("busybox"), policy))
    local ok, err, kind = registry.allowed("pull", parsed("127.0.0.1:5001/a"),
      policy)
    assert.is_nil(ok)
    assert.are.equal("forbidden", kind)
    assert.truthy(err:find("images.pull", 1, true), err)
    assert.is_nil(registry.allowed("push", parsed("127.0.0.1:5000/a"), policy))
    assert.is_nil(registry.allowed("pull", parsed("busybox"), {}))
    assert.is_true(registry.allowed("push", parsed("x/y"), { images = { push = true } }))
  end)

  it("encodes and decodes base64, both alphabets", function()
    for _, s in ipairs({ "", "a", "ab", "abc", "abcd", "\255\254\253\0x" }) do
      assert.are.equal(s, registry.unbase64(registry.base64(s)))
    end
    assert.are.equal("\251\255", registry.unbase64("-_8"))
    assert.is_nil(registry.unbase64("a$b"))
  end)

  it("takes credentials from X-Registry-Auth, else from policy.lua", function()
    local header = registry.base64(json.encode({ username = "u", password = "p" }))
      :gsub("%+", "-"):gsub("/", "_")
    local auth = registry.credentials("r:1", { headers = { ["x-registry-auth"] = header } })
    assert.are.same({ username = "u", password = "p", serveraddress = "r:1" }, auth)
    local policy = { images = { auth = { ["R:1"] = { username = "a", password = "b" } } } }
    assert.are.same({ username = "a", password = "b", serveraddress = "r:1" },
      registry.credentials("r:1", { headers = {} }, policy))
    assert.is_false(registry.credentials("r:2", { headers = {} }, policy))
    local ok, err, kind = registry.credentials("r:1",
      { headers = { ["x-registry-auth"] = "c2VjcmV0LXZhbHVl" } }) -- "secret-value"
    assert.is_nil(ok)
    assert.are.equal("bad_request", kind)
    assert.is_nil(err:find("c2VjcmV0", 1, true), err)
  end)

  it("reads a docker CLI config.json named by policy.lua", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write(json.encode({ auths = {
      ["https://index.docker.io/v1/"] = { auth = registry.base64("hub:pw") },
      ["http://r:5000"] = { auth = registry.base64("me:s:ecret") } } }))
    f:close()
    local policy = { images = { auth = path } }
    local a = registry.credentials("r:5000", nil, policy)
    os.remove(path)
    assert.are.same({ "me", "s:ecret" }, { a.username, a.password })
    local conf = json.decode(registry.cli_config("docker.io", { username = "u",
      password = "p" }))
    assert.are.equal(registry.base64("u:p"),
      conf.auths["https://index.docker.io/v1/"].auth)
  end)
end)

-- ---- the real engine and registries ---------------------------------------------

local TOKEN = ms.TOKEN

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

-- A scripts folder whose policy.lua is `text` (the other scripts are the
-- shipped ones).
local function scripts(text)
  local dir = assert(proc.run({ "mktemp", "-d", "/tmp/hxtest-scripts.XXXXXX" }))
    .stdout:gsub("%s+$", "")
  write(dir .. "/policy.lua", text)
  return dir
end

local function call(srv, method, path, body, opts)
  return ms.call(srv, method, path, body, opts)
end

local function docker(args, stdin)
  local argv = { "docker" }
  for _, a in ipairs(args) do
    argv[#argv + 1] = a
  end
  return assert(proc.run(argv, { timeout = 120, stdin = stdin,
    env = { "PATH=" .. os.getenv("PATH"), "DOCKER_BUILDKIT=0",
      "DOCKER_HOST=" .. (os.getenv("DOCKER_HOST") or "unix:///var/run/docker.sock") } }))
end

-- An image of this run, FROM the test image with a layer of its own (so a
-- pull has something to download) and the test label.
local function build(name)
  local r = docker({ "build", "-q", "-t", name, "-" }, table.concat({
    "FROM " .. support.image,
    ("LABEL %s=%s"):format(support.label, support.label_value),
    "RUN echo " .. name .. " > /hxtest-marker", "" }, "\n"))
  assert(r.status == 0, "docker build: " .. r.stderr)
  return (r.stdout:gsub("%s+$", ""))
end

local function has(messages, word)
  for _, m in ipairs(messages or {}) do
    if (m.status or ""):find(word, 1, true) then
      return true
    end
  end
  return false
end

-- The SSE events of a streamed answer: {event, data (decoded)}, in order.
local function sse_events(r)
  assert(r.status == 200, r.body)
  assert.truthy((r.headers["content-type"] or ""):find("text/event-stream",
    1, true), r.body)
  local out = {}
  for block in (r.body .. "\n\n"):gmatch("(.-)\n\n") do
    local ev = block:match("^event: ([^\n]+)") or block:match("\nevent: ([^\n]+)")
    local data = block:match("data: ([^\n]*)")
    if ev and data then
      out[#out + 1] = { event = ev, data = json.decode(data) }
    end
  end
  return out
end

local function auth_header(user, password)
  return (registry.base64(json.encode({ username = user, password = password }))
    :gsub("%+", "-"):gsub("/", "_"))
end

describe("images against the real engine and a real registry", function()
  local reg, other, srv, dir, tags = nil, nil, nil, nil, {}
  local source, remote

  lazy_setup(function()
    support.docker()
    assert(reg_support.available())
    reg = reg_support.start()
    other = reg_support.start()
    dir = scripts(([[return {
      images = { pull = { %q }, push = { %q } },
    }]]):format(reg.host, reg.host))
    srv = ms.start({ scripts = dir })
    source = support.unique_name("img") .. ":v1"
    remote = reg.host .. "/hxtest/" .. support.unique_name("app")
    tags = { source, remote .. ":v1" }
    build(source)
  end)

  lazy_teardown(function()
    for _, t in ipairs(tags) do
      docker({ "rmi", "-f", t })
    end
    if srv then srv:stop() end
    if reg then reg:stop() end
    if other then other:stop() end
    if dir then proc.run({ "rm", "-rf", dir }) end
  end)

  it("tags, pushes, removes, pulls back with progress, prunes", function()
    local built = docker({ "image", "inspect", "--format", "{{.Id}}", source })
      .stdout:gsub("%s+$", "")
    local r = call(srv, "POST", "/api/images/" .. source .. "/tag",
      { repo = remote, tag = "v1" })
    assert.are.equal(201, r.status, r.body)
    assert.are.same({ image = remote .. ":v1", source = source }, r.json)

    -- a tag that is not here: the daemon says so mid-stream, a 404 as a
    -- GET of it is (it was a 502 "server")
    r = call(srv, "POST", "/api/images/" .. remote .. ":nolocal/push")
    assert.are.equal(404, r.status, r.body)
    assert.are.equal("not_found", r.json.error.code)
    assert.matches("does not exist", r.json.error.message)

    r = call(srv, "POST", "/api/images/" .. remote .. ":v1/push")
    assert.are.equal(200, r.status, r.body)
    assert.truthy(r.json.digest:match("^sha256:%x+$"), r.body)
    assert.is_true(has(r.json.messages, "Pushed"), r.body)
    local digest = r.json.digest

    -- the push streamed: a second tag of the same image, its progress as
    -- SSE events, then the result with the registry's digest (the same
    -- manifest, so the plain push's digest) and size
    r = call(srv, "POST", "/api/images/" .. source .. "/tag",
      { repo = remote, tag = "v2" })
    assert.are.equal(201, r.status, r.body)
    local pushed = sse_events(call(srv, "POST", "/api/images/" .. remote
      .. ":v2/push", nil, { headers = { Accept = "text/event-stream" } }))
    local fin = pushed[#pushed]
    assert.are.equal("result", fin.event, json.encode(fin.data))
    assert.are.equal(remote .. ":v2", fin.data.image)
    assert.are.equal(digest, fin.data.digest)
    assert.is_true(fin.data.size > 0, json.encode(fin.data))
    local said = {}
    for i = 1, #pushed - 1 do
      assert.are.equal("progress", pushed[i].event)
      said[#said + 1] = pushed[i].data
    end
    assert.is_true(has(said, "Layer already exists") or has(said, "Pushed"),
      json.encode(said))
    docker({ "rmi", remote .. ":v2" })

    -- both names gone: the image itself is deleted, its own layer too
    r = call(srv, "DELETE", "/api/images/" .. remote .. ":v1")
    assert.are.equal(200, r.status, r.body)
    assert.are.same({ remote .. ":v1" }, { r.json.untagged[1] })
    r = call(srv, "DELETE", "/api/images/" .. source)
    assert.are.equal(200, r.status, r.body)
    assert.is_true(#r.json.deleted >= 1, r.body)
    r = http.get(srv.url .. "/api/images/" .. remote .. ":v1")
    assert.are.equal(404, r.status, r.body)

    r = call(srv, "POST", "/api/images/pull", { image = remote .. ":v1" })
    assert.are.equal(200, r.status, r.body)
    assert.are.equal(built, r.json.id)
    assert.is_true(has(r.json.messages, "Pulling fs layer"), r.body)
    assert.is_true(has(r.json.messages, "Pull complete"), r.body)
    assert.truthy(r.json.status:find("Downloaded newer image", 1, true), r.body)
    -- the same pull from Lua: every message handed to progress, in order
    local seen = {}
    local again = assert(require("horcrux.images").pull(remote .. ":v1", {
      policy = { images = { pull = { reg.host } } },
      progress = function(m) seen[#seen + 1] = m end }))
    assert.are.same(again.messages, seen)
    assert.truthy(again.status:find("Image is up to date", 1, true), again.status)

    -- streamed (README "Pull progress as it comes"): removed once more, the
    -- pull's progress arrives as SSE events before its result, in the
    -- daemon's order; an up-to-date pull over NDJSON ends with its result
    docker({ "rmi", remote .. ":v1" })
    local events = sse_events(call(srv, "POST", "/api/images/pull",
      { image = remote .. ":v1" },
      { headers = { Accept = "text/event-stream" } }))
    local last = events[#events]
    assert.are.equal("result", last.event)
    assert.are.same({ event = "result", image = remote .. ":v1",
      status = "Status: Downloaded newer image for " .. remote .. ":v1" },
      last.data)
    local order = {}
    for i = 1, #events - 1 do
      assert.are.equal("progress", events[i].event)
      local st = events[i].data.status or ""
      for _, word in ipairs({ "Pulling fs layer", "Pull complete", "Digest:" }) do
        if st:find(word, 1, true) and not order[word] then
          order[#order + 1], order[word] = word, true
        end
      end
    end
    assert.are.same({ "Pulling fs layer", "Pull complete", "Digest:" },
      { order[1], order[2], order[3] })
    assert.are.equal(built, docker({ "image", "inspect", "--format", "{{.Id}}",
      remote .. ":v1" }).stdout:gsub("%s+$", ""))
    r = call(srv, "POST", "/api/images/pull", { image = remote .. ":v1" },
      { headers = { Accept = "application/x-ndjson" } })
    assert.are.equal("application/x-ndjson", r.headers["content-type"])
    local lines = {}
    for l in r.body:gmatch("[^\n]+") do
      lines[#lines + 1] = json.decode(l)
    end
    assert.truthy(lines[#lines].status:find("Image is up to date", 1, true),
      r.body)
    assert.are.equal("result", lines[#lines].event, r.body)
    -- an image the registry does not have: the stream's last event is the
    -- error, with its kind
    events = sse_events(call(srv, "POST", "/api/images/pull",
      { image = reg.host .. "/hxtest/no-such-image:v1" },
      { headers = { Accept = "text/event-stream" } }))
    assert.are.equal("error", events[#events].event)
    assert.are.equal("not_found", events[#events].data.error.code,
      json.encode(events[#events].data))

    r = http.get(srv.url .. "/api/images?label=" .. support.label_arg)
    local listed = false
    for _, img in ipairs(r.json) do
      listed = listed or img.id == built
    end
    assert.is_true(listed, r.body)
    r = http.get(srv.url .. "/api/images/" .. remote .. ":v1/history")
    assert.are.equal(200, r.status, r.body)
    assert.truthy(r.body:find("hxtest-marker", 1, true), r.body)

    r = call(srv, "POST", "/api/images/prune?all=1&label=" .. support.label_arg)
    assert.are.equal(200, r.status, r.body)
    local pruned = false
    for _, id in ipairs(r.json.deleted) do
      pruned = pruned or id == built
    end
    assert.is_true(pruned, r.body)
    assert.is_true(r.json.space_reclaimed > 0, r.body)
    assert.are.equal(404, http.get(srv.url .. "/api/images/" .. built).status)
  end)

  it("answers 409 for an image a container uses, and removes it with force", function()
    local name = support.unique_name("inuse") .. ":v1"
    tags[#tags + 1] = name
    build(name)
    local id = support.run_container({ image = name, cmd = { "sleep", "60" } })
    finally(function() support.remove(id) end)
    local r = call(srv, "DELETE", "/api/images/" .. name)
    assert.are.equal(409, r.status, r.body)
    assert.are.equal("conflict", r.json.error.code)
    r = call(srv, "DELETE", "/api/images/" .. name .. "?force=1")
    assert.are.equal(200, r.status, r.body)
  end)

  it("refuses a pull from a registry policy.lua does not list, asking nobody", function()
    local before = #other:requests()
    for _, ref in ipairs({ other.host .. "/hxtest/app:v1", "busybox:latest" }) do
      local r = call(srv, "POST", "/api/images/pull", { image = ref })
      assert.are.equal(403, r.status, r.body)
      assert.are.equal("image", r.json.error.field)
      assert.truthy(r.json.error.message:find("images.pull", 1, true), r.body)
      -- asked as a stream: the same refusal, before any stream begins
      r = call(srv, "POST", "/api/images/pull", { image = ref },
        { headers = { Accept = "text/event-stream" } })
      assert.are.equal(403, r.status, r.body)
      assert.are.equal("image", r.json.error.field)
    end
    local r = call(srv, "POST", "/api/images/" .. source .. "/push")
    assert.are.equal(403, r.status, r.body)
    assert.are.equal(before, #other:requests())
    -- the same server against no daemon at all: still 403, not 503
    local dead = ms.start({ scripts = dir, env = { ms.DEAD_DOCKER } })
    finally(function() dead:stop() end)
    r = call(dead, "POST", "/api/images/pull", { image = other.host .. "/x:1" })
    assert.are.equal(403, r.status, r.body)
    r = call(dead, "POST", "/api/images/pull", { image = reg.host .. "/x:1" })
    assert.are.equal(503, r.status, r.body)
  end)

  it("refuses bad bodies and references before asking the daemon", function()
    local cases = {
      { "/api/images/pull", { image = "a b" }, 400 },
      { "/api/images/pull", { image = "x", extra = 1 }, 400 },
      { "/api/images/pull", {}, 400 },
      { "/api/images/" .. source .. "/tag", { repo = "x:y" }, 400 },
      { "/api/images/" .. source .. "/tag", { repo = "Bad/Name" }, 400 },
    }
    for _, c in ipairs(cases) do
      local r = call(srv, "POST", c[1], c[2])
      assert.are.equal(c[3], r.status, c[1] .. " " .. r.body)
    end
    assert.are.equal(400, http.get(srv.url .. "/api/images/a%20b").status)
  end)
end)

describe("registry credentials", function()
  local PASSWORD = "pw-" .. support.unique_name("secret")
  local reg, srv, srv2, dir, dir2
  local image

  lazy_setup(function()
    reg = reg_support.start({ user = "hxuser", password = PASSWORD })
    dir = scripts(([[return { images = { pull = { %q }, push = { %q } } }]])
      :format(reg.host, reg.host))
    dir2 = scripts(([[return { images = { pull = { %q }, push = { %q },
      auth = { [%q] = { username = "hxuser", password = %q } } } }]])
      :format(reg.host, reg.host, reg.host, PASSWORD))
    srv = ms.start({ scripts = dir })
    srv2 = ms.start({ scripts = dir2 })
    image = reg.host .. "/hxtest/" .. support.unique_name("auth") .. ":v1"
    assert(docker({ "tag", support.image, image }).status == 0)
  end)

  lazy_teardown(function()
    docker({ "rmi", image })
    for _, s in ipairs({ srv, srv2 }) do s:stop() end
    if reg then reg:stop() end
    for _, d in ipairs({ dir, dir2 }) do proc.run({ "rm", "-rf", d }) end
  end)

  it("are used from the header and from policy.lua, and never shown", function()
    local bodies = {}
    local r = call(srv, "POST", "/api/images/" .. image .. "/push")
    bodies[#bodies + 1] = r.body
    assert.are.equal(502, r.status, r.body) -- the registry wants credentials
    assert.truthy(r.body:find("basic auth", 1, true), r.body)
    local good = { ["X-Registry-Auth"] = auth_header("hxuser", PASSWORD) }
    r = call(srv, "POST", "/api/images/" .. image .. "/push", nil, { headers = good })
    bodies[#bodies + 1] = r.body
    assert.are.equal(200, r.status, r.body)
    r = call(srv, "POST", "/api/images/" .. image .. "/push", nil,
      { headers = { ["X-Registry-Auth"] = auth_header("hxuser", PASSWORD .. "x") } })
    bodies[#bodies + 1] = r.body
    assert.are.equal(502, r.status, r.body)
    r = call(srv, "POST", "/api/images/pull", { image = image }, { headers = good })
    bodies[#bodies + 1] = r.body
    assert.are.equal(200, r.status, r.body)
    r = call(srv, "POST", "/api/images/pull", { image = image },
      { headers = { ["X-Registry-Auth"] = PASSWORD } })
    bodies[#bodies + 1] = r.body
    assert.are.equal(400, r.status, r.body)
    -- policy.lua's credentials, no header
    r = call(srv2, "POST", "/api/images/" .. image .. "/push")
    bodies[#bodies + 1] = r.body
    assert.are.equal(200, r.status, r.body)
    r = call(srv2, "POST", "/api/images/pull", { image = image })
    bodies[#bodies + 1] = r.body
    assert.are.equal(200, r.status, r.body)
    -- the registry saw authenticated requests
    assert.truthy(reg:logtext():find("hxuser", 1, true))
    local logs = srv:logtext() .. srv2:logtext()
    assert.truthy(logs:find("access POST /api/images/pull 200", 1, true), logs)
    for _, text in ipairs({ logs, table.concat(bodies, "\n") }) do
      assert.is_nil(text:find(PASSWORD, 1, true))
      assert.is_nil(text:find(good["X-Registry-Auth"], 1, true))
    end
  end)
end)
