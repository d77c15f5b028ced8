-- `cmake --install` puts the modules where stock lua5.4 looks for them.
local proc = require "horcrux.proc"

local build = os.getenv("HORCRUX_BUILD") or "build"

describe("cmake --install", function()
  it("installs the C modules into Lua 5.4's own C path and the scripts beside the binary's default", function()
    local prefix = os.tmpname()
    os.remove(prefix)
    finally(function() proc.run({ "rm", "-rf", prefix }) end)
    local r = proc.run({ "cmake", "--install", build, "--prefix", prefix }, { timeout = 60 })
    assert.are.equal(0, r.status, r.stderr)
    -- lua5.4's default cpath names /usr/local/lib/lua/5.4/?.so: the same
    -- layout under our prefix must hold the modules.
    local lua = proc.run({ "lua5.4", "-e", "io.write(package.cpath)" }, { env = {} })
    local pattern = lua.stdout:match("(/usr/local/[^;]*/%?%.so)")
    assert.is_string(pattern, "lua5.4's default cpath has a /usr/local entry")
    local cpath = prefix .. pattern:gsub("^/usr/local", "")
    for _, mod in ipairs({ "json", "docker", "cpu", "cgroup", "proc", "clock", "view" }) do
      local file = cpath:gsub("%?", "horcrux/" .. mod)
      local f = io.open(file)
      assert.is_not_nil(f, file)
      f:close()
    end
    local lpattern = proc.run({ "lua5.4", "-e", "io.write(package.path)" }, { env = {} })
      .stdout:match("(/usr/local/share/lua/5.4/%?%.lua)")
    local lpath = prefix .. lpattern:gsub("^/usr/local", "")
    local check = proc.run({ "lua5.4", "-e",
      'local j = require "horcrux.json"; local s = require "horcrux.stats"; io.write(j.encode({ok = type(s.record_from_api) == "function"}))' },
      { env = { "LUA_CPATH=" .. cpath, "LUA_PATH=" .. lpath } })
    assert.are.equal(0, check.status, check.stderr)
    assert.are.equal('{"ok":true}', check.stdout)
    for _, f in ipairs({ "/bin/horcrux", "/share/horcrux/lua/routes.lua",
      "/share/horcrux/lua/fallback.lua", "/share/horcrux/lua/format.lua",
      "/share/horcrux/lua/commands/ps.lua" }) do
      assert.is_not_nil(io.open(prefix .. f), f)
    end
  end)
end)
