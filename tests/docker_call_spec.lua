-- c:call(method, template, params, query, body [, content_type]): the one
-- call scripts use for any Engine API endpoint. Placeholders checked
-- against Docker's grammar before anything is built, the reply decoded,
-- every status mapped to its kind; against no daemon, the mock
-- (tests/mocks/docker_mock.py) and the real engine.
local docker = require "horcrux.docker"
local ds = require "docker_support"
local support = require "support"

local json = require "horcrux.json"

local MISSING = "unix:///nonexistent/horcrux-test.sock"
local HEX64 = string.rep("0123456789abcdef", 4)

-- Packs the results, keeping their count (a trailing nil status counts).
local function pack(...)
  return table.pack(...)
end

describe("c:call", function()
  describe("placeholders", function()
    -- The socket does not exist: "unavailable" proves a request was built
    -- and sent; "bad_request" that nothing was.
    local c
    before_each(function()
      c = assert(docker.connect { host = MISSING, api_version = "1.41" })
    end)
    after_each(function() c:close() end)

    local function sent(template, params)
      local r = pack(c:call("GET", template, params))
      assert.is_nil(r[1])
      return r[3] == "unavailable", r
    end

    local function check(template, names, good, bad)
      for _, name in ipairs(names) do
        local t = template:gsub("NAME", name)
        for _, v in ipairs(good) do
          local ok, r = sent(t, { [name] = v })
          assert.is_true(ok, t .. " " .. v .. ": " .. tostring(r[2]))
        end
        for _, v in ipairs(bad) do
          local ok, r = sent(t, { [name] = v })
          assert.is_false(ok, t .. " took " .. v)
          assert.are.equal("bad_request", r[3], v)
          assert.matches("^docker: invalid ", r[2])
          assert.is_nil(r[4])
        end
      end
    end

    it("{id} {ref} {container}: a container name, id or prefix", function()
      check("/containers/{NAME}/json", { "id", "ref", "container" },
        { "web", "/web", "a..b", "web-1_a.b", HEX64, "4f", string.rep("a", 255) },
        { "", "/", "..", ".", "../x", "a/b", "a/../b", "%2f", "x?y", "#", "-a", ".a",
          "a b", "a\n", "a\0b", "é", "a:b", string.rep("a", 256) })
    end)

    it("{image}: a reference, slashes, port, tag and digest as they are", function()
      check("/images/{NAME}/json", { "image" },
        { "busybox", "busybox:latest", "127.0.0.1:5000/team/app:1.2",
          "library/ubuntu@sha256:" .. HEX64, "sha256:" .. HEX64, "a-b.c_d/e",
          "a..b/c", string.rep("a", 512) },
        { "", "/x", "x/", "a//b", "./a", "a/../b", "a/./b", "..", ".", "a b",
          "a?b", "a%2fb", "a#b", "a\\b", "a\nb", "é", string.rep("a", 513) })
    end)

    it("{network} and the other object names, and any other name", function()
      check("/x/{NAME}", { "network", "volume", "node", "service", "task",
        "secret", "config", "plugin", "anything" },
        { "net1", "my_net.x-y", "a..b", HEX64, string.rep("a", 255) },
        { "", "a/b", "..", ".x", "-x", "a b", "a:b", "a%2f", string.rep("a", 256) })
    end)

    it("{exec}: hex", function()
      check("/exec/{NAME}/json", { "exec" }, { HEX64, "a", "0f" },
        { "", "xyz", "ABC", HEX64 .. "0", "a/b", "../a", "web" })
    end)

    it("a missing or non-string value is bad_request, nothing sent", function()
      for _, params in ipairs { false, {}, { id = 5 }, { id = true }, { ID = "web" } } do
        local r = pack(c:call("GET", "/containers/{id}/json", params or nil))
        assert.is_nil(r[1])
        assert.are.equal("bad_request", r[3])
        assert.matches("^docker: parameter {id}: ", r[2])
      end
      local _, msg = c:call("GET", "/containers/{id}/json")
      assert.are.equal("docker: parameter {id}: missing", msg)
      _, msg = c:call("GET", "/containers/{id}/json", { id = 5 })
      assert.are.equal("docker: parameter {id}: string expected, got number", msg)
      assert.are.equal(0, c:connections())
    end)

    it("a malformed template, method or argument raises: the script's mistake", function()
      for _, t in ipairs { "", "containers/{id}", "/containers/{id", "/containers/{}",
        "/containers/{i-d}", "/a}", "/x?y", "/x#y", "/a/../b", "/a/./{id}", "/a b",
        "/a%2f{id}", "/{id}{id}x{" } do
        assert.has_error(function() c:call("GET", t, { id = "web" }) end, nil, t)
      end
      assert.has_error(function() c:call("get", "/containers/json") end)
      assert.has_error(function() c:call("GET", "/containers/{id}/json", "web") end)
      assert.has_error(function() c:call("GET", "/containers/json", nil, "all=1") end)
      assert.has_error(function() c:call("POST", "/x", nil, nil, 5) end)
      assert.has_error(function() c:call("POST", "/x", nil, nil, { f = print }) end)
      assert.has_error(function() c:call("POST", "/x", nil, nil, "b", 5) end)
      assert.are.equal(0, c:connections())
    end)

    it("a template without placeholders needs no params", function()
      local r = pack(c:call("GET", "/containers/json"))
      assert.are.equal("unavailable", r[3], r[2])
      assert.is_nil(r[4])
      assert.are.equal(4, r.n)
    end)
  end)

  describe("in a request coroutine of the async host", function()
    local REG = "horcrux.async.threads"
    local reg = debug.getregistry()
    before_each(function() reg[REG] = setmetatable({}, { __mode = "k" }) end)
    after_each(function() reg[REG] = nil end)

    it("yields the transfer; a refusal yields nothing", function()
      -- The made-up failure would count for the breaker: ignore it here.
      local c = assert(docker.connect { host = MISSING, api_version = "1.41",
        breaker = false })
      local co = coroutine.create(function()
        return c:call("GET", "/containers/{id}/top", { id = "web" })
      end)
      reg[REG][co] = true
      local ok, mark, easy = coroutine.resume(co)
      assert.is_true(ok)
      assert.are.equal("userdata", type(mark))
      assert.are.equal("userdata", type(easy))
      -- CURLE_COULDNT_CONNECT = 7: no HTTP answer, so no status.
      local r = table.pack(coroutine.resume(co, 7))
      assert.are.same({ n = 5, true, nil, r[3], "unavailable", nil }, r)
      co = coroutine.create(function()
        return c:call("GET", "/containers/{id}/top", { id = "a/b" })
      end)
      reg[REG][co] = true
      r = table.pack(coroutine.resume(co))
      assert.are.equal("dead", coroutine.status(co))
      assert.are.equal("bad_request", r[4])
      c:close()
    end)
  end)

  describe("against the mock", function()
    local host, stop, c
    setup(function() host, stop = ds.mock() end)
    teardown(function() stop() end)
    before_each(function()
      c = assert(docker.connect { host = host, api_version = "1.41" })
    end)
    after_each(function() c:close() end)

    it("builds the path from the template, the query and the body", function()
      local v, st = c:call("PUT", "/echo/{image}", { image = "127.0.0.1:5000/team/app@sha256:" .. HEX64 },
        { tag = "a b&c" }, { x = 1 })
      assert.are.equal(200, st)
      assert.are.equal("/v1.41/echo/127.0.0.1:5000/team/app@sha256:" .. HEX64
        .. "?tag=a%20b%26c", v.target)
      assert.are.equal("PUT", v.method)
      assert.are.equal('{"x":1}', v.body)
      assert.are.equal("application/json", v.content_type)
      v = c:call("POST", "/echo/{id}/{network}", { id = "/web", network = "n1" }, nil,
        "raw\0bytes", "application/x-tar")
      assert.are.equal("/v1.41/echo/web/n1", v.target)
      assert.are.equal(9, v.body_len)
      assert.are.equal("application/x-tar", v.content_type)
    end)

    it("returns decoded JSON, text, true for no body, and the status", function()
      local r = pack(c:call("GET", "/echo"))
      assert.are.equal(2, r.n)
      assert.are.equal("GET", r[1].method)
      assert.are.equal(200, r[2])
      r = pack(c:call("GET", "/text"))
      assert.are.same({ n = 2, "hello\n", 200 }, r)
      r = pack(c:call("POST", "/status/{code}", { code = "204" }))
      assert.are.same({ n = 2, true, 204 }, r)
      r = pack(c:call("POST", "/status/{code}", { code = "304" }))
      assert.are.same({ n = 2, true, 304 }, r)
      r = pack(c:call("GET", "/status/{code}", { code = "201" }))
      assert.are.same({ n = 2, { message = "status 201" }, 201 }, r)
      -- JSON lines from an endpoint call does not know as a stream: the
      -- sequence of the values, as the body is no single value.
      local v = c:call("GET", "/lines")
      assert.are.same({ { status = "a" }, { status = "b" }, { status = "c" } }, v)
      assert.are.equal(json.array_mt, getmetatable(v))
      -- A progress stream is a sequence even of one line.
      v = c:call("POST", "/images/create", nil, { fromImage = "x" })
      assert.are.same({ { status = "Pulling from library/x" } }, v)
      assert.are.equal(json.array_mt, getmetatable(v))
      local r = pack(c:call("POST", "/build"))
      assert.are.equal("protocol", r[3])
      assert.matches("^docker: bad JSON in reply", r[2])
      assert.are.equal(200, r[4])
    end)

    it("maps every status to its kind, with the daemon's message and the status", function()
      local want = { ["400"] = "bad_request", ["401"] = "unauthorized",
        ["403"] = "forbidden", ["404"] = "not_found", ["409"] = "conflict",
        ["418"] = "bad_request", ["500"] = "server", ["503"] = "server",
        ["302"] = "protocol" }
      for code, kind in pairs(want) do
        local r = pack(c:call("GET", "/status/{code}", { code = code }))
        assert.are.same({ n = 4, nil, "docker: status " .. code, kind,
          tonumber(code) }, r)
      end
      local r = pack(c:call("GET", "/toonew"))
      assert.are.equal("protocol", r[3])
      assert.are.equal(400, r[4])
      assert.matches("^docker: client version 9%.99 is too new", r[2])
      r = pack(c:call("GET", "/tooold"))
      assert.are.equal("protocol", r[3])
      assert.are.equal(400, r[4])
      r = pack(c:call("GET", "/text404"))
      assert.are.same({ n = 4, nil, "docker: page not found", "not_found", 404 }, r)
    end)

    it("a reply that is no HTTP, or bad JSON, is a protocol failure", function()
      local r = pack(c:call("GET", "/garbage"))
      assert.are.equal("protocol", r[3], r[2])
      assert.is_nil(r[4]) -- no HTTP answer came
      r = pack(c:call("GET", "/badjson"))
      assert.are.equal("protocol", r[3])
      assert.matches("^docker: bad JSON", r[2])
      assert.are.equal(200, r[4])
      local quick = assert(docker.connect { host = host, api_version = "1.41", timeout = 1 })
      r = pack(quick:call("GET", "/stall"))
      assert.are.same({ n = 4, nil, r[2], "timeout", nil }, r)
      quick:close()
      local small = assert(docker.connect { host = host, api_version = "1.41",
        max_response = 1000 })
      r = pack(small:call("GET", "/big"))
      assert.are.equal("limit", r[3])
      small:close()
    end)

    it("negotiates first when the client has no version", function()
      local fresh = assert(docker.connect { host = host })
      local v = fresh:call("GET", "/echo")
      assert.are.equal("/v" .. ds.negotiated("1.52") .. "/echo", v.target)
      fresh:close()
    end)
  end)

  describe("against the engine", function()
    local c, made
    before_each(function()
      c = support.docker()
      made = {}
    end)
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

    it("top, stop twice (204, then 304), logs, inspect by name", function()
      local id, name = run { name = "call", cmd = { "sh", "-c", "echo hi; sleep 600" } }
      finally(remove_made)
      local top, st = c:call("GET", "/containers/{id}/top", { id = name })
      assert.are.equal(200, st)
      assert.is_table(top.Titles)
      assert.are.equal(1, #top.Processes)
      local logs
      for _ = 1, 50 do -- the echo may not have run yet
        logs = assert(c:call("GET", "/containers/{id}/logs", { id = id }, { stdout = true }))
        if logs ~= true then break end -- true: an empty body
        require("system").sleep(0.1)
      end
      assert.are.equal("string", type(logs))
      assert.are.equal("\1\0\0\0\0\0\0\3hi\n", logs) -- the multiplexed stream
      assert.are.same({ n = 2, true, 204 },
        pack(c:call("POST", "/containers/{id}/stop", { id = id }, { t = 0 })))
      assert.are.same({ n = 2, true, 304 },
        pack(c:call("POST", "/containers/{id}/stop", { id = "/" .. name }, { t = 0 })))
      local info = assert(c:call("GET", "/containers/{id}/json", { id = id:sub(1, 12) }))
      assert.are.equal("exited", info.State.Status)
    end)

    it("passes the daemon's answer through: not_found, conflict", function()
      local id = run { name = "call-conflict" }
      finally(remove_made)
      assert.are.same({ n = 4, nil, "docker: No such container: hxtest-none",
        "not_found", 404 }, pack(c:call("GET", "/containers/{id}/json", { id = "hxtest-none" })))
      local r = pack(c:call("DELETE", "/containers/{id}", { id = id }))
      assert.are.equal("conflict", r[3])
      assert.are.equal(409, r[4])
      assert.matches("Stop the container before attempting removal", r[2])
    end)

    it("images and networks by name", function()
      local img, st = c:call("GET", "/images/{image}/json", { image = support.image })
      assert.are.equal(200, st)
      assert.is_true(#img.RepoTags >= 1)
      local r = pack(c:call("GET", "/images/{image}/json",
        { image = "127.0.0.1:5000/hxtest/none:1.2" }))
      assert.are.equal("not_found", r[3])
      assert.matches("127.0.0.1:5000/hxtest/none:1.2", r[2], 1, true)
      local net = assert(c:call("GET", "/networks/{network}", { network = "bridge" }))
      assert.are.equal("bridge", net.Name)
    end)

    it("a reply of JSON lines (a build's progress) is the sequence of the values", function()
      local dir = os.tmpname()
      os.remove(dir)
      assert(os.execute("mkdir -m 700 " .. dir))
      finally(function() os.execute("rm -rf " .. dir) end)
      local f = assert(io.open(dir .. "/Dockerfile", "w"))
      f:write("FROM " .. support.image .. "\n")
      f:close()
      local p = assert(io.popen("tar -C " .. dir .. " -cf - Dockerfile"))
      local tar = p:read("a")
      p:close()
      local base = assert(c:call("GET", "/images/{image}/json", { image = support.image }))
      -- FROM the test image alone: the build makes no new image.
      local out, st = c:call("POST", "/build", nil, { rm = true }, tar,
        "application/x-tar")
      assert.are.equal(200, st, tostring(out))
      assert.are.equal(json.array_mt, getmetatable(out))
      assert.is_true(#out >= 3, #out .. " lines")
      local id
      for _, line in ipairs(out) do
        id = id or (line.aux and line.aux.ID)
      end
      assert.are.equal(base.Id, id)
      -- Quiet: one line, still a sequence.
      out = assert(c:call("POST", "/build", nil, { q = true, rm = true }, tar,
        "application/x-tar"))
      assert.are.equal(json.array_mt, getmetatable(out))
      assert.are.equal(1, #out)
      assert.are.equal(base.Id, out[1].stream:match("sha256:%x+"))
    end)

    it("a DOCKER_API_VERSION newer than the daemon's is kind protocol", function()
      local out = ds.lua_with_env({ DOCKER_API_VERSION = "9.99" }, [[
        local c = require("horcrux.docker").connect()
        print(c:call("GET", "/containers/json"))]])
      assert.matches("^nil\tdocker: client version 9%.99 is too new.*\tprotocol\t400\n$", out)
    end)
  end)
end)
