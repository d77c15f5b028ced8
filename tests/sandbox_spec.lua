-- Issue 8, defect 6: the instruction budget and the memory cap hold, and a
-- route cannot take the server down. Operator scripts are trusted code, but
-- the limits exist for accidents: a budget error caught through a coroutine
-- still fails the request; debug.sethook is out of reach; os.exit is refused
-- and logged; only text chunks load; HORCRUX_TOKEN is not in the
-- environment of the routes, of the programs they start, nor of the process.
local http = require "http"
local clock = require "horcrux.clock"

local TOKEN = "sandbox-spec-token-0123456789"

local ROUTES = [[
local json = require "horcrux.json"
local proc = require "horcrux.proc"

local function loop() while true do end end

route("GET", "/text", function() return 200, "plain" end)

-- the budget error, caught through a coroutine (or several)
route("GET", "/wrap-loop", function()
  pcall(coroutine.wrap(loop))
  return 200, "escaped the budget"
end)
route("GET", "/resume-loop", function()
  local co = coroutine.create(loop)
  local ok = coroutine.resume(co)
  return 200, "escaped the budget: " .. tostring(ok)
end)
route("GET", "/many-loops", function()
  for _ = 1, 20 do
    pcall(coroutine.wrap(loop))
  end
  return 200, "escaped the budget"
end)

-- the budget starts counting at the worker's first tick during a request
-- (states_budget.c): loops the tick must find wherever they run
local pingpong = coroutine.wrap(function()
  while true do coroutine.yield() end
end)
route("GET", "/pingpong-loop", function()
  while true do pingpong() end -- a coroutine switch every few instructions
end)
local made_at_load = coroutine.create(loop) -- before any request ran
route("GET", "/load-coroutine-loop", function()
  local ok = coroutine.resume(made_at_load)
  return 200, "escaped the budget: " .. tostring(ok)
end)
route("GET", "/close-loop", function()
  local co = coroutine.create(function()
    local _ <close> = setmetatable({}, { __close = loop })
    coroutine.yield()
  end)
  coroutine.resume(co)
  local ok = coroutine.close(co) -- runs the __close handler in co
  return 200, "escaped the budget: " .. tostring(ok)
end)
route("GET", "/nested-loop", function()
  return 200, "escaped: " .. tostring(coroutine.wrap(function()
    return pcall(coroutine.wrap(function() return pcall(loop) end))
  end)())
end)
-- coroutine.resume, wrap and close are the host's (they record the running
-- thread): Lua's own answers and messages
route("GET", "/coroutines", function()
  local out = {}
  local co = coroutine.create(function(a) local b = coroutine.yield(a + 1) return b * 2 end)
  out.first = { coroutine.resume(co, 1) }
  out.second = { coroutine.resume(co, 5) }
  out.dead = { coroutine.resume(co) }
  out.status = coroutine.status(co)
  local w = coroutine.wrap(function() error("boom") end)
  out.wrap_error = select(2, pcall(w))
  local w2 = coroutine.wrap(function() error({ code = 1 }) end)
  out.wrap_table = select(2, pcall(w2)).code
  out.close_running = select(2, pcall(coroutine.close, coroutine.running()))
  out.bad_resume = select(2, pcall(coroutine.resume, 42))
  local c2 = coroutine.create(function() coroutine.yield() end)
  coroutine.resume(c2)
  out.close = { coroutine.close(c2) }
  out.close_status = coroutine.status(c2)
  local c3 = coroutine.create(function()
    local _ <close> = setmetatable({}, { __close = function() error("in close") end })
    coroutine.yield()
  end)
  coroutine.resume(c3)
  out.close_error = { coroutine.close(c3) }
  out.gen = {}
  for v in coroutine.wrap(function() for i = 1, 3 do coroutine.yield(i) end end) do
    out.gen[#out.gen + 1] = v
  end
  return 200, out
end)

-- the hook switched off, then a loop the budget must stop
route("GET", "/sethook", function()
  local ok = pcall(debug.sethook)
  local n = 0
  for _ = 1, 3e8 do n = n + 1 end
  return 200, "the loop ran to its end; sethook: " .. tostring(ok)
end)
route("GET", "/debug", function()
  local d = require "debug"
  return 200, { sethook = debug.sethook == nil and d.sethook == nil,
    gethook = debug.gethook == nil and d.gethook == nil,
    getregistry = debug.getregistry == nil,
    traceback = type(debug.traceback) == "function",
    getinfo = type(debug.getinfo) == "function" }
end)

route("GET", "/exit", function() os.exit(3) end)
route("GET", "/pcall-exit", function()
  local ok = pcall(os.exit, 4)
  return 200, { exited = not ok and "refused" or "returned" }
end)

-- what loads: text, never binary
route("GET", "/chunks", function()
  local dumped = string.dump(function() return 1 end)
  local dir = os.tmpname()
  os.remove(dir)
  assert(proc.run({ "mkdir", dir }).status == 0)
  local function write(name, text)
    local f = assert(io.open(dir .. "/" .. name, "wb"))
    f:write(text)
    f:close()
    return dir .. "/" .. name
  end
  local bin, txt = write("binmod.lua", dumped), write("txtmod.lua", "return 7")
  local saved = package.path
  package.path = dir .. "/?.lua;" .. saved
  local out = {
    load = load(dumped) ~= nil,
    load_b = load(dumped, "=x", "b") ~= nil,
    load_bt = load(dumped, "=x", "bt") ~= nil,
    loadfile = loadfile(bin) ~= nil,
    loadfile_b = loadfile(bin, "b") ~= nil,
    dofile = (pcall(dofile, bin)),
    require = (pcall(require, "binmod")),
    text_load = load("return 1")() == 1,
    text_env = load("return x", "=t", "t", { x = 5 })() == 5,
    text_loadfile = loadfile(txt)() == 7,
    text_dofile = dofile(txt) == 7,
    text_require = require("txtmod") == 7,
  }
  package.path = saved
  proc.run({ "rm", "-rf", dir })
  return 200, out
end)

route("GET", "/env", function()
  local r = proc.run({ "env" })
  return 200, { getenv = os.getenv("HORCRUX_TOKEN") or "unset",
    child = r.stdout:find("HORCRUX_TOKEN", 1, true) ~= nil,
    path = os.getenv("PATH") ~= nil }
end)
]]

describe("the sandbox of routes", function()
  local srv

  setup(function()
    local dir = http.scripts_dir({ ["routes.lua"] = ROUTES })
    srv = http.start({ scripts = dir, args = { "--budget", "2000000", "--workers", "2" },
      env = { "PATH=" .. os.getenv("PATH"), "HORCRUX_TOKEN=" .. TOKEN } })
  end)

  teardown(function()
    if srv then
      srv:stop()
    end
  end)

  it("fails a request whose budget error a coroutine caught (500), and keeps serving", function()
    for _, path in ipairs({ "/wrap-loop", "/resume-loop", "/many-loops", "/wrap-loop" }) do
      local r = assert(http.get(srv.url .. path, { timeout = 20 }))
      assert.are.equal(500, r.status, path .. ": " .. r.body)
      assert.are.equal("internal", r.json.error.code)
    end
    clock.sleep(0.1)
    assert.truthy(srv:logtext():find("the route caught the error", 1, true), srv:logtext())
    for _ = 1, 4 do
      assert.are.equal(200, assert(http.get(srv.url .. "/text")).status)
    end
  end)

  it("stops loops in coroutines made at load, in ping-pong, in __close, nested", function()
    for _, path in ipairs({ "/pingpong-loop", "/load-coroutine-loop", "/close-loop",
      "/nested-loop" }) do
      local r = assert(http.get(srv.url .. path, { timeout = 20 }))
      assert.are.equal(500, r.status, path .. ": " .. r.body)
    end
    assert.are.equal(200, assert(http.get(srv.url .. "/text")).status)
  end)

  it("keeps coroutine.resume, wrap and close as Lua has them", function()
    local r = assert(http.get(srv.url .. "/coroutines"))
    assert.are.equal(200, r.status, r.body)
    assert.are.same({
      first = { true, 2 }, second = { true, 10 },
      dead = { false, "cannot resume dead coroutine" }, status = "dead",
      wrap_error = r.json.wrap_error, wrap_table = 1,
      close_running = "cannot close a running coroutine",
      bad_resume = "bad argument #1 to 'coroutine.resume' (thread expected, got number)",
      close = { true }, close_status = "dead",
      close_error = { false, r.json.close_error[2] },
      gen = { 1, 2, 3 },
    }, r.json)
    -- the position of the error inside the coroutine, as Lua gives it
    assert.truthy(r.json.wrap_error:find("routes.lua:%d+: boom$"), r.json.wrap_error)
    assert.truthy(r.json.close_error[2]:find("in close$"), r.json.close_error[2])
  end)

  it("counts a route that runs long from its first tick: a tiny budget stops a loop, not a short route", function()
    -- --budget 100000: a short route (a few thousand instructions) passes
    -- whether or not a tick armed it; the loop is stopped within a tick
    -- and 100000 instructions.
    local s2 = http.start({ scripts = http.scripts_dir({ ["routes.lua"] = ROUTES }),
      args = { "--budget", "100000", "--workers", "1" } })
    finally(function() s2:stop() end)
    local t0 = clock.mono_ns()
    local r = assert(http.get(s2.url .. "/sethook", { timeout = 20 }))
    assert.are.equal(500, r.status, r.body)
    assert.is_true(clock.mono_ns() - t0 < 2e9, "the loop ran for long")
    for _ = 1, 50 do
      assert.are.equal(200, assert(http.get(s2.url .. "/text")).status)
    end
  end)

  it("holds the loader to its budget (ten times --budget, counted from the start)", function()
    local dir = http.scripts_dir({ ["routes.lua"] = "while true do end\n" })
    local r = require("horcrux.proc").run({ http.bin, "serve", "--listen", "127.0.0.1:0",
      "--scripts", dir, "--budget", "100000" }, { timeout = 30 })
    assert.are_not.equal(0, r.status)
    assert.truthy(r.stderr:find("instruction budget", 1, true), r.stderr)
  end)

  it("keeps debug.sethook and debug.gethook out of reach; traceback and getinfo stay", function()
    local r = assert(http.get(srv.url .. "/debug"))
    assert.are.same({ sethook = true, gethook = true, getregistry = true,
      traceback = true, getinfo = true }, r.json)
    r = assert(http.get(srv.url .. "/sethook", { timeout = 30 }))
    assert.are.equal(500, r.status, r.body)
  end)

  it("loads text chunks only: load, loadfile, dofile and require refuse bytecode", function()
    local r = assert(http.get(srv.url .. "/chunks"))
    assert.are.equal(200, r.status, r.body)
    assert.are.same({ load = false, load_b = false, load_bt = false,
      loadfile = false, loadfile_b = false, dofile = false, require = false,
      text_load = true, text_env = true, text_loadfile = true,
      text_dofile = true, text_require = true }, r.json)
  end)

  it("keeps HORCRUX_TOKEN out of the environment: routes, their programs, /proc", function()
    local r = assert(http.get(srv.url .. "/env"))
    assert.are.same({ getenv = "unset", child = false, path = true }, r.json)
    local f = assert(io.open("/proc/" .. srv.proc:pid() .. "/environ", "rb"))
    local environ = f:read("a")
    f:close()
    assert.is_nil(environ:find(TOKEN, 1, true))
    assert.truthy(environ:find("PATH=", 1, true))
    -- and the token still guards what it guards
    r = assert(http.request("POST", srv.url .. "/text", { body = "" }))
    assert.are.equal(401, r.status)
  end)

  it("refuses os.exit in a route, logs it, and keeps serving", function()
    local r = assert(http.get(srv.url .. "/exit"))
    assert.are.equal(500, r.status)
    r = assert(http.get(srv.url .. "/pcall-exit"))
    assert.are.same({ exited = "refused" }, r.json)
    clock.sleep(0.1)
    assert.is_true(srv:alive())
    local log = srv:logtext()
    local _, n = log:gsub("a script called os.exit: refused", "")
    assert.are.equal(2, n, log)
    assert.truthy(log:find("os.exit is refused in the server", 1, true), log)
    assert.are.equal(200, assert(http.get(srv.url .. "/text")).status)
  end)
end)
