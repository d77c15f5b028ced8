-- Creating containers and their lifecycle: the body's validation, the
-- policy, the Engine API body built from them, and the routes against the
-- real engine (create -> start -> stop -> restart -> pause -> unpause ->
-- kill -> remove), with an edited policy and the docker CLI fallback.
local manage = require "horcrux.manage"
local verdict = require "horcrux.manage.policy"
local render = require "horcrux.manage.render"
local json = require "horcrux.json"
local proc = require "horcrux.proc"

-- The shipped policy, read and checked as the server reads it.
local POLICY = verdict.check(dofile("lua/policy.lua"))

local function valid(body)
  local spec, err = manage.validate(body)
  assert(spec, err)
  return spec
end

local function invalid(body, field)
  local spec, err, kind, extra = manage.validate(body)
  local f = extra and extra.field
  assert.is_nil(spec, json.encode(body))
  assert.are.equal("bad_request", kind)
  if field then
    assert.are.equal(field, f, err)
  end
  return err
end

local function refused(body, field, policy)
  local spec = valid(body)
  local ok, err, kind, f = manage.allowed(spec, policy or POLICY, {})
  assert.is_nil(ok, json.encode(body))
  assert.are.equal("forbidden", kind)
  assert.are.equal(field, f)
  assert.truthy(err:find(field, 1, true) == 1, err)
  return err
end

local function allowed(body, policy)
  local ok, err = manage.allowed(valid(body), policy or POLICY, {})
  assert(ok, err)
  return ok
end

-- A folder of this run's own (binds are resolved on the host's disk).
local function tmpdir()
  local r = assert(proc.run({ "mktemp", "-d", "/tmp/hxtest-binds.XXXXXX" }))
  return (r.stdout:gsub("%s+$", ""))
end

describe("horcrux.manage.validate", function()
  it("takes the smallest body, and every field", function()
    assert.are.same({ image = "busybox" }, valid({ image = "busybox" }))
    local spec = valid({
      image = "reg.example:5000/org/app:1.2@sha256:abcd", name = "web.1_a-b",
      cmd = { "sh", "-c", "x" }, entrypoint = json.array(), env = { A = "1", B_2 = "x=y" },
      labels = { ["com.example/k"] = "v" },
      ports = { { container = 80 }, { container = 53, host = 0, protocol = "udp" },
        { container = 443, host = 8443, host_ip = "::1" } },
      memory_limit_bytes = 64 * 1024 * 1024, cpus = 0.5,
      restart_policy = "on-failure:3", network = "backend", privileged = false,
      binds = { { source = "/srv//data/", target = "/data", read_only = true } },
      volumes = { { name = "vol1", target = "/v" } }, pid_mode = "host",
      cap_add = { "cap_net_admin" }, cap_drop = { "ALL" },
      devices = { { host = "/dev/fuse" } }, user = "1000:1000", working_dir = "/w",
      hostname = "h1", tty = true, read_only = true, stop_timeout = 5, start = true,
    })
    assert.are.same({ container = 443, host = 8443, host_ip = "::1", protocol = "tcp" },
      spec.ports[3])
    assert.are.same({ name = "on-failure", retries = 3 }, spec.restart_policy)
    assert.are.equal("/srv/data", spec.binds[1].source)
    assert.are.same({ "NET_ADMIN" }, spec.cap_add)
    assert.are.same({ host = "/dev/fuse", container = "/dev/fuse", permissions = "rwm" },
      spec.devices[1])
  end)

  it("refuses unknown fields, naming every one", function()
    local err = invalid({ image = "x", Image = "y", HostConfig = {} }, "HostConfig")
    assert.truthy(err:find("unknown fields: HostConfig, Image", 1, true), err)
    invalid({ image = "x", ports = { { container = 1, hostport = 2 } } },
      "ports[1].hostport")
  end)

  it("refuses each field's bad values, naming the field", function()
    local cases = {
      { {}, "image" },
      { { image = 5 }, "image" },
      { { image = "-x" }, "image" },
      { { image = "a b" }, "image" },
      { { image = "x", name = "/x" }, "name" },
      { { image = "x", name = "a/b" }, "name" },
      { { image = "x", name = string.rep("a", 256) }, "name" },
      { { image = "x", cmd = "sh -c x" }, "cmd" },
      { { image = "x", cmd = { "a", 1 } }, "cmd[2]" },
      { { image = "x", cmd = { "a\0b" } }, "cmd[1]" },
      { { image = "x", cmd = { k = "v" } }, "cmd" },
      { { image = "x", env = { "A=1" } }, "env" },
      { { image = "x", env = { ["A=B"] = "1" } }, "env" },
      { { image = "x", env = { A = 1 } }, "env.A" },
      { { image = "x", labels = { a = true } }, "labels.a" },
      { { image = "x", ports = { { host = 80 } } }, "ports[1].container" },
      { { image = "x", ports = { { container = 0 } } }, "ports[1].container" },
      { { image = "x", ports = { { container = 70000 } } }, "ports[1].container" },
      { { image = "x", ports = { { container = 1.5 } } }, "ports[1].container" },
      { { image = "x", ports = { { container = 1, host = -1 } } }, "ports[1].host" },
      { { image = "x", ports = { { container = 1, protocol = "icmp" } } }, "ports[1].protocol" },
      { { image = "x", ports = { { container = 1, host = 1, host_ip = "1.2.3.400" } } }, "ports[1].host_ip" },
      { { image = "x", ports = { { container = 1, host_ip = "1.2.3.4" } } }, "ports[1].host_ip" },
      { { image = "x", ports = { 80 } }, "ports[1]" },
      { { image = "x", memory_limit_bytes = 1024 }, "memory_limit_bytes" },
      { { image = "x", memory_limit_bytes = "1g" }, "memory_limit_bytes" },
      { { image = "x", cpus = 0 }, "cpus" },
      { { image = "x", cpus = "1" }, "cpus" },
      { { image = "x", restart_policy = "sometimes" }, "restart_policy" },
      { { image = "x", restart_policy = "on-failure:0" }, "restart_policy" },
      { { image = "x", network = "a b" }, "network" },
      { { image = "x", network = "container:" }, "network" },
      { { image = "x", privileged = "yes" }, "privileged" },
      { { image = "x", binds = { { source = "rel", target = "/t" } } }, "binds[1].source" },
      { { image = "x", binds = { { source = "/a/../etc", target = "/t" } } }, "binds[1].source" },
      { { image = "x", binds = { { source = "/a", target = "/t", read_only = 1 } } }, "binds[1].read_only" },
      { { image = "x", binds = { { source = "/a" } } }, "binds[1].target" },
      { { image = "x", volumes = { { name = "/etc", target = "/t" } } }, "volumes[1].name" },
      { { image = "x", pid_mode = "private" }, "pid_mode" },
      { { image = "x", cap_add = { "NET ADMIN" } }, "cap_add[1]" },
      { { image = "x", cap_drop = "ALL" }, "cap_drop" },
      { { image = "x", devices = { { host = "/dev/x", permissions = "rwx" } } }, "devices[1].permissions" },
      { { image = "x", user = "a b" }, "user" },
      { { image = "x", working_dir = "w" }, "working_dir" },
      { { image = "x", hostname = "-h" }, "hostname" },
      { { image = "x", tty = 1 }, "tty" },
      { { image = "x", stop_timeout = -1 }, "stop_timeout" },
      { { image = "x", start = "true" }, "start" },
    }
    for _, c in ipairs(cases) do
      invalid(c[1], c[2])
    end
  end)

  it("treats a JSON null as an absent field", function()
    assert.are.same({ image = "x" }, valid({ image = "x", name = json.null }))
  end)
end)

describe("horcrux.manage.allowed (the shipped policy)", function()
  it("lets an ordinary container through", function()
    allowed({ image = "x", ports = { { container = 80, host = 8080 } },
      volumes = { { name = "data", target = "/data" } }, network = "bridge",
      cap_drop = { "ALL" }, memory_limit_bytes = 64 * 1024 * 1024 })
  end)

  it("refuses what gives root on the host, naming the field", function()
    refused({ image = "x", privileged = true }, "privileged")
    local err = refused({ image = "x", binds = { { source = "/", target = "/host" } } },
      "binds[1].source")
    assert.truthy(err:find("host path /", 1, true))
    refused({ image = "x", network = "host" }, "network")
    refused({ image = "x", network = "container:web" }, "network")
    refused({ image = "x", pid_mode = "host" }, "pid_mode")
    refused({ image = "x", pid_mode = "container:web" }, "pid_mode")
    refused({ image = "x", cap_add = { "SYS_ADMIN" } }, "cap_add[1]")
    refused({ image = "x", devices = { { host = "/dev/sda" } } }, "devices[1].host")
  end)
end)

describe("horcrux.manage.allowed (an edited policy)", function()
  local function policy(create)
    return verdict.check({ create = create })
  end

  it("allows what an operator switches on, and only that", function()
    local p = policy({ privileged = true })
    allowed({ image = "x", privileged = true }, p)
    refused({ image = "x", network = "host" }, "network", p)
    allowed({ image = "x", network = "host" }, policy({ host_network = true }))
  end)

  it("allows binds under listed paths only", function()
    local root = tmpdir()
    finally(function() proc.run({ "rm", "-rf", root }) end)
    assert(proc.run({ "mkdir", "-p", root .. "/data/sub", root .. "/database" }))
    local p = policy({ binds = { root .. "/data/" } })
    allowed({ image = "x", binds = { { source = root .. "/data", target = "/d" },
      { source = root .. "/data/sub", target = "/e" } } }, p)
    refused({ image = "x", binds = { { source = root .. "/database", target = "/d" } } },
      "binds[1].source", p)
    refused({ image = "x", binds = { { source = root .. "/data", target = "/d" },
      { source = "/", target = "/e" } } }, "binds[2].source", p)
    allowed({ image = "x", binds = { { source = "/", target = "/h" } } },
      policy({ binds = true }))
    -- a path that does not exist on the host is refused, not guessed at
    local ok, _, kind, field = manage.allowed(valid({ image = "x",
      binds = { { source = root .. "/data/nope", target = "/d" } } }), p, {})
    assert.is_nil(ok)
    assert.are.same({ "bad_request", "binds[1].source" }, { kind, field })
  end)

  it("resolves symlinks before it compares a bind with the policy", function()
    -- what a container with a bind of data/ can plant: data/root -> /
    local root = tmpdir()
    finally(function() proc.run({ "rm", "-rf", root }) end)
    assert(proc.run({ "mkdir", "-p", root .. "/data/real" }))
    assert(proc.run({ "ln", "-s", "/", root .. "/data/root" }))
    assert(proc.run({ "ln", "-s", "real", root .. "/data/inside" }))
    local p = policy({ binds = { root .. "/data" } })
    local err = refused({ image = "x", binds = { { source = root .. "/data/root",
      target = "/h" } } }, "binds[1].source", p)
    assert.truthy(err:find("which leads to /", 1, true), err)
    -- a link that stays inside is fine, and the daemon is given where it leads
    local spec = allowed({ image = "x", binds = { { source = root .. "/data/inside",
      target = "/h" } } }, p)
    assert.are.equal(root .. "/data/real", spec.binds[1].source)
    assert.are.equal(root .. "/data/real",
      render.engine_body(spec, p).HostConfig.Mounts[1].Source)
  end)

  it("refuses a port published beyond loopback unless public_ports allows it", function()
    refused({ image = "x", ports = { { container = 80, host = 8080,
      host_ip = "0.0.0.0" } } }, "ports[1].host_ip")
    refused({ image = "x", ports = { { container = 80, host = 8080,
      host_ip = "::" } } }, "ports[1].host_ip")
    allowed({ image = "x", ports = { { container = 80, host = 8080,
      host_ip = "127.0.0.2" } } })
    allowed({ image = "x", ports = { { container = 80, host = 8080,
      host_ip = "0.0.0.0" } } }, policy({ public_ports = true }))
  end)

  it("allows listed capabilities, images, networks and bounds", function()
    local p = policy({ cap_add = { "CAP_NET_ADMIN" }, images = { "^horcrux%-test:" },
      networks = { "bridge" }, max_memory_bytes = 128 * 1024 * 1024, max_cpus = 1 })
    allowed({ image = "horcrux-test:busybox", cap_add = { "net_admin" },
      memory_limit_bytes = 64 * 1024 * 1024, cpus = 1 }, p)
    refused({ image = "horcrux-test:busybox", cap_add = { "NET_RAW" },
      memory_limit_bytes = 64 * 1024 * 1024, cpus = 1 }, "cap_add[1]", p)
    refused({ image = "busybox", memory_limit_bytes = 64 * 1024 * 1024, cpus = 1 },
      "image", p)
    refused({ image = "horcrux-test:x", cpus = 1 }, "memory_limit_bytes", p)
    refused({ image = "horcrux-test:x", memory_limit_bytes = 256 * 1024 * 1024,
      cpus = 1 }, "memory_limit_bytes", p)
    refused({ image = "horcrux-test:x", memory_limit_bytes = 64 * 1024 * 1024,
      cpus = 2 }, "cpus", p)
    refused({ image = "horcrux-test:x", memory_limit_bytes = 64 * 1024 * 1024,
      cpus = 1, network = "backend" }, "network", p)
  end)

  it("asks the policy's check function last", function()
    local p = policy({ check = function(spec)
      if not (spec.labels and spec.labels.owner) then
        return "labels", "an owner label is required here"
      end
    end })
    local err = refused({ image = "x" }, "labels", p)
    assert.truthy(err:find("owner label", 1, true))
    allowed({ image = "x", labels = { owner = "me" } }, p)
  end)

  it("refuses a policy with a misspelt or mistyped setting", function()
    assert.has_error(function()
      verdict.check({ create = { privilegd = true } })
    end, "policy.lua: unknown setting create.privilegd (settings: binds, cap_add, "
      .. "check, container_network, container_pid, default_host_ip, devices, "
      .. "host_network, host_pid, images, max_cpus, max_memory_bytes, networks, "
      .. "privileged, public_ports, volumes)")
    assert.has_error(function()
      verdict.check({ create = { privileged = "yes" } })
    end, "policy.lua: create.privileged must be boolean, got string")
    assert.has_error(function()
      verdict.check({ cli_fallback = 1 })
    end)
  end)

  it("asks the manage function before an action, with the container resolved", function()
    local seen
    local p = verdict.check({ manage = function(action, ctr)
      seen = ctr
      if ctr.labels.keep == "1" then
        return "this one is not to be touched"
      end
    end })
    local ctr = assert(manage.may("stop", { id = "a1", name = "other",
      labels = {} }, p, {}))
    assert.are.equal("other", ctr.name)
    local ok, err, kind = manage.may("stop", { id = "b2", name = "keep-me",
      labels = { keep = "1" } }, p, {})
    assert.is_nil(ok)
    assert.are.equal("forbidden", kind)
    assert.truthy(err:find("stop keep-me: this one is not to be touched", 1, true),
      err)
    assert.are.equal("b2", seen.id)
  end)
end)

describe("horcrux.manage.engine_body", function()
  it("builds the Engine API body from the validated fields only", function()
    local spec = valid({
      image = "img", cmd = { "a" }, env = { B = "2", A = "1" }, labels = { l = "v" },
      ports = { { container = 80, host = 8080 }, { container = 53, protocol = "udp" },
        { container = 81, host = 0, host_ip = "0.0.0.0" } },
      memory_limit_bytes = 8 * 1024 * 1024, cpus = 1.5, restart_policy = "always",
      network = "none", binds = { { source = "/a", target = "/b", read_only = true } },
      volumes = { { name = "v1", target = "/c" } }, cap_drop = { "ALL" },
      tty = true, stop_timeout = 3,
    })
    local body = render.engine_body(spec, POLICY)
    assert.are.equal(json.encode({
      Cmd = { "a" }, Env = { "A=1", "B=2" }, Image = "img", Labels = { l = "v" },
      ExposedPorts = { ["80/tcp"] = {}, ["53/udp"] = {}, ["81/tcp"] = {} },
      StopTimeout = 3, Tty = true,
      HostConfig = {
        PortBindings = {
          ["80/tcp"] = { { HostIp = "127.0.0.1", HostPort = "8080" } },
          ["81/tcp"] = { { HostIp = "0.0.0.0", HostPort = "" } },
        },
        Memory = 8 * 1024 * 1024, NanoCpus = 1500000000,
        RestartPolicy = { Name = "always", MaximumRetryCount = 0 },
        NetworkMode = "none", CapDrop = { "ALL" },
        Mounts = {
          { Type = "bind", Source = "/a", Target = "/b", ReadOnly = true },
          { Type = "volume", Source = "v1", Target = "/c", ReadOnly = false },
        },
      },
    }, { sort_keys = true }), json.encode(body, { sort_keys = true }))
  end)
end)

-- ---- against the real engine -------------------------------------------------

describe("container lifecycle over HTTP", function()
  local ms = require "manage_support"
  local support = require "support"
  local http = require "http"
  local srv

  setup(function()
    support.docker()
    srv = ms.start()
  end)

  teardown(function()
    ms.cleanup()
    if srv then
      srv:stop()
    end
  end)

  local function post(path, body, opts)
    return ms.call(srv, "POST", path, body, opts)
  end

  local function act(id, action, query, want_changed)
    local r = post("/api/containers/" .. id .. "/" .. action .. (query or ""))
    assert.are.equal(200, r.status, action .. ": " .. r.body)
    assert.are.equal(action, r.json.action)
    assert.are.equal(id, r.json.id)
    if want_changed ~= nil then
      assert.are.equal(want_changed, r.json.changed, action)
    end
    return r.json
  end

  it("drives create -> start -> stop -> restart -> pause -> unpause -> kill -> remove", function()
    local b = ms.body()
    ms.track(b.name)
    local r = post("/api/containers", b)
    assert.are.equal(201, r.status, r.body)
    local id = r.json.id
    assert.matches("^%x+$", id)
    assert.are.equal(64, #id)
    assert.are.equal(b.name, r.json.name)
    assert.is_false(r.json.started)
    assert.are.equal("created", ms.status(id))

    act(id, "start", nil, true)
    assert.are.equal("running", ms.status(id))
    act(id, "start", nil, false)
    act(id, "stop", "?timeout=0", true)
    assert.are.equal("exited", ms.status(id))
    act(id, "stop", "?timeout=0", false)
    act(id, "restart", "?timeout=0", true)
    assert.are.equal("running", ms.status(id))
    act(id, "pause", nil, true)
    assert.are.equal("paused", ms.status(id))
    act(id, "pause", nil, false)
    act(id, "unpause", nil, true)
    assert.are.equal("running", ms.status(id))
    act(id, "unpause", nil, false)
    act(b.name, "kill", "?signal=SIGKILL", true)
    assert.are.equal("exited", ms.status(id))
    -- killing a container that does not run is a conflict
    r = post("/api/containers/" .. id .. "/kill")
    assert.are.equal(409, r.status)
    assert.are.equal("exited", ms.status(id))

    -- a running container is not removed without force
    act(id, "start", nil, true)
    r = ms.call(srv, "DELETE", "/api/containers/" .. id)
    assert.are.equal(409, r.status, r.body)
    assert.are.equal("conflict", r.json.error.code)
    assert.are.equal("running", ms.status(id))
    r = ms.call(srv, "DELETE", "/api/containers/" .. id:sub(1, 12) .. "?force=1&volumes=1")
    assert.are.equal(200, r.status, r.body)
    assert.are.same({ id = id:sub(1, 12), removed = true }, r.json)
    assert.is_nil(ms.inspect(id))
    r = ms.call(srv, "DELETE", "/api/containers/" .. id)
    assert.are.equal(404, r.status)
    r = post("/api/containers/" .. id .. "/start")
    assert.are.equal(404, r.status)
  end)

  it("creates with every setting the body gives, started when asked", function()
    -- every field of the body that the shipped policy allows (binds,
    -- devices, pid_mode and cap_add it refuses: the policy specs cover
    -- them), each checked in the daemon's own inspect
    local vol = "hxtest-vol-" .. os.time() .. math.random(1000)
    local b = ms.body({
      start = true, env = { GREETING = "hello world" },
      labels = { ["hx.extra"] = "yes" },
      cmd = { "-c", "exec sleep 600" }, entrypoint = { "/bin/sh" },
      ports = { { container = 8080, host = 0 },
        { container = 53, host = 0, protocol = "udp", host_ip = "127.0.0.1" },
        { container = 9000 } },
      memory_limit_bytes = 32 * 1024 * 1024, cpus = 0.5,
      restart_policy = "on-failure:2", network = "bridge", privileged = false,
      volumes = { { name = vol, target = "/data", read_only = true } },
      cap_drop = { "NET_RAW" }, user = "1234:5678", working_dir = "/tmp",
      hostname = "hx-host", tty = true, read_only = true, stop_timeout = 7,
    })
    ms.track(b.name)
    local r = post("/api/containers", b)
    assert.are.equal(201, r.status, r.body)
    assert.is_true(r.json.started)
    assert.are.equal(b.name, r.json.name)
    local info = ms.inspect(r.json.id)
    finally(function()
      support.remove(r.json.id)
      support.docker():request("DELETE", "/volumes/" .. vol)
    end)
    assert.are.equal("/" .. b.name, info.Name)
    assert.are.equal(support.image, info.Config.Image)
    assert.are.equal("running", info.State.Status)
    assert.are.same({ "/bin/sh" }, info.Config.Entrypoint)
    assert.are.same({ "-c", "exec sleep 600" }, info.Config.Cmd)
    local env = table.concat(info.Config.Env, "\n")
    assert.truthy(env:find("GREETING=hello world", 1, true))
    assert.are.equal("yes", info.Config.Labels["hx.extra"])
    assert.are.equal("1", info.Config.Labels[support.label])
    assert.are.equal(32 * 1024 * 1024, info.HostConfig.Memory)
    assert.are.equal(500000000, info.HostConfig.NanoCpus)
    assert.are.same({ Name = "on-failure", MaximumRetryCount = 2 }, info.HostConfig.RestartPolicy)
    assert.are.equal("bridge", info.HostConfig.NetworkMode)
    assert.is_false(info.HostConfig.Privileged)
    -- published on loopback (the policy's default_host_ip), any free port
    assert.are.same({ { HostIp = "127.0.0.1", HostPort = "" } },
      info.HostConfig.PortBindings["8080/tcp"])
    assert.are.same({ { HostIp = "127.0.0.1", HostPort = "" } },
      info.HostConfig.PortBindings["53/udp"])
    assert.is_nil(info.HostConfig.PortBindings["9000/tcp"])
    assert.is_table(info.Config.ExposedPorts["9000/tcp"])
    local bound = info.NetworkSettings.Ports["8080/tcp"][1]
    assert.are.equal("127.0.0.1", bound.HostIp)
    assert.matches("^%d+$", bound.HostPort)
    assert.are.equal(1, #info.Mounts)
    assert.are.same({ "volume", vol, "/data", false }, { info.Mounts[1].Type,
      info.Mounts[1].Name, info.Mounts[1].Destination, info.Mounts[1].RW })
    assert.are.same({ "NET_RAW" }, info.HostConfig.CapDrop)
    assert.are.equal("1234:5678", info.Config.User)
    assert.are.equal("/tmp", info.Config.WorkingDir)
    assert.are.equal("hx-host", info.Config.Hostname)
    assert.is_true(info.Config.Tty)
    assert.is_true(info.HostConfig.ReadonlyRootfs)
    assert.are.equal(7, info.Config.StopTimeout)
  end)

  it("answers 409 for a name in use, 404 for an image that is not here", function()
    local id, name = ms.create(srv)
    local r = post("/api/containers", ms.body({ name = name }))
    assert.are.equal(409, r.status, r.body)
    assert.are.equal("conflict", r.json.error.code)
    assert.are.equal(id, ms.inspect(name).Id)
    local b = ms.body({ image = "horcrux-test:no-such-tag" })
    ms.track(b.name)
    r = post("/api/containers", b)
    assert.are.equal(404, r.status, r.body)
    assert.is_nil(ms.inspect(b.name))
  end)

  it("answers the name Docker gave a container created without one", function()
    local b = ms.body()
    b.name = nil
    local r = post("/api/containers", b)
    assert.are.equal(201, r.status, r.body)
    ms.track(r.json.id)
    assert.is_string(r.json.name, r.body)
    assert.are.equal(ms.inspect(r.json.id).Name, "/" .. r.json.name)
  end)

  it("refuses an id prefix two containers share with 400 on every route", function()
    -- the shipped routes and the README's /top (examples/routes-top.lua)
    local both = ms.start({ scripts = http.scripts_dir({ ["routes.lua"] =
      http.read_file("lua/routes.lua") .. "\n"
      .. http.read_file("examples/routes-top.lua") }) })
    finally(function() both:stop() end)
    local seen, prefix = {}, nil
    while not prefix do -- 17 ids at most share a first hex digit
      local id = ms.create(srv, { start = true })
      prefix = seen[id:sub(1, 1)] and id:sub(1, 1)
      seen[id:sub(1, 1)] = true
    end
    local base = "/api/containers/" .. prefix
    ms.eventually(10, function() -- once the live view holds both
      return ms.call(both, "GET", base .. "/history").status == 400
    end)
    for _, c in ipairs({ { "GET", "" }, { "GET", "/history" },
      { "POST", "/pause" }, { "POST", "/exec", { cmd = { "true" } } },
      { "GET", "/logs" }, { "GET", "/top" }, { "DELETE", "" } }) do
      local r = ms.call(both, c[1], base .. c[2], c[3])
      assert.are.equal(400, r.status, c[1] .. " " .. c[2] .. ": " .. r.body)
      assert.are.equal("bad_request", r.json.error.code)
      assert.matches(": id prefix '" .. prefix .. "' is ambiguous %(",
        r.json.error.message)
    end
  end)

  it("says so when the container is created but does not start", function()
    local want, kind = ms.answer_for(ms.bad_start_status())
    local b = ms.body({ cmd = { "/no/such/program" }, start = true })
    ms.track(b.name)
    local r = post("/api/containers", b)
    assert.are.equal(want, r.status, r.body)
    assert.are.equal(kind, r.json.error.code)
    assert.is_true(r.json.error.created)
    local info = ms.inspect(b.name)
    assert.are.equal(info.Id, r.json.error.id)
    assert.are_not.equal("running", info.State.Status)
  end)

  it("answers Docker's 409 for unpausing a container that never started", function()
    local r = post("/api/containers", ms.body())
    assert.are.equal(201, r.status, r.body)
    local id = r.json.id
    ms.track(id)
    r = post("/api/containers/" .. id .. "/unpause")
    assert.are.equal(409, r.status, r.body)
    assert.are.equal("conflict", r.json.error.code)
    assert.are.equal("created", ms.status(id))
  end)

  it("takes kill?signal=RTMIN+3 as the README writes it", function()
    local id = ms.create(srv, { start = true })
    local r = post("/api/containers/" .. id .. "/kill?signal=RTMIN+3")
    assert.are.equal(200, r.status, r.body)
    r = post("/api/containers/" .. id .. "/kill?signal=RTMIN%2B3")
    assert.are.equal(200, r.status, r.body)
    r = post("/api/containers/" .. id .. "/kill?signal=NOPE")
    assert.are.equal(400, r.status, r.body)
    assert.are.equal("signal", r.json.error.field)
  end)

  it("names every bad field of a create body, not only the first", function()
    local r = post("/api/containers", { image = "x", cpus = "many", tty = 3,
      name = "bad name" })
    assert.are.equal(400, r.status, r.body)
    assert.are.equal("cpus", r.json.error.field)
    assert.are.same({ "cpus", "name", "tty" }, r.json.error.fields)
    for _, f in ipairs({ "cpus:", "name:", "tty:" }) do
      assert.truthy(r.json.error.message:find(f, 1, true), r.json.error.message)
    end
  end)

  it("treats a named volume that binds a host path as that bind", function()
    local c = support.docker()
    local vol = "hxtest-bindvol-" .. os.time() .. math.random(100000)
    local st, b = c:request("POST", "/volumes/create", nil, { Name = vol,
      Driver = "local", Labels = { [support.label] = support.label_value },
      DriverOpts = { type = "none", o = "bind", device = "/" } })
    assert(st == 201, tostring(b))
    finally(function() c:request("DELETE", "/volumes/" .. vol) end)
    local body = ms.body({ volumes = { { name = vol, target = "/host" } } })
    ms.track(body.name)
    local r = post("/api/containers", body)
    assert.are.equal(403, r.status, r.body)
    assert.are.equal("volumes[1].name", r.json.error.field)
    assert.truthy(r.json.error.message:find("a bind of the host path /", 1, true))
    assert.is_nil(ms.inspect(body.name))
    -- an ordinary named volume is fine
    local ok = ms.body({ volumes = { { name = vol .. "-plain", target = "/d" } } })
    ms.track(ok.name)
    r = post("/api/containers", ok)
    assert.are.equal(201, r.status, r.body)
    c:request("DELETE", "/containers/" .. r.json.id, { force = true })
    c:request("DELETE", "/volumes/" .. vol .. "-plain")
  end)

  it("refuses a network that puts the container on the host's LAN", function()
    local c = support.docker()
    local net = "hxtest-macvlan-" .. os.time() .. math.random(100000)
    local st, b = c:request("POST", "/networks/create", nil, { Name = net,
      Driver = "macvlan", Options = { parent = "eth0" },
      Labels = { [support.label] = support.label_value } })
    assert(st == 201, tostring(type(b) == "table" and b.message or b))
    finally(function() c:request("DELETE", "/networks/" .. net) end)
    local body = ms.body({ network = net })
    ms.track(body.name)
    local r = post("/api/containers", body)
    assert.are.equal(403, r.status, r.body)
    assert.are.equal("network", r.json.error.field)
    assert.truthy(r.json.error.message:find("macvlan", 1, true))
    assert.is_nil(ms.inspect(body.name))
  end)

  it("refuses what the policy refuses with 403 naming the field, and creates nothing", function()
    for field, extra in pairs({
      privileged = { privileged = true },
      ["binds[1].source"] = { binds = { { source = "/", target = "/host" } } },
      network = { network = "host" },
      pid_mode = { pid_mode = "host" },
      ["cap_add[1]"] = { cap_add = { "SYS_ADMIN" } },
      ["devices[1].host"] = { devices = { { host = "/dev/null" } } },
    }) do
      local b = ms.body(extra)
      ms.track(b.name)
      local r = post("/api/containers", b)
      assert.are.equal(403, r.status, field .. ": " .. r.body)
      assert.are.equal("forbidden", r.json.error.code)
      assert.are.equal(field, r.json.error.field)
      assert.is_nil(ms.inspect(b.name), field)
    end
  end)

  it("refuses a body that is not a valid create with 400 or 415, and creates nothing", function()
    local b = ms.body({ Privileged = true })
    ms.track(b.name)
    local r = post("/api/containers", b)
    assert.are.equal(400, r.status)
    assert.are.equal("Privileged", r.json.error.field)
    r = post("/api/containers", assert(json.encode(b)),
      { headers = { ["Content-Type"] = "text/plain" } })
    assert.are.equal(415, r.status)
    assert.are.equal("unsupported_media_type", r.json.error.code)
    r = post("/api/containers", assert(json.encode(b)), { headers = {} })
    assert.are.equal(415, r.status)
    r = post("/api/containers", "{not json",
      { headers = { ["Content-Type"] = "application/json; charset=utf-8" } })
    assert.are.equal(400, r.status)
    r = post("/api/containers", "[]", { headers = { ["Content-Type"] = "application/json" } })
    assert.are.equal(400, r.status)
    r = post("/api/containers", "", { headers = { ["Content-Type"] = "application/json" } })
    assert.are.equal(400, r.status)
    assert.is_nil(ms.inspect(b.name))
  end)

  it("refuses bad query values and bodies on actions, leaving the container as it was", function()
    local id = ms.create(srv, { start = true })
    local before = ms.snapshot(id)
    for _, q in ipairs({ "stop?timeout=soon", "stop?timeout=-1", "stop?t=1",
      "restart?timeout=1&timeout=2", "kill?signal=BOGUS", "kill?signal=99",
      "start?force=1", "pause?x=1" }) do
      local r = post("/api/containers/" .. id .. "/" .. q)
      assert.are.equal(400, r.status, q .. ": " .. r.body)
    end
    local r = post("/api/containers/" .. id .. "/stop", "{}",
      { headers = { ["Content-Type"] = "application/json" } })
    assert.are.equal(400, r.status)
    r = ms.call(srv, "DELETE", "/api/containers/" .. id .. "?force=yes")
    assert.are.equal(400, r.status)
    r = ms.call(srv, "DELETE", "/api/containers/" .. id .. "?recursive=1")
    assert.are.equal(400, r.status)
    assert.are.same(before, ms.snapshot(id))
    -- signals by name (any case, with or without SIG) and by number;
    -- SIGCONT leaves a running sleep as it was
    act(id, "kill", "?signal=cont", true)
    act(id, "kill", "?signal=SIGCONT", true)
    act(id, "kill", "?signal=18", true)
    assert.are.same(before, ms.snapshot(id))
  end)

  it("lets an operator who edits the policy allow one refused field", function()
    local text = http.read_file("lua/policy.lua")
    local edited = text:gsub("privileged = false,", "privileged = true,", 1)
    assert.are_not.equal(text, edited)
    local dir = http.scripts_dir({ ["policy.lua"] = edited })
    local open = ms.start({ scripts = dir })
    finally(function() open:stop() end)
    local b = ms.body({ privileged = true })
    ms.track(b.name)
    local r = ms.call(open, "POST", "/api/containers", b)
    assert.are.equal(201, r.status, r.body)
    assert.is_true(ms.inspect(r.json.id).HostConfig.Privileged)
    -- the rest stays refused
    local b2 = ms.body({ network = "host" })
    ms.track(b2.name)
    r = ms.call(open, "POST", "/api/containers", b2)
    assert.are.equal(403, r.status)
    assert.is_nil(ms.inspect(b2.name))
  end)

  it("gives the manage hook the container as the daemon knows it, however the request named it", function()
    local text = http.read_file("lua/policy.lua")
    local edited = text:gsub("\n  manage = nil,", function() return [[

  manage = function(action, ctr)
    if ctr.name:find("^hxtest%-keep") or ctr.labels["hx.keep"] == "1" then
      return "kept by the policy"
    end
  end,]] end, 1)
    assert.are_not.equal(text, edited)
    local guarded = ms.start({ scripts = http.scripts_dir({ ["policy.lua"] = edited }) })
    finally(function() guarded:stop() end)
    local id = ms.create(srv, { name = "hxtest-keep-" .. os.time() .. math.random(1000),
      start = true })
    -- by an id prefix, by the full id: the hook still sees the name
    for _, ref in ipairs({ id:sub(1, 8), id }) do
      local r = ms.call(guarded, "POST", "/api/containers/" .. ref .. "/stop")
      assert.are.equal(403, r.status, r.body)
      assert.truthy(r.json.error.message:find("kept by the policy", 1, true))
    end
    local r = ms.call(guarded, "DELETE", "/api/containers/" .. id:sub(1, 10) .. "?force=1")
    assert.are.equal(403, r.status, r.body)
    assert.are.equal("running", ms.status(id))
    -- by a label, through a stack action
    local stack = "hxkeep" .. os.time() .. math.random(1000)
    local other = ms.create(srv, { start = true, labels = { ["hx.keep"] = "1",
      ["com.docker.compose.project"] = stack, ["com.docker.compose.service"] = "s" } })
    r = ms.call(guarded, "POST", "/api/stacks/" .. stack .. "/stop")
    assert.are.equal(403, r.status, r.body)
    assert.are.equal("running", ms.status(other))
  end)

  it("applies an edited policy.lua on SIGHUP, and refuses a reload to a bad one", function()
    local text = http.read_file("lua/policy.lua")
    local dir = http.scripts_dir({ ["policy.lua"] = text })
    local s = ms.start({ scripts = dir })
    finally(function() s:stop() end)
    local function try_privileged()
      local b = ms.body({ privileged = true })
      ms.track(b.name)
      return ms.call(s, "POST", "/api/containers", b).status
    end
    local function rewrite(t)
      local f = assert(io.open(dir .. "/policy.lua", "w"))
      f:write(t)
      f:close()
      s:signal("HUP")
    end
    assert.are.equal(403, try_privileged())
    rewrite((text:gsub("privileged = false,", "privileged = true,", 1)))
    assert.is_truthy(ms.eventually(5, function() return try_privileged() == 201 end),
      s:logtext())
    rewrite("return { create = { privileged = false, bogus = 1 } }")
    assert.truthy(ms.eventually(5, function()
      return s:logtext():find("reload failed.-unknown setting create%.bogus")
    end), s:logtext())
  end)

  -- A worker builds its state on its first request after a reload: it must
  -- load the policy.lua of the last good reload (the server's snapshot),
  -- not whatever the file says by then.
  it("keeps serving the last good policy.lua on every worker when a new one is bad", function()
    local text = http.read_file("lua/policy.lua")
    local dir = http.scripts_dir({ ["policy.lua"] = text })
    local s = ms.start({ scripts = dir, args = { "--workers", "4" } })
    finally(function() s:stop() end)
    local function rewrite(t)
      local f = assert(io.open(dir .. "/policy.lua", "w"))
      f:write(t)
      f:close()
      s:signal("HUP")
    end
    rewrite((text:gsub("privileged = false,", "privileged = true,", 1)))
    assert.truthy(ms.eventually(5, function()
      return s:logtext():find("reloaded the scripts", 1, true)
    end))
    -- broken before most workers have rebuilt their state
    rewrite("return { create = { privileged = false, bogus = 1 } }")
    assert.truthy(ms.eventually(5, function()
      return s:logtext():find("reload failed", 1, true)
    end), s:logtext())
    for _ = 1, 8 do -- new connections spread over the workers
      local b = ms.body({ privileged = true })
      ms.track(b.name)
      local r = ms.call(s, "POST", "/api/containers", b)
      assert.are.equal(201, r.status, r.body)
    end
  end)

  it("refuses to start with a policy.lua that names an unknown setting", function()
    local dir = http.scripts_dir({
      ["policy.lua"] = "return { create = { privilegd = true } }",
    })
    local ok, err = pcall(ms.start, { scripts = dir })
    if ok then
      err:stop()
      error("the server started with a bad policy.lua")
    end
    assert.truthy(tostring(err):find("unknown setting create.privilegd", 1, true), err)
  end)

  it("goes through the docker CLI when the policy allows it and the API is down", function()
    local text = http.read_file("lua/policy.lua")
    local edited = text:gsub("cli_fallback = false,", "cli_fallback = true,", 1)
      :gsub('env = nil,', ('env = { "DOCKER_HOST=unix:///var/run/docker.sock", "%s" },')
        :format(ms.PATH), 1)
    local dir = http.scripts_dir({ ["policy.lua"] = edited })
    local down = ms.start({ scripts = dir, env = { ms.DEAD_DOCKER } })
    finally(function() down:stop() end)
    local b = ms.body({ env = { X = "a b" }, ports = { { container = 80, host = 0 } } })
    ms.track(b.name)
    local r = ms.call(down, "POST", "/api/containers", b)
    assert.are.equal(201, r.status, r.body)
    assert.are.equal("docker-cli", r.json.via)
    local info = ms.inspect(b.name)
    assert.are.equal(r.json.id, info.Id)
    assert.truthy(table.concat(info.Config.Env, "\n"):find("X=a b", 1, true))
    assert.are.equal("127.0.0.1", info.HostConfig.PortBindings["80/tcp"][1].HostIp)
    r = ms.call(down, "POST", "/api/containers/" .. b.name .. "/start")
    assert.are.equal(200, r.status, r.body)
    assert.are.equal("running", ms.status(b.name))
    r = ms.call(down, "POST", "/api/containers/" .. b.name .. "/stop?timeout=0")
    assert.are.equal(200, r.status, r.body)
    assert.are.equal("exited", ms.status(b.name))
    r = ms.call(down, "DELETE", "/api/containers/" .. b.name)
    assert.are.equal(200, r.status, r.body)
    assert.is_nil(ms.inspect(b.name))
    -- the policy is still in force on that path
    r = ms.call(down, "POST", "/api/containers", ms.body({ privileged = true }))
    assert.are.equal(403, r.status)
    -- a container the CLI does not know is a 404 there too
    r = ms.call(down, "POST", "/api/containers/" .. b.name .. "/start")
    assert.are.equal(404, r.status, r.body)
  end)
end)
