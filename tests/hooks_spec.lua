-- Webhooks and alerts (issue 10): hooks.lua's checks, the queue on disk,
-- and against the real engine a real receiver on a real socket
-- (tests/hook_receiver.py through tests/hook_receiver.lua): signed
-- deliveries of a container's events, a receiver down for a while, a kill
-- -9 of horcrux with deliveries pending, a receiver that hangs beside one
-- that answers, an alert that fires and resolves, Alertmanager's webhook
-- shape.
local http = require "http"
local support = require "support"
local json = require "horcrux.json"
local proc = require "horcrux.proc"
local clock = require "horcrux.clock"
local hooks = require "horcrux.hooks"
local check = require "horcrux.hooks_check"
local receiver = require "hook_receiver"

local SECRET = "spec-secret-0123456789"

local function tmpdir()
  local d = os.tmpname()
  os.remove(d)
  assert(proc.run({ "mkdir", "-p", d }).status == 0)
  return d
end

local function wait_until(what, timeout, fn)
  local deadline = clock.mono_ns() + timeout * 1e9
  local last
  while clock.mono_ns() < deadline do
    local v = fn()
    if v then
      return v
    end
    clock.sleep(0.1)
  end
  last = fn()
  if last then
    return last
  end
  error("timed out after " .. timeout .. " s waiting for " .. what, 2)
end

local function received(log)
  local out = {}
  for line in http.read_file(log):gmatch("[^\n]+") do
    local r = json.decode(line)
    r.json = json.decode(r.body)
    out[#out + 1] = r
  end
  return out
end

-- The container events received for container id, in arrival order.
local function events_of(list, id)
  local out = {}
  for _, r in ipairs(list) do
    if r.json.type == "container" and r.json.id == id then
      out[#out + 1] = r
    end
  end
  return out
end

local function actions(list)
  local a = {}
  for i, r in ipairs(list) do
    a[i] = r.json.action
  end
  return a
end

-- Every delivery signed, no delivery id twice, the events in order.
local function signed_once_in_order(got)
  local ids = {}
  for i, r in ipairs(got) do
    assert.is_true(r.verified)
    assert.is_nil(ids[r.delivery])
    ids[r.delivery] = true
    if i > 1 then
      assert.truthy(r.json.time_ns > got[i - 1].json.time_ns, "in order")
    end
  end
end
local function count(list, action)
  local n = 0
  for _, r in ipairs(list) do
    n = n + (r.json.action == action and 1 or 0)
  end
  return n
end

-- hooks.lua with one hook to url taking the events of containers labelled
-- hx.run=run (and alerts), plus `extra` Lua text inside the list.
local function hooks_lua(url, run, extra)
  return ([[
return {
  { url = %q, secret = %q, retry_min = 0.2, retry_max = 1, timeout = 2,
    filter = function(ev)
      return ev.type == "alert" or (ev.attributes or {})["hx.run"] == %q
    end },
  %s
}
]]):format(url, SECRET, run, extra or "")
end

local function start_server(scripts, state, interval)
  return http.start({ scripts = scripts, args = { "--interval",
    interval or "0.5", "--state-dir", state, "--no-access-log" } })
end

local function hook_status(srv, i)
  local r = assert(http.get(srv.url .. "/api/hooks"))
  assert.are.equal(200, r.status)
  return r.json[i or 1], r.json
end

local function stop_container(id)
  local st = support.docker():request("POST", "/containers/" .. id .. "/stop",
    { t = 1 })
  assert.are.equal(204, st)
end

local function start_container(id)
  local st = support.docker():request("POST", "/containers/" .. id .. "/start")
  assert.are.equal(204, st)
end

describe("hooks.lua", function()
  it("refuses a bad hook or rule at load, naming it", function()
    local cases = {
      { { { url = "ftp://x/y" } }, "hook 1: url \"ftp://x/y\": only http:// and https://" },
      { { { url = "http://a/", filter = "yes" } }, "hook 1: filter must be a function, got a string" },
      { { { url = "http://a/", retries = 3 } }, "hook 1: unknown field \"retries\"" },
      { { { url = "http://a/", format = "slack" } }, "format must be \"json\" or \"alertmanager\"" },
      { { { url = "https:///path" } }, "has no host" },
      { { { url = "http://a/", name = "x" }, { url = "http://b/", name = "x" } }, "hook 2: name \"x\" is hook 1's too" },
      { { alerts = { { name = "A" } } }, "alerts[1]: no condition" },
      { { alerts = { { name = "A", cpu_above = 9, memory_above = 9 } } }, "one condition per rule" },
      { { hooks = {} }, "unknown key \"hooks\"" },
    }
    for _, c in ipairs(cases) do
      local ok, err = pcall(check.check, c[1])
      assert.is_false(ok)
      assert.truthy(tostring(err):find(c[2], 1, true), tostring(err))
    end
    local t = check.check({ { url = "https://u:p@h.example:8443/x?token=t" } })
    assert.are.equal("https://h.example:8443/x", t.hooks[1].public_url)
    assert.are.equal(5, t.hooks[1].timeout)
  end)

  it("a server does not start on a bad hooks.lua, and a reload keeps the running one", function()
    local bad = http.scripts_dir({ ["hooks.lua"] = 'return { { url = "gopher://x" } }' })
    local log = os.tmpname()
    local r = proc.run({ http.bin, "serve", "--listen", "127.0.0.1:0",
      "--scripts", bad, "--state-dir", tmpdir() }, { timeout = 20 })
    assert.are_not.equal(0, r.status)
    assert.truthy((r.stderr .. r.stdout):find("hooks.lua: hook 1: url", 1, true), r.stderr)
    local dir = http.scripts_dir({ ["hooks.lua"] = "return {}" })
    local srv = start_server(dir, tmpdir())
    finally(function() srv:stop() end)
    local f = assert(io.open(dir .. "/hooks.lua", "w"))
    f:write('return { { url = "http://a/", filter = 1 } }')
    f:close()
    srv:signal("HUP")
    wait_until("the refused reload", 10, function()
      return srv:logtext():find("reload failed", 1, true)
    end)
    assert.truthy(srv:logtext():find("filter must be a function", 1, true))
    assert.are.equal(200, assert(http.get(srv.url .. "/api/hooks")).status)
    os.remove(log)
  end)
end)

describe("horcrux.hooks.bounded", function()
  local hooks = require "horcrux.hooks"

  it("returns what the function returns, or false and its error", function()
    assert.are.same({ true, 3, "x" }, { hooks.bounded(1000, function(a, b)
      return a + b, "x"
    end, 1, 2) })
    local ok, msg = hooks.bounded(1000, function() error("boom") end)
    assert.is_false(ok)
    assert.matches("boom$", msg)
    ok, msg = hooks.bounded(1000, function() error({}) end)
    assert.are.same({ false, "(error object is a table value)" }, { ok, msg })
    ok, msg = hooks.bounded(1000, coroutine.yield)
    assert.is_false(ok)
    assert.matches("yield", msg)
    assert.has_error(function() hooks.bounded(0, print) end)
  end)

  it("stops a loop after the budget, even one that catches the error", function()
    local ok, msg = hooks.bounded(100000, function()
      while true do end
    end)
    assert.is_false(ok)
    assert.matches("instruction budget exceeded", msg)
    local tries = 0
    ok, msg = hooks.bounded(100000, function()
      for _ = 1, 1000 do
        tries = tries + 1
        pcall(function() while true do end end)
      end
      return "escaped"
    end)
    assert.is_false(ok)
    assert.matches("instruction budget exceeded", msg)
    assert.are.equal(1, tries) -- the loop around pcall stops at once
    -- within the budget: the same work runs to its end
    assert.are.same({ true, 5000050000 }, { hooks.bounded(10000000, function()
      local n = 0
      for i = 1, 100000 do n = n + i end
      return n
    end) })
  end)
end)

describe("the queue on disk", function()
  it("keeps what is not acked across a reopen, with the same ids, and drops the oldest when full", function()
    local dir = tmpdir() .. "/q"
    local q = assert(hooks.open(dir, 64 * 1024))
    local ids = {}
    for i = 1, 5 do
      ids[i] = assert(q:append("body " .. i))
    end
    assert(q:sync())
    local b, id, seq = q:head()
    assert.are.equal("body 1", b)
    assert(q:ack(seq))
    q:close()
    local mode = proc.run({ "stat", "-c", "%a", dir }).stdout
    assert.are.equal("700\n", mode)
    -- a torn record at the end (a crash mid-write) is cut, the rest kept
    local f = assert(io.open(dir .. "/queue", "ab"))
    f:write("HXQ1\1\0\0\0\0\0\0\0\255")
    f:close()
    local q2, _, _, cut = hooks.open(dir, 64 * 1024)
    assert.are.equal(13, cut)
    assert.are.equal(4, (q2:pending()))
    b, id = q2:head()
    assert.are.equal("body 2", b)
    assert.are.equal(ids[2], id)
    -- a second opener (another horcrux on the same --state-dir) is refused
    local no, err = hooks.open(dir, 64 * 1024)
    assert.is_nil(no)
    assert.truthy(err:find("in use", 1, true))
    -- full: the oldest go, counted
    local dropped = 0
    for _ = 1, 100 do
      local _, d = assert(q2:append(("x"):rep(1000)))
      dropped = dropped + d
    end
    local n, bytes = q2:pending()
    assert.truthy(bytes <= 64 * 1024)
    assert.are.equal(104 - dropped, n)
    assert.truthy(dropped >= 40)
    q2:close()
  end)
end)

describe("horcrux.alerts across a restart", function()
  local alerts = require "horcrux.alerts"
  local time = require "horcrux.time"
  local ID = ("c"):rep(64)
  local function view(cpu)
    return { metas = function() return { { full_id = ID, name = "web" } } end,
      all = function() return { { id = ID, name = "web",
        cpu_usage_percent = cpu } } end }
  end

  it("goes on with the same alerts, holds one while its figure is unknown, resolves one whose rule is gone", function()
    local rules = alerts.check({ { name = "Busy", cpu_above = 50 },
      { name = "Died", exit_nonzero = true } })
    local st = alerts.new(rules)
    local t0 = 1796041276000000000
    local fired = alerts.evaluate(st, view(80), t0)
    assert.are.equal(1, #fired)
    local died = alerts.observe(st, { id = ID, action = "die", time_ns = t0 + 5,
      attrs = { exitCode = "3" } }, t0 + 900)
    assert.are.equal(time.format(t0 + 5), died[1].starts_at)
    local text = alerts.dump(st)
    -- the same rules: both go on, nothing sent again
    local st2 = alerts.new(rules)
    assert.are.same({}, alerts.restore(st2, text, t0 + 1e9))
    assert.are.same(alerts.active(st), alerts.active(st2))
    assert.are.same({}, alerts.evaluate(st2, view(json.null), t0 + 2e9))
    assert.are.same({}, alerts.evaluate(st2, view(90), t0 + 3e9))
    local ended = alerts.evaluate(st2, view(10), t0 + 4e9)
    assert.are.equal(1, #ended)
    assert.are.equal("resolved", ended[1].status)
    assert.are.equal(fired[1].starts_at, ended[1].starts_at)
    assert.are.equal(fired[1].fingerprint, ended[1].fingerprint)
    -- it expires resolve_after after the die, not when it is seen
    local late = alerts.evaluate(st2, view(10), t0 + 400e9)
    assert.are.equal(time.format(t0 + 5 + 300 * 1000000000), late[1].ends_at)
    -- Died's rule gone from hooks.lua: resolved at once
    local st3 = alerts.new(alerts.check({ { name = "Busy", cpu_above = 50 } }))
    local gone = alerts.restore(st3, text, t0 + 1e9)
    assert.are.equal(1, #gone)
    assert.are.equal("Died", gone[1].alert)
    assert.are.equal(time.format(t0 + 1e9), gone[1].ends_at)
    assert.are.equal(1, #alerts.active(st3))
    assert.is_nil(alerts.restore(alerts.new(rules), "HXM1 5\n", t0))
  end)
end)

describe("the events mark", function()
  it("is saved whole and read back; none is false, a damaged one an io failure", function()
    local dir = tmpdir()
    assert.is_false(hooks.mark_load(dir))
    assert.is_true(hooks.mark_save(dir, 1764547200123456789))
    assert.are.equal(1764547200123456789, hooks.mark_load(dir))
    assert.are.equal("HXM1 1764547200123456789\n",
      http.read_file(dir .. "/events.mark"))
    assert.is_true(hooks.mark_save(dir, 5))
    assert.are.equal(5, hooks.mark_load(dir))
    -- the new one replaced the old by a rename: no file left beside it
    assert.is_nil(io.open(dir .. "/events.mark.new"))
    for _, bad in ipairs({ "HXM1 12", "HXM1 \n", "HXM1 -5\n", "HXM2 5\n",
      "HXM1 5x\n", "HXM1 99999999999999999999\n", "" }) do
      local f = assert(io.open(dir .. "/events.mark", "wb"))
      f:write(bad)
      f:close()
      local v, msg, kind = hooks.mark_load(dir)
      assert.is_nil(v, bad)
      assert.are.equal("io", kind)
      assert.truthy(msg:find("events.mark", 1, true), msg)
    end
    local ok, msg, kind = hooks.mark_save(dir .. "/no/such/dir", 5)
    assert.is_nil(ok)
    assert.are.equal("io", kind)
    assert.truthy(msg:find("No such file", 1, true), msg)
  end)
end)

describe("the queue on disk, a receiver that never answers", function()
  -- Nothing is acked, so the records dropped for room were never
  -- compacted away: an audit's file grew to 3.4 MB with queue_max 64 KiB.
  it("stays under 2 x queue_max + 1 MiB while the bound drops the oldest",
    function()
      local dir = tmpdir() .. "/q"
      local q = assert(hooks.open(dir, 64 * 1024))
      local body = ("x"):rep(1000)
      assert(q:append(body))
      local _, _, seq = q:head() -- its POST hangs
      local largest, dropped = 0, 0
      for _ = 1, 4000 do
        local _, d = assert(q:append(body))
        dropped = dropped + d
        largest = math.max(largest, select(3, q:pending()))
      end
      assert(q:sync())
      assert.truthy(dropped > 3800, dropped)
      assert.truthy(largest <= 2 * 64 * 1024 + 1024 * 1024, largest)
      local n, bytes, file = q:pending()
      assert.truthy(bytes <= 64 * 1024 and file <= largest)
      assert.is_true(q:ack(seq)) -- the hung POST ends after all
      q:close()
      -- what stayed is whole: the same records after a reopen
      local q2, _, _, cut = hooks.open(dir, 64 * 1024)
      assert.are.same({ 0, n }, { cut, (q2:pending()) })
      assert.are.equal(body, (q2:head()))
      q2:close()
    end)
end)

describe("the queue on disk, a delivery in flight", function()
  it("acks a record the bound dropped meanwhile as nothing to do, and keeps the rest", function()
    local dir = tmpdir() .. "/q"
    local q = assert(hooks.open(dir, 4096))
    assert(q:append(("a"):rep(1000)))
    assert(q:sync())
    local _, _, seq = q:head() -- its POST runs while more come
    for _ = 1, 6 do
      assert(q:append(("b"):rep(1000)))
    end
    assert(q:sync())
    local _, _, now_head = q:head()
    assert.truthy(now_head > seq, "the head was dropped")
    local pending = q:pending()
    assert.is_true(q:ack(seq)) -- the POST ended with a 2xx
    assert.are.equal(pending, (q:pending()))
    q:close()
    -- an ack below the last one would have read as damage: the file cut
    -- there, and every later delivery gone
    local q2, _, _, cut = hooks.open(dir, 4096)
    assert.are.equal(0, cut)
    assert.are.equal(pending, (q2:pending()))
    -- nor is an ack past the last record written
    local no, msg = q2:ack(now_head + 1000)
    assert.is_nil(no)
    assert.truthy(msg:find("ack", 1, true), msg)
    q2:close()
  end)
end)

describe("tests/hook_receiver.lua", function()
  it("raises for a receiver that cannot hold its port, never takes it for one that listens", function()
    local a, holder = receiver.start(), nil
    finally(function()
      if holder then
        holder:kill("KILL")
        holder:wait(5)
      end
      a:stop()
    end)
    -- a client socket holds its local port against a bind, as the
    -- thousands of loopback connections in TIME_WAIT of a whole suite do
    local out = os.tmpname()
    holder = assert(proc.spawn({ "python3", "-c", [[
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
print(s.getsockname()[1], flush=True)
time.sleep(30)
]], tostring(a.port) }, { stdout = out }))
    local port = wait_until("the client's port", 10, function()
      return tonumber(http.read_file(out):match("^(%d+)\n"))
    end)
    local ok, err = pcall(receiver.start, { port = port })
    assert.is_false(ok)
    err = tostring(err)
    assert.truthy(err:find("never held its port", 1, true), err)
    assert.truthy(err:find("cannot listen on 127.0.0.1:" .. port, 1, true), err)
  end)

  it("refuses connections while down, holding its port, and takes them once up", function()
    local r = receiver.start({ down = true })
    finally(function() r:stop() end)
    local url = ("http://127.0.0.1:%d/x"):format(r.port)
    local res = hooks.post({ { url = url, body = "{}", timeout = 5 } })[1]
    assert.is_nil(res.status)
    assert.truthy(res.error:find("onnect", 1, true), res.error)
    r:up()
    res = hooks.post({ { url = url, body = "{}", timeout = 5 } })[1]
    assert.are.equal(200, res.status, res.error)
    assert.are.equal(1, #received(r.log))
  end)
end)

describe("webhooks against the engine", function()
  local cleanup = {}
  after_each(function()
    for i = #cleanup, 1, -1 do
      pcall(cleanup[i])
    end
    cleanup = {}
  end)

  local function run_container(run, cmd)
    local id = support.run_container({ name = "hooks", labels = { ["hx.run"] = run },
      cmd = cmd })
    cleanup[#cleanup + 1] = function() support.remove(id) end
    return id
  end

  it("delivers a container's events, signed, in order, with the url's credentials hidden", function()
    local run = support.unique_name("sig")
    local rcv = receiver.start({ secret = SECRET })
    cleanup[#cleanup + 1] = function() rcv:stop() end
    local port, log = rcv.port, rcv.log
    -- a second hook whose filter never returns, even catching its error:
    -- stopped by the budget at each event, while the first one delivers
    local runaway = [[
  { url = "http://127.0.0.1:9/never", name = "runaway",
    filter = function()
      while true do pcall(function() while true do end end) end
    end },
]]
    local dir = http.scripts_dir({ ["hooks.lua"] = hooks_lua(
      ("http://user:pw@127.0.0.1:%d/in?token=t"):format(port), run, runaway) })
    local srv = start_server(dir, tmpdir())
    cleanup[#cleanup + 1] = function() srv:stop() end
    local id = run_container(run)
    stop_container(id)
    support.remove(id)
    local ok, got = pcall(wait_until, "create .. destroy", 15, function()
      local evs = events_of(received(log), id)
      return #evs > 0 and evs[#evs].json.action == "destroy" and evs
    end)
    assert(ok, table.concat(actions(events_of(received(log), id)), " ") .. "\n"
      .. srv:logtext())
    local acts = table.concat(actions(got), " ")
    assert.truthy(acts:match("^create start .*die stop destroy$"), acts)
    local seen = {}
    for i, r in ipairs(got) do
      assert.is_true(r.verified, "signature of delivery " .. i)
      assert.are.equal("container", r.event)
      assert.are.equal("application/json", r.content_type)
      assert.matches("^%x+%-%x+%-4%x+%-%x+%-%x+$", r.delivery)
      assert.is_nil(seen[r.delivery])
      seen[r.delivery] = true
      assert.are.equal("/in?token=t", r.path)
      if i > 1 then
        assert.truthy(r.json.time_ns >= got[i - 1].json.time_ns)
      end
    end
    -- the receiver logs a delivery before it answers: the status follows
    local h = wait_until("the status of every delivery", 10, function()
      local s = hook_status(srv)
      return s.pending == 0 and s.delivered >= #got and s
    end)
    assert.are.equal(("http://127.0.0.1:%d/in"):format(port), h.url)
    assert.is_true(h.signed)
    local r = hook_status(srv, 2)
    assert.are.equal("runaway", r.name)
    assert.is_true(r.errors >= #got, r.errors)
    assert.truthy(r.last_error:find("instruction budget exceeded", 1, true),
      r.last_error)
    assert.are.equal(0, r.delivered)
  end)

  it("holds what a receiver that is down misses, and delivers every event in order when it is back", function()
    local run = support.unique_name("down")
    -- its port held, refusing connections, until it comes up
    local rcv = receiver.start({ secret = SECRET, down = true })
    cleanup[#cleanup + 1] = function() rcv:stop() end
    local port, log = rcv.port, rcv.log
    local dir = http.scripts_dir({ ["hooks.lua"] = hooks_lua(
      ("http://127.0.0.1:%d/in"):format(port), run) })
    local srv = start_server(dir, tmpdir())
    cleanup[#cleanup + 1] = function() srv:stop() end
    local t0 = clock.mono_ns()
    local id = run_container(run)
    for _ = 1, 3 do -- about 10 s of events with nobody listening
      clock.sleep(1)
      stop_container(id)
      start_container(id)
    end
    local h = wait_until("the pending deliveries", 10, function()
      local s = hook_status(srv)
      return s.pending >= 10 and s
    end)
    assert.truthy(h.failed > 0)
    assert.truthy(h.last_error:find("onnect", 1, true), h.last_error)
    while clock.mono_ns() - t0 < 10e9 do
      clock.sleep(0.2)
    end
    rcv:up()
    local up = clock.mono_ns()
    -- every event: nothing pending can come before the collector fed the
    -- last start (a loaded machine: the loop above took 21 s once)
    local got = wait_until("every delivery", 20, function()
      local evs = events_of(received(log), id)
      return hook_status(srv).pending == 0 and count(evs, "start") >= 4
        and count(evs, "stop") >= 3 and evs
    end)
    local late = (clock.mono_ns() - up) / 1e9
    assert.are.equal(4, count(got, "start"))
    assert.are.equal(3, count(got, "die"))
    assert.are.equal(3, count(got, "stop"))
    assert.are.equal(1, count(got, "create"))
    signed_once_in_order(got)
    print(("\n  receiver down %.1f s: %d events held, all delivered %.1f s after it came back (%d failed attempts)")
      :format((up - t0) / 1e9, #got, late, hook_status(srv).failed))
  end)

  it("delivers after a kill -9 what was pending, duplicates only with the same delivery id", function()
    local run = support.unique_name("kill")
    local rcv = receiver.start({ secret = SECRET, down = true })
    cleanup[#cleanup + 1] = function() rcv:stop() end
    local port, log = rcv.port, rcv.log
    local state = tmpdir()
    local dir = http.scripts_dir({ ["hooks.lua"] = hooks_lua(
      ("http://127.0.0.1:%d/in"):format(port), run) })
    local srv = start_server(dir, state)
    cleanup[#cleanup + 1] = function() srv:stop() end
    local id = run_container(run)
    stop_container(id)
    start_container(id)
    stop_container(id)
    -- every event of the engine read (a round or two after the last
    -- stop) and queued: the pending count holds still for 1.5 s
    local last, since = -1, clock.mono_ns()
    local before = wait_until("the pending deliveries", 15, function()
      local n = hook_status(srv).pending
      if n ~= last then
        last, since = n, clock.mono_ns()
      end
      return n >= 8 and clock.mono_ns() - since > 1.5e9 and n
    end)
    srv.proc:kill("KILL")
    srv.proc:wait(5)
    srv.stopped = true
    rcv:up()
    local srv2 = start_server(dir, state)
    cleanup[#cleanup + 1] = function() srv2:stop() end
    local got = wait_until("every delivery", 20, function()
      return hook_status(srv2).pending == 0 and events_of(received(log), id)
    end)
    assert.truthy(#got >= before, #got .. " received, " .. before .. " pending")
    local distinct, seen = {}, {}
    for _, r in ipairs(got) do
      local key = r.json.action .. "@" .. r.json.time_ns
      if not seen[key] then
        seen[key] = true
        distinct[#distinct + 1] = r
      end
    end
    assert.are.equal(1, count(distinct, "create"))
    assert.are.equal(2, count(distinct, "start"))
    assert.are.equal(2, count(distinct, "die"))
    assert.are.equal(2, count(distinct, "stop"))
    -- the same event always comes with the same delivery id
    local by_event, by_id = {}, {}
    for _, r in ipairs(got) do
      local key = r.json.action .. "@" .. r.json.time_ns
      by_event[key] = by_event[key] or r.delivery
      assert.are.equal(by_event[key], r.delivery, "one id per event")
      by_id[r.delivery] = by_id[r.delivery] or r.body
      assert.are.equal(by_id[r.delivery], r.body, "one body per id")
    end
    assert.truthy(srv2:logtext():find("deliveries pending from before", 1, true))
  end)

  -- A kill -9 of horcrux, then a container stopped, started and stopped,
  -- then horcrux started again with --interval `interval` (0: no collector,
  -- so the replay does not wait for its first list).
  local function replay_after_kill(interval)
    local run = support.unique_name("gone")
    local rcv = receiver.start({ secret = SECRET })
    cleanup[#cleanup + 1] = function() rcv:stop() end
    local log = rcv.log
    local state = tmpdir()
    local dir = http.scripts_dir({ ["hooks.lua"] = hooks_lua(
      ("http://127.0.0.1:%d/in"):format(rcv.port), run) })
    local srv = start_server(dir, state)
    cleanup[#cleanup + 1] = function() srv:stop() end
    local id = run_container(run)
    -- its create and start delivered: the mark is past them (it is saved
    -- in the turn that queued them, before any POST)
    wait_until("the create and the start", 15, function()
      return count(events_of(received(log), id), "start") == 1
        and hook_status(srv).pending == 0
    end)
    assert.truthy(http.read_file(state .. "/hooks/events.mark")
      :match("^HXM1 %d+\n$"))
    srv.proc:kill("KILL")
    srv.proc:wait(5)
    srv.stopped = true
    -- what the engine does while horcrux is down
    stop_container(id)
    start_container(id)
    stop_container(id)
    local srv2 = start_server(dir, state, interval)
    cleanup[#cleanup + 1] = function() srv2:stop() end
    local got = wait_until("the events of while it was down", 20, function()
      local evs = events_of(received(log), id)
      return count(evs, "stop") >= 2 and hook_status(srv2).pending == 0 and evs
    end)
    -- a moment more: a duplicate (the collector's feed of the same events)
    -- would come now
    clock.sleep(1.5)
    got = events_of(received(log), id)
    local acts = table.concat(actions(got), " ")
    assert.are.equal(1, count(got, "create"), acts)
    assert.are.equal(2, count(got, "start"), acts)
    assert.are.equal(2, count(got, "die"), acts)
    assert.are.equal(2, count(got, "stop"), acts)
    signed_once_in_order(got)
    local text = srv2:logtext()
    assert.truthy(text:find("(while horcrux was down) replayed", 1, true), text)
    print(("\n  after a kill -9 (--interval %s): %s"):format(interval, acts))
  end

  it("replays after a restart the events that happened while it was down, each once", function()
    replay_after_kill("0.5")
  end)

  it("replays them at once when no collector runs (--interval 0)", function()
    replay_after_kill("0")
  end)

  -- The collector feeds the hooks thread the events from its first list
  -- on, and drops what it feeds before that thread attached (a CI run on a
  -- loaded machine lost a create made just after the server answered). A
  -- first start now replays the engine's events since serve began, once
  -- the feed is on: made at once, the create comes, and only once (the
  -- feed's copy is taken for the replay's).
  it("delivers, at the first start, every event since it started, once", function()
    local run = support.unique_name("first")
    local rcv = receiver.start({ secret = SECRET })
    cleanup[#cleanup + 1] = function() rcv:stop() end
    local dir = http.scripts_dir({ ["hooks.lua"] = hooks_lua(
      ("http://127.0.0.1:%d/in"):format(rcv.port), run) })
    local srv = start_server(dir, tmpdir())
    cleanup[#cleanup + 1] = function() srv:stop() end
    local id = run_container(run)
    local got = wait_until("its create and start", 20, function()
      local evs = events_of(received(rcv.log), id)
      return count(evs, "start") == 1 and hook_status(srv).pending == 0 and evs
    end)
    clock.sleep(1) -- a duplicate would come now
    got = events_of(received(rcv.log), id)
    local acts = table.concat(actions(got), " ")
    assert.are.equal(1, count(got, "create"), acts)
    assert.are.equal(1, count(got, "start"), acts)
    local text = srv:logtext()
    assert.truthy(text:find("(when horcrux started) replayed", 1, true), text)
  end)

  it("goes on delivering to the other hooks and firing alerts while one receiver hangs", function()
    local run = support.unique_name("hang")
    local live = receiver.start({ secret = SECRET })
    cleanup[#cleanup + 1] = function() live:stop() end
    local hang = receiver.start()
    cleanup[#cleanup + 1] = function()
      hang.proc:kill("CONT")
      hang:stop()
    end
    -- it takes connections (the kernel's backlog) and never answers
    assert(hang.proc:kill("STOP"))
    local extra = ([[
  { url = "http://127.0.0.1:%d/hang", name = "hang", timeout = 30,
    filter = function(ev)
      return ev.type == "alert" or (ev.attributes or {})["hx.run"] == %q
    end },
  alerts = { { name = "Died", exit_nonzero = true, label = "hx.run=%s" } },
]]):format(hang.port, run, run)
    local dir = http.scripts_dir({ ["hooks.lua"] = hooks_lua(
      ("http://127.0.0.1:%d/in"):format(live.port), run, extra) })
    local srv = start_server(dir, tmpdir())
    cleanup[#cleanup + 1] = function() srv:stop() end
    local t0 = clock.mono_ns()
    local id = run_container(run, { "sh", "-c", "sleep 1; exit 3" })
    -- within 10 s, while the hanging POST has 30 s: it held every hook and
    -- the alert rules until its timeout once
    local ok, err = pcall(wait_until, "create, start, die and Died at the other receiver", 10,
      function()
        local list = received(live.log)
        local acts = table.concat(actions(events_of(list, id)), " ")
        for _, r in ipairs(list) do
          if r.json.type == "alert" and r.json.alert == "Died"
              and acts:match("^create start .*die") then
            return true
          end
        end
      end)
    assert(ok, tostring(err) .. "\n" .. table.concat(actions(events_of(
      received(live.log), id)), " ") .. "\n/api/hooks: "
      .. tostring(assert(http.get(srv.url .. "/api/hooks")).body))
    local h = hook_status(srv, 2)
    assert.are.equal("hang", h.name)
    assert.are.equal(0, h.failed, "its first POST still runs")
    assert.truthy(h.pending >= 4, h.pending)
    local alerts = assert(http.get(srv.url .. "/api/alerts")).json
    assert.are.equal(1, #alerts)
    assert.are.equal("Died", alerts[1].alert)
    print(("\n  one receiver hanging: the other got create .. die and the alert %.1f s after the container's start")
      :format((clock.mono_ns() - t0) / 1e9))
  end)

  it("fires an alert on a busy container and resolves it, also in Alertmanager's shape", function()
    local run = support.unique_name("alert")
    local rcv = receiver.start({ secret = SECRET })
    cleanup[#cleanup + 1] = function() rcv:stop() end
    local port, log = rcv.port, rcv.log
    -- above 1 %, not 10: all containers share the one weight of the
    -- /docker cgroup (cpu.shares 1024) against each task of the host, so on
    -- a loaded 2-core machine a busy loop gets 4 to 15 % of a core (4.6 %
    -- beside a whole suite's load); at 10 it was seldom above for a second
    local extra = ([[
  { url = "http://127.0.0.1:%d/am", format = "alertmanager", receiver = "spec",
    external_url = "http://horcrux.example:8080", retry_min = 0.2 },
  alerts = {
    { name = "Busy", cpu_above = 1, for_s = 1, label = "hx.run=%s",
      severity = "critical", labels = { team = "ops" } },
    { name = "Died", exit_nonzero = true, label = "hx.run=%s" },
  },
]]):format(port, run, run)
    local dir = http.scripts_dir({ ["hooks.lua"] = hooks_lua(
      ("http://127.0.0.1:%d/in"):format(port), run, extra) })
    local srv = start_server(dir, tmpdir())
    cleanup[#cleanup + 1] = function() srv:stop() end
    local id = run_container(run, support.BUSY)
    local function am(status, name)
      for _, r in ipairs(received(log)) do
        if r.path == "/am" and r.json.status == status
            and r.json.groupLabels.alertname == name then
          return r
        end
      end
    end
    local ok, fired = pcall(wait_until, "Busy firing", 20, function()
      return am("firing", "Busy")
    end)
    if not ok then -- what the server held of the alert and the container
      local function body(path)
        local r = http.get(srv.url .. path)
        return r and r.body or "?"
      end
      error(tostring(fired) .. "\n/api/alerts: " .. body("/api/alerts")
        .. "\n/api/hooks: " .. body("/api/hooks") .. "\nstats: "
        .. body("/api/containers/" .. id .. "/stats"))
    end
    local active = assert(http.get(srv.url .. "/api/alerts")).json
    assert.are.equal(1, #active)
    assert.are.equal("Busy", active[1].alert)
    assert.are.equal(id, active[1].id)
    assert.truthy(active[1].value > 1)
    support.docker():request("POST", "/containers/" .. id .. "/kill")
    local resolved = wait_until("Busy resolved", 15, function() return am("resolved", "Busy") end)
    local died = wait_until("Died firing", 15, function() return am("firing", "Died") end)
    -- Alertmanager's webhook body, version 4
    local b = fired.json
    assert.are.equal("4", b.version)
    assert.are.equal("spec", b.receiver)
    assert.are.equal("firing", b.status)
    assert.are.equal("http://horcrux.example:8080", b.externalURL)
    assert.are.equal('{}:{alertname="Busy"}', b.groupKey)
    assert.are.equal(0, b.truncatedAlerts)
    assert.are.same({ alertname = "Busy" }, b.groupLabels)
    assert.are.equal("ops", b.commonLabels.team)
    assert.are.equal(1, #b.alerts)
    local a = b.alerts[1]
    assert.are.equal("firing", a.status)
    assert.are.same(b.commonLabels, a.labels)
    assert.are.equal("critical", a.labels.severity)
    assert.are.equal(id:sub(1, 12), a.labels.container_id)
    assert.truthy(a.annotations.summary:find("CPU", 1, true))
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d", a.startsAt)
    assert.are.equal("0001-01-01T00:00:00Z", a.endsAt)
    assert.are.equal("http://horcrux.example:8080/api/alerts", a.generatorURL)
    local ra = resolved.json.alerts[1]
    assert.are.equal("resolved", ra.status)
    assert.are.equal(a.fingerprint, ra.fingerprint)
    assert.are.equal(a.startsAt, ra.startsAt)
    assert.are_not.equal("0001-01-01T00:00:00Z", ra.endsAt)
    assert.are.equal("137", tostring(died.json.alerts[1].annotations.summary:match("(%d+)$")))
    -- the json hook got the alerts too, signed, as X-Horcrux-Event: alert
    -- (each hook delivers at its own pace: it has the container's events
    -- too, so it may come after the other)
    local plain = wait_until("the three alerts at /in", 10, function()
      local n = {}
      for _, r in ipairs(received(log)) do
        if r.path == "/in" and r.json.type == "alert" then
          n[#n + 1] = r
        end
      end
      return #n >= 3 and n
    end)
    for _, r in ipairs(plain) do
      assert.are.equal("alert", r.event)
      assert.is_true(r.verified)
    end
  end)

  -- The alerts the receiver got, in arrival order, at /in (the json hook).
  local function alerts_of(log, name)
    local out = {}
    for _, r in ipairs(received(log)) do
      if r.path == "/in" and r.json.type == "alert" and r.json.alert == name then
        out[#out + 1] = r.json
      end
    end
    return out
  end

  -- The container event `action` of id that the receiver got last.
  local function event_of(log, id, action)
    local evs = events_of(received(log), id)
    for i = #evs, 1, -1 do
      if evs[i].json.action == action then
        return evs[i].json
      end
    end
  end

  it("starts an event rule's alert at the die and ends it at the start, the engine's times", function()
    local run = support.unique_name("times")
    local rcv = receiver.start({ secret = SECRET })
    cleanup[#cleanup + 1] = function() rcv:stop() end
    local extra = ([[
  alerts = { { name = "Died", exit_nonzero = true, label = "hx.run=%s" } },
]]):format(run)
    local dir = http.scripts_dir({ ["hooks.lua"] = hooks_lua(
      ("http://127.0.0.1:%d/in"):format(rcv.port), run, extra) })
    local srv = start_server(dir, tmpdir())
    cleanup[#cleanup + 1] = function() srv:stop() end
    local id = run_container(run, { "sleep", "1000" })
    -- killed (137) and started again at once: both within one round
    assert.are.equal(204, support.docker():request("POST", "/containers/"
      .. id .. "/restart", { t = 0 }))
    local got = wait_until("Died firing and resolved", 15, function()
      local list = alerts_of(rcv.log, "Died")
      return #list >= 2 and event_of(rcv.log, id, "start") and list
    end)
    local die = assert(event_of(rcv.log, id, "die"))
    local start = event_of(rcv.log, id, "start")
    assert.are.equal(137, die.exit_code)
    assert.are.equal("firing", got[1].status)
    assert.are.equal("resolved", got[2].status)
    assert.are.equal(die.time, got[1].starts_at)
    assert.are.equal(got[1].starts_at, got[2].starts_at)
    assert.are.equal(start.time, got[2].ends_at)
    assert.are.equal(got[1].fingerprint, got[2].fingerprint)
  end)

  it("keeps a firing alert across a restart and a kill -9, and resolves it after", function()
    local run = support.unique_name("keep")
    local rcv = receiver.start({ secret = SECRET })
    cleanup[#cleanup + 1] = function() rcv:stop() end
    local state = tmpdir()
    local extra = ([[
  alerts = { { name = "Died", exit_nonzero = true, label = "hx.run=%s" } },
]]):format(run)
    local dir = http.scripts_dir({ ["hooks.lua"] = hooks_lua(
      ("http://127.0.0.1:%d/in"):format(rcv.port), run, extra) })
    local srv = start_server(dir, state)
    cleanup[#cleanup + 1] = function() srv:stop() end
    -- exits 3 the first time; runs on once started again
    local id = run_container(run, { "sh", "-c",
      "if [ -e /ran ]; then exec sleep 1000; fi; touch /ran; exit 3" })
    local fired = wait_until("Died firing", 15, function()
      return alerts_of(rcv.log, "Died")[1]
    end)
    assert.are.equal("firing", fired.status)
    wait_until("its delivery settled", 10, function()
      return hook_status(srv).pending == 0
    end)
    assert.are.equal(0, srv:stop().status)
    local srv2 = start_server(dir, state)
    cleanup[#cleanup + 1] = function() srv2:stop() end
    -- the same alert, still firing: listed, not sent again
    local function listed(s)
      local list = assert(http.get(s.url .. "/api/alerts")).json
      return #list == 1 and list[1]
    end
    local a = wait_until("the alert listed after the restart", 10, function()
      return listed(srv2)
    end)
    assert.are.equal(fired.fingerprint, a.fingerprint)
    assert.are.equal(fired.starts_at, a.starts_at)
    clock.sleep(1.5) -- a firing sent again would come now
    assert.are.equal(1, #alerts_of(rcv.log, "Died"))
    -- a kill -9, then the container started while horcrux is down
    srv2.proc:kill("KILL")
    srv2.proc:wait(5)
    srv2.stopped = true
    start_container(id)
    local srv3 = start_server(dir, state)
    cleanup[#cleanup + 1] = function() srv3:stop() end
    local got = wait_until("Died resolved", 20, function()
      local list = alerts_of(rcv.log, "Died")
      return #list >= 2 and event_of(rcv.log, id, "start") and list
    end)
    assert.are.equal(2, #got)
    assert.are.equal("resolved", got[2].status)
    assert.are.equal(fired.fingerprint, got[2].fingerprint)
    assert.are.equal(fired.starts_at, got[2].starts_at)
    assert.are.equal(event_of(rcv.log, id, "start").time, got[2].ends_at)
    assert.are.equal(0, #assert(http.get(srv3.url .. "/api/alerts")).json)
  end)
end)
