-- Exec: a command in a running container through POST
-- /api/containers/:id/exec, against the real engine: its output and exit
-- code, a command that outlives its timeout killed and reported, bounded
-- output, and the refusals (read-only mode, the default policy: unlabelled
-- containers, privileged exec, other users). The terminal over WebSocket:
-- its input and output, its TTY's size (?rows=&cols=, xterm's window-size
-- sequence), its refusals.
local exec = require "horcrux.exec"
local json = require "horcrux.json"
local proc = require "horcrux.proc"
local ms = require "manage_support"
local support = require "support"

local PY = "/usr/bin/python3"

-- The socket descriptors process pid holds (every kind).
local function sockets(pid)
  local out = assert(proc.run({ "ls", "-l", "/proc/" .. pid .. "/fd" })).stdout
  local n = 0
  for _ in out:gmatch("socket:%[") do
    n = n + 1
  end
  return n
end

-- xterm's window-size sequence: ESC [ 8 ; ROWS ; COLS t
local function winsize(rows, cols)
  return ("\27[8;%d;%dt"):format(rows, cols)
end

local function urlencode(s)
  return (s:gsub("[^%w%-_.~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

local function frame(stream, payload)
  return string.pack(">BBBBI4", stream, 0, 0, 0, #payload) .. payload
end

describe("horcrux.exec", function()
  it("splits the daemon's frames byte for byte", function()
    local out, err = exec.frames(frame(1, "a\r\n") .. frame(2, "e") ..
      frame(1, "b") .. frame(2, "rr\n") .. frame(1, ""))
    assert.are.equal("a\r\nb", out)
    assert.are.equal("err\n", err)
    out, err = exec.frames(frame(1, "ok") .. "garbage!")
    assert.are.same({ "ok", "" }, { out, err })
  end)

  local function info(over)
    local i = { Id = "abc", Name = "/c1", State = { Status = "running" },
      Config = { User = "", Labels = { ["horcrux.exec"] = "true" } },
      HostConfig = {} }
    for k, v in pairs(over or {}) do
      i[k] = v
    end
    return i
  end

  local function verdict(i, spec, policy)
    spec.timeout = spec.timeout or 10
    local ok, err, kind, field = exec.allowed(i, spec, policy or {}, {})
    return ok and "ok" or field, err, kind
  end

  it("follows the policy: label, privileged, users, timeout", function()
    assert.are.equal("ok", verdict(info(), {}))
    assert.are.equal("ok", verdict(info(), { user = "root" }))
    assert.are.equal("ok", verdict(info(), { user = "0:0" }))
    local f, err, kind = verdict(info({ Config = { Labels = {} } }), {})
    assert.are.same({ "container", "forbidden" }, { f, kind })
    assert.truthy(err:find("horcrux.exec=true", 1, true), err)
    assert.are.equal("privileged", verdict(info(), { privileged = true }))
    assert.are.equal("user", verdict(info(), { user = "nobody" }))
    assert.are.equal("ok", verdict(info(), { user = "nobody" },
      { exec = { users = { "nobody" } } }))
    assert.are.equal("container", verdict(info({ HostConfig = { Privileged = true } }), {}))
    assert.are.equal("container", verdict(info({ HostConfig = { PidMode = "host" } }), {}))
    assert.are.equal("timeout", verdict(info(), { timeout = 301 }))
    assert.are.equal("container", verdict(info(), {}, { exec = { containers = false } }))
    assert.are.equal("ok", verdict(info({ Config = { Labels = {} } }), {},
      { exec = { containers = true } }))
    assert.are.equal("container", verdict(info(), {},
      { exec = { containers = function(c) return c.name .. " is special" end } }))
  end)
end)

describe("exec against the real engine", function()
  local srv, ro, small, dir, id, plain

  local function run(server, ref, body, opts)
    return ms.call(server, "POST", "/api/containers/" .. ref .. "/exec", body, opts)
  end

  local function processes(ref)
    local top = assert(support.docker():call("GET", "/containers/{id}/top",
      { id = ref }))
    local out = {}
    for _, p in ipairs(top.Processes) do
      out[#out + 1] = p[#p]
    end
    return table.concat(out, "\n")
  end

  lazy_setup(function()
    id = support.run_container({ name = "exec",
      labels = { ["horcrux.exec"] = "true" } })
    plain = support.run_container({ name = "noexec" })
    srv = ms.start()
    ro = ms.start({ args = { "--read-only" } })
    dir = assert(proc.run({ "mktemp", "-d", "/tmp/hxtest-scripts.XXXXXX" }))
      .stdout:gsub("%s+$", "")
    local f = assert(io.open(dir .. "/policy.lua", "w"))
    f:write("return { exec = { max_output_bytes = 1000, max_timeout = 5 } }\n")
    f:close()
    small = ms.start({ scripts = dir })
  end)

  lazy_teardown(function()
    for _, s in ipairs({ srv, ro, small }) do s:stop() end
    support.remove(id)
    support.remove(plain)
    proc.run({ "rm", "-rf", dir })
  end)

  it("answers echo's output and sh's exit code 3", function()
    local r = run(srv, id, { cmd = { "echo", "hello", "world" } })
    assert.are.equal(200, r.status, r.body)
    assert.are.same({ 0, "hello world\n", "" },
      { r.json.exit_code, r.json.stdout, r.json.stderr })
    assert.is_false(r.json.timed_out)
    r = run(srv, id, { cmd = { "sh", "-c", "echo out; echo err >&2; exit 3" } })
    assert.are.equal(200, r.status, r.body)
    assert.are.same({ 3, "out\n", "err\n" },
      { r.json.exit_code, r.json.stdout, r.json.stderr })
    r = run(srv, id, { cmd = { "sh", "-c", "echo $A $B; pwd" },
      env = { A = "1", B = "two words" }, workdir = "/bin", user = "0" })
    assert.are.equal("1 two words\n/bin\n", r.json.stdout, r.body)
  end)

  it("answers bytes that are not UTF-8 as U+FFFD, or every byte with "
    .. "encoding base64", function()
      local cmd = { "sh", "-c", [[printf '\377\000x'; printf '\303' >&2]] }
      local r = run(srv, id, { cmd = cmd })
      assert.are.equal(200, r.status, r.body)
      assert.are.same({ "\u{FFFD}\0x", "\u{FFFD}" },
        { r.json.stdout, r.json.stderr })
      assert.is_nil(r.json.encoding)
      r = run(srv, id, { cmd = cmd, encoding = "base64" })
      assert.are.equal(200, r.status, r.body)
      -- "\255\0x" and "\195"
      assert.are.same({ "/wB4", "ww==", "base64" },
        { r.json.stdout, r.json.stderr, r.json.encoding })
      r = run(srv, id, { cmd = cmd, encoding = "latin1" })
      assert.are.equal(400, r.status, r.body)
      assert.are.same({ "encoding", 'encoding: must be "utf-8" (the '
        .. 'default) or "base64"' }, { r.json.error.field,
        r.json.error.message })
    end)

  it("kills a command that outlives its timeout, and the ones it started", function()
    local r = run(srv, id, { cmd = { "sh", "-c", "sleep 77; echo never" },
      timeout = 1 })
    assert.are.equal(200, r.status, r.body)
    assert.is_true(r.json.timed_out, r.body)
    assert.is_true(r.json.killed, r.body)
    assert.are.equal(137, r.json.exit_code, r.body)
    assert.is_true(r.json.duration >= 1 and r.json.duration < 10, r.body)
    assert.is_nil(processes(id):find("sleep 77", 1, true), processes(id))
    r = run(small, id, { cmd = { "true" }, timeout = 6 })
    assert.are.equal(403, r.status, r.body)
    assert.are.equal("timeout", r.json.error.field)
  end)

  it("bounds the output", function()
    local r = run(small, id, { cmd = { "sh", "-c", "yes | head -c 30000" } })
    assert.are.equal(200, r.status, r.body)
    assert.is_true(r.json.truncated, r.body)
    assert.are.equal(1000, #r.json.stdout)
    r = run(small, id, { cmd = { "sh", "-c", "yes | head -c 300000" } })
    assert.are.equal(502, r.status, r.body)
    assert.are.equal("limit", r.json.error.code)
  end)

  it("is refused in read-only mode, and the command never runs", function()
    local marker = "/hxtest-ro-" .. math.random(1e9)
    local r = run(ro, id, { cmd = { "touch", marker } })
    assert.are.equal(403, r.status, r.body)
    r = run(srv, id, { cmd = { "ls", marker } })
    assert.are.equal(1, r.json.exit_code, r.body)
    -- the same command where writes are allowed does leave the file
    r = run(srv, id, { cmd = { "sh", "-c", "touch " .. marker .. " && ls " .. marker } })
    assert.are.equal(0, r.json.exit_code, r.body)
  end)

  it("is refused by the default policy: privileged, other users, unlabelled", function()
    local r = run(srv, id, { cmd = { "id" }, privileged = true })
    assert.are.equal(403, r.status, r.body)
    assert.are.equal("privileged", r.json.error.field)
    r = run(srv, id, { cmd = { "id" }, user = "nobody" })
    assert.are.equal(403, r.status, r.body)
    assert.are.equal("user", r.json.error.field)
    r = run(srv, plain, { cmd = { "id" } })
    assert.are.equal(403, r.status, r.body)
    assert.are.equal("container", r.json.error.field)
  end)

  it("refuses bad bodies, stopped containers and unknown ones", function()
    for _, b in ipairs({ {}, { cmd = "echo hi" }, { cmd = json.array() },
      { cmd = { "x" }, timeout = 0 }, { cmd = { "x" }, tty = true },
      { cmd = { "x" }, workdir = "rel" } }) do
      local r = run(srv, id, b)
      assert.are.equal(400, r.status, json.encode(b) .. " " .. r.body)
    end
    assert.are.equal(404, run(srv, "hxtest-no-such-container", { cmd = { "x" } }).status)
    local stopped = support.run_container({ name = "stopped", start = false,
      labels = { ["horcrux.exec"] = "true" } })
    finally(function() support.remove(stopped) end)
    local r = run(srv, stopped, { cmd = { "true" } })
    assert.are.equal(409, r.status, r.body)
  end)

  -- ---- the terminal: GET /api/containers/:id/exec/ws (README "Exec") ----

  local function terminal(server, ref, query, mode, token, messages)
    local url = server.url:gsub("^http", "ws") .. "/api/containers/" .. ref
      .. "/exec/ws?" .. query
    local argv = { PY, "tests/exec_terminal.py", url,
      token == nil and ms.TOKEN or token, mode }
    table.move(messages or {}, 1, #(messages or {}), #argv + 1, argv)
    local r = assert(proc.run(argv, { timeout = 40 }))
    assert(r.status == 0, r.stderr)
    return r.stdout:match("^(.-)%s*$")
  end

  it("runs sh on a TTY over a WebSocket: input, output, exit code", function()
    local out = json.decode(terminal(srv, id, "cmd=sh", "echo"))
    assert.truthy(out.out:find("\r\nhi\r\n", 1, true), out.out)
    assert.are.same({ event = "exit", exit_code = 5 }, out.last)
    assert.are.equal(1000, out.close)
    -- a JSON argv
    out = json.decode(terminal(srv, id, "cmd=" .. ('["sh","-i"]'):gsub("[%[%]\",]",
      function(c) return ("%%%02X"):format(c:byte()) end), "echo"))
    assert.are.same({ event = "exit", exit_code = 5 }, out.last)
    -- the token in the offered protocols, as a browser's WebSocket sends it
    out = json.decode(terminal(srv, id, "cmd=sh", "echo", "proto:" .. ms.TOKEN))
    assert.are.same({ event = "exit", exit_code = 5 }, out.last)
    -- a wrong one: the route's own rule, as for a wrong header (401)
    assert.are.equal("401", terminal(srv, id, "cmd=sh", "status",
      "proto:" .. ms.TOKEN .. "-not"))
    assert.are.equal("401", terminal(srv, id, "cmd=sh", "status",
      ms.TOKEN .. "-not"))
  end)

  it("refuses a terminal in read-only mode, privileged, unlabelled, without the token", function()
    local before = #processes(id)
    assert.are.equal("403", terminal(ro, id, "cmd=sh", "status"))
    assert.are.equal("403", terminal(srv, id, "cmd=sh&privileged=1", "status"))
    assert.are.equal("403", terminal(srv, id, "cmd=sh&user=nobody", "status"))
    assert.are.equal("403", terminal(srv, plain, "cmd=sh", "status"))
    assert.are.equal("401", terminal(srv, id, "cmd=sh", "status", ""))
    assert.are.equal("400", terminal(srv, id, "cmd=", "status"))
    assert.are.equal(before, #processes(id))
    -- a plain GET is no terminal
    local r = ms.call(srv, "GET", "/api/containers/" .. id .. "/exec/ws?cmd=sh")
    assert.are.equal(400, r.status, r.body)
  end)

  it("gives the TTY a size: ?rows=&cols=, then xterm's window-size sequence", function()
    local out = json.decode(terminal(srv, id, "cmd=sh&rows=33&cols=101", "sizes",
      nil, { "stty", winsize(40, 120), "stty", "bin:" .. winsize(50, 132), "stty" }))
    assert.are.same({ "33 101", "40 120", "50 132" }, out.sizes)
    assert.are.same({ event = "exit", exit_code = 0 }, out.last)
    -- none asked: none set; then a burst, one call at a time, the latest wins
    local burst = { "stty" }
    for i = 1, 40 do
      burst[#burst + 1] = winsize(20 + i, 60 + i)
    end
    burst[#burst + 1] = "stty"
    out = json.decode(terminal(srv, id, "cmd=sh", "sizes", nil, burst))
    assert.are.same({ "stty: standard input", "60 100" }, out.sizes) -- 0 x 0
  end)

  it("takes a message that is not exactly the sequence as input, byte for byte", function()
    local messages = { "A" .. winsize(41, 121) .. "B\n", winsize(41, 121) .. "\n",
      "\27[8;0;80t\n", "\27[8;65536;80t\n", "\27[8;041;121t\n", "\27[8;41;121" }
    local cmd = json.encode({ "sh", "-c", "od -An -tx1 -v | tr -d ' \\n'; echo; stty size" })
    local out = json.decode(terminal(srv, id, "cmd=" .. urlencode(cmd)
      .. "&rows=33&cols=101", "input", nil, messages))
    local hex = table.concat(messages):gsub(".", function(c)
      return ("%02x"):format(c:byte())
    end)
    assert.truthy(out.out:find(hex, 1, true), out.out)
    assert.truthy(out.out:find("\r\n33 101\r\n", 1, true), out.out)
    assert.are.same({ event = "exit", exit_code = 0 }, out.last)
  end)

  it("refuses rows without cols, and sizes out of 1-65535", function()
    local before = #processes(id)
    for _, q in ipairs({ "rows=24", "cols=80", "rows=0&cols=80", "rows=24&cols=65536",
        "rows=24&cols=x" }) do
      assert.are.equal("400", terminal(srv, id, "cmd=sh&" .. q, "status"), q)
    end
    local r = ms.call(srv, "GET", "/api/containers/" .. id .. "/exec/ws?cmd=sh&rows=24",
      nil, { headers = { Upgrade = "websocket", Connection = "Upgrade",
        ["Sec-WebSocket-Key"] = "dGhlIHNhbXBsZSBub25jZQ==",
        ["Sec-WebSocket-Version"] = "13" } })
    assert.are.equal(400, r.status, r.body)
    local e = json.decode(r.body).error
    assert.are.equal("bad_request", e.code)
    assert.are.equal("cols", e.field, r.body)
    assert.are.equal(before, #processes(id))
  end)

  it("ends the exec's connection when the client goes, leaking no descriptor", function()
    local pid = srv.proc:pid()
    terminal(srv, id, "cmd=sh", "echo") -- the engine's idle connections made
    local before = sockets(pid)
    assert.are.equal("dropped", terminal(srv, id, "cmd=sh", "drop"))
    local after
    for _ = 1, 200 do -- 10 s: a round of the collector holds one too
      after = sockets(pid)
      if after <= before and not processes(id):find("^sh$") then
        break
      end
      require("horcrux.clock").sleep(0.05)
    end
    assert.is_true(after <= before, ("%d sockets before, %d after"):format(before, after))
    for line in processes(id):gmatch("[^\n]+") do
      assert.are_not.equal("sh", line, processes(id))
    end
  end)
end)
