-- Every mutating route of images, exec, networks, volumes and stacks: 401
-- without the token, 403 with a wrong one, 403 in read-only mode with the
-- right one -- and the object it names, as the daemon reports it,
-- unchanged each time.
local json = require "horcrux.json"
local proc = require "horcrux.proc"
local http = require "http"
local ms = require "manage_support"
local support = require "support"
local st = require "stack_support"

local function docker(args, stdin)
  local argv = { "docker" }
  for _, a in ipairs(args) do
    argv[#argv + 1] = a
  end
  return assert(proc.run(argv, { timeout = 120, stdin = stdin,
    env = { "PATH=" .. os.getenv("PATH"), "DOCKER_BUILDKIT=0",
      "DOCKER_HOST=" .. (os.getenv("DOCKER_HOST") or "unix:///var/run/docker.sock") } }))
end

local function api(method, template, params)
  return support.docker():call(method, template, params)
end

describe("the mutating routes of images, exec, networks, volumes, stacks", function()
  local srv, ro, dir
  local image, ctr, net, vol, stack

  lazy_setup(function()
    dir = st.scripts(([[return {
      images = { pull = true, push = true },
      exec = { containers = true },
      compose = { swarm = false, state_dir = "STATE" },
    }]]))
    -- the set-up deploys a stack (the compose tool, the daemon's creates):
    -- the deadline the README tells operators to raise for stacks
    srv = ms.start({ scripts = dir, args = { "--deadline", "60" } })
    ro = ms.start({ scripts = dir, args = { "--read-only", "--deadline", "60" } })
    image = support.unique_name("guard") .. ":v1"
    local r = docker({ "build", "-q", "-t", image, "-" }, ("FROM %s\nLABEL %s=%s\n")
      :format(support.image, support.label, support.label_value))
    assert(r.status == 0, r.stderr)
    ctr = support.run_container({ name = "guard" })
    net = support.unique_name("guardnet")
    assert(support.docker():call("POST", "/networks/create", nil, nil,
      { Name = net, Labels = { [support.label] = support.label_value } }))
    assert(support.docker():call("POST", "/networks/{network}/connect",
      { network = net }, nil, { Container = ctr }))
    vol = support.unique_name("guardvol")
    assert(support.docker():call("POST", "/volumes/create", nil, nil,
      { Name = vol, Labels = { [support.label] = support.label_value } }))
    stack = support.unique_name("guardst"):lower()
    r = ms.call(srv, "POST", "/api/stacks", { name = stack,
      compose = st.two_services() }, { timeout = 180 })
    assert(r.status == 201, r.body)
  end)

  lazy_teardown(function()
    ms.call(srv, "DELETE", "/api/stacks/" .. stack)
    for _, s in ipairs({ srv, ro }) do s:stop() end
    support.remove(ctr)
    api("DELETE", "/networks/{network}", { network = net })
    api("DELETE", "/volumes/{volume}", { volume = vol })
    docker({ "rmi", "-f", image, "hxtest-guard-copy:v1" })
    proc.run({ "rm", "-rf", dir })
  end)

  -- What must not change, as the daemon reports it.
  local function snapshot()
    local img = api("GET", "/images/{image}/json", { image = image })
    local n = api("GET", "/networks/{network}", { network = net })
    local attached = {}
    for id in pairs(type(n) == "table" and n.Containers or {}) do
      attached[#attached + 1] = id
    end
    local copy = api("GET", "/images/{image}/json", { image = "hxtest-guard-copy:v1" })
    local marker = docker({ "exec", ctr, "ls", "/hxtest-guard" }).status
    local containers = support.docker():containers({ all = true, filters = {
      label = { "com.docker.compose.project=" .. stack } } })
    local running = 0
    for _, c in ipairs(containers or {}) do
      running = running + (c.State == "running" and 1 or 0)
    end
    return {
      image = img and img.RepoTags or false, copy = copy ~= nil,
      network = n ~= nil, attached = attached, marker = marker,
      volume = api("GET", "/volumes/{volume}", { volume = vol }) ~= nil,
      stack = running, other = api("GET", "/networks/{network}",
        { network = "hxtest-guard-new" }) ~= nil,
    }
  end

  it("answer 401, 403, 403 (read-only), and change nothing", function()
    local routes = {
      { "POST", "/api/images/pull", { image = "127.0.0.1:9/hxtest/none:1" } },
      { "POST", "/api/images/prune?all=1&label=" .. support.label_arg },
      { "POST", "/api/images/" .. image .. "/tag", { repo = "hxtest-guard-copy", tag = "v1" } },
      { "POST", "/api/images/" .. image .. "/push" },
      { "DELETE", "/api/images/" .. image .. "?force=1" },
      { "POST", "/api/containers/" .. ctr .. "/exec", { cmd = { "touch", "/hxtest-guard" } } },
      { "POST", "/api/networks", { name = "hxtest-guard-new" } },
      { "POST", "/api/networks/prune?label=" .. support.label_arg },
      { "DELETE", "/api/networks/" .. net },
      { "POST", "/api/networks/" .. net .. "/connect", { container = ctr } },
      { "POST", "/api/networks/" .. net .. "/disconnect", { container = ctr } },
      { "POST", "/api/volumes", { name = vol .. "x" } },
      { "POST", "/api/volumes/prune?label=" .. support.label_arg },
      { "DELETE", "/api/volumes/" .. vol },
      { "POST", "/api/stacks", { name = stack, compose = "services: {}\n" } },
      { "DELETE", "/api/stacks/" .. stack .. "?volumes=1" },
      { "POST", "/api/stacks/" .. stack .. "/pull" },
    }
    local before = snapshot()
    assert.is_true(before.stack >= 2, json.encode(before)) -- web (x2) and db
    for _, rt in ipairs(routes) do
      local what = rt[1] .. " " .. rt[2]
      local r = ms.call(srv, rt[1], rt[2], rt[3], { token = false })
      assert.are.equal(401, r.status, what .. " " .. r.body)
      assert.are.equal("unauthorized", r.json.error.code, what)
      r = ms.call(srv, rt[1], rt[2], rt[3], { token = "wrong-token" })
      assert.are.equal(403, r.status, what .. " " .. r.body)
      r = ms.call(ro, rt[1], rt[2], rt[3])
      assert.are.equal(403, r.status, what .. " " .. r.body)
      assert.truthy(r.json.error.message:find("read-only", 1, true), r.body)
      assert.are.same(before, snapshot(), what)
    end
    assert.is_nil(api("GET", "/volumes/{volume}", { volume = vol .. "x" }))
    -- stack logs leak what containers print: refused in read-only mode
    local r = http.get(ro.url .. "/api/stacks/" .. stack .. "/logs")
    assert.are.equal(403, r.status, r.body)
  end)
end)
