-- Installs work anywhere: `cmake --install` under any prefix (the binary
-- finds its scripts and the Lua library relative to itself, even after the
-- tree is moved), stock lua5.4 with only LUA_PATH/LUA_CPATH pointing into
-- the prefix, and `luarocks make` into a tree of its own.
local proc = require "horcrux.proc"
local support = require "support"

local build = os.getenv("HORCRUX_BUILD") or "build"
-- The programs a spec runs without the spec's own environment: the system's
-- (not the sanitizer run's lua5.4 wrapper, which the install of build-asan
-- needs and the rock, built without sanitizers, does not).
local SYSTEM_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

local function tmpdir()
  local name = os.tmpname()
  os.remove(name)
  assert(proc.run({ "mkdir", "-m", "700", name }).status == 0)
  return name
end

local function run(argv, opts)
  local r = proc.run(argv, opts)
  assert.are.equal(0, r.status, table.concat(argv, " ") .. ": " .. r.stderr .. r.stdout)
  return r
end

local function realpath(p)
  return (run({ "realpath", p }).stdout:gsub("\n$", ""))
end

-- The environment of a program run "as a user would": no HORCRUX_LIB, no
-- LUA_PATH, the daemon the specs use.
local function user_env(extra)
  local env = { SYSTEM_PATH, "HOME=" .. (os.getenv("HOME") or "/tmp") }
  if os.getenv("DOCKER_HOST") then env[#env + 1] = "DOCKER_HOST=" .. os.getenv("DOCKER_HOST") end
  for _, e in ipairs(extra or {}) do env[#env + 1] = e end
  return env
end

-- A lua5.4 chunk that lists the test containers through horcrux.docker and
-- through the library (horcrux.metrics, with no operator script anywhere:
-- the library's own source order), and formats a size through
-- horcrux.units; `require "horcrux"` gives every module.
local LIST = [[
local docker = require "horcrux.docker"
local units = require "horcrux.units"
local hx = require "horcrux"
local c = assert(docker.connect())
local list = assert(c:containers({ all = true, filters = { label = { LABEL } } }))
local names = {}
for _, ct in ipairs(list) do names[#names + 1] = ct.Names[1]:sub(2) end
local f = hx.check(hx.filters.parse({ { "label", LABEL } }))
for _, ct in ipairs(hx.check(hx.filters.list(f, true))) do
  names[#names + 1] = "lib:" .. ct.name
end
io.write(units.bytes(1536), " ", table.concat(names, " "))
]]

-- Stock lua5.4 with LUA_PATH/LUA_CPATH only: the container's name must show.
local function lists_with(lpath, cpath, name, lua)
  local chunk = ("local LABEL = %q\n"):format(support.label_arg) .. LIST
  local r = run({ lua or "lua5.4", "-e", chunk },
    { env = user_env({ "LUA_PATH=" .. lpath, "LUA_CPATH=" .. cpath }), cwd = "/", timeout = 60 })
  assert.are.equal("1.5KiB", r.stdout:match("^(%S+)"))
  assert.truthy(r.stdout:find(" " .. name, 1, true), r.stdout)
  assert.truthy(r.stdout:find("lib:" .. name, 1, true), r.stdout)
end

describe("installing", function()
  local id, name
  setup(function()
    id, name = support.run_container({ name = "install" })
  end)
  teardown(function()
    if id then support.remove(id) end
  end)

  it("cmake --install puts the modules into Lua 5.4's own paths under the prefix", function()
    local prefix = tmpdir()
    finally(function() proc.run({ "rm", "-rf", prefix }) end)
    run({ "cmake", "--install", build, "--prefix", prefix }, { timeout = 60 })
    -- lua5.4's default cpath names /usr/local/lib/lua/5.4/?.so: the same
    -- layout under our prefix must hold the modules.
    local lua = proc.run({ "lua5.4", "-e", "io.write(package.cpath)" }, { env = {} })
    local pattern = lua.stdout:match("(/usr/local/[^;]*/%?%.so)")
    assert.is_string(pattern, "lua5.4's default cpath has a /usr/local entry")
    local cpath = prefix .. pattern:gsub("^/usr/local", "")
    for _, mod in ipairs({ "json", "docker", "cpu", "cgroup", "proc", "clock", "view", "shared", "errors" }) do
      local file = cpath:gsub("%?", "horcrux/" .. mod)
      local f = io.open(file)
      assert.is_not_nil(f, file)
      f:close()
    end
    local lpattern = proc.run({ "lua5.4", "-e", "io.write(package.path)" }, { env = {} })
      .stdout:match("(/usr/local/share/lua/5.4/%?%.lua)")
    local lpath = prefix .. lpattern:gsub("^/usr/local", "")
    -- with nothing but LUA_PATH and LUA_CPATH: a C module and a library
    -- module load, and the engine's containers are listed
    lists_with(lpath, cpath, name)
    for _, f in ipairs({ "/bin/horcrux", "/share/horcrux/lua/routes.lua",
      "/share/horcrux/lua/fallback.lua", "/share/horcrux/lua/format.lua",
      "/share/horcrux/lua/policy.lua", "/share/horcrux/lua/commands/ps.lua",
      "/share/horcrux/lua/commands/events.lua", "/share/horcrux/lua/web/index.html",
      "/share/horcrux/lua/web/ui/app.js" }) do
      assert.is_not_nil(io.open(prefix .. f), f)
    end
  end)

  it("P/bin/horcrux finds its scripts and library under any prefix, moved too", function()
    local top = tmpdir()
    finally(function() proc.run({ "rm", "-rf", top }) end)
    local prefix = top .. "/first"
    run({ "cmake", "--install", build, "--prefix", prefix }, { timeout = 60 })
    local r = run({ prefix .. "/bin/horcrux", "ps", "--all" }, { env = user_env(), cwd = "/", timeout = 60 })
    assert.matches("^CONTAINER ID", r.stdout)
    assert.truthy(r.stdout:find(name, 1, true), r.stdout)
    -- moved: nothing of the first place is left to find
    local moved = top .. "/moved/elsewhere"
    run({ "mkdir", "-p", top .. "/moved" })
    run({ "mv", prefix, moved })
    r = run({ moved .. "/bin/horcrux", "ps", "--all" }, { env = user_env(), cwd = "/", timeout = 60 })
    assert.truthy(r.stdout:find(name, 1, true), r.stdout)
    -- what a script run by the moved binary loads comes from the moved tree
    local probe = top .. "/probe.lua"
    local f = assert(io.open(probe, "w"))
    f:write('io.write(package.searchpath("horcrux.units", package.path), "\\n",\n',
      '  package.searchpath("routes", package.path))\n')
    f:close()
    r = run({ moved .. "/bin/horcrux", "run", probe }, { env = user_env(), cwd = "/", timeout = 60 })
    local real = realpath(moved)
    local units, routes = r.stdout:match("^(.-)\n(.*)$")
    assert.are.equal(real .. "/share/lua/5.4/horcrux/units.lua", units)
    assert.are.equal(real .. "/share/horcrux/lua/routes.lua", routes)
  end)

  it("luarocks make builds and installs the modules into a tree", function()
    if os.getenv("HORCRUX_TEST_SANITIZE") then
      -- luarocks builds the rock its own way, without the sanitizers: the
      -- sanitizer run would build and check the very same thing again
      -- (60 s of CPU on a 2-core machine the suite keeps busy)
      pending("the rock is built without sanitizers: the normal run checks it")
      return
    end
    local top = tmpdir()
    finally(function() proc.run({ "rm", "-rf", top }) end)
    -- a copy of the sources: luarocks builds in the folder it runs in
    local src = top .. "/src"
    run({ "mkdir", src })
    run({ "cp", "-r", "CMakeLists.txt", "horcrux-scm-1.rockspec", "core", "lua", src })
    local tree = top .. "/tree"
    local r = run({ "luarocks", "--lua-version", "5.4", "make", "--tree", tree },
      { cwd = src, timeout = 300, env = user_env({ "CMAKE_BUILD_PARALLEL_LEVEL=2" }) })
    assert.matches("horcrux scm%-1 is now installed", r.stdout)
    for _, mod in ipairs({ "json", "docker", "cpu", "cgroup", "proc", "clock", "view", "shared", "errors" }) do
      assert.is_not_nil(io.open(tree .. "/lib/lua/5.4/horcrux/" .. mod .. ".so"), mod)
    end
    assert.is_not_nil(io.open(tree .. "/share/lua/5.4/horcrux/units.lua"))
    -- the rock is only the modules: no program, no operator scripts
    assert.is_nil(io.open(tree .. "/bin/horcrux"))
    -- luarocks's own idea of the tree's paths
    local lpath = run({ "luarocks", "--lua-version", "5.4", "--tree", tree, "path", "--lr-path" },
      { env = user_env() }).stdout:gsub("\n", "")
    local cpath = run({ "luarocks", "--lua-version", "5.4", "--tree", tree, "path", "--lr-cpath" },
      { env = user_env() }).stdout:gsub("\n", "")
    lists_with(lpath, cpath, name, "/usr/bin/lua5.4")
  end)
end)
