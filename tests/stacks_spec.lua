-- Compose stacks: a stack of two services (web x2, db x1) created through
-- POST /api/containers with the compose labels -- no compose tool -- then
-- listed, inspected with summed stats, and stopped, started and restarted.
local ms = require "manage_support"
local support = require "support"

describe("Compose stacks over HTTP", function()
  local srv, project, ids

  local PROJECT = "com.docker.compose.project"
  local SERVICE = "com.docker.compose.service"

  local function get(path)
    local r = ms.call(srv, "GET", path)
    assert(r.status == 200, path .. ": " .. r.status .. " " .. r.body)
    return r.json
  end

  local function find(list, name)
    for _, x in ipairs(list) do
      if x.name == name then
        return x
      end
    end
  end

  local function states()
    local out = {}
    for key, id in pairs(ids) do
      out[key] = ms.status(id)
    end
    return out
  end

  setup(function()
    support.docker()
    srv = ms.start()
    project = ("hxstack%x%04x"):format(os.time(), math.random(0, 0xffff))
    ids = {}
    for _, c in ipairs({ { "web1", "web" }, { "web2", "web" }, { "db1", "db" } }) do
      ids[c[1]] = ms.create(srv, {
        labels = { [PROJECT] = project, [SERVICE] = c[2] },
        start = true,
      })
    end
  end)

  teardown(function()
    ms.cleanup()
    if srv then
      srv:stop()
    end
  end)

  it("lists the stack with its services and states", function()
    local s = find(get("/api/stacks"), project)
    assert.is_table(s)
    assert.are.equal(3, s.count)
    assert.are.same({ running = 3 }, s.states)
    assert.are.same({
      { name = "db", count = 1, states = { running = 1 } },
      { name = "web", count = 2, states = { running = 2 } },
    }, s.services)
  end)

  it("gives each service's containers and the stats summed per service and stack", function()
    -- the collector samples every second; wait until every container has
    -- a record with a CPU %
    local s = ms.eventually(15, function()
      local st = get("/api/stacks/" .. project)
      if st.stats.sampled ~= 3 then
        return false
      end
      for _, svc in ipairs(st.services) do
        for _, c in ipairs(svc.containers) do
          if type(c.stats) ~= "table"
              or type(c.stats.cpu_usage_percent) ~= "number" then
            return false
          end
        end
      end
      return st
    end)
    assert.is_table(s, "the stack's stats never covered its 3 containers")
    assert.are.equal(project, s.name)
    assert.are.equal(3, s.count)
    assert.are.same({ running = 3 }, s.states)
    local web, db = find(s.services, "web"), find(s.services, "db")
    assert.are.equal(2, #web.containers)
    assert.are.equal(1, #db.containers)
    for _, c in ipairs(web.containers) do
      assert.are.equal("running", c.status)
      assert.is_table(c.stats)
      assert.are.equal(12, #c.id)
    end
    -- the stack's sums are the services' sums, which are the containers'
    for _, k in ipairs({ "memory_usage_bytes", "network_rx_bytes", "pids",
      "block_read_bytes", "cpu_usage_percent" }) do
      local per = 0
      for _, svc in ipairs(s.services) do
        local sum = 0
        for _, c in ipairs(svc.containers) do
          sum = sum + c.stats[k]
        end
        assert.is_true(math.abs(sum - svc.stats[k]) < 1e-9, k)
        per = per + svc.stats[k]
      end
      assert.is_true(math.abs(per - s.stats[k]) < 1e-9, k)
    end
    assert.are.equal(3, s.stats.pids)
    -- each container's own figures are real ones: memory in use, and the
    -- CPU % of a process that sleeps (a figure in other units, ns or a
    -- fraction of the host, is far off either way)
    for _, svc in ipairs(s.services) do
      for _, c in ipairs(svc.containers) do
        assert.is_true(c.stats.memory_usage_bytes > 0, c.name)
        assert.is_true(c.stats.cpu_usage_percent < 5, c.name .. ": "
          .. c.stats.cpu_usage_percent)
      end
    end
    assert.are.equal(2, web.stats.sampled)
  end)

  it("stops, starts and restarts every container of it", function()
    local r = ms.call(srv, "POST", "/api/stacks/" .. project .. "/stop?timeout=0")
    assert.are.equal(200, r.status, r.body)
    assert.are.equal(3, r.json.count)
    assert.are.equal(3, r.json.changed_count)
    assert.are.equal(3, #r.json.results)
    assert.are.same({ web1 = "exited", web2 = "exited", db1 = "exited" }, states())
    -- stopped in reverse service order: web before db
    assert.are.equal("web", r.json.results[1].service)
    assert.are.equal("db", r.json.results[3].service)
    r = ms.call(srv, "POST", "/api/stacks/" .. project .. "/stop?timeout=0")
    assert.are.equal(0, r.json.changed_count)

    local s = get("/api/stacks/" .. project)
    assert.are.same({ exited = 3 }, s.states)
    assert.are.equal(0, s.stats.sampled)

    r = ms.call(srv, "POST", "/api/stacks/" .. project .. "/start")
    assert.are.equal(200, r.status, r.body)
    assert.are.equal(3, r.json.changed_count)
    assert.are.same({ web1 = "running", web2 = "running", db1 = "running" }, states())

    local before = {}
    for k, id in pairs(ids) do
      before[k] = ms.inspect(id).State.StartedAt
    end
    r = ms.call(srv, "POST", "/api/stacks/" .. project .. "/restart?timeout=0")
    assert.are.equal(200, r.status, r.body)
    for k, id in pairs(ids) do
      local info = ms.inspect(id)
      assert.are.equal("running", info.State.Status)
      assert.are_not.equal(before[k], info.State.StartedAt, k)
    end
  end)

  it("acts on every container even when one fails, and says which", function()
    local p2 = project .. "-b"
    local good = ms.create(srv, { labels = { [PROJECT] = p2, [SERVICE] = "good" } })
    local bad = ms.create(srv, { labels = { [PROJECT] = p2, [SERVICE] = "bad" },
      cmd = { "/no/such/program" } })
    -- the stack's answer is the failed container's: what the daemon says
    -- to that start, through the client's one status mapping
    local want, kind = ms.answer_for(ms.bad_start_status())
    local r = ms.call(srv, "POST", "/api/stacks/" .. p2 .. "/start")
    assert.are.equal(want, r.status, r.body)
    assert.are.equal(kind, r.json.error.code)
    local results = r.json.error.results
    assert.are.equal(2, #results)
    local by = {}
    for _, x in ipairs(results) do
      by[x.service] = x
    end
    assert.is_true(by.good.changed)
    assert.are.equal(kind, by.bad.error.code)
    assert.truthy(by.bad.error.message:find("/no/such/program", 1, true), by.bad.error.message)
    assert.are.equal("running", ms.status(good))
    assert.are_not.equal("running", ms.status(bad))
  end)

  it("answers 404 for a stack that does not exist and 400 for a bad name", function()
    local r = ms.call(srv, "GET", "/api/stacks/hxstack-none-" .. os.time())
    assert.are.equal(404, r.status)
    r = ms.call(srv, "POST", "/api/stacks/hxstack-none-" .. os.time() .. "/stop")
    assert.are.equal(404, r.status)
    r = ms.call(srv, "GET", "/api/stacks/bad!name")
    assert.are.equal(400, r.status)
    r = ms.call(srv, "POST", "/api/stacks/bad!name/start")
    assert.are.equal(400, r.status)
    r = ms.call(srv, "POST", "/api/stacks/" .. project .. "/stop?timeout=x")
    assert.are.equal(400, r.status)
    r = ms.call(srv, "POST", "/api/stacks/" .. project .. "/start?timeout=1")
    assert.are.equal(400, r.status)
    r = ms.call(srv, "GET", "/api/stacks?x=1")
    assert.are.equal(400, r.status)
    assert.are.same({ web1 = "running", web2 = "running", db1 = "running" }, states())
  end)
end)
