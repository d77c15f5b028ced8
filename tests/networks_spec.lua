-- Networks and volumes: the policy's verdicts (drivers, options, host
-- mounts), and the routes against the real engine: create, list, inspect,
-- connect and disconnect a container, 409 while in use, remove, prune.
-- Every object made here is named hxtest-... and carries the test label.
local networks = require "horcrux.networks"
local volumes = require "horcrux.volumes"
local proc = require "horcrux.proc"
local http = require "http"
local ms = require "manage_support"
local support = require "support"

local LABELS = { [support.label] = support.label_value }

local function tmpdir()
  return assert(proc.run({ "mktemp", "-d", "/tmp/hxtest-vols.XXXXXX" }))
    .stdout:gsub("%s+$", "")
end

describe("networks.check and volumes.check", function()
  it("refuse LAN drivers and options not listed", function()
    assert.is_true(networks.check({}, {}))
    assert.is_true(networks.check({ driver = "overlay",
      options = { ["com.docker.network.driver.mtu"] = "1400" } }, {}))
    local ok, err, kind, field = networks.check({ driver = "macvlan" }, {})
    assert.are.same({ "forbidden", "driver" }, { kind, field })
    assert.truthy(err:find("LAN", 1, true), err)
    assert.is_nil(networks.check({ driver = "ipvlan" }, {}))
    assert.is_true(networks.check({ driver = "macvlan" },
      { networks = { drivers = { "macvlan" } } }))
    ok, err, kind, field = networks.check({ options = {
      ["com.docker.network.bridge.name"] = "eth0" } }, {}, "networks.x")
    assert.are.equal("networks.x.options", field)
    assert.is_nil(networks.check({}, { networks = { create = false } }))
  end)

  it("check a local volume's host mount as a bind, other mounts by type", function()
    assert.are.same({}, volumes.check({}, {}))
    assert.are.same({ type = "tmpfs", device = "tmpfs", o = "size=1m" },
      volumes.check({ options = { type = "tmpfs", device = "tmpfs", o = "size=1m" } }, {}))
    local ok, err, kind, field = volumes.check({ options = { type = "none",
      o = "bind", device = "/etc" } }, {})
    assert.are.same({ "forbidden", "options.device" }, { kind, field })
    assert.truthy(err:find("create.binds", 1, true), err)
    ok, err, kind, field = volumes.check({ options = { type = "nfs",
      o = "addr=10.0.0.1", device = ":/x" } }, {})
    assert.are.same({ "forbidden", "options.type" }, { kind, field })
    assert.is_nil(volumes.check({ options = { o = "size=1" } }, {}))
    assert.is_nil(volumes.check({ driver = "vieux/sshfs" }, {}))
    -- a bind the policy allows is sent resolved: a link cannot lead out
    local dir = tmpdir()
    finally(function() proc.run({ "rm", "-rf", dir }) end)
    assert(proc.run({ "mkdir", dir .. "/data" }))
    assert(proc.run({ "ln", "-s", "/", dir .. "/data/root" }))
    local policy = { create = { binds = { dir .. "/data" } } }
    local o = assert(volumes.check({ options = { o = "bind", type = "none",
      device = dir .. "/data/./" } }, policy))
    assert.are.equal(dir .. "/data", o.device)
    ok, err = volumes.check({ options = { o = "bind", type = "none",
      device = dir .. "/data/root" } }, policy)
    assert.is_nil(ok)
    assert.truthy(err:find("leads to /", 1, true), err)
  end)
end)

describe("networks and volumes against the real engine", function()
  local srv, ctr

  lazy_setup(function()
    srv = ms.start()
    ctr = support.run_container({ name = "netctr" })
  end)

  lazy_teardown(function()
    srv:stop()
    support.remove(ctr)
  end)

  local function call(method, path, body)
    return ms.call(srv, method, path, body)
  end

  it("create, list, connect, 409 in use, disconnect, remove a network", function()
    local name = support.unique_name("net")
    finally(function()
      support.docker():call("DELETE", "/networks/{network}", { network = name })
    end)
    local r = call("POST", "/api/networks", { name = name, labels = LABELS,
      internal = true })
    assert.are.equal(201, r.status, r.body)
    assert.truthy(r.json.id:match("^%x+$"), r.body)
    r = http.get(srv.url .. "/api/networks?label=" .. support.label_arg)
    local found
    for _, n in ipairs(r.json) do
      found = found or (n.name == name and n)
    end
    assert.truthy(found, r.body)
    assert.are.same({ "bridge", true }, { found.driver, found.internal })
    r = call("POST", "/api/networks/" .. name .. "/connect",
      { container = ctr, aliases = { "web" } })
    assert.are.equal(200, r.status, r.body)
    r = http.get(srv.url .. "/api/networks/" .. name)
    assert.are.equal(ctr, r.json.containers[1].id, r.body)
    r = call("DELETE", "/api/networks/" .. name)
    assert.are.equal(409, r.status, r.body)
    r = call("POST", "/api/networks/" .. name .. "/disconnect", { container = ctr })
    assert.are.equal(200, r.status, r.body)
    r = call("DELETE", "/api/networks/" .. name)
    assert.are.same({ name = name, removed = true }, r.json)
    assert.are.equal(404, http.get(srv.url .. "/api/networks/" .. name).status)
  end)

  it("refuses what the policy refuses, and makes nothing", function()
    local name = support.unique_name("net")
    for _, b in ipairs({ { name = name, driver = "macvlan" },
      { name = name, options = { ["com.docker.network.bridge.name"] = "docker0" } } }) do
      local r = call("POST", "/api/networks", b)
      assert.are.equal(403, r.status, r.body)
    end
    local vol = support.unique_name("vol")
    local r = call("POST", "/api/volumes", { name = vol,
      options = { type = "none", o = "bind", device = "/" } })
    assert.are.equal(403, r.status, r.body)
    assert.are.equal(404, http.get(srv.url .. "/api/networks/" .. name).status)
    assert.are.equal(404, http.get(srv.url .. "/api/volumes/" .. vol).status)
    r = call("POST", "/api/networks", { name = "bad name" })
    assert.are.equal(400, r.status, r.body)
  end)

  it("refuses a bad subnet, ip_range or gateway with 400 naming it", function()
    local name = support.unique_name("net")
    finally(function()
      support.docker():call("DELETE", "/networks/{network}", { network = name })
    end)
    -- a /24 of its own: another run's network may be on the engine now
    local net = ("10.%d.%d."):format(math.random(200, 250), math.random(0, 255))
    for field, bad in pairs({ subnet = "999.1.1.0/24", ip_range = "10.0.0.0/99",
      gateway = "999.1.1.1" }) do
      local b = { name = name, labels = LABELS, subnet = net .. "0/24" }
      b[field] = bad
      local r = call("POST", "/api/networks", b)
      assert.are.equal(400, r.status, r.body)
      assert.are.same({ "bad_request", field }, { r.json.error.code,
        r.json.error.field })
      assert.matches("^" .. field .. ": must be an", r.json.error.message)
    end
    -- all three at once: every one named, so a client fixes them in one go
    local r3 = call("POST", "/api/networks", { name = name, labels = LABELS,
      subnet = "999.1.1.0/24", ip_range = "10.0.0.0/99", gateway = "x" })
    assert.are.equal(400, r3.status, r3.body)
    assert.are.same({ "gateway", { "gateway", "ip_range", "subnet" } },
      { r3.json.error.field, r3.json.error.fields })
    assert.matches("^gateway: .+; ip_range: .+; subnet: ", r3.json.error.message)
    assert.are.equal(404, http.get(srv.url .. "/api/networks/" .. name).status)
    local good = { subnet = net .. "0/24", ip_range = net .. "128/25",
      gateway = net .. "1" }
    local r = call("POST", "/api/networks", { name = name, labels = LABELS,
      subnet = good.subnet, ip_range = good.ip_range, gateway = good.gateway })
    assert.are.equal(201, r.status, r.body)
    r = http.get(srv.url .. "/api/networks/" .. name)
    assert.are.same(good, r.json.subnets[1])
  end)

  it("takes volume names as Docker does: 2 bytes at least, and says so", function()
    local r = call("POST", "/api/volumes", { name = "v", labels = LABELS })
    assert.are.equal(400, r.status, r.body)
    assert.are.equal("name", r.json.error.field)
    assert.matches("%(2 to 255 bytes%)$", r.json.error.message)
    -- the README's example: a 2-byte name gets as far as the policy
    r = call("POST", "/api/volumes", { name = "etc", options = { type = "none",
      o = "bind", device = "/etc" } })
    assert.are.equal(403, r.status, r.body)
    assert.are.equal("options.device", r.json.error.field)
  end)

  it("prunes only the unused networks it is told to", function()
    local name = support.unique_name("net")
    assert.are.equal(201, call("POST", "/api/networks",
      { name = name, labels = LABELS }).status)
    local r = call("POST", "/api/networks/prune?label=" .. support.label_arg)
    assert.are.equal(200, r.status, r.body)
    local pruned = false
    for _, n in ipairs(r.json.deleted) do
      pruned = pruned or n == name
    end
    assert.is_true(pruned, r.body)
  end)

  -- The daemon runs one prune of a kind at a time and refuses the next
  -- with 409 "a prune operation is already running": not the caller's
  -- conflict. (Before horcrux asked again, 5 of 18 such prunes by hand got
  -- it, and this spec failed in 1 run of 2.)
  it("prunes asked at once all succeed", function()
    local outs = {}
    finally(function()
      for _, f in ipairs(outs) do
        os.remove(f)
      end
    end)
    for _ = 1, 5 do
      local ps = {}
      for i = 1, 6 do
        outs[#outs + 1] = os.tmpname()
        ps[i] = assert(proc.spawn({ "curl", "-s", "-o", "/dev/null", "-w",
          "%{http_code}", "-X", "POST", "-H", "Authorization: Bearer "
          .. ms.TOKEN, "--max-time", "20", srv.url
          .. "/api/networks/prune?label=" .. support.label_arg },
          { stdout = outs[#outs] }))
      end
      for i, p in ipairs(ps) do
        local st = p:wait(30)
        assert.are.equal(0, st and st.status)
        assert.are.equal("200", http.read_file(outs[#outs - 6 + i]))
      end
    end
  end)

  it("create, inspect, 409 in use, remove and prune volumes", function()
    local vol, other = support.unique_name("vol"), support.unique_name("vol")
    finally(function()
      for _, v in ipairs({ vol, other }) do
        support.docker():call("DELETE", "/volumes/{volume}", { volume = v })
      end
    end)
    local r = call("POST", "/api/volumes", { name = vol, labels = LABELS,
      options = { type = "tmpfs", device = "tmpfs", o = "size=1m" } })
    assert.are.equal(201, r.status, r.body)
    r = http.get(srv.url .. "/api/volumes/" .. vol)
    assert.are.same({ "local", "tmpfs" }, { r.json.driver, r.json.options.type })
    local user = support.run_container({ name = "voluser", host_config = {
      Mounts = { { Type = "volume", Source = vol, Target = "/v" } } } })
    r = call("DELETE", "/api/volumes/" .. vol)
    assert.are.equal(409, r.status, r.body)
    support.remove(user)
    r = call("DELETE", "/api/volumes/" .. vol)
    assert.are.same({ name = vol, removed = true }, r.json)
    assert.are.equal(201, call("POST", "/api/volumes", { name = other,
      labels = LABELS }).status)
    r = http.get(srv.url .. "/api/volumes?label=" .. support.label_arg)
    assert.truthy(r.body:find(other, 1, true), r.body)
    r = call("POST", "/api/volumes/prune?label=" .. support.label_arg)
    assert.are.equal(200, r.status, r.body)
    assert.truthy(r.body:find(other, 1, true), r.body)
  end)
end)
