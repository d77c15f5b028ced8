-- The commands beside serve, executed: `horcrux run` (arguments, exit
-- status, errors, text only), `horcrux ps` and `horcrux stats`, whose
-- tables are read back and compared with what the docker CLI prints for
-- the same containers at the same time.
local http = require "http"
local support = require "support"
local proc = require "horcrux.proc"
local cgroup = require "horcrux.cgroup"
local json = require "horcrux.json"

local ENV = { PATH = os.getenv("PATH") }

-- Runs the horcrux binary; returns {status, stdout, stderr}.
local function horcrux(...)
  return assert(proc.run({ http.bin, ... }, { timeout = 60, env = {
    PATH = os.getenv("PATH"),
    -- the sanitizer run's settings, as a server gets them
    ASAN_OPTIONS = os.getenv("ASAN_OPTIONS"), LSAN_OPTIONS = os.getenv("LSAN_OPTIONS"),
    UBSAN_OPTIONS = os.getenv("UBSAN_OPTIONS"),
  } }))
end

local function docker(...)
  local r = assert(proc.run({ "docker", ... }, { timeout = 60, env = ENV }))
  assert(r.status == 0, "docker " .. select(1, ...) .. ": " .. r.stderr)
  return r.stdout
end

-- The rows of a table printed under a header whose words start its
-- columns (docker's tabwriter layout, which `horcrux ps/stats` copy):
-- {[header] = cell} per row, cells trimmed.
local function read_table(text)
  local lines = {}
  for l in text:gmatch("[^\n]+") do
    lines[#lines + 1] = l
  end
  local function chars(s)
    local t = {}
    for _, c in utf8.codes(s) do
      t[#t + 1] = utf8.char(c)
    end
    return t
  end
  local head = chars(assert(lines[1], "no header"))
  local cols, i = {}, 1
  while i <= #head do
    if head[i] ~= " " then
      local j = i
      -- a column title may hold single spaces ("CONTAINER ID")
      while j <= #head and not (head[j] == " " and head[j + 1] == " ") do
        j = j + 1
      end
      cols[#cols + 1] = { start = i, name = table.concat(head, "", i, j - 1) }
      i = j
    else
      i = i + 1
    end
  end
  local rows = {}
  for n = 2, #lines do
    local c, row = chars(lines[n]), {}
    for k, col in ipairs(cols) do
      local stop = cols[k + 1] and cols[k + 1].start - 1 or #c
      row[col.name] = table.concat(c, "", col.start, math.min(stop, #c)):match("^%s*(.-)%s*$")
    end
    rows[#rows + 1] = row
  end
  return rows
end

-- "1.48MiB" -> bytes, and half a unit of the last digit printed (4
-- significant digits for sizes, 3 for network and block I/O).
local MULT = { B = 1, kB = 1e3, MB = 1e6, GB = 1e9, KiB = 1024, MiB = 1024 ^ 2,
  GiB = 1024 ^ 3, TiB = 1024 ^ 4 }
local function size(s, digits)
  local n, unit = s:match("^([%d.]+)(%a+)$")
  n = assert(tonumber(n), s)
  local step = n == 0 and 0 or 10 ^ (math.floor(math.log(n, 10)) - (digits - 1))
  return n * assert(MULT[unit], unit), unit == "B" and 0 or step / 2 * MULT[unit]
end

-- a (horcrux's figure) between b1 and b2 (docker's, read before and
-- after it), within the rounding of both
local function between(a_text, b1_text, b2_text, digits, what)
  local a, ra = size(a_text, digits)
  local b1, r1 = size(b1_text, digits)
  local b2, r2 = size(b2_text, digits)
  local r = ra + math.max(r1, r2)
  assert(a >= math.min(b1, b2) - r and a <= math.max(b1, b2) + r,
    ("%s: horcrux %s, docker %s and %s"):format(what, a_text, b1_text, b2_text))
end

describe("horcrux run", function()
  local dir

  setup(function()
    dir = http.scripts_dir({
      ["args.lua"] = [[
local json = require "horcrux.json"
print(json.encode({ zero = arg[0], minus = arg[-1], n = select("#", ...), args = { ... },
  first = arg[1] }))
os.exit(tonumber(arg[2]) or 0)
]],
      ["list.lua"] = [[
local metrics = require "horcrux.metrics"
local json = require "horcrux.json"
local list = assert(metrics.list({ all = true, filters = { label = { arg[1] } } }))
local out = {}
for _, c in ipairs(list) do out[#out + 1] = c.id .. " " .. tostring(c.name) .. " " .. c.status end
table.sort(out)
print(table.concat(out, "\n"))
]],
      ["fails.lua"] = 'local function inner() error("boom from a script") end\ninner()\n',
    })
  end)

  teardown(function()
    if dir then
      proc.run({ "rm", "-rf", dir })
    end
  end)

  it("runs a script with arg and ... as lua5.4 sets them, and its exit status", function()
    local r = horcrux("run", dir .. "/args.lua", "one", "3", "three words")
    assert.are.equal(3, r.status, r.stderr)
    local out = json.decode(r.stdout)
    assert.are.same({ zero = dir .. "/args.lua", minus = "horcrux", n = 3,
      args = { "one", "3", "three words" }, first = "one" }, out)
    r = horcrux("run", dir .. "/args.lua")
    assert.are.equal(0, r.status, r.stderr)
    assert.are.equal(0, json.decode(r.stdout).n)
  end)

  it("lists containers through the library as docker ps -a does", function()
    local tag = support.unique_name("run")
    local a = support.run_container({ name = "run-a", labels = { ["hx.cmd"] = tag } })
    local b = support.run_container({ name = "run-b", labels = { ["hx.cmd"] = tag },
      start = false })
    finally(function()
      support.remove(a)
      support.remove(b)
    end)
    local r = horcrux("run", dir .. "/list.lua", "hx.cmd=" .. tag)
    assert.are.equal(0, r.status, r.stderr)
    local want = {}
    for line in docker("ps", "-a", "--no-trunc", "--filter", "label=hx.cmd=" .. tag,
      "--format", "{{.ID}} {{.Names}} {{.State}}"):gmatch("[^\n]+") do
      local id, name, state = line:match("^(%x+) (%S+) (%a+)$")
      want[#want + 1] = id:sub(1, 12) .. " " .. name .. " " .. state
    end
    table.sort(want)
    assert.are.equal(2, #want)
    assert.are.equal(table.concat(want, "\n") .. "\n", r.stdout)
  end)

  it("fails with the error and its traceback, a missing file, and bytecode", function()
    local r = horcrux("run", dir .. "/fails.lua")
    assert.are_not.equal(0, r.status)
    assert.truthy(r.stderr:find("boom from a script", 1, true), r.stderr)
    assert.truthy(r.stderr:find("inner", 1, true), r.stderr) -- the traceback
    r = horcrux("run", dir .. "/no-such-script.lua")
    assert.are.equal(1, r.status)
    assert.are.equal("horcrux: cannot open " .. dir .. "/no-such-script.lua: "
      .. "No such file or directory\n", r.stderr) -- no traceback of ours
    -- a precompiled chunk is refused: scripts are loaded as text only
    local f = assert(io.open(dir .. "/dumped.lua", "wb"))
    f:write(string.dump(function() print("ran bytecode") end))
    f:close()
    r = horcrux("run", dir .. "/dumped.lua")
    assert.are_not.equal(0, r.status)
    assert.is_nil(r.stdout:find("ran bytecode", 1, true))
    assert.truthy(r.stderr:find("binary", 1, true) or r.stderr:find("text", 1, true),
      r.stderr)
  end)
end)

describe("the commands' --help and wrong arguments", function()
  it("print the usage: on stdout with 0 for --help, on stderr with 2 for a "
    .. "wrong one", function()
      for _, cmd in ipairs({ "run", "ps", "stats", "events" }) do
        local r = horcrux(cmd, "--help")
        assert.are.equal(0, r.status, cmd .. ": " .. r.stderr)
        assert.truthy(r.stdout:find("^usage: horcrux " .. cmd), r.stdout)
        assert.are.equal("", r.stderr)
        r = horcrux(cmd, "--no-such-option")
        assert.are.equal(2, r.status, cmd)
        assert.truthy(r.stderr:find("--no-such-option", 1, true), r.stderr)
        assert.truthy(r.stderr:find("usage: horcrux " .. cmd, 1, true), r.stderr)
      end
      local r = horcrux("serve", "--workers", "abc")
      assert.are.equal(2, r.status)
      assert.are.equal("horcrux: --workers needs a number from 1 to 256\n",
        r.stderr)
    end)
end)

describe("horcrux ps and stats against the docker CLI", function()
  local ids, names, tag

  setup(function()
    tag = support.unique_name("cmd")
    ids, names = {}, {}
    local labels = { ["hx.cmd"] = tag }
    ids.idle, names.idle = support.run_container({ name = "cmd-idle", labels = labels,
      host_config = { PortBindings = { ["80/tcp"] = { { HostIp = "127.0.0.1", HostPort = "" } } } } })
    ids.busy, names.busy = support.run_container({ name = "cmd-busy", labels = labels,
      cmd = support.BUSY })
    -- a command docker ps quotes as Go does (\" and \t) and cuts at 20
    -- characters, not bytes (é is two)
    ids.created, names.created = support.run_container({ name = "cmd-created",
      labels = labels, start = false,
      cmd = { "echo", '"\t' .. ("é"):rep(20) } })
    -- ports as docker ps groups and sorts them: a range published on its
    -- own numbers, on every address (0.0.0.0 and [::]), ports exposed only,
    -- one published elsewhere, and another protocol
    -- (host ports from a random base, tried again on another when taken:
    -- the normal and the sanitizer run of this file may run at once)
    local tmp = os.tmpname() -- mkstemp's letters: differ between processes
    os.remove(tmp)
    local h = 0
    for k = 1, #tmp do h = (h * 31 + tmp:byte(k)) % 401 end
    for try = 1, 5 do
      local base = (200 + (h + try * 97) % 401) * 100
      local bindings, exposed = {}, {}
      for _, p in ipairs({ "7001/tcp", "7002/tcp", "7003/tcp", "7010/tcp", "7011/udp" }) do
        exposed[p] = {}
      end
      for port = base, base + 2 do
        exposed[port .. "/tcp"] = {}
        bindings[port .. "/tcp"] = { { HostIp = "", HostPort = tostring(port) } }
      end
      bindings["7010/tcp"] = { { HostIp = "127.0.0.1", HostPort = tostring(base + 10) } }
      local ok, id, name = pcall(support.run_container, { name = "cmd-ports",
        labels = labels, exposed_ports = exposed,
        host_config = { PortBindings = bindings } })
      if ok then
        ids.ports, names.ports = id, name
        break
      end
      assert(try < 5, id)
    end
  end)

  teardown(function()
    for _, id in pairs(ids or {}) do
      support.remove(id)
    end
  end)

  -- docker ps's rows of ours, by name: {ID, IMAGE, COMMAND, CREATED,
  -- STATUS, PORTS, NAMES} as the CLI formats them
  local function docker_ps(all)
    local out = {}
    local argv = { "ps", "--filter", "label=hx.cmd=" .. tag, "--format",
      "{{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}" }
    if all then
      table.insert(argv, 2, "-a")
    end
    local text = docker(table.unpack(argv))
    for line in text:gmatch("[^\n]+") do
      local f = {}
      for cell in (line .. "\t"):gmatch("([^\t]*)\t") do
        f[#f + 1] = cell
      end
      out[f[7]] = { ["CONTAINER ID"] = f[1], IMAGE = f[2], COMMAND = f[3], CREATED = f[4],
        STATUS = f[5], PORTS = f[6], NAMES = f[7] }
    end
    return out
  end

  local function horcrux_ps(all)
    local r = all and horcrux("ps", "--all") or horcrux("ps")
    assert.are.equal(0, r.status, r.stderr)
    local out = {}
    for _, row in ipairs(read_table(r.stdout)) do
      out[row.NAMES] = row
    end
    return out
  end

  it("ps and ps --all print our containers as docker ps does", function()
    for _, all in ipairs({ false, true }) do
      local ours, theirs = horcrux_ps(all), docker_ps(all)
      local n = 0
      for name, want in pairs(theirs) do
        n = n + 1
        local got = ours[name]
        assert.is_table(got, name .. " missing from horcrux ps" .. (all and " --all" or ""))
        for _, k in ipairs({ "CONTAINER ID", "IMAGE", "COMMAND", "PORTS", "NAMES" }) do
          assert.are.equal(want[k], got[k], name .. " " .. k)
        end
        -- times are read a moment apart: the same words, give or take a
        -- second ("Less than a second", "1 second", "2 seconds" alike)
        local function words(t)
          return (t:gsub("Less than a second", "0 seconds"):gsub("%d+ seconds?", "N seconds")
            :gsub("%d+", "N"))
        end
        for _, k in ipairs({ "CREATED", "STATUS" }) do
          assert.are.equal(words(want[k]), words(got[k]), name .. " " .. k)
        end
      end
      assert.are.equal(all and 4 or 3, n)
      if not all then
        assert.is_nil(ours[names.created], "a created container in horcrux ps")
      end
    end
  end)

  it("ps -q, --no-trunc and --filter answer as docker ps's", function()
    local f = "label=hx.cmd=" .. tag
    local function lines(text)
      local out = {}
      for l in text:gmatch("[^\n]+") do out[#out + 1] = l end
      return out
    end
    local function ours(...)
      local r = horcrux("ps", ...)
      assert.are.equal(0, r.status, r.stderr)
      return r.stdout
    end
    -- the ids, in docker's order; -aq as one flag; filters repeated, a
    -- status filter as docker hands it to the daemon
    assert.are.same(lines(docker("ps", "-aq", "--filter", f)), lines(ours("-aq", "--filter", f)))
    assert.are.same(lines(docker("ps", "-q", "--no-trunc", "-f", f)),
      lines(ours("-q", "--no-trunc", "-f", f)))
    local created = lines(ours("--quiet", "-f", f, "--filter=status=created"))
    assert.are.same({ ids.created:sub(1, 12) }, created)
    assert.are.same(lines(docker("ps", "-q", "-f", f, "-f", "status=created")), created)
    -- --no-trunc: the full id and the whole command, quoted as docker quotes it
    local want = {}
    for _, l in ipairs(lines(docker("ps", "-a", "--no-trunc", "-f", f, "--format",
        "{{.ID}}\t{{.Command}}"))) do
      local i, c = l:match("^(%S+)\t(.*)$")
      want[i] = c
    end
    local n = 0
    for _, row in ipairs(read_table(ours("-a", "--no-trunc", "-f", f))) do
      n = n + 1
      assert.are.equal(want[row["CONTAINER ID"]], row.COMMAND, row.NAMES)
    end
    assert.are.equal(4, n)
    -- a filter the daemon does not know is its error, as docker says it
    local r = horcrux("ps", "-f", "bogus=1")
    assert.are.equal(1, r.status)
    assert.matches("Invalid filter 'bogus'", r.stderr)
    assert.are.equal(2, horcrux("ps", "-f", "novalue").status)
    -- horcrux help names the options each command takes
    local help = horcrux("help").stdout
    assert.truthy(help:find("horcrux ps [-a] [-q] [--no-trunc] [--filter K=V]...", 1, true), help)
    assert.truthy(help:find("horcrux stats [-a] [--no-stream] [--interval S] [--no-trunc] "
      .. "[CONTAINER...]", 1, true), help)
  end)

  it("stats prints what docker stats prints for the same containers", function()
    local function by_name(text)
      local out = {}
      for _, row in ipairs(read_table(text)) do
        out[row.NAME] = row
      end
      return out
    end
    local h = assert(cgroup.open(ids.busy))
    -- docker stats before and after ours: our figures lie between its two
    local before = by_name(docker("stats", "--no-stream", ids.idle, ids.busy))
    local c0 = assert(h:stats())
    local r = horcrux("stats", "--no-stream", ids.idle, ids.busy)
    local c1 = assert(h:stats())
    local after = by_name(docker("stats", "--no-stream", ids.idle, ids.busy))
    assert.are.equal(0, r.status, r.stderr)
    local ours = by_name(r.stdout)
    local function pair(row, k)
      return row[k]:match("^(%S+) / (%S+)$")
    end
    for _, which in ipairs({ "idle", "busy" }) do
      local name = names[which]
      local got, w1, w2 = ours[name], before[name], after[name]
      assert.is_table(got, name)
      assert.is_table(w1, name)
      assert.is_table(w2, name)
      assert.are.equal(w1["CONTAINER ID"], got["CONTAINER ID"])
      assert.are.equal(w1.PIDS, got.PIDS)
      local gu, gl = pair(got, "MEM USAGE / LIMIT")
      local u1, l1 = pair(w1, "MEM USAGE / LIMIT")
      local u2 = pair(w2, "MEM USAGE / LIMIT")
      between(gu, u1, u2, 4, name .. " memory")
      assert.are.equal(l1, gl)
      for _, k in ipairs({ "NET I/O", "BLOCK I/O" }) do
        local g_in, g_out = pair(got, k)
        local a_in, a_out = pair(w1, k)
        local b_in, b_out = pair(w2, k)
        between(g_in, a_in, b_in, 3, name .. " " .. k)
        between(g_out, a_out, b_out, 3, name .. " " .. k)
      end
    end
    -- CPU: the idle one near 0, as docker's; the busy loop as the kernel
    -- counted it over the command's run (its window lies inside)
    assert.is_true(tonumber(ours[names.idle]["CPU %"]:match("^([%d.]+)%%$")) < 5)
    local busy_pct = tonumber(ours[names.busy]["CPU %"]:match("^([%d.]+)%%$"))
    local kernel = (c1.cpu_ns - c0.cpu_ns) / (c1.mono_ns - c0.mono_ns) * 100
    assert.is_true(math.abs(busy_pct - kernel) <= 10 + 0.15 * kernel,
      ("busy loop: horcrux stats %.2f %%, the kernel %.1f %% over the run"):format(
        busy_pct, kernel))
  end)

  it("stats with no id lists every running container; a missing one fails the command", function()
    local r = horcrux("stats", "--no-stream")
    assert.are.equal(0, r.status, r.stderr)
    local seen = {}
    for _, row in ipairs(read_table(r.stdout)) do
      seen[row.NAME] = true
    end
    assert.is_true(seen[names.idle] and seen[names.busy])
    assert.is_nil(seen[names.created])
    -- a paused container is listed (docker stats counts it as running), and
    -- one that does not run shows zeros with -a, as docker's rows
    local paused = support.run_container({ name = "cmd-paused",
      labels = { ["hx.cmd"] = tag } })
    finally(function() support.remove(paused) end)
    assert(support.docker():request("POST", "/containers/" .. paused
      .. "/pause") == 204)
    local function row_of(text, id)
      for _, row in ipairs(read_table(text)) do
        if id:sub(1, 12) == row["CONTAINER ID"] then
          return row
        end
      end
    end
    assert.is_table(row_of(horcrux("stats", "--no-stream").stdout, paused))
    local want = row_of(docker("stats", "--no-stream", "-a", ids.created),
      ids.created)
    local got = row_of(horcrux("stats", "--no-stream", "-a").stdout,
      ids.created)
    for _, k in ipairs({ "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O",
      "BLOCK I/O", "PIDS" }) do
      assert.are.equal(want[k], got[k], k)
    end
    r = horcrux("stats", "--no-stream", ids.idle, "hxtest-no-such-container")
    assert.are.equal(1, r.status)
    assert.truthy(r.stderr:find("hxtest-no-such-container", 1, true), r.stderr)
    assert.truthy(r.stdout:find(names.idle, 1, true), r.stdout) -- the others still printed
    assert.are.equal(2, horcrux("stats", "--bogus").status)
    assert.are.equal(2, horcrux("ps", "--bogus").status)
  end)

  it("stats with no daemon lists the running containers from the cgroup files", function()
    -- the cgroup source knows no names (null): "--" in NAME, no traceback
    local r = assert(proc.run({ http.bin, "stats", "--no-stream" }, { timeout = 60,
      env = { "PATH=" .. os.getenv("PATH"), "DOCKER_HOST=unix:///nonexistent",
        "ASAN_OPTIONS=" .. (os.getenv("ASAN_OPTIONS") or ""),
        "LSAN_OPTIONS=" .. (os.getenv("LSAN_OPTIONS") or ""),
        "UBSAN_OPTIONS=" .. (os.getenv("UBSAN_OPTIONS") or "") } }))
    assert.are.equal(0, r.status, r.stderr)
    assert.is_nil(r.stderr:find("traceback", 1, true), r.stderr)
    local row
    for _, x in ipairs(read_table(r.stdout)) do
      if x["CONTAINER ID"] == ids.busy:sub(1, 12) then
        row = x
      end
    end
    assert.is_table(row, r.stdout)
    assert.are.equal("--", row.NAME)
    assert.matches("^[%d.]+%%$", row["CPU %"])
    assert.matches("^%S+ / %S+$", row["MEM USAGE / LIMIT"])
    -- a name no source can answer for: what each source said
    r = assert(proc.run({ http.bin, "stats", "--no-stream", "no-such-name" },
      { timeout = 60, env = { "PATH=" .. os.getenv("PATH"),
        "DOCKER_HOST=unix:///nonexistent",
        "ASAN_OPTIONS=" .. (os.getenv("ASAN_OPTIONS") or ""),
        "LSAN_OPTIONS=" .. (os.getenv("LSAN_OPTIONS") or ""),
        "UBSAN_OPTIONS=" .. (os.getenv("UBSAN_OPTIONS") or "") } }))
    assert.truthy(r.stderr:find("horcrux stats: no-such-name: no metric "
      .. "source could answer (cgroup: no running container", 1, true), r.stderr)
    assert.truthy(r.stderr:find("; docker-api: docker: cannot connect to "
      .. "unix:///nonexistent", 1, true), r.stderr)
  end)
end)
