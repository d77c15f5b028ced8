-- horcrux.docker against the real engine, a fake one that misbehaves
-- (tests/mocks/docker_mock.py), and the yield protocol of the async host.
local docker = require "horcrux.docker"
local ds = require "docker_support"
local support = require "support"
local system = require "system"

local MISSING = "unix:///nonexistent/horcrux-test.sock"
local ENV_API = ds.ENV_API
local negotiated, lua_with_env = ds.negotiated, ds.lua_with_env

describe("horcrux.docker", function()
  describe("name and id checks", function()
    it("accepts Docker names, ids and prefixes", function()
      assert.is_true(docker.valid_name("web-1_a.b"))
      assert.is_true(docker.valid_name("/web"))
      assert.is_true(docker.valid_name(string.rep("a", 64)))
      assert.is_true(docker.valid_id("0123456789abcdef"))
      assert.is_true(docker.valid_id("4f"))
      assert.are.equal("web", docker.ref("/web"))
      assert.are.equal("web", docker.ref("web"))
    end)

    it("refuses anything else", function()
      for _, s in ipairs { "", "/", "../images/create", "a/b", "%2f", "x?y",
        "#", "-a", ".a", "a b", "a\n", "é", string.rep("a", 300) } do
        assert.is_false(docker.valid_name(s), s)
        local v, msg, kind = docker.ref(s)
        assert.is_nil(v)
        assert.are.equal("bad_request", kind)
        assert.matches("^docker: invalid container name or id", msg)
      end
      for _, s in ipairs { "", "XYZ", "ABCDEF", "abcg", string.rep("a", 65) } do
        assert.is_false(docker.valid_id(s), s)
      end
      -- the refusal says the rule, or the length when only that is wrong
      assert.are.equal('docker: invalid container name or id: "bad!name" (8 '
        .. 'bytes): a name is letters, digits and _ . - (starting with a '
        .. 'letter or digit), an id is hex', select(2, docker.ref("bad!name")))
      local _, long = docker.ref(string.rep("a", 256))
      assert.matches('^docker: invalid container name or id: "a+"%.%.%. '
        .. '%(256 bytes%): longer than 255 bytes$', long)
      assert.are.equal(255, #docker.ref("/" .. string.rep("a", 255)))
      assert.is_false(docker.valid_name(nil))
      assert.is_false(docker.valid_id(12))
    end)
  end)

  describe("connect", function()
    it("does not contact the daemon", function()
      local c = assert(docker.connect { host = MISSING })
      assert.are.equal(ENV_API, c:api_version())
      assert.are.equal(0, c:connections())
      assert.matches("nonexistent", tostring(c))
      c:close()
    end)

    it("says npipe:// and ssh:// are not supported here", function()
      local c, msg, kind = docker.connect { host = "npipe:////./pipe/docker_engine" }
      assert.is_nil(c)
      assert.are.equal("unavailable", kind)
      assert.matches("not supported here", msg)
      c, msg, kind = docker.connect { host = "ssh://me@box" }
      assert.is_nil(c)
      assert.are.equal("unavailable", kind)
      c, msg, kind = docker.connect { host = "ftp://x" }
      assert.is_nil(c)
      assert.are.equal("bad_request", kind)
      c, msg, kind = docker.connect { host = "unix://" }
      assert.is_nil(c)
      assert.are.equal("bad_request", kind)
    end)

    it("raises for bad options", function()
      assert.has_error(function() docker.connect { timeout = -1 } end)
      assert.has_error(function() docker.connect { max_response = 0 } end)
      assert.has_error(function() docker.connect { host = 5 } end)
    end)

    it("takes DOCKER_HOST: a missing socket is unavailable", function()
      local out = lua_with_env({ DOCKER_HOST = MISSING }, [[
        local c = require("horcrux.docker").connect()
        print(tostring(c), c:ping())]])
      assert.matches("nonexistent", out)
      assert.matches("nil\tdocker: cannot connect to " .. MISSING:gsub("%p", "%%%0")
        .. ": No such file or directory\tunavailable", out)
    end)

    it("reports npipe in DOCKER_HOST", function()
      local out = lua_with_env({ DOCKER_HOST = "npipe:////./pipe/docker_engine" },
        [[print(require("horcrux.docker").connect())]])
      assert.matches("not supported here\tunavailable", out)
    end)

    it("one close serves close(), __close and __gc", function()
      local c = assert(docker.connect { host = MISSING })
      assert.is_true(c:close())
      assert.is_true(c:close())
      assert.has_error(function() c:ping() end, "attempt to use a closed docker client")
      do
        local c2 <close> = assert(docker.connect { host = MISSING })
        assert.are.equal(ENV_API, c2:api_version())
      end
      collectgarbage()
    end)

    it("refuses a bad DOCKER_API_VERSION", function()
      for _, v in ipairs { "latest", "garbage", "1.41.0", "v1.41", "1.", "1.4x" } do
        local out = lua_with_env({ DOCKER_API_VERSION = v },
          [[print(require("horcrux.docker").connect())]])
        assert.are.equal("nil\tdocker: bad DOCKER_API_VERSION: " .. v
          .. " (MAJOR.MINOR expected, as 1.41)\tbad_request\n", out)
      end
    end)

    it("refuses a bad api_version option the same way", function()
      for _, v in ipairs { "garbage", "v1", "1.41.0", "1", " 1.41" } do
        local c, msg, kind = docker.connect { host = MISSING, api_version = v }
        assert.is_nil(c)
        assert.are.equal("bad_request", kind)
        assert.are.equal("docker: bad api_version: " .. v
          .. " (MAJOR.MINOR expected, as 1.41)", msg)
      end
      local c = assert(docker.connect { host = MISSING, api_version = "1.40" })
      assert.are.equal("1.40", c:api_version())
      c:close()
    end)
  end)

  describe("path safety", function()
    -- The socket does not exist: an answer other than bad_request would be
    -- "unavailable", so bad_request proves nothing was sent.
    local c
    before_each(function()
      c = assert(docker.connect { host = MISSING, api_version = "1.41" })
    end)
    after_each(function() c:close() end)

    it("checks ids before any request is made", function()
      for _, id in ipairs { "../images/create", "a/b", "%2f", "x?y", "#", "",
        "..", "a b", "a\r\nHost: x", string.rep("a", 300) } do
        for _, m in ipairs { "inspect", "stats" } do
          local v, msg, kind = c[m](c, id)
          assert.is_nil(v)
          assert.are.equal("bad_request", kind, m .. " " .. id)
          assert.matches("^docker: invalid container name or id", msg)
        end
      end
      -- a placeholder's own name is said once: {name}, {network}, {volume}
      for ph, what in pairs({ name = "name or id", network = "network name or id",
        volume = "volume name or id" }) do
        local v, msg = c:call("GET", "/x/{" .. ph .. "}", { [ph] = "bad name" })
        assert.is_nil(v)
        assert.matches("^docker: invalid " .. what .. ": \"bad name\"", msg)
      end
      assert.are.equal(0, c:connections())
      local v, msg, kind = c:inspect("good-name")
      assert.is_nil(v)
      assert.are.equal("unavailable", kind, msg)
    end)

    it("checks request() paths", function()
      for _, p in ipairs { "", "containers/json", "/../images/create",
        "/containers/../images", "/containers/..", "/..", "/.", "/a/./b",
        "/a/.", "/a%2fb", "/x?y", "/x#y", "/a b", "/a\n",
        "/a\0b", "/\\a", "/" .. string.rep("a", 2000) } do
        local st, msg, kind = c:request("GET", p)
        assert.is_nil(st)
        assert.are.equal("bad_request", kind, p)
        assert.matches("^docker: invalid path", msg)
      end
      assert.has_error(function() c:request("get", "/x") end)
      assert.has_error(function() c:request("GET", "/x", "all=1") end)
      assert.has_error(function() c:request("GET", "/x", { [1] = "a" }) end)
      local st, msg, kind = c:request("GET", "/containers/json")
      assert.is_nil(st)
      assert.are.equal("unavailable", kind, msg)
    end)
  end)

  describe("against the engine", function()
    local c, made
    before_each(function()
      c = support.docker()
      made = {}
    end)
    -- Only what this test made: other specs may be running beside us.
    local function run(opts)
      local id, name = support.run_container(opts)
      made[#made + 1] = id
      return id, name
    end
    local function remove_made()
      for _, id in ipairs(made) do
        support.remove(id)
      end
    end

    it("pings, negotiates the API version, and reports the version", function()
      local fresh = assert(docker.connect())
      assert.are.equal(ENV_API, fresh:api_version())
      assert.is_true(fresh:ping())
      -- /_ping needs no version, but its API-Version header negotiates.
      local daemon = assert(c:version()).ApiVersion
      assert.are.equal(negotiated(daemon), fresh:api_version())
      local v = assert(fresh:version())
      assert.is_string(v.Version)
      assert.matches("^%d+%.%d+$", v.ApiVersion)
      -- Debian 12's dockerd 20.10 speaks 1.41: min(1.41, 1.51) = 1.41.
      assert.are.equal(negotiated(v.ApiVersion), fresh:api_version())

      local other = assert(docker.connect())
      assert(other:containers()) -- negotiates first, then lists
      assert.are.equal(negotiated(v.ApiVersion), other:api_version())
      other:close()
      fresh:close()
    end)

    it("respects DOCKER_API_VERSION", function()
      local out = lua_with_env({ DOCKER_API_VERSION = "1.40" }, [[
        local c = require("horcrux.docker").connect()
        local l = assert(c:containers())
        print(c:api_version(), type(l))]])
      assert.are.equal("1.40\ttable\n", out)
      local c2 = assert(docker.connect { api_version = "1.39" })
      local st, _, headers = c2:request("GET", "/containers/json")
      assert.are.equal(200, st)
      assert.are.equal("1.39", c2:api_version())
      assert.is_string(headers["api-version"])
      c2:close()
    end)

    it("a DOCKER_API_VERSION newer than the daemon's fails as protocol, naming it", function()
      local out = lua_with_env({ DOCKER_API_VERSION = "9.99" }, [[
        local c = require("horcrux.docker").connect()
        print(c:ping())
        print(c:containers())
        print(c:inspect("hxtest-none"))]])
      local ping, list, insp = out:match("^([^\n]*)\n([^\n]*)\n([^\n]*)\n$")
      assert.are.equal("true", ping, out)
      assert.matches("^nil\tdocker: client version 9%.99 is too new%. Maximum supported "
        .. "API version is %d+%.%d+.*\tprotocol$", list)
      assert.matches("DOCKER_API_VERSION", list)
      assert.matches("\tprotocol$", insp)
    end)

    it("lists containers: all, running, by label", function()
      local tag = support.unique_name("list")
      local running = run { name = "run", labels = { ["horcrux.test.case"] = tag } }
      local created = run { name = "new", start = false,
        labels = { ["horcrux.test.case"] = tag } }
      finally(remove_made)
      local mine = { label = { "horcrux.test.case=" .. tag } }

      local all = assert(c:containers { all = true, filters = mine })
      assert.are.equal(2, #all)
      local ids = { [all[1].Id] = true, [all[2].Id] = true }
      assert.is_true(ids[running] and ids[created])

      local up = assert(c:containers { filters = mine })
      assert.are.equal(1, #up)
      assert.are.equal(running, up[1].Id)
      assert.are.equal("running", up[1].State)
      assert.are.equal(support.image, up[1].Image)

      local st = assert(c:containers { all = true, filters = {
        label = { "horcrux.test.case=" .. tag }, status = { "created" } } })
      assert.are.equal(1, #st)
      assert.are.equal(created, st[1].Id)

      assert.are.equal(1, #assert(c:containers { all = true, limit = 1, filters = mine }))
      local sized = assert(c:containers { filters = mine, size = true })
      assert.is_number(sized[1].SizeRootFs)

      local none = assert(c:containers { filters = { label = { "horcrux.test.case=none" } } })
      assert.are.equal(0, #none)
    end)

    it("inspects running and created containers, by id, prefix or name", function()
      local running, name = run { name = "insp" }
      local created = run { name = "insp-new", start = false }
      finally(remove_made)
      local info = assert(c:inspect(running))
      assert.are.equal(running, info.Id)
      assert.are.equal("/" .. name, info.Name)
      assert.is_true(info.State.Running)
      assert.are.equal("running", info.State.Status)
      assert.are.equal(running, assert(c:inspect(name)).Id)
      assert.are.equal(running, assert(c:inspect("/" .. name)).Id)
      assert.are.equal(running, assert(c:inspect(running:sub(1, 12))).Id)
      assert.is_number(assert(c:inspect(running, { size = true })).SizeRootFs)

      local new = assert(c:inspect(created))
      assert.are.equal("created", new.State.Status)
      assert.is_false(new.State.Running)
      assert.are.equal(0, new.State.Pid)
    end)

    it("reads one-shot stats of a running container", function()
      local id = run { name = "stats" }
      finally(remove_made)
      local s = assert(c:stats(id))
      assert.are.equal(id, s.id)
      assert.is_true(s.cpu_stats.cpu_usage.total_usage > 0)
      assert.is_true(s.memory_stats.usage > 0)
      assert.is_string(s.read)
    end)

    it("reads stats of a created container: an empty sample", function()
      local id = run { name = "stats-new", start = false }
      finally(remove_made)
      local s = assert(c:stats(id))
      assert.are.equal(id, s.id)
      assert.is_nil(s.memory_stats.usage)
      if assert(c:version()).ApiVersion == "1.41" then
        -- Engine 20.10 answers 200 at once with a zero time, zero CPU and
        -- no memory figures (memory_stats = {}, pids_stats = {}).
        assert.are.equal("0001-01-01T00:00:00Z", s.read)
        assert.are.equal(0, s.cpu_stats.cpu_usage.total_usage)
        assert.are.equal(0, s.num_procs)
        assert.is_nil(s.pids_stats.current)
      end
    end)

    it("stats_many: many containers at the cost of one, per-element errors", function()
      local refs = {}
      for i = 1, 10 do
        refs[i] = run { name = "many" .. i }
      end
      finally(remove_made)
      local n = #refs
      refs[n + 1] = "../images/create"
      refs[n + 2] = "hxtest-no-such-container"
      refs[n + 3] = refs[1] -- twice is fine
      -- A fresh client: the batch negotiates first.
      local k = assert(docker.connect())
      local t0 = system.monotime()
      local r = k:stats_many(refs)
      local took = system.monotime() - t0
      assert.are.equal(n + 3, #r)
      for i = 1, n do
        assert.is_table(r[i].value, r[i].error)
        assert.are.equal(refs[i], r[i].value.id)
        assert.is_table(r[i].value.cpu_stats)
        assert.is_nil(r[i].error)
      end
      assert.are.equal(refs[1], r[n + 3].value.id)
      assert.are.equal("bad_request", r[n + 1].kind)
      assert.matches("^docker: invalid container name or id", r[n + 1].error)
      assert.is_nil(r[n + 1].value)
      assert.are.equal("not_found", r[n + 2].kind)
      assert.are.equal("docker: No such container: hxtest-no-such-container",
        r[n + 2].error)
      -- One-shot stats take up to a second each on engine 20.10: ten one
      -- after the other would take up to ten.
      assert.is_true(took < 3, "stats_many of 10 took " .. took .. " s")
      -- Again, with the handles kept from the first batch.
      t0 = system.monotime()
      r = k:stats_many(refs)
      took = system.monotime() - t0
      for i = 1, n do
        assert.is_table(r[i].value.cpu_stats)
      end
      assert.is_true(took < 3, "second stats_many of 10 took " .. took .. " s")
      assert.are.same({}, k:stats_many {})
      k:close()
    end)

    it("passes the daemon's message through: not_found", function()
      local v, msg, kind = c:inspect("hxtest-no-such-container")
      assert.is_nil(v)
      assert.are.equal("not_found", kind)
      assert.are.equal("docker: No such container: hxtest-no-such-container", msg)
      v, msg, kind = c:stats("hxtest-no-such-container")
      assert.is_nil(v)
      assert.are.equal("not_found", kind)
    end)

    it("reports a conflict", function()
      local id = run { name = "conflict" }
      finally(remove_made)
      local st, body = c:request("DELETE", "/containers/" .. id)
      assert.are.equal(409, st)
      assert.matches("Stop the container before attempting removal", body.message)
    end)

    it("request(): a table body, a query, decoded replies, headers", function()
      local name = support.unique_name("req")
      local st, body, headers = c:request("POST", "/containers/create", { name = name }, {
        Image = support.image, Cmd = { "true" },
        Labels = { [support.label] = support.label_value, ["with space"] = "a&b=c" },
      })
      assert.are.equal(201, st)
      made[#made + 1] = body.Id
      finally(remove_made)
      assert.matches("^application/json", headers["content-type"])
      assert.is_string(headers["api-version"])

      local info
      st, info = c:request("GET", "/containers/" .. name .. "/json")
      assert.are.equal(200, st)
      assert.are.equal(body.Id, info.Id)
      assert.are.equal("a&b=c", info.Config.Labels["with space"])
      assert.are.same({ "true" }, { table.unpack(info.Config.Cmd) })

      -- A missing one is an answer here, not a failure.
      st, body = c:request("GET", "/containers/hxtest-none/json")
      assert.are.equal(404, st)
      assert.are.equal("No such container: hxtest-none", body.message)

      -- A string body and a plain-text reply.
      st, body = c:request("GET", "/_ping")
      assert.are.equal(200, st)
      assert.are.equal("OK", body)
    end)

    it("support.lua: run_container, remove, cleanup", function()
      local id, name = run { name = "support", cmd = { "sleep", "30" },
        labels = { extra = "yes" }, host_config = { Memory = 64 * 1024 * 1024 } }
      finally(remove_made)
      assert.matches("^hxtest%-support%-", name)
      local info = assert(c:inspect(id))
      assert.are.equal(support.label_value, info.Config.Labels[support.label])
      assert.are.equal("yes", info.Config.Labels.extra)
      assert.are.equal(64 * 1024 * 1024, info.HostConfig.Memory)
      assert.are.same({ "sleep", "30" }, { table.unpack(info.Config.Cmd) })
      support.remove(id)
      support.remove(id) -- gone already: fine
      assert.are.equal("not_found", select(3, c:inspect(id)))
      assert.has_error(function() support.run_container { image = "hxtest-no-such-image" } end)

      -- cleanup() with the label swapped for a private one, so that it
      -- cannot reach the containers of specs running beside this one.
      local label = support.label
      support.label = "horcrux.test." .. support.unique_name("cleanup")
      local ok, err = pcall(function()
        run { start = false }
        run { start = false }
        assert.are.equal(2, support.cleanup())
        assert.are.equal(0, support.cleanup())
      end)
      support.label = label
      assert(ok, err)
    end)

    it("manages a container whose name has '..' inside it, in every method", function()
      local id, name = run { name = "a..b" }
      finally(remove_made)
      assert.matches("%.%.", name)
      assert.are.equal(id, assert(c:inspect(name)).Id)
      assert.are.equal(id, assert(c:inspect("/" .. name)).Id)
      assert.are.equal(id, assert(c:stats(name)).id)
      local many = c:stats_many { name, "a/../b" }
      assert.are.equal(id, many[1].value and many[1].value.id, many[1].error)
      assert.are.equal("bad_request", many[2].kind)
      local st, body = c:request("GET", "/containers/" .. name .. "/json")
      assert.are.equal(200, st)
      assert.are.equal(id, body.Id)
      local got
      assert(c:stats_stream(name, { stall = 10 }, function(s) got = s; return false end))
      assert.are.equal(id, got.id)
      st = c:request("POST", "/containers/" .. name .. "/stop", { t = 0 })
      assert.are.equal(204, st)
      st = c:request("DELETE", "/containers/" .. name)
      assert.are.equal(204, st)
      assert.are.equal("not_found", select(3, c:inspect(id)))
    end)

    it("keeps one connection alive across requests", function()
      local k = assert(docker.connect())
      for _ = 1, 10 do
        assert(k:containers())
        assert(k:ping())
        assert(k:inspect("hxtest-none") == nil)
      end
      -- 31 requests, with GET /version: one connect.
      assert.are.equal(1, k:connections())
      k:close()
    end)
  end)

  describe("against a misbehaving daemon", function()
    local host, stop
    setup(function() host, stop = ds.mock() end)
    teardown(function() stop() end)

    local function client(opts)
      opts = opts or {}
      opts.host = host
      return assert(docker.connect(opts))
    end

    it("negotiates down to our maximum (floor) with a newer daemon", function()
      local c = client()
      local st, body = c:request("GET", "/echo")
      assert.are.equal(200, st)
      assert.are.equal("1.51", docker.max_api_version)
      assert.are.equal(negotiated("1.52"), c:api_version()) -- mock: 1.52
      assert.are.equal("/v" .. c:api_version() .. "/echo", body.target)
      assert.are.equal(1, c:connections()) -- /version and /echo on one
    end)

    it("prefixes DOCKER_API_VERSION and encodes queries and bodies", function()
      local out = lua_with_env({ DOCKER_HOST = host, DOCKER_API_VERSION = "1.40" }, [[
        local c = require("horcrux.docker").connect()
        local st, b = c:request("GET", "/echo")
        print(c:api_version(), st, b.target)]])
      assert.are.equal("1.40\t200\t/v1.40/echo\n", out)

      local c = client { api_version = "1.41" }
      local st, body, headers = c:request("PUT", "/echo", { q = "a b&c=d/é" },
        { x = 1 })
      assert.are.equal(200, st)
      assert.are.equal("PUT", body.method)
      assert.are.equal("/v1.41/echo?q=a%20b%26c%3Dd%2F%C3%A9", body.target)
      assert.are.equal('{"x":1}', body.body)
      assert.are.equal("application/json", body.content_type)
      assert.are.equal("a, b", headers["x-multi"])

      st, body = c:request("POST", "/echo", nil, "raw\0bytes", "application/x-tar")
      assert.are.equal(9, body.body_len) -- "raw\0bytes", all of it
      assert.are.equal("raw", body.body:sub(1, 3))
      assert.are.equal("application/x-tar", body.content_type)

      st, body = c:request("GET", "/echo", { filters = { status = { "running" } },
        all = true, n = 5 })
      local q = {}
      for k, v in body.target:gmatch("[?&]([^=]+)=([^&]*)") do q[k] = v end
      assert.are.equal("%7B%22status%22%3A%5B%22running%22%5D%7D", q.filters)
      assert.are.equal("1", q.all)
      assert.are.equal("5", q.n)
      c:close()
    end)

    it("truncated JSON is a protocol error", function()
      local c = client { api_version = "1.41" }
      local st, msg, kind = c:request("GET", "/badjson")
      assert.is_nil(st)
      assert.are.equal("protocol", kind)
      assert.matches("^docker: bad JSON", msg)
      st, msg, kind = c:inspect("badjson")
      assert.is_nil(st)
      assert.are.equal("protocol", kind)
      st, msg, kind = c:request("GET", "/truncated")
      assert.is_nil(st)
      assert.are.equal("protocol", kind, msg)
      st, msg, kind = c:stats("truncated")
      assert.is_nil(st)
      assert.are.equal("protocol", kind, msg)
    end)

    it("garbage is a protocol error", function()
      local c = client { api_version = "1.41" }
      local st, msg, kind = c:request("GET", "/garbage")
      assert.is_nil(st)
      assert.are.equal("protocol", kind, msg)
      local v
      v, msg, kind = c:inspect("garbage")
      assert.is_nil(v)
      assert.are.equal("protocol", kind, msg)
    end)

    it("a stalled reply times out within the configured timeout", function()
      local c = client { api_version = "1.41", timeout = 1 }
      local t0 = system.monotime()
      local st, msg, kind = c:stats("stall")
      local took = system.monotime() - t0
      assert.is_nil(st)
      assert.are.equal("timeout", kind, msg)
      assert.is_true(took >= 0.9 and took < 2, "took " .. took)
    end)

    it("a 5xx is a server error with the daemon's message", function()
      local c = client { api_version = "1.41" }
      local st, body = c:request("GET", "/error500")
      assert.are.equal(500, st) -- request() returns any HTTP answer
      assert.are.equal("boom: disk on fire", body.message)
      -- The high-level methods fail, with the daemon's own message.
      local v, msg, kind = c:inspect("error500")
      assert.is_nil(v)
      assert.are.equal("server", kind)
      assert.are.equal("docker: boom: disk on fire", msg)
      v, msg, kind = c:stats("nothing-here")
      assert.is_nil(v)
      assert.are.equal("not_found", kind)
      assert.are.equal("docker: no such route: /nothing-here", msg)
    end)

    it("maps an error status to its kind, with a text body quoted", function()
      local c = client { api_version = "1.41" }
      local st, body = c:request("GET", "/text404")
      assert.are.equal(404, st)
      assert.are.equal("page not found\nmore", body)
      local v, msg, kind = c:inspect("text404")
      assert.is_nil(v)
      assert.are.equal("not_found", kind)
      assert.are.equal("docker: page not found", msg)
    end)

    it("maps 401, 403 and the daemon's client-version refusals, in every method", function()
      local c = client { api_version = "1.41" }
      local cases = {
        unauthorized = { "unauthorized", "^docker: authentication required$" },
        forbidden = { "forbidden", "^docker: access denied$" },
        -- Our configuration's fault, not the caller's request: protocol (502).
        toonew = { "protocol", "^docker: client version 9%.99 is too new%. "
          .. "Maximum supported API version is 1%.41" },
        tooold = { "protocol", "^docker: client version 1%.5 is too old%." },
      }
      for path, want in pairs(cases) do
        for _, m in ipairs { "inspect", "stats" } do
          local v, msg, kind = c[m](c, path)
          assert.is_nil(v)
          assert.are.equal(want[1], kind, m .. " " .. path)
          assert.matches(want[2], msg)
        end
        local r = c:stats_many { path }
        assert.are.equal(want[1], r[1].kind, "stats_many " .. path)
        assert.matches(want[2], r[1].error)
        local v, msg, kind = c:stats_stream(path, function() end)
        assert.is_nil(v)
        assert.are.equal(want[1], kind, "stats_stream " .. path)
        assert.matches(want[2], msg)
      end
      -- Other statuses as before: 400 and other 4xx bad_request, 5xx server.
      assert.are.equal("server", select(3, c:inspect("error500")))
      c:close()
    end)

    it("caps the size of a reply", function()
      local c = client { api_version = "1.41", max_response = 1000 }
      for _, p in ipairs { "/big", "/bigchunked" } do
        local st, msg, kind = c:request("GET", p)
        assert.is_nil(st)
        assert.are.equal("limit", kind, p .. ": " .. tostring(msg))
        assert.matches("max_response", msg)
      end
      local big = client { api_version = "1.41" }
      local st, body = big:request("GET", "/bigchunked")
      assert.are.equal(200, st)
      assert.are.equal(1 << 20, #body)
    end)

    it("retries a reused connection the daemon closed, and nothing else", function()
      local c = client { api_version = "1.41" }
      local st, body = c:request("GET", "/flaky")
      assert.are.equal(200, st)
      assert.are.equal(1, body.nth)
      -- The mock drops the second request on a connection; curl reconnects.
      st, body = c:request("GET", "/flaky")
      assert.are.equal(200, st)
      assert.are.equal(1, body.nth)
      assert.are.equal(2, c:connections())
      -- The same connection otherwise: the server counts requests on it.
      st, body = c:request("GET", "/echo")
      local conn, nth = body.conn, body.nth
      st, body = c:request("GET", "/echo")
      assert.are.equal(conn, body.conn)
      assert.are.equal(nth + 1, body.nth)
      assert.are.equal(2, c:connections())
    end)

    it("stats_many: one element per ref, each its own outcome", function()
      local c = client() -- negotiates first
      local r = c:stats_many { "echo", "error500", "badjson", "nothing-here",
        "a/b", "truncated", "echo" }
      assert.are.equal(7, #r)
      assert.are.equal("/v" .. negotiated("1.52")
        .. "/containers/echo/stats?stream=0&one-shot=1", r[1].value.target)
      assert.are.same({ error = "docker: boom: disk on fire", kind = "server" }, r[2])
      assert.are.equal("protocol", r[3].kind)
      assert.matches("^docker: bad JSON", r[3].error)
      assert.are.same({ error = "docker: no such route: /nothing-here",
        kind = "not_found" }, r[4])
      assert.are.equal("bad_request", r[5].kind)
      assert.matches("^docker: invalid container name or id: \"a/b\"", r[5].error)
      assert.are.equal("protocol", r[6].kind, r[6].error)
      assert.are.equal("GET", r[7].value.method)
      c:close()
    end)

    it("stats_many runs the transfers at once, each on its own connection", function()
      local c = client { api_version = "1.41" }
      local refs = {}
      for i = 1, 8 do refs[i] = "slow" end -- the mock waits 1 s on each
      local t0 = system.monotime()
      local r = c:stats_many(refs)
      local took = system.monotime() - t0
      local conns = {}
      for i = 1, 8 do
        assert.is_true(r[i].value.slow)
        conns[r[i].value.conn] = true
      end
      assert.is_true(took < 2.5, "8 slow replies took " .. took .. " s")
      local distinct = 0
      for _ in pairs(conns) do distinct = distinct + 1 end
      assert.are.equal(8, distinct)
      -- More refs than one wave: all answered, in order.
      refs = {}
      for i = 1, 300 do refs[i] = i % 100 == 0 and "nothing" .. i or "echo" end
      r = c:stats_many(refs)
      assert.are.equal(300, #r)
      for i = 1, 300 do
        if i % 100 == 0 then
          assert.are.equal("docker: no such route: /nothing" .. i, r[i].error)
        else
          assert.are.equal("/v1.41/containers/echo/stats?stream=0&one-shot=1",
            r[i].value.target)
        end
      end
      c:close()
    end)

    it("stats_many: misuse raises, a dead daemon fails every element", function()
      local c = client { api_version = "1.41" }
      assert.has_error(function() c:stats_many("echo") end)
      assert.has_error(function() c:stats_many { "echo", 5 } end,
        "stats_many: refs[2]: string expected, got number")
      assert.are.same({}, c:stats_many {})
      c:close()
      assert.has_error(function() c:stats_many { "echo" } end,
        "attempt to use a closed docker client")
      for _, api in ipairs { "1.41", false } do
        local dead = assert(docker.connect { host = MISSING, api_version = api or nil })
        local r = dead:stats_many { "a", "b/c", "d" }
        assert.are.equal("unavailable", r[1].kind, r[1].error)
        assert.matches("cannot connect", r[1].error)
        assert.are.equal("bad_request", r[2].kind)
        assert.are.equal("unavailable", r[3].kind)
        dead:close()
      end
    end)

    it("negotiates from /_ping's API-Version header, with no GET /version", function()
      local c = client()
      assert.is_nil(c:api_version())
      assert.is_true(c:ping()) -- the mock says Api-Version: 1.99
      assert.are.equal(negotiated("1.99"), c:api_version())
      local st, body = c:request("GET", "/echo")
      assert.are.equal(200, st)
      assert.are.equal("/v" .. negotiated("1.99") .. "/echo", body.target)
      assert.are.equal(2, body.nth) -- /_ping, then /echo: nothing between
      -- A version set by the caller stays as it is.
      local fixed = client { api_version = "1.40" }
      assert.is_true(fixed:ping())
      assert.are.equal("1.40", fixed:api_version())
      c:close()
      fixed:close()
    end)

    it("serves the high-level methods from a fake engine", function()
      local c = client()
      assert.is_true(c:ping())
      local v = assert(c:version())
      assert.are.equal("1.52", v.ApiVersion)
      assert.are.equal(negotiated("1.52"), c:api_version())
    end)
  end)

  describe("over TCP", function()
    local host, stop
    setup(function() host, stop = ds.mock { tcp = true } end)
    teardown(function() stop() end)

    it("speaks plain HTTP to tcp://", function()
      local c = assert(docker.connect { host = host })
      local st, body = c:request("GET", "/echo")
      assert.are.equal(200, st)
      assert.are.equal("/v" .. negotiated("1.52") .. "/echo", body.target)
      assert.are.equal(1, c:connections())
    end)

    it("says which TLS file is missing before anything is sent", function()
      local c = assert(docker.connect { host = host, tls_verify = true,
        cert_path = "/nonexistent/certs" })
      local st, msg, kind = c:ping()
      assert.is_nil(st)
      assert.are.equal("unavailable", kind)
      assert.matches("/nonexistent/certs/", msg)
      local out = lua_with_env({ DOCKER_HOST = host, DOCKER_TLS_VERIFY = "1",
        DOCKER_CERT_PATH = "/nonexistent/env-certs" }, [[
        print(require("horcrux.docker").connect():ping())]])
      assert.matches("/nonexistent/env%-certs/.*\tunavailable", out)
    end)

    describe("against a TLS endpoint that verifies clients, as dockerd --tlsverify", function()
      local tls
      setup(function() tls = ds.tls_endpoint(host) end)
      teardown(function() if tls then tls.stop() end end)

      -- the proxy's line per connection so far
      local function handshakes()
        local f = io.open(tls.log)
        if not f then
          return ""
        end
        local text = f:read("a")
        f:close()
        return text
      end

      it("completes a handshake with the right CA and a client certificate it signed", function()
        local c = assert(docker.connect { host = tls.host, tls_verify = true,
          cert_path = tls.right })
        assert.is_true(c:ping())
        local st, body = c:request("GET", "/echo")
        assert.are.equal(200, st, tostring(body))
        assert.are.equal("/v" .. negotiated("1.99") .. "/echo", body.target)
        c:close()
        -- the proxy forwards only after a handshake that verified us
        assert.matches("ok horcrux%-client", handshakes())
        -- and through the environment, as the docker CLI reads it
        local out = lua_with_env({ DOCKER_HOST = tls.host, DOCKER_TLS_VERIFY = "1",
          DOCKER_CERT_PATH = tls.right }, [[
          local c = require("horcrux.docker").connect()
          print(c:ping(), (select(2, c:request("GET", "/echo")) or {}).method)]])
        assert.are.equal("true\tGET\n", out)
      end)

      it("refuses a server its CA did not sign, and the server a client another CA signed", function()
        local before = #handshakes()
        local c = assert(docker.connect { host = tls.host, tls_verify = true,
          cert_path = tls.wrong_ca })
        local st, msg, kind = c:ping()
        assert.is_nil(st)
        assert.are.equal("unavailable", kind)
        assert.matches("[Cc]ertificate", msg)
        c:close()
        c = assert(docker.connect { host = tls.host, tls_verify = true,
          cert_path = tls.foreign })
        st, msg, kind = c:ping()
        assert.is_nil(st)
        assert.are.equal("unavailable", kind, msg)
        c:close()
        -- neither got through to the engine behind the proxy: two failed
        -- handshakes (the proxy logs a refusal once it has sent its alert,
        -- which may be after the client gave up: wait for both lines)
        local log
        for _ = 1, 100 do
          log = handshakes():sub(before + 1)
          local _, fails = log:gsub("fail ", "")
          if fails >= 2 then
            break
          end
          system.sleep(0.05)
        end
        assert.is_nil(log:find("ok ", 1, true), log)
        local _, fails = log:gsub("fail ", "")
        assert.are.equal(2, fails, log)
        assert.matches("fail .*[Cc][Ee][Rr][Tt][Ii][Ff][Ii][Cc][Aa][Tt][Ee]", log)
      end)
    end)
  end)

  describe("the async host's yield protocol", function()
    -- Plays the host: registers a coroutine as a request thread, takes the
    -- yielded easy handle, and resumes with a CURLcode of its choosing
    -- instead of running the transfer. Its clients ignore the breaker: the
    -- made-up failures would open it (docker_breaker_spec.lua tests that).
    local REG = "horcrux.async.threads"
    local reg = debug.getregistry()
    before_each(function() reg[REG] = setmetatable({}, { __mode = "k" }) end)
    after_each(function() reg[REG] = nil end)

    local function request_thread(f)
      local co = coroutine.create(f)
      reg[REG][co] = true
      return co
    end

    it("yields the transfer, and negotiation first when needed", function()
      local c = assert(docker.connect { host = MISSING, breaker = false })
      local co = request_thread(function() return c:inspect("abc") end)
      local ok, mark, easy = coroutine.resume(co)
      assert.is_true(ok)
      assert.are.equal("userdata", type(mark))
      assert.are.equal("userdata", type(easy))
      assert.are.equal("suspended", coroutine.status(co))
      -- GET /version "fails to connect" (CURLE_COULDNT_CONNECT = 7)
      local ok2, v, msg, kind = coroutine.resume(co, 7)
      assert.is_true(ok2)
      assert.is_nil(v)
      assert.are.equal("unavailable", kind, msg)
      assert.are.equal("dead", coroutine.status(co))
    end)

    it("keeps several requests of one client in flight, each with its handle", function()
      local c = assert(docker.connect { host = MISSING, api_version = "1.41",
        breaker = false })
      local a = request_thread(function() return c:stats("aaa") end)
      local b = request_thread(function() return c:inspect("bbb") end)
      local _, _, ea = coroutine.resume(a)
      local _, _, eb = coroutine.resume(b)
      assert.are_not.equal(ea, eb)
      -- CURLE_OPERATION_TIMEDOUT = 28
      local okb, vb, _, kb = coroutine.resume(b, 28)
      assert.is_true(okb)
      assert.is_nil(vb)
      assert.are.equal("timeout", kb)
      -- b's handle is back on the free-list: a new request takes it.
      local d = request_thread(function() return c:ping() end)
      local _, _, ed = coroutine.resume(d)
      assert.are.equal(eb, ed)
      local _, _, _, ka = coroutine.resume(a, 7)
      assert.are.equal("unavailable", ka)
      -- No reply at all (CURLE_OK but no transfer ran): a protocol error.
      local okd, vd, _, kd = coroutine.resume(d, 0)
      assert.is_true(okd)
      assert.is_nil(vd)
      assert.are.equal("protocol", kd)
      c:close()
    end)

    it("survives a close while a request is in flight", function()
      local c = assert(docker.connect { host = MISSING, breaker = false })
      local co = request_thread(function() return c:containers() end)
      coroutine.resume(co) -- GET /version, yielded
      c:close()
      -- The host resumes with a reply: the chain stops cleanly.
      local ok, v, msg, kind = coroutine.resume(co, 7)
      assert.is_true(ok)
      assert.is_nil(v)
      assert.are.equal("unavailable", kind, msg)
      collectgarbage()
    end)

    it("stats_many yields one batch, after negotiation when needed", function()
      local c = assert(docker.connect { host = MISSING, api_version = "1.41",
        breaker = false })
      local co = request_thread(function() return c:stats_many { "a", "b/c", "d" } end)
      local ok, mark, easy, rc, n = coroutine.resume(co)
      assert.is_true(ok)
      assert.are.equal("userdata", type(mark))
      assert.are.equal("userdata", type(easy))
      assert.are.equal("userdata", type(rc))
      assert.are.equal(2, n) -- the bad ref is not sent
      -- The host would have filled rc[]; untouched, each transfer reads as
      -- never run.
      local ok2, r = coroutine.resume(co, 0)
      assert.is_true(ok2)
      assert.are.equal("dead", coroutine.status(co))
      assert.are.equal("unavailable", r[1].kind)
      assert.are.equal("bad_request", r[2].kind)
      assert.are.equal("unavailable", r[3].kind)

      -- No version yet: GET /version alone first (mark, easy), and its
      -- failure is every element's.
      local fresh = assert(docker.connect { host = MISSING, breaker = false })
      co = request_thread(function() return fresh:stats_many { "a", "d" } end)
      local res = table.pack(coroutine.resume(co))
      assert.are.equal(3, res.n) -- true, mark, easy
      ok2, r = coroutine.resume(co, 7) -- CURLE_COULDNT_CONNECT
      assert.is_true(ok2)
      assert.are.equal("dead", coroutine.status(co))
      assert.are.equal("unavailable", r[1].kind)
      assert.are.equal("unavailable", r[2].kind)
      c:close()
      fresh:close()
    end)

    it("refuses to stream inside a request coroutine", function()
      local c = assert(docker.connect { host = MISSING, api_version = "1.41" })
      local co = request_thread(function()
        local a = table.pack(c:events({}, function() end))
        local b = table.pack(c:stats_stream("abc", function() end))
        return a, b
      end)
      local ok, a, b = coroutine.resume(co)
      assert.is_true(ok, a)
      assert.are.equal("dead", coroutine.status(co))
      assert.are.same({ n = 3, nil, "events: streaming is not available inside an HTTP route",
        "bad_request" }, a)
      assert.are.same({ n = 3, nil,
        "stats_stream: streaming is not available inside an HTTP route", "bad_request" }, b)
      assert.are.equal(0, c:connections())
      c:close()
    end)

    it("does not yield in a coroutine the host did not register", function()
      local c = assert(docker.connect { host = MISSING, api_version = "1.41" })
      local co = coroutine.create(function() return c:inspect("abc") end)
      local ok, v, _, kind = coroutine.resume(co)
      assert.is_true(ok)
      assert.is_nil(v)
      assert.are.equal("unavailable", kind)
    end)
  end)
end)
