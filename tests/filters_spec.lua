-- Container filters: parsing, the one Lua match function, the hand-over of
-- sources that cannot apply a filter, and the routes against the real
-- engine (the same answers as the daemon's own filters).
local filters = require "horcrux.filters"
local json = require "horcrux.json"
local input = require "horcrux.input"
local docker_api = require "horcrux.sources.docker_api"

-- "k=v&k2=v2" -> req.args; a value keeps any further '=' (label=a=b).
local function args(q)
  local out = {}
  for pair in q:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]+)=(.*)$")
    out[#out + 1] = { k, v }
  end
  return out
end

describe("horcrux.filters.parse", function()
  it("reads every filter key, repeatable, in order", function()
    local f = assert(filters.parse(args(
      "status=running&status=paused&label=a&label=b=c=d&network=bridge&name=^web&ancestor=busybox:1")))
    assert.are.same({ "running", "paused" }, f.status)
    assert.are.same({ "a", "b=c=d" }, f.label)
    assert.are.same({ "bridge" }, f.network)
    assert.are.same({ "^web" }, f.name)
    assert.are.same({ "busybox:1" }, f.ancestor)
  end)

  it("gives an empty filter when none is given, and checks the caller's keys", function()
    local f, q = filters.parse({})
    assert.is_true(filters.none(f))
    assert.are.same({}, q)
    f, q = filters.parse(args("all=0&status=exited"), { all = input.boolean })
    assert.are.same({ status = { "exited" } }, f)
    assert.are.same({ all = false }, q)
    local bad, err, kind, key = filters.parse(args("all=2"), { all = input.boolean })
    assert.is_nil(bad)
    assert.are.same({ "bad_request", "all" }, { kind, key })
    assert.truthy(err:find("all", 1, true))
    bad, err, kind, key = filters.parse(args("all=1&all=0"), { all = input.boolean })
    assert.is_nil(bad)
    assert.are.same({ "bad_request", "all" }, { kind, key })
    assert.truthy(err:find("twice", 1, true))
  end)

  it("refuses an unknown key, naming it and the keys it takes", function()
    local f, err, kind, key = filters.parse(args("lable=x"), { all = input.boolean })
    assert.is_nil(f)
    assert.are.equal("bad_request", kind)
    assert.are.equal("lable", key)
    assert.truthy(err:find('"lable"', 1, true))
    assert.truthy(err:find("all, ancestor, label, name, network, status", 1, true))
  end)

  it("refuses bad values, naming the key", function()
    for _, q in ipairs({ "status=sleeping", "status=", "label=", "label==v",
      "label=a b", "network=-x", "network=a/b", "name=web|db", "name=(x)",
      "name=a*", "ancestor=../x", "ancestor=", "label=k=\1" }) do
      local f, err, kind, key = filters.parse(args(q))
      assert.is_nil(f, q)
      assert.are.equal("bad_request", kind, q)
      assert.are.equal(q:match("^[^=]+"), key, q)
      assert.truthy(err, q)
    end
  end)

  it("caps the values of one key", function()
    local a = {}
    for i = 1, 33 do
      a[i] = { "label", "k" .. i }
    end
    local f, err = filters.parse(a)
    assert.is_nil(f)
    assert.truthy(err:find("at most 32", 1, true))
  end)

  it("gives the daemon the same keys and values as JSON arrays", function()
    local f = filters.parse(args("label=a=b&status=exited"))
    local d = filters.daemon(f)
    assert.are.equal('{"label":["a=b"],"status":["exited"]}',
      json.encode(d, { sort_keys = true }))
  end)
end)

describe("horcrux.filters.match", function()
  local rec = {
    id = string.rep("ab", 32), name = "web-1", status = "running",
    image = "horcrux-test:busybox", image_id = "sha256:32535d5d4e58aa",
    labels = { app = "shop", tier = "front", empty = "" },
    networks = { bridge = "a98db5253dba", backend = "77ffee" },
  }
  local function m(q)
    return filters.match(assert(filters.parse(args(q))), rec)
  end

  it("status: any of the values", function()
    assert.is_true(m("status=running"))
    assert.is_true(m("status=exited&status=running"))
    assert.is_false(m("status=exited"))
  end)

  it("label: every value, key alone or key=value (values may hold '=')", function()
    assert.is_true(m("label=app"))
    assert.is_true(m("label=app=shop&label=tier"))
    assert.is_true(m("label=empty="))
    assert.is_false(m("label=app=shop&label=missing"))
    assert.is_false(m("label=app=sho"))
    assert.is_false(m("label=tier=front=x"))
  end)

  it("name: the daemon's regexp subset, with and without the slash", function()
    assert.is_true(m("name=web"))
    assert.is_true(m("name=eb-"))
    assert.is_true(m("name=^web-1$"))
    assert.is_true(m("name=^/web"))
    assert.is_true(m("name=w.b"))
    assert.is_false(m("name=^eb"))
    assert.is_false(m("name=db"))
    assert.is_true(m("name=db&name=web"))
  end)

  it("network: a name, or a prefix of the network's id", function()
    assert.is_true(m("network=bridge"))
    assert.is_true(m("network=a98db5"))
    assert.is_true(m("network=none&network=backend"))
    assert.is_false(m("network=none"))
    assert.is_false(m("network=bridg"))
  end)

  it("ancestor: the reference (no tag is :latest) or an image id prefix", function()
    assert.is_true(m("ancestor=horcrux-test:busybox"))
    assert.is_true(m("ancestor=32535d5d"))
    assert.is_true(m("ancestor=sha256:32535d"))
    assert.is_false(m("ancestor=horcrux-test"))
    assert.is_false(m("ancestor=busybox"))
    local r2 = { image = "busybox" }
    assert.is_true(filters.match({ ancestor = { "busybox:latest" } }, r2))
    assert.is_true(filters.match({ ancestor = { "docker.io/library/busybox" } }, r2))
  end)

  it("all keys must match", function()
    assert.is_true(m("status=running&label=app&name=web&network=bridge"))
    assert.is_false(m("status=running&label=app&name=db"))
  end)

  it("says which key a record cannot decide (a missing or null field)", function()
    local f = assert(filters.parse(args("status=running&label=app")))
    local ok, key = filters.match(f, { status = "running", name = "x" })
    assert.is_nil(ok)
    assert.are.equal("label", key)
    ok, key = filters.match({ name = { "x" } }, { name = json.null })
    assert.is_nil(ok)
    assert.are.equal("name", key)
    -- a decided false wins over an unknown
    assert.is_false(filters.match(f, { status = "exited" }))
  end)

  it("reads a /containers/json item (the API source's record)", function()
    local r = docker_api.record({
      Id = "abc", Names = { "/web" }, State = "running", Image = "img",
      ImageID = "sha256:ff", Labels = { a = "1" },
      NetworkSettings = { Networks = { bridge = { NetworkID = "n1" } } },
    })
    assert.are.same({ id = "abc", name = "web", status = "running",
      image = "img", image_id = "sha256:ff", labels = { a = "1" },
      networks = { bridge = "n1" } }, r)
  end)
end)

describe("horcrux.filters.list", function()
  -- A source; one named "docker-api" here applies every filter itself (its
  -- `filters` capability), as the real one does.
  local function src(name, list, seen)
    return {
      name = name,
      filters = name == "docker-api" and docker_api.filters or nil,
      list = function(opts)
        if seen then
          seen[#seen + 1] = opts
        end
        if type(list) == "string" then
          return nil, list, "unavailable"
        end
        return json.array({ table.unpack(list) })
      end,
    }
  end

  it("passes the filters to the daemon source and nothing else to it", function()
    local seen = {}
    local policy = { sources = { src("docker-api", { { id = "a" } }, seen) } }
    local f = filters.parse(args("label=x=1"))
    local list = assert(filters.list(f, true, policy))
    assert.are.equal(1, #list)
    assert.are.same({ label = { "x=1" } }, seen[1].filters)
  end)

  it("applies the filter to other sources' records, and hands over when one cannot", function()
    local seen = {}
    local cg = src("cgroup", { { id = "a", name = "web", status = "running" } }, seen)
    local other = src("other", {
      { id = "b", name = "db", status = "running", labels = { app = "x" } },
      { id = "c", name = "web", status = "running", labels = { app = "y" } },
    })
    local policy = { sources = { cg, other } }
    -- name alone: the cgroup-like source answers
    local list = assert(filters.list(filters.parse(args("name=web")), true, policy))
    assert.are.same({ "a" }, { list[1].id })
    assert.is_nil(seen[1].filters)
    -- a label: it does not know labels, the next source answers
    list = assert(filters.list(filters.parse(args("label=app=y")), true, policy))
    assert.are.equal(1, #list)
    assert.are.equal("c", list[1].id)
  end)

  it("says what each source said when none can apply the filter", function()
    local policy = { sources = {
      src("docker-api", "docker: connect: no such file"),
      src("cgroup", { { id = "a", name = "web", status = "running" } }),
    } }
    local list, err, kind, extra = filters.list(
      filters.parse(args("label=app")), true, policy)
    local tried = extra.tried
    assert.is_nil(list)
    -- the one source that could apply it failed: its words are the answer
    assert.are.same({ "docker: connect: no such file", tried[1].kind },
      { err, kind })
    assert.are.equal(2, #tried)
    assert.are.equal("unsupported", tried[2].kind)
    assert.truthy(tried[2].error:find("cannot apply the label filter", 1, true))
    -- two that could, both failed: metrics_unavailable
    policy.sources[3] = src("docker-api", "docker: another daemon is down")
    list, err, kind, extra = filters.list(filters.parse(args("label=app")),
      true, policy)
    assert.is_nil(list)
    assert.are.same({ "metrics_unavailable", 3 }, { kind, #extra.tried })
  end)

  it("lists stopped containers too when a status filter is given", function()
    local seen = {}
    local policy = { sources = { src("docker-api", {}, seen), src("x", {}, seen) } }
    filters.list(filters.parse(args("status=exited")), false, policy)
    assert.is_true(seen[1].all)
  end)
end)

-- ---- against the real engine -------------------------------------------------

describe("filters over HTTP", function()
  local ms = require "manage_support"
  local support = require "support"
  local srv, tag, ids, names

  local function get(path)
    local r = ms.call(srv, "GET", path)
    assert(r.status == 200, path .. ": " .. r.status .. " " .. r.body)
    return r.json
  end

  -- names of ours in a list answer (others' containers may be there too)
  local function ours(list)
    local out = {}
    for _, c in ipairs(list) do
      for key, n in pairs(names) do
        if c.name == n then
          out[#out + 1] = key
        end
      end
    end
    table.sort(out)
    return out
  end

  setup(function()
    support.docker()
    srv = ms.start()
    tag = ("f%x%04x"):format(os.time(), math.random(0, 0xffff))
    ids, names = {}, {}
    -- a: running, app=shop tier=front; b: running app=shop; c: created app=other
    for key, extra in pairs({
      a = { labels = { ["hx.filter"] = tag, app = "shop", tier = "front" }, start = true },
      b = { labels = { ["hx.filter"] = tag, app = "shop" }, start = true },
      c = { labels = { ["hx.filter"] = tag, app = "other" }, start = false },
    }) do
      ids[key], names[key] = ms.create(srv, extra)
    end
  end)

  teardown(function()
    ms.cleanup()
    if srv then
      srv:stop()
    end
  end)

  local L = function() return "label=hx.filter=" .. tag end

  it("filters by label, key=value and key, all of them", function()
    assert.are.same({ "a", "b", "c" }, ours(get("/api/containers?" .. L())))
    assert.are.same({ "a", "b" }, ours(get("/api/containers?" .. L() .. "&label=app=shop")))
    assert.are.same({ "a" }, ours(get("/api/containers?" .. L() .. "&label=tier")))
    assert.are.same({}, ours(get("/api/containers?" .. L() .. "&label=tier=back")))
  end)

  it("filters by status (stopped ones too, even with all=0)", function()
    assert.are.same({ "c" }, ours(get("/api/containers?" .. L() .. "&status=created")))
    assert.are.same({ "c" }, ours(get("/api/containers?all=0&" .. L() .. "&status=created")))
    assert.are.same({ "a", "b" }, ours(get("/api/containers?all=0&" .. L())))
    assert.are.same({ "a", "b", "c" },
      ours(get("/api/containers?" .. L() .. "&status=created&status=running")))
  end)

  it("filters by name, network and ancestor", function()
    assert.are.same({ "a" }, ours(get("/api/containers?" .. L() .. "&name=" .. names.a .. "$")))
    assert.are.same({ "a", "c" },
      ours(get("/api/containers?" .. L() .. "&name=^" .. names.a .. "&name=" .. names.c)))
    assert.are.same({ "a", "b", "c" }, ours(get("/api/containers?" .. L() .. "&network=bridge")))
    assert.are.same({}, ours(get("/api/containers?" .. L() .. "&network=none")))
    assert.are.same({ "a", "b", "c" },
      ours(get("/api/containers?" .. L() .. "&ancestor=" .. support.image)))
    assert.are.same({}, ours(get("/api/containers?" .. L() .. "&ancestor=horcrux-test")))
  end)

  it("refuses a bad filter with 400 naming it", function()
    local r = ms.call(srv, "GET", "/api/containers?status=sleepy")
    assert.are.equal(400, r.status)
    assert.are.equal("status", r.json.error.field)
    r = ms.call(srv, "GET", "/api/containers?colour=red")
    assert.are.equal(400, r.status)
    assert.are.equal("colour", r.json.error.field)
    r = ms.call(srv, "GET", "/api/containers?all=maybe")
    assert.are.equal(400, r.status)
    r = ms.call(srv, "GET", "/api/stats?all=1")
    assert.are.equal(400, r.status)
  end)

  it("filters /api/stats the same way (running ones only)", function()
    local function stat_names(q)
      local out = {}
      local list = get("/api/stats?" .. q)
      for _, rec in ipairs(list) do
        for key in pairs(names) do
          if rec.id == ids[key] then
            out[#out + 1] = key
          end
        end
      end
      table.sort(out)
      return out
    end
    assert.are.same({ "a", "b" }, stat_names(L()))
    assert.are.same({ "a" }, stat_names(L() .. "&label=tier=front"))
    assert.are.same({}, stat_names(L() .. "&status=created"))
    assert.are.same({ "b" }, stat_names(L() .. "&name=" .. names.b))
    -- no filter: every running container, ours among them
    local all = get("/api/stats")
    local n = 0
    for _, rec in ipairs(all) do
      if rec.id == ids.a or rec.id == ids.b then
        n = n + 1
      end
    end
    assert.are.equal(2, n)
  end)

  it("includes in /api/stats a matching container started since the collector's last round", function()
    local d, dname = ms.create(srv, { labels = { ["hx.filter"] = tag .. "-new" }, start = true })
    finally(function() support.remove(d) end)
    local list = get("/api/stats?label=hx.filter=" .. tag .. "-new")
    assert.are.equal(1, #list)
    assert.are.equal(d, list[1].id)
    assert.are.equal(dname, list[1].name)
  end)

  it("without the daemon, applies what the cgroup source knows and says what it cannot", function()
    -- b paused: the cgroup source lists it (it has a cgroup, unlike the
    -- created c, which no cgroup list can hold whatever the filter), so
    -- only the filter keeps it out of status=running
    local docker = support.docker()
    assert.are.equal(204, (support.pause(ids.b)))
    local down = ms.start({ env = { ms.DEAD_DOCKER } })
    finally(function()
      docker:request("POST", "/containers/" .. ids.b .. "/unpause")
      down:stop()
    end)
    -- status: the cgroup source knows it
    local function found(q)
      local r = ms.call(down, "GET", "/api/containers?" .. q)
      assert.are.equal(200, r.status, r.body)
      assert.are.equal("cgroup", r.headers["x-horcrux-source"])
      local out = {}
      for _, c in ipairs(r.json) do
        out[c.id] = c.status
      end
      return out
    end
    local running = found("status=running")
    assert.are.equal("running", running[ids.a:sub(1, 12)])
    assert.is_nil(running[ids.b:sub(1, 12)])
    assert.is_nil(running[ids.c:sub(1, 12)])
    local paused = found("status=paused")
    assert.are.equal("paused", paused[ids.b:sub(1, 12)])
    assert.is_nil(paused[ids.a:sub(1, 12)])
    -- labels: no source that answers knows them
    local r = ms.call(down, "GET", "/api/containers?" .. L())
    assert.are.equal(503, r.status, r.body)
    assert.truthy(r.body:find("cannot apply the label filter", 1, true))
    r = ms.call(down, "GET", "/api/stats?" .. L())
    assert.are.equal(503, r.status, r.body)
  end)
end)
