-- Stacks from compose files: the pieces of a file horcrux reads, and POST
-- /api/stacks against the real engine with Debian's docker-compose: a file
-- with two services and a network deploys, is listed under /api/stacks
-- with both running, updates, and comes down again; a file with
-- `privileged: true`, a bind of /, or anything that makes the tool read a
-- host file is refused and nothing is made.
local check = require "horcrux.compose.check"
local compose = require "horcrux.compose"
local json = require "horcrux.json"
local proc = require "horcrux.proc"
local http = require "http"
local ms = require "manage_support"
local support = require "support"

describe("horcrux.compose.check", function()
  it("reads ports in every form", function()
    local p = check.parse_port
    assert.are.same({ target = "80", protocol = "tcp" }, p(80))
    assert.are.same({ published = "8080", target = "80", protocol = "tcp" },
      p("8080:80"))
    assert.are.same({ host_ip = "0.0.0.0", published = "8080", target = "80",
      protocol = "udp" }, p("0.0.0.0:8080:80/udp"))
    assert.are.same({ host_ip = "::1", published = "8080", target = "80",
      protocol = "tcp" }, p("[::1]:8080:80"))
    assert.are.same({ host_ip = "127.0.0.1", target = "80", protocol = "tcp" },
      p("127.0.0.1::80"))
    assert.are.same({ published = "8080", target = "80", protocol = "tcp" },
      p({ published = 8080, target = 80 }))
  end)

  it("reads volumes and sizes", function()
    local v = check.parse_volume
    assert.are.same({ kind = "bind", source = "/", target = "/host",
      read_only = true }, v("/:/host:ro"))
    assert.are.same({ kind = "volume", source = "data", target = "/d",
      read_only = false }, v("data:/d:rw"))
    assert.are.same({ kind = "anon", target = "/x" }, v("/x"))
    assert.are.equal("bind", v({ type = "bind", source = "/", target = "/h" }).kind)
    assert.are.equal(64 * 1024 * 1024, check.bytes("64m"))
    assert.are.equal(32 * 1024 * 1024, check.bytes("32M"))
    assert.are.equal(1000, check.bytes(1000))
    assert.is_nil(check.bytes("lots"))
  end)

  it("refuses what would make the tool read host files", function()
    local cases = {
      { { services = { a = { image = "x", env_file = "/etc/shadow" } } }, "services.a.env_file" },
      { { services = { a = { extends = { file = "/etc/x.yml", service = "b" } } } },
        "services.a.extends.file" },
      { { services = { a = { build = "/" } } }, "services.a.build" },
      { { services = { a = { image = "x" } }, secrets = { s = { file = "/etc/shadow" } } },
        "secrets.s.file" },
    }
    for _, c in ipairs(cases) do
      local ok, _, kind, field = check.raw(c[1], {})
      assert.is_nil(ok, c[2])
      assert.are.same({ "forbidden", c[2] }, { kind, field })
    end
    assert.is_true(check.raw({ services = { a = { image = "x", build = "." } } },
      { compose = { allow = { "build" } } }))
    assert.is_nil(check.raw({ services = "x" }, {}))
  end)

  it("takes project names the tools keep as they are", function()
    assert.are.equal("shop-1_a", compose.name("shop-1_a"))
    for _, bad in ipairs({ "Shop", "a.b", "-a", "", string.rep("a", 64) }) do
      assert.is_nil(compose.name(bad), bad)
    end
  end)
end)

-- ---- the real engine -----------------------------------------------------------

local st = require "stack_support"
local two_services = st.two_services

local function project_containers(name)
  return support.docker():containers({ all = true, filters = {
    label = { "com.docker.compose.project=" .. name } } })
end

local function network_exists(name)
  return support.docker():call("GET", "/networks/{network}",
    { network = name }) ~= nil
end

describe("stacks from compose files, on the real engine", function()
  local srv, dir, names = nil, nil, {}

  lazy_setup(function()
    -- no compose.state_dir: the kept files go to --state-dir's stacks/
    dir = st.scripts([[return { compose = { swarm = false } }]])
    -- a deploy runs the compose tool (Python, 1-2 s to start) and the
    -- daemon's creates: past the default 10 s on a loaded machine, so the
    -- deadline the README tells operators to raise for stacks
    srv = ms.start({ scripts = dir, args = { "--deadline", "60",
      "--state-dir", dir .. "/state" } })
  end)

  lazy_teardown(function()
    for _, name in ipairs(names) do
      ms.call(srv, "DELETE", "/api/stacks/" .. name .. "?volumes=1")
      for _, c in ipairs(project_containers(name) or {}) do
        support.remove(c.Id)
      end
      support.docker():call("DELETE", "/networks/{network}",
        { network = name .. "_back" })
    end
    srv:stop()
    proc.run({ "rm", "-rf", dir })
  end)

  local function deploy(name, text)
    names[#names + 1] = name
    return ms.call(srv, "POST", "/api/stacks", { name = name, compose = text },
      { timeout = 180 })
  end

  local function listed(name)
    local r = http.get(srv.url .. "/api/stacks")
    for _, s in ipairs(r.json or {}) do
      if s.name == name then
        return s
      end
    end
  end

  it("deploys two services and a network, lists them running, updates, comes down", function()
    local name = support.unique_name("st"):lower()
    local r = deploy(name, two_services())
    assert.are.equal(201, r.status, r.body)
    assert.are.same({ "compose", true }, { r.json.mode, r.json.created })
    assert.are.same({ "db", "web" }, r.json.services)
    local s = ms.eventually(30, function()
      local st = listed(name)
      return st and st.states.running == st.count and st.count >= 2 and st
    end)
    assert.truthy(s, json.encode(listed(name)))
    local services = {}
    for _, svc in ipairs(s.services) do
      services[#services + 1] = svc.name
      assert.is_true(svc.states.running >= 1, json.encode(s))
    end
    assert.are.same({ "db", "web" }, services)
    assert.is_true(network_exists(name .. "_back"))
    r = http.get(srv.url .. "/api/stacks/" .. name .. "/config")
    assert.are.equal("compose", r.json.file["x-horcrux"].mode)
    local kept = io.open(dir .. "/state/stacks/" .. name .. ".json")
    assert.truthy(kept, "kept under --state-dir")
    kept:close()
    r = http.get(srv.url .. "/api/stacks/no-such-stack/config")
    assert.are.equal(404, r.status)
    assert.matches("no file in " .. dir:gsub("%p", "%%%0") .. "/state/stacks",
      r.json.error.message)
    r = http.get(srv.url .. "/api/stacks/" .. name .. "/logs?tail=5")
    assert.are.equal(200, r.status, r.body)
    -- an update: the same name again answers 200
    r = deploy(name, two_services("    environment: {V: '2'}\n"))
    assert.are.equal(200, r.status, r.body)
    assert.is_false(r.json.created)
    r = ms.call(srv, "DELETE", "/api/stacks/" .. name)
    assert.are.equal(200, r.status, r.body)
    assert.are.same({ 0, false }, { #project_containers(name),
      network_exists(name .. "_back") })
    assert.is_nil(listed(name))
    assert.are.equal(404, ms.call(srv, "DELETE", "/api/stacks/" .. name).status)
  end)

  it("refuses privileged: true and a bind of /, and makes nothing", function()
    -- through the tools, end to end; the other rules on the normalised
    -- file in "checks every service of a normalised file" (a deploy costs
    -- three python runs)
    local cases = {
      { "    privileged: true\n", "services.web.privileged" },
      { '    volumes: ["/:/host:ro"]\n', "services.web.volumes[1]" },
      { "    env_file: /etc/passwd\n", "services.web.env_file" },
    }
    for _, c in ipairs(cases) do
      local name = support.unique_name("bad"):lower()
      local r = deploy(name, two_services(c[1]))
      assert.are.equal(403, r.status, c[1] .. r.body)
      assert.are.equal(c[2], r.json.error.field, r.body)
      assert.are.same({ 0, false, false }, { #project_containers(name),
        network_exists(name .. "_back"), network_exists(name .. "_default") })
      assert.are.equal(404, http.get(srv.url .. "/api/stacks/" .. name
        .. "/config").status)
    end
  end)

  it("checks every service of a normalised file", function()
    local policy = require("horcrux.config").policy()
    local cases = {
      { { volumes = { { type = "bind", source = "/", target = "/h" } } },
        "services.web.volumes[1]" },
      { { ports = { { host_ip = "0.0.0.0", published = 8080, target = 8000,
        protocol = "tcp", mode = "ingress" } } }, "services.web.ports[1].host_ip" },
      { { cap_add = { "SYS_ADMIN" } }, "services.web.cap_add[1]" },
      { { devices = { "/dev/fuse:/dev/fuse:rwm" } }, "services.web.devices[1].host" },
      { { pid = "host" }, "services.web.pid" },
      { { network_mode = "host" }, "services.web.network_mode" },
      { { security_opt = { "seccomp=unconfined" } }, "services.web.security_opt" },
    }
    for _, c in ipairs(cases) do
      local web = { image = support.image, command = { "true" } }
      for k, v in pairs(c[1]) do web[k] = v end
      local ok, err, kind, field = check.file({ services = { web = web } },
        { name = "hxcheck", policy = policy, swarm = false })
      assert.is_nil(ok, c[2])
      assert.are.same({ "forbidden", c[2] }, { kind, field }, err)
    end
  end)

  it("refuses bad names and files before running anything", function()
    local r = deploy("Bad.Name", two_services())
    assert.are.equal(400, r.status, r.body)
    r = deploy(support.unique_name("y"):lower(), "services: [\n")
    assert.are.equal(400, r.status, r.body)
    r = deploy(support.unique_name("y"):lower(), "services: {}\n")
    assert.are.equal(400, r.status, r.body)
  end)
end)

