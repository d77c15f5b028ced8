-- The README's "Writing a route": its three routes (examples/routes-top.lua,
-- routes-label-summary.lua, routes-rename.lua) served beside the shipped
-- routes, as the tutorial tells an operator to, against the real engine.
local ms = require "manage_support"
local support = require "support"
local http = require "http"

local EXAMPLES = { "examples/routes-top.lua", "examples/routes-label-summary.lua",
  "examples/routes-rename.lua" }

local function scripts()
  local text = { http.read_file("lua/routes.lua") }
  for _, f in ipairs(EXAMPLES) do
    text[#text + 1] = http.read_file(f)
  end
  return http.scripts_dir({ ["routes.lua"] = table.concat(text, "\n") })
end

-- The lines of the handler of a route file: from `function(req)` to the
-- `end)` that closes the route() call, both excluded.
local function handler_lines(path)
  local lines, inside, n = {}, false, 0
  for line in http.read_file(path):gmatch("[^\n]*") do
    lines[#lines + 1] = line
  end
  for _, line in ipairs(lines) do
    if line:find("function(req)", 1, true) then
      inside = true
    elseif inside and line:match("^%s*end%)%s*$") then
      return n
    elseif inside then
      n = n + 1
    end
  end
  error("no handler in " .. path)
end

describe("the README's routes", function()
  local srv, ro, tag

  setup(function()
    support.docker()
    local dir = scripts()
    srv = ms.start({ scripts = dir })
    ro = ms.start({ scripts = dir, args = { "--read-only" } })
    tag = "tut" .. os.time() .. math.random(1000)
  end)

  teardown(function()
    ms.cleanup()
    for _, s in ipairs({ srv or false, ro or false }) do
      if s then
        s:stop()
      end
    end
  end)

  it("/top: a route body of at most 10 lines answers a container's processes", function()
    assert.is_true(handler_lines("examples/routes-top.lua") <= 10)
    local id, name = ms.create(srv, { cmd = { "sleep", "601" }, start = true })
    local r = ms.call(srv, "GET", "/api/containers/" .. name .. "/top")
    assert.are.equal(200, r.status, r.body)
    local found
    for _, p in ipairs(r.json) do
      if (p.CMD or p.COMMAND or ""):find("sleep 601", 1, true) then
        found = p
      end
    end
    assert.is_table(found, r.body)
    assert.matches("^%d+$", found.PID)
    -- ps_args goes to the daemon's ps: the titles follow it
    r = ms.call(srv, "GET", "/api/containers/" .. id:sub(1, 12) .. "/top?ps_args=-o%20pid,comm")
    assert.are.equal(200, r.status, r.body)
    assert.is_string(r.json[1].PID)
    assert.is_string(r.json[1].COMMAND)
    -- the failures propagate with their kinds
    assert.are.equal(400, ms.call(srv, "GET", "/api/containers/bad!id/top").status)
    -- a bad ref is refused in one wording by this route and the shipped
    -- ones, the length said when only that is wrong
    local said = {}
    for _, p in ipairs({ "bad%21id/top", "bad%21id", "bad%21id/history",
      string.rep("a", 256), string.rep("a", 256) .. "/top" }) do
      r = ms.call(srv, "GET", "/api/containers/" .. p)
      assert.are.equal(400, r.status, r.body)
      said[#said + 1] = r.json.error.message
    end
    local bad = 'docker: invalid container name or id: "bad!id" (6 bytes): a '
      .. "name is letters, digits and _ . - (starting with a letter or "
      .. "digit), an id is hex"
    assert.are.same({ bad, bad, bad }, { said[1], said[2], said[3] })
    assert.are.equal(said[4], said[5])
    assert.matches("%(256 bytes%): longer than 255 bytes$", said[4])
    assert.are.equal(404, ms.call(srv, "GET", "/api/containers/hxtest-none-" .. tag .. "/top").status)
    assert.are.equal(400, ms.call(srv, "GET", "/api/containers/" .. name .. "/top?x=1").status)
    ms.call(srv, "POST", "/api/containers/" .. name .. "/stop?timeout=0")
    r = ms.call(srv, "GET", "/api/containers/" .. name .. "/top")
    assert.are.equal(409, r.status, r.body)
    assert.are.equal("conflict", r.json.error.code)
  end)

  it("summary: counts the containers of a label by state and sums their figures", function()
    local label = "hx.tutorial=" .. tag
    ms.create(srv, { start = true, labels = { ["hx.tutorial"] = tag },
      cmd = support.BUSY })
    ms.create(srv, { labels = { ["hx.tutorial"] = tag } })
    local r
    ms.eventually(10, function()
      r = ms.call(srv, "GET", "/api/labels/" .. label .. "/summary")
      return r.status == 200 and r.json.running == 1 and r.json.cpu_usage_percent > 0
    end)
    assert.are.equal(200, r.status, r.body)
    assert.are.same({ running = 1, created = 1 }, r.json.states)
    assert.are.equal(2, r.json.count)
    assert.are.equal(label, r.json.label)
    assert.is_true(r.json.memory_usage_bytes > 0)
    r = ms.call(srv, "GET", "/api/labels/bad%20label/summary")
    assert.are.equal(400, r.status, r.body)
  end)

  it("rename: a POST the server guards with the token and read-only mode", function()
    local id, name = ms.create(srv, {})
    local new = name .. "-renamed"
    ms.track(new)
    local path = "/api/containers/" .. name .. "/rename"
    local r = ms.call(srv, "POST", path, { name = new }, { token = false })
    assert.are.equal(401, r.status)
    r = ms.call(srv, "POST", path, { name = new }, { token = "wrong-token-of-some-length" })
    assert.are.equal(403, r.status)
    r = ms.call(ro, "POST", path, { name = new })
    assert.are.equal(403, r.status)
    assert.are.equal(name, ms.inspect(id).Name:sub(2))
    r = ms.call(srv, "POST", path, { name = "no good" })
    assert.are.equal(400, r.status, r.body)
    assert.are.equal("name", r.json.error.field)
    assert.matches('^name: invalid container name or id: "no good" %(7 bytes%): '
      .. "a name is letters", r.json.error.message)
    -- a name missing or not a string is refused as such, not quoted
    for _, case in ipairs({ { {}, "name: is required" },
      { { name = 5 }, "name: must be a string" },
      { { name = { "web" } }, "name: must be a string" } }) do
      r = ms.call(srv, "POST", path, case[1])
      assert.are.equal(400, r.status, r.body)
      assert.are.same({ "bad_request", "name", case[2] }, { r.json.error.code,
        r.json.error.field, r.json.error.message })
    end
    r = ms.call(srv, "POST", path, { name = new })
    assert.are.equal(200, r.status, r.body)
    assert.are.same({ id = name, name = new }, r.json)
    assert.are.equal(new, ms.inspect(id).Name:sub(2))
    -- the daemon's own refusal keeps its kind: the name is taken now
    local _, other = ms.create(srv, {})
    r = ms.call(srv, "POST", "/api/containers/" .. other .. "/rename", { name = new })
    assert.are.equal(409, r.status, r.body)
    assert.are.equal("conflict", r.json.error.code)
  end)
end)
