-- The examples work: the Prometheus route, the custom routes, the C program
-- embedding the modules.
local http = require "http"
local support = require "support"
local proc = require "horcrux.proc"

local build = os.getenv("HORCRUX_BUILD") or "build"
local PATH = "PATH=" .. os.getenv("PATH")

describe("examples", function()
  local id, name
  setup(function()
    id, name = support.run_container({ name = "example",
      cmd = support.BUSY })
  end)
  teardown(function()
    if id then support.remove(id) end
  end)

  it("serves the shipped /metrics and the custom routes appended to routes.lua", function()
    local routes = http.read_file("lua/routes.lua") .. "\n" ..
      http.read_file("examples/routes-custom.lua")
    -- each example file declares its own locals: run them as one chunk
    local dir = http.scripts_dir({ ["routes.lua"] = routes })
    local srv = http.start({ scripts = dir, env = { PATH }, args = { "--interval", "0.5" } })
    finally(function() srv:stop() end)
    local text
    for _ = 1, 20 do
      local r = assert(http.get(srv.url .. "/metrics"))
      assert.are.equal(200, r.status)
      assert.matches("^text/plain; version=0.0.4", r.headers["content-type"])
      text = r.body
      if text:find('name="' .. name .. '"', 1, true) then break end
      require("horcrux.clock").sleep(0.25)
    end
    -- cAdvisor's names and labels (examples/prometheus.yml scrapes them)
    assert.truthy(text:find("# TYPE container_cpu_usage_seconds_total counter", 1, true))
    assert.truthy(text:find('container_cpu_usage_seconds_total{id="/docker/' .. id
      .. '",name="' .. name .. '"', 1, true), text)
    local r = assert(http.get(srv.url .. "/cpu/" .. name))
    assert.are.equal(200, r.status)
    assert.matches("^%d+%.%d\n$", r.body)
    r = assert(http.get(srv.url .. "/by-image/horcrux-test:busybox"))
    local found = false
    for _, c in ipairs(r.json) do found = found or c.name == name end
    assert.is_true(found)
  end)

  it("horcrux run examples/top.lua prints the busiest containers by name, "
    .. "busiest first", function()
      local r = proc.run({ http.bin, "run", "examples/top.lua" },
        { timeout = 30, env = { PATH } })
      assert.are.equal(0, r.status, r.stderr)
      local names = {}
      for _, c in ipairs(support.docker():containers({ all = false })) do
        names[c.Names[1]:sub(2)] = true
      end
      local last, n = math.huge, 0
      for line in r.stdout:gmatch("[^\n]+") do
        local who, pct = line:match("^(%S+)\t(%d+%.%d)%%$")
        assert.truthy(who, line)
        -- a name the daemon knows (outside the server, the cgroup files'
        -- records carry none)
        assert.is_true(names[who], line)
        assert.is_true(tonumber(pct) <= last, r.stdout)
        last, n = tonumber(pct), n + 1
      end
      assert.is_true(n >= 1 and n <= 3, r.stdout)
    end)

  it("embeds the modules in a C program", function()
    local r = proc.run({ build .. "/example_embed" }, { timeout = 30,
      env = { PATH, "LUA_CPATH=" .. build .. "/lib/?.so", "LUA_PATH=lua/?.lua" } })
    assert.are.equal(0, r.status, r.stderr)
    assert.truthy(r.stdout:find(id:sub(1, 12) .. " " .. name .. " ", 1, true), r.stdout)
  end)
end)
