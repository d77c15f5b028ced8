-- A stack on a single-node swarm: a private dockerd (tests/daemon.lua: its
-- own socket, data root and network namespace, so the shared engine never
-- becomes a swarm) is made a manager with `docker swarm init`; the compose
-- file of the compose spec deploys through POST /api/stacks as a swarm
-- stack with its replicas running, shows in /api/swarm*, comes down, and
-- the node leaves the swarm (`docker swarm leave --force`) at the end.
local daemon = require "daemon"
local json = require "horcrux.json"
local proc = require "horcrux.proc"
local http = require "http"
local ms = require "manage_support"
local support = require "support"
local st = require "stack_support"

describe("a stack on a single-node swarm", function()
  local d, srv, dir, joined

  lazy_setup(function()
    assert(daemon.available())
    d = daemon.start({ live_restore = false }) -- swarm mode refuses it
    d:load_image(support.image)
    local r = d:cli({ "swarm", "init", "--advertise-addr", "127.0.0.1",
      "--listen-addr", "127.0.0.1:2377" }, { timeout = 60 })
    assert(r.status == 0, "swarm init: " .. r.stderr)
    joined = true
    dir = st.scripts([[return { compose = { state_dir = "STATE" } }]])
    -- a deploy runs `docker stack deploy` and the daemon's calls: past the
    -- default 10 s in a CI's sanitizer run, so the deadline the README
    -- tells operators to raise for stacks (as compose_spec does)
    srv = ms.start({ scripts = dir, env = { "DOCKER_HOST=" .. d.host },
      args = { "--deadline", "60" } })
  end)

  lazy_teardown(function()
    if srv then srv:stop() end
    if joined then
      d:cli({ "swarm", "leave", "--force" }, { timeout = 60 })
    end
    if d then d:stop() end
    if dir then proc.run({ "rm", "-rf", dir }) end
  end)

  local function services(name)
    local r = http.get(srv.url .. "/api/swarm/services?stack=" .. name)
    assert.are.equal(200, r.status, r.body)
    return r.json
  end

  it("deploys the compose file as a swarm stack with its replicas running", function()
    local r = http.get(srv.url .. "/api/swarm")
    assert.are.same({ "active", true }, { r.json.node_state, r.json.manager })
    assert.are.equal(1, #r.json.nodes, r.body)
    assert.is_true(r.json.nodes[1].leader)

    local name = "hxswarm" .. math.random(1e6)
    r = ms.call(srv, "POST", "/api/stacks", { name = name,
      compose = st.two_services() }, { timeout = 180 })
    assert.are.equal(201, r.status, r.body)
    assert.are.equal("swarm", r.json.mode)
    local ready = ms.eventually(90, function()
      local list = services(name)
      for _, s in ipairs(list) do
        if s.replicas.running ~= s.replicas.desired then
          return false
        end
      end
      return #list == 2 and list
    end)
    assert.truthy(ready, json.encode(services(name)))
    assert.are.same({ name .. "_db", name .. "_web" },
      { ready[1].name, ready[2].name })
    assert.are.same({ 1, 2 }, { ready[1].replicas.desired,
      ready[2].replicas.desired })

    r = http.get(srv.url .. "/api/swarm/tasks?stack=" .. name)
    local running = 0
    for _, t in ipairs(r.json) do
      if t.state == "running" then
        running = running + 1
      end
    end
    assert.are.equal(3, running, r.body)
    r = http.get(srv.url .. "/api/swarm/stacks")
    assert.truthy(r.body:find('"name":"' .. name .. '"', 1, true), r.body)
    assert.are.equal("swarm", http.get(srv.url .. "/api/stacks/" .. name
      .. "/config").json.mode)

    r = ms.call(srv, "DELETE", "/api/stacks/" .. name)
    assert.are.equal(200, r.status, r.body)
    assert.are.same({}, services(name))
  end)

  it("refuses on a swarm what it refuses elsewhere, and a public port", function()
    -- (binds and the rest as compose_spec checks them: the same code)
    for _, c in ipairs({ { "    privileged: true\n", "services.web.privileged" },
      { '    ports: ["8080:8000"]\n', "services.web.ports[1].host_ip" } }) do
      local name = "hxbad" .. math.random(1e6)
      local r = ms.call(srv, "POST", "/api/stacks", { name = name,
        compose = st.two_services(c[1]) }, { timeout = 180 })
      assert.are.equal(403, r.status, r.body)
      assert.are.equal(c[2], r.json.error.field, r.body)
      assert.are.same({}, services(name))
    end
  end)
end)
