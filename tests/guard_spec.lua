-- Every refusal of a management route leaves the containers as they were:
-- no token, a wrong token, read-only mode, an oversized body, a bad id or
-- stack name (refused before any request to the daemon). Each refused
-- action is aimed at a container it would change (a stopped one for start,
-- a paused one for unpause, a running one for the rest), so a refusal that
-- let the action through shows in the daemon's view of it. PUT and PATCH
-- go through the same guard (routes of the spec's own, beside the shipped
-- ones, that would pause and stop a container).
local ms = require "manage_support"
local support = require "support"
local http = require "http"
local proc = require "horcrux.proc"
local json = require "horcrux.json"

local PROJECT = "com.docker.compose.project"
local SERVICE = "com.docker.compose.service"
local ROOT = assert(proc.run({ "pwd" })).stdout:gsub("\n$", "")

-- The shipped routes, plus a PUT and a PATCH that act on a container.
local ROUTES = ([[
assert(loadfile(%q, "t", _ENV))()
local engine = require "horcrux.engine"
local errors = require "horcrux.errors"
route("PUT", "/t/containers/:id/pause", { query = {} }, function(req)
  return 200, errors.check(engine.action(req.params.id, "pause"))
end)
route("PATCH", "/t/containers/:id/stop", { query = {} }, function(req)
  return 200, errors.check(engine.action(req.params.id, "stop", { t = 0 }))
end)
]]):format(ROOT .. "/lua/routes.lua")

-- Every mutating route, each aimed at a container it would change: c.run
-- (running), c.stopped (created, never started), c.paused; stack `stack`
-- holds c.run and c.stopped. create's body names a container that must
-- never exist.
local function mutating(c, stack, create_body)
  local out = {
    { "POST", "/api/containers", create_body },
    { "DELETE", "/api/containers/" .. c.run .. "?force=1" },
    { "POST", "/api/containers/" .. c.stopped .. "/start" },
    { "POST", "/api/containers/" .. c.paused .. "/unpause" },
    { "PUT", "/t/containers/" .. c.run .. "/pause" },
    { "PATCH", "/t/containers/" .. c.run .. "/stop" },
  }
  for _, a in ipairs({ "stop", "restart", "kill", "pause" }) do
    out[#out + 1] = { "POST", "/api/containers/" .. c.run .. "/" .. a }
  end
  for _, a in ipairs({ "start", "stop", "restart" }) do
    out[#out + 1] = { "POST", "/api/stacks/" .. stack .. "/" .. a }
  end
  return out
end

describe("the guard around the management routes", function()
  local srv, ro, c, id, stack, before, create, dir

  setup(function()
    support.docker()
    dir = http.scripts_dir({ ["routes.lua"] = ROUTES })
    srv = ms.start({ scripts = dir })
    ro = ms.start({ scripts = dir, args = { "--read-only" } })
    stack = ("hxguard%x%04x"):format(os.time(), math.random(0, 0xffff))
    c = {}
    c.run = ms.create(srv, { labels = { [PROJECT] = stack, [SERVICE] = "app" }, start = true })
    c.stopped = ms.create(srv, { labels = { [PROJECT] = stack, [SERVICE] = "db" } })
    c.paused = ms.create(srv, { start = true })
    local st = support.pause(c.paused)
    assert(st == 204, "pause: " .. tostring(st))
    id = c.run
    before = {}
    for k, ref in pairs(c) do
      before[k] = ms.snapshot(ref)
    end
    assert.are.same({ "running", "created", "paused" }, { before.run.status,
      before.stopped.status, before.paused.status })
    create = ms.body()
    ms.track(create.name)
  end)

  teardown(function()
    if c and c.paused then
      support.docker():request("POST", "/containers/" .. c.paused .. "/unpause")
    end
    ms.cleanup()
    if srv then
      srv:stop()
    end
    if ro then
      ro:stop()
    end
    if dir then
      proc.run({ "rm", "-rf", dir })
    end
  end)

  local function unchanged(what)
    for k, ref in pairs(c) do
      assert.are.same(before[k], ms.snapshot(ref), what .. " (" .. k .. ")")
    end
    assert.is_nil(ms.inspect(create.name), what)
  end

  it("refuses every mutating route without a token (401) and with a wrong one (403)", function()
    for _, m in ipairs(mutating(c, stack, create)) do
      local what = m[1] .. " " .. m[2]
      local r = ms.call(srv, m[1], m[2], m[3], { token = false })
      assert.are.equal(401, r.status, what .. ": " .. r.body)
      assert.are.equal("unauthorized", r.json.error.code, what)
      r = ms.call(srv, m[1], m[2], m[3], { token = "not-the-token" })
      assert.are.equal(403, r.status, what .. ": " .. r.body)
      assert.are.equal("forbidden", r.json.error.code, what)
      unchanged(what)
    end
  end)

  it("refuses every mutating route in read-only mode, with the right token", function()
    for _, m in ipairs(mutating(c, stack, create)) do
      local what = m[1] .. " " .. m[2]
      local r = ms.call(ro, m[1], m[2], m[3])
      assert.are.equal(403, r.status, what .. ": " .. r.body)
      assert.are.equal("forbidden", r.json.error.code, what)
      unchanged(what)
    end
  end)

  it("refuses logs in read-only mode and still answers the reads that leak nothing", function()
    local r = ms.call(ro, "GET", "/api/containers/" .. id .. "/logs")
    assert.are.equal(403, r.status, r.body)
    assert.truthy(r.json.error.message:find("read-only", 1, true))
    r = ms.call(ro, "GET", "/api/containers/" .. id)
    assert.are.equal(200, r.status)
    assert.is_nil(r.json.env)
    assert.are.equal(200, ms.call(ro, "GET", "/api/containers?label=" .. PROJECT .. "=" .. stack).status)
    assert.are.equal(200, ms.call(ro, "GET", "/api/stacks/" .. stack).status)
    assert.are.equal(200, ms.call(srv, "GET", "/api/containers/" .. id .. "/logs").status)
    unchanged("reads")
  end)

  it("refuses every mutating route when no token is configured", function()
    local open = ms.start({ token = false, scripts = dir })
    finally(function() open:stop() end)
    for _, m in ipairs(mutating(c, stack, create)) do
      local what = m[1] .. " " .. m[2]
      local r = ms.call(open, m[1], m[2], m[3], { token = "anything" })
      assert.are.equal(401, r.status, what .. ": " .. r.body)
      assert.truthy(r.json.error.message:find("HORCRUX_TOKEN", 1, true), what)
      unchanged(what)
    end
  end)

  it("refuses a body over 1 MiB with 413 and creates nothing", function()
    local big = ms.body({ env = { PAD = string.rep("x", 1024 * 1024 + 1) } })
    big.name = create.name
    local r = ms.call(srv, "POST", "/api/containers", big)
    assert.are.equal(413, r.status, r.body:sub(1, 200))
    unchanged("oversized body")
  end)

  -- one path segment each: a bad container reference, never sent on
  local BAD_IDS = { "bad!id", "-rm", ".hidden", "a%20b", "x%3Fy=1", "%2e%2e",
    string.rep("a", 300), "%C3%A9t%C3%A9" }

  local function every_route(ref, name)
    local out = {
      { "GET", "/api/containers/" .. ref },
      { "GET", "/api/containers/" .. ref .. "/stats" },
      { "GET", "/api/containers/" .. ref .. "/logs" },
      { "DELETE", "/api/containers/" .. ref .. "?force=1" },
      { "GET", "/api/stacks/" .. name },
    }
    for _, a in ipairs({ "start", "stop", "restart", "kill", "pause", "unpause" }) do
      out[#out + 1] = { "POST", "/api/containers/" .. ref .. "/" .. a }
    end
    for _, a in ipairs({ "start", "stop", "restart" }) do
      out[#out + 1] = { "POST", "/api/stacks/" .. name .. "/" .. a }
    end
    return out
  end

  it("refuses a bad id or stack name in every route with 400, before asking the daemon", function()
    -- with no daemon to ask, a route that asked would answer 503
    local down = ms.start({ env = { ms.DEAD_DOCKER } })
    finally(function() down:stop() end)
    for _, bad in ipairs(BAD_IDS) do
      for _, m in ipairs(every_route(bad, bad)) do
        local what = m[1] .. " " .. m[2]:sub(1, 80)
        for _, s in ipairs({ down, srv }) do
          local r = ms.call(s, m[1], m[2])
          assert.are.equal(400, r.status, what .. ": " .. r.body)
          assert.are.equal("bad_request", r.json.error.code, what)
        end
      end
    end
    unchanged("bad ids")
  end)

  -- libmicrohttpd hands the decoded path on as a C string, so a decoded
  -- "a%00b" would reach Lua as "a" and act on container "a": the server
  -- leaves %00 encoded, and the id check refuses it.
  it("refuses a path with an encoded NUL byte (%00) with 400", function()
    local short = id:sub(1, 12)
    for _, m in ipairs({
      { "POST", "/api/containers/" .. short .. "%00x/stop" },
      { "GET", "/api/containers/" .. short .. "%00x/stats" },
      { "DELETE", "/api/containers/" .. short .. "%00?force=1" },
    }) do
      local r = ms.call(srv, m[1], m[2])
      assert.are.equal(400, r.status, m[2] .. ": " .. r.body)
      assert.are.equal("bad_request", r.json.error.code)
    end
    unchanged("NUL in the path")
  end)

  it("lets PUT and PATCH through with the right token (the routes above do act)", function()
    local target = ms.create(srv, { start = true })
    local r = ms.call(srv, "PUT", "/t/containers/" .. target .. "/pause")
    assert.are.equal(200, r.status, r.body)
    assert.is_true(r.json.changed)
    assert.are.equal("paused", ms.status(target))
    support.docker():request("POST", "/containers/" .. target .. "/unpause")
    r = ms.call(srv, "PATCH", "/t/containers/" .. target .. "/stop")
    assert.are.equal(200, r.status, r.body)
    assert.are.equal("exited", ms.status(target))
    unchanged("PUT and PATCH on another container")
  end)

  it("answers what a refusal is as JSON with the error shape", function()
    local r = ms.call(srv, "POST", "/api/containers/" .. id .. "/stop", nil, { token = false })
    assert.are.equal("application/json", r.headers["content-type"])
    local e = json.decode(r.body).error
    assert.are.equal("unauthorized", e.code)
    assert.are.equal("send Authorization: Bearer <token>", e.message)
    assert.matches("^%x+$", e.request_id)
    assert.are.equal(r.headers["x-request-id"], e.request_id)
    unchanged("shape")
  end)

  it("guards PUT and PATCH as it guards POST and DELETE", function()
    for _, m in ipairs({ "PUT", "PATCH" }) do
      local path = "/api/containers/" .. id
      local r = ms.call(srv, m, path, {}, { token = false })
      assert.are.equal(401, r.status, m .. ": " .. r.body)
      r = ms.call(srv, m, path, {}, { token = "wrong-" .. ms.TOKEN })
      assert.are.equal(403, r.status, m .. ": " .. r.body)
      r = ms.call(ro, m, path, {})
      assert.are.equal(403, r.status, m .. ": " .. r.body)
      assert.truthy(r.json.error.message:find("read-only", 1, true))
      -- with the token, the router answers: no such route for that method
      r = ms.call(srv, m, path, {})
      assert.are.equal(405, r.status, m .. ": " .. r.body)
    end
    unchanged("PUT and PATCH")
  end)
end)
