-- horcrux.cli: the docker-cli source, on recorded CLI outputs and live.
local cli = require("horcrux.cli")
local proc = require("horcrux.proc")

local FIX = "tests/fixtures/cli/"

local function read(name)
  local f = assert(io.open(FIX .. name))
  local s = f:read("a")
  f:close()
  return s
end

local function lines(name)
  local list = {}
  for line in read(name):gmatch("[^\n]+") do
    list[#list + 1] = line
  end
  return list
end

-- Parsed records of a fixture, by container name.
local function by_name(name, parse)
  local t = {}
  for _, line in ipairs(lines(name)) do
    local r = assert(parse(line))
    t[r.name or r.id] = r
  end
  return t
end

local function read_loadavg()
  local f = io.open("/proc/loadavg")
  local s = f and f:read("l") or "?"
  if f then
    f:close()
  end
  return s
end

describe("horcrux.cli", function()
  -- CLI output comes from outside: no pattern may backtrack over a long
  -- field (inside one C call, out of the instruction budget's reach).
  it("refuses overlong figures at once, whatever they hold", function()
    for _, long in ipairs({ ("1"):rep(200000), (" "):rep(200000) .. "/",
      ("9"):rep(100000) .. "e", ("1."):rep(50000) }) do
      local t0 = os.clock()
      assert.is_nil(cli.parse_size(long))
      assert.is_nil(cli.parse_percent(long))
      assert.is_nil((cli.parse_stats_line(('{"ID":"a","MemUsage":"%s"}'):format(long)))
        .memory_usage_bytes)
      assert.is_true(os.clock() - t0 < 0.5, ("%.3f s"):format(os.clock() - t0))
    end
  end)

  describe("parse_size", function()
    it("reads binary units (docker's BytesSize)", function()
      assert.equal(2684354560, cli.parse_size("2.5GiB"))
      assert.equal(548864, cli.parse_size("536KiB"))
      assert.equal(25275882537, cli.parse_size("23.54GiB"))
      assert.equal(1302331, cli.parse_size("1.242MiB"))
      assert.equal(67108864, cli.parse_size("64MiB"))
      assert.equal(1099511627776, cli.parse_size("1TiB"))
    end)

    it("reads decimal units (docker's HumanSize)", function()
      assert.equal(50900000, cli.parse_size("50.9MB"))
      assert.equal(16400, cli.parse_size("16.4kB"))
      assert.equal(1040, cli.parse_size("1.04kB"))
      assert.equal(3000000000, cli.parse_size("3GB"))
      assert.equal(1500000000000000000, cli.parse_size("1.5EB"))
      assert.equal(838, cli.parse_size("838B"))
    end)

    it("gives integers", function()
      assert.equal("integer", math.type(cli.parse_size("0B")))
      assert.equal("integer", math.type(cli.parse_size("2.5GiB")))
      assert.equal(0, cli.parse_size("0B"))
    end)

    it("reads the exponent form %.3g can print", function()
      assert.equal(1000000, cli.parse_size("1e+03kB"))
      assert.equal(1000000000, cli.parse_size("1e+03MB"))
    end)

    it("reads unit variants and spaces", function()
      assert.equal(1000, cli.parse_size("1KB"))
      assert.equal(1024, cli.parse_size("1kib"))
      assert.equal(1500000000, cli.parse_size("1.5 GB"))
      assert.equal(512000, cli.parse_size(" 512k "))
      assert.equal(7, cli.parse_size("7"))
    end)

    it("says nil for what is not a size", function()
      assert.is_nil(cli.parse_size("--"))
      assert.is_nil(cli.parse_size(""))
      assert.is_nil(cli.parse_size(nil))
      assert.is_nil(cli.parse_size(5))
      assert.is_nil(cli.parse_size("abc"))
      assert.is_nil(cli.parse_size("-1B"))
      assert.is_nil(cli.parse_size("12XB"))
      assert.is_nil(cli.parse_size("1.2.3MB"))
      assert.is_nil(cli.parse_size("9EiB")) -- past 2^63: no float, no wrap
      assert.is_nil(cli.parse_size("nan"))
      assert.is_nil(cli.parse_size("inf"))
    end)
  end)

  describe("parse_percent", function()
    it("reads the CLI's percentages", function()
      assert.equal(100.22, cli.parse_percent("100.22%"))
      assert.equal(0, cli.parse_percent("0.00%"))
      assert.equal(94.2, cli.parse_percent("94.20%"))
      assert.equal(350.5, cli.parse_percent("350.5 %"))
    end)

    it("says nil for --", function()
      assert.is_nil(cli.parse_percent("--"))
      assert.is_nil(cli.parse_percent(""))
      assert.is_nil(cli.parse_percent(nil))
      assert.is_nil(cli.parse_percent("n/a%"))
    end)
  end)

  describe("parse_stats_line on recorded output", function()
    local recs = by_name("stats.jsonl", cli.parse_stats_line)

    it("reads every line", function()
      assert.equal(#lines("stats.jsonl"), (function()
        local n = 0
        for _ in pairs(recs) do
          n = n + 1
        end
        return n
      end)())
    end)

    it("gives the API record's fields, approximate", function()
      local r = recs["hx-cli-busy"]
      assert.same({
        id = "2d342500f020",
        name = "hx-cli-busy",
        cpu_usage_percent = 94.2,
        memory_usage_bytes = 339968, -- 332KiB
        memory_limit_bytes = 25275882537, -- 23.54GiB
        memory_percent = 0,
        network_rx_bytes = 838,
        network_tx_bytes = 0,
        block_read_bytes = 0,
        block_write_bytes = 0,
        pids = 1,
        source = "docker-cli",
        approximate = true,
      }, r)
      assert.equal(12, #r.id)
    end)

    it("reads a memory limit, I/O and network traffic", function()
      local m = recs["hx-cli-mem"]
      assert.equal(67108864, m.memory_limit_bytes)
      assert.equal(0.48, m.memory_percent)
      local io = recs["hx-cli-io"]
      assert.equal(127000, io.block_read_bytes)
      assert.equal(16400, io.block_write_bytes)
      assert.equal(578000, io.network_rx_bytes)
      assert.equal(577000, io.network_tx_bytes)
      assert.equal(1302331, io.memory_usage_bytes)
    end)

    it("reports 0 bytes for a container with no network", function()
      local r = recs["hx-cli-nonet"]
      assert.equal(0, r.network_rx_bytes)
      assert.equal(0, r.network_tx_bytes)
    end)

    it("keeps the figures of a paused container", function()
      local r = recs["hx-cli-paused"]
      assert.equal(0, r.cpu_usage_percent)
      assert.equal(323584, r.memory_usage_bytes)
      assert.equal(1, r.pids)
    end)

    it("leaves out the figures of a container that is not running", function()
      -- The CLI prints 0.00% and 0B / 0B; those are not measurements.
      for _, name in ipairs({ "hx-cli-created", "hx-cli-exited" }) do
        assert.same({
          id = recs[name].id,
          name = name,
          source = "docker-cli",
          approximate = true,
        }, recs[name])
      end
    end)

    it("leaves out what the CLI shows as --, never 0", function()
      local r = assert(cli.parse_stats_line(read("stats-invalid.jsonl")))
      assert.same({
        id = "0123456789ab",
        source = "docker-cli",
        approximate = true,
      }, r)
    end)

    it("reads a line with some figures missing", function()
      local r = assert(cli.parse_stats_line(
        '{"ID":"0123456789ab","Name":"x","CPUPerc":"12.50%",'
          .. '"MemUsage":"1MiB","NetIO":"-- / 5kB"}'
      ))
      assert.equal(12.5, r.cpu_usage_percent)
      assert.equal(1048576, r.memory_usage_bytes)
      assert.is_nil(r.memory_limit_bytes)
      assert.is_nil(r.network_rx_bytes)
      assert.equal(5000, r.network_tx_bytes)
      assert.is_nil(r.pids)
      assert.is_nil(r.block_read_bytes)
    end)
  end)

  describe("parse_stats_line on bad input", function()
    it("says protocol for what is not a JSON object", function()
      for _, bad in ipairs({ "", "not json", "[1,2]", "42", '{"ID": "abc"', "null" }) do
        local r, msg, kind = cli.parse_stats_line(bad)
        assert.is_nil(r)
        assert.equal("protocol", kind)
        assert.matches("^docker%-cli: ", msg)
      end
    end)

    it("says protocol for a line without an ID", function()
      local r, _, kind = cli.parse_stats_line('{"Name":"x","CPUPerc":"1%"}')
      assert.is_nil(r)
      assert.equal("protocol", kind)
    end)

    it("raises on a non-string", function()
      assert.has_error(function()
        cli.parse_stats_line(nil)
      end)
    end)
  end)

  describe("parse_ps_line", function()
    it("reads recorded lines with the State field", function()
      local recs = by_name("ps.jsonl", cli.parse_ps_line)
      assert.same({
        id = "2d342500f0202859c2a10af8bfc28620119d379a02b09415ce40b61ff3294946",
        name = "hx-cli-busy",
        status = "running",
        image = "horcrux-test:busybox",
        source = "docker-cli",
      }, recs["hx-cli-busy"])
      assert.equal("paused", recs["hx-cli-paused"].status)
      assert.equal("created", recs["hx-cli-created"].status)
      assert.equal("exited", recs["hx-cli-exited"].status)
      assert.equal("running", recs["hx-cli-nonet"].status)
    end)

    it("reads truncated ids as printed", function()
      local recs = by_name("ps-trunc.jsonl", cli.parse_ps_line)
      assert.equal("2d342500f020", recs["hx-cli-busy"].id)
    end)

    it("derives the state from Status text on older CLIs", function()
      local recs = by_name("ps-legacy.jsonl", cli.parse_ps_line)
      assert.equal("running", recs["hx-cli-idle"].status)
      assert.equal("paused", recs["hx-cli-paused"].status)
      assert.equal("running", recs["web"].status) -- "Up 2 hours (healthy)"
      assert.equal("exited", recs["hx-cli-exited"].status)
      assert.equal("created", recs["hx-cli-created"].status)
      assert.equal("restarting", recs["flappy"].status)
      assert.equal("removing", recs["going"].status)
      assert.equal("dead", recs["zombie"].status)
    end)

    it("takes the primary name, not a link alias", function()
      local recs = by_name("ps-legacy.jsonl", cli.parse_ps_line)
      assert.truthy(recs["web"])
      assert.is_nil(recs["app/db"])
    end)

    it("says protocol on bad input", function()
      local r, _, kind = cli.parse_ps_line("{")
      assert.is_nil(r)
      assert.equal("protocol", kind)
    end)
  end)

  describe("parse_inspect", function()
    it("returns the API's inspect object", function()
      local o = assert(cli.parse_inspect(read("inspect-running.json")))
      assert.equal("2d342500f0202859c2a10af8bfc28620119d379a02b09415ce40b61ff3294946", o.Id)
      assert.equal("/hx-cli-busy", o.Name)
      assert.equal("running", o.State.Status)
      assert.equal("2026-11-29T04:55:56.82376158Z", o.Created)
      o = assert(cli.parse_inspect(read("inspect-created.json")))
      assert.equal("created", o.State.Status)
    end)

    it("says not_found for an empty array", function()
      local o, _, kind = cli.parse_inspect(read("inspect-missing.stdout"))
      assert.is_nil(o)
      assert.equal("not_found", kind)
    end)

    it("says protocol for garbage", function()
      local o, _, kind = cli.parse_inspect("[{")
      assert.is_nil(o)
      assert.equal("protocol", kind)
    end)
  end)

  -- A stand-in docker binary that prints a fixture, so the running and error
  -- paths are tested without the engine. It records its argv.
  describe("running a docker binary", function()
    local dir

    before_each(function()
      dir = os.tmpname()
      os.remove(dir)
      assert(proc.run({ "mkdir", "-p", dir }).status == 0)
    end)

    after_each(function()
      proc.run({ "rm", "-rf", dir })
    end)

    local function fake(stdout_fixture, stderr_fixture, status, extra)
      local path = dir .. "/docker"
      local f = assert(io.open(path, "w"))
      f:write("#!/bin/sh\n")
      f:write(('printf "%%s\\n" "$@" > "%s/argv"\n'):format(dir))
      if extra then
        f:write(extra, "\n")
      end
      if stdout_fixture then
        f:write(('cat "%s"\n'):format(FIX .. stdout_fixture))
      end
      if stderr_fixture then
        f:write(('cat "%s" >&2\n'):format(FIX .. stderr_fixture))
      end
      f:write(("exit %d\n"):format(status or 0))
      f:close()
      assert(proc.run({ "chmod", "755", path }).status == 0)
      return path
    end

    local function argv()
      local t = {}
      local f = assert(io.open(dir .. "/argv"))
      for l in f:lines() do
        t[#t + 1] = l
      end
      f:close()
      return t
    end

    it("runs docker stats without a shell and parses every line", function()
      local docker = fake("stats.jsonl")
      local list = assert(cli.stats(nil, { docker = docker }))
      assert.equal(#lines("stats.jsonl"), #list)
      assert.equal("hx-cli-busy", list[1].name)
      assert.same({ "stats", "--no-stream", "--format", "{{json .}}" }, argv())
    end)

    it("passes ids after --", function()
      local docker = fake("stats.jsonl")
      assert(cli.stats({ "hx-cli-busy", "2d342500f020" }, { docker = docker }))
      assert.same({ "stats", "--no-stream", "--format", "{{json .}}", "--",
        "hx-cli-busy", "2d342500f020" }, argv())
      assert(cli.stats("one", { docker = docker }))
      assert.equal("one", argv()[6])
    end)

    it("refuses ids outside Docker's grammar before running anything", function()
      local docker = fake("stats.jsonl")
      for _, bad in ipairs({ "-v", "--all", "a b", "../x", "x;y", "$(id)", "", "a/b",
                             string.rep("a", 300) }) do
        local r, msg, kind = cli.stats({ "ok", bad }, { docker = docker })
        assert.is_nil(r)
        assert.equal("bad_request", kind)
        assert.matches("invalid container id or name", msg)
        r, msg, kind = cli.inspect(bad, { docker = docker })
        assert.equal("bad_request", kind)
      end
      assert.is_nil(io.open(dir .. "/argv")) -- never ran
    end)

    it("runs docker ps -a and docker inspect --type container", function()
      local docker = fake("ps.jsonl")
      local list = assert(cli.ps({ docker = docker }))
      assert.equal(#lines("ps.jsonl"), #list)
      assert.same({ "ps", "-a", "--no-trunc", "--format", "{{json .}}" }, argv())
      assert(cli.ps({ docker = docker, all = false }))
      assert.same({ "ps", "--no-trunc", "--format", "{{json .}}" }, argv())
      docker = fake("inspect-running.json")
      local o = assert(cli.inspect("hx-cli-busy", { docker = docker }))
      assert.equal("running", o.State.Status)
      assert.same({ "inspect", "--type", "container", "--", "hx-cli-busy" }, argv())
    end)

    it("gives an empty list for empty output", function()
      local docker = fake(nil)
      local list = assert(cli.stats(nil, { docker = docker }))
      assert.same({}, list)
    end)

    it("says not_found with the CLI's message for a missing container", function()
      local docker = fake("inspect-missing.stdout", "inspect-missing.stderr", 1)
      local o, msg, kind = cli.inspect("hx-cli-nosuch", { docker = docker })
      assert.is_nil(o)
      assert.equal("not_found", kind)
      assert.equal("docker-cli: docker inspect: Error response from daemon: "
        .. "No such container: hx-cli-nosuch", msg)
      docker = fake(nil, "stats-missing.stderr", 1)
      local _, msg2, kind2 = cli.stats({ "hx-cli-nosuch" }, { docker = docker })
      assert.equal("not_found", kind2)
      assert.matches("No such container: hx%-cli%-nosuch", msg2)
    end)

    it("says unavailable when the CLI cannot reach the daemon", function()
      local docker = fake(nil, "ps-nodaemon.stderr", 1)
      local r, msg, kind = cli.ps({ docker = docker })
      assert.is_nil(r)
      assert.equal("unavailable", kind)
      assert.matches("Cannot connect to the Docker daemon", msg)
    end)

    it("says protocol when the CLI prints garbage", function()
      local docker = fake("README.md")
      local r, _, kind = cli.stats(nil, { docker = docker })
      assert.is_nil(r)
      assert.equal("protocol", kind)
    end)

    it("says timeout when the CLI hangs", function()
      local docker = fake(nil, nil, 0, "sleep 10")
      local r, msg, kind = cli.ps({ docker = docker, timeout = 0.3 })
      assert.is_nil(r)
      assert.equal("timeout", kind)
      assert.matches("timed out", msg)
    end)

    it("says clearly that a missing docker binary is missing", function()
      local r, msg, kind = cli.stats(nil, { docker = "/nonexistent/docker" })
      assert.is_nil(r)
      assert.equal("unavailable", kind)
      assert.matches("^docker%-cli: docker not found", msg)
      assert.matches("/nonexistent/docker", msg, 1, true)
      r, msg, kind = cli.ps({ docker = "/nonexistent/docker" })
      assert.equal("unavailable", kind)
      r, msg, kind = cli.inspect("x", { docker = "/nonexistent/docker" })
      assert.equal("unavailable", kind)
    end)
  end)

  describe("against the real engine", function()
    local started = {}

    local function docker(...)
      local r = assert(proc.run({ "docker", ... }, { timeout = 30 }))
      assert(r.status == 0, "docker " .. select(1, ...) .. ": " .. r.stderr)
      return (r.stdout:gsub("%s+$", ""))
    end

    local function start(...)
      local id = docker(...)
      started[#started + 1] = id
      return id
    end

    -- No engine fails these (support.docker() raises), in CI or not: a
    -- skip would read as green.
    before_each(function()
      require("support").docker()
    end)

    after_each(function()
      for _, id in ipairs(started) do
        proc.run({ "docker", "rm", "-f", id }, { timeout = 30 })
      end
      started = {}
    end)

    it("reads a busy loop's CPU % as the kernel counts it, and an idle container near 0", function()
      local cgroup = require("horcrux.cgroup")
      local busy = start("run", "-d", "--label", require("support").label_arg,
        "--cpus", tostring(require("support").BUSY_CPUS), "horcrux-test:busybox",
        "sh", "-c", "while :; do :; done")
      local idle = start("run", "-d", "--label", require("support").label_arg,
        "horcrux-test:busybox", "sleep", "600")
      local h = assert(cgroup.open(busy))
      -- The peer: the kernel's own count of the busy container (its cgroup's
      -- CPU counter) read just before and just after `docker stats`, whose
      -- window (the daemon's last second) lies inside ours. On a loaded
      -- machine the loop gets less than a core, and both say so; the CLI's
      -- figure is that of a shorter window inside ours, so a few tries
      -- keep one second unlike its neighbours out. A parser that misreads
      -- the figure (a wrong scale, a dropped digit) is off in every try.
      local list, b, i, seen = nil, nil, nil, {}
      local agree
      for _ = 1, 3 do
        local c0 = assert(h:stats())
        local msg
        list, msg = cli.stats({ busy, idle }, { timeout = 30 })
        local c1 = assert(h:stats())
        assert.truthy(list, msg)
        assert.equal(2, #list)
        b, i = list[1], list[2]
        local kernel = (c1.cpu_ns - c0.cpu_ns) / (c1.mono_ns - c0.mono_ns) * 100
        seen[#seen + 1] = ("%s (kernel %.1f)"):format(tostring(b.cpu_usage_percent), kernel)
        agree = type(b.cpu_usage_percent) == "number"
          and math.abs(b.cpu_usage_percent - kernel) <= 10 + 0.15 * kernel
        if agree then
          break
        end
      end
      print("\ncli: busy loop CPU % from docker stats: " .. table.concat(seen, ", "))
      assert.equal(busy:sub(1, 12), b.id)
      assert.equal(idle:sub(1, 12), i.id)
      assert.is_true(agree, ("busy CPU %% %s (host load average %s)"):format(
        table.concat(seen, ", "), read_loadavg()))
      -- a sleeping process uses next to nothing, however loaded the host
      assert.is_true(i.cpu_usage_percent < 5, "idle CPU % " .. tostring(i.cpu_usage_percent))
      assert.is_true(b.memory_usage_bytes > 0)
      assert.is_true(b.memory_limit_bytes > b.memory_usage_bytes)
      assert.equal(1, i.pids)
      assert.equal("docker-cli", b.source)
      assert.is_true(b.approximate)
    end)

    it("lists and inspects containers it started", function()
      local created = start("create", "--label", require("support").label_arg,
        "horcrux-test:busybox", "true")
      local list = assert(cli.ps())
      local found
      for _, r in ipairs(list) do
        if r.id == created then
          found = r
        end
      end
      assert.truthy(found)
      assert.equal("created", found.status)
      assert.equal("horcrux-test:busybox", found.image)
      local o = assert(cli.inspect(created))
      assert.equal(created, o.Id)
      assert.equal("created", o.State.Status)
      assert.equal("/" .. found.name, o.Name)
      o = assert(cli.inspect(found.name))
      assert.equal(created, o.Id)
      -- Not running: no figures, not zeros.
      local s = assert(cli.stats({ created }, { timeout = 30 }))
      assert.is_nil(s[1].cpu_usage_percent)
      assert.is_nil(s[1].memory_usage_bytes)
    end)

    it("says not_found for a missing container", function()
      local o, msg, kind = cli.inspect("horcrux-no-such-container-xyz")
      assert.is_nil(o)
      assert.equal("not_found", kind)
      assert.matches("No such container", msg)
      local s, _, kind2 = cli.stats({ "horcrux-no-such-container-xyz" }, { timeout = 30 })
      assert.is_nil(s)
      assert.equal("not_found", kind2)
    end)
  end)
end)
