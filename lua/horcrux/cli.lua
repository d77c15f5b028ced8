-- horcrux.cli: the `docker-cli` metric source. Runs the docker CLI (never
-- through a shell) and turns its `{{json .}}` lines into the records the
-- Engine API source gives.
--
-- The CLI rounds what it prints (go-units: "%.4g" binary sizes for memory,
-- "%.3g" decimal sizes for network and block I/O, two decimals for
-- percentages), so every stats record says `approximate = true`. A figure
-- the CLI prints as "--" is left out, never read as 0.
--
--   cli.parse_size(s)          -> bytes (integer) | nil
--   cli.parse_percent(s)       -> number | nil
--   cli.parse_stats_line(text) -> record | nil, message, kind
--   cli.parse_ps_line(text)    -> {id, name, status, image, source} | nil, message, kind
--   cli.parse_inspect(text)    -> the inspect object | nil, message, kind
--   cli.stats(ids_or_nil, opts), cli.ps(opts), cli.inspect(id, opts)
--       -> value | nil, message, kind
--   opts: docker (path of the CLI, default "docker"), timeout (seconds,
--         default 10), all (ps only, default true)
local proc = require("horcrux.proc")
local json = require("horcrux.json")
local clock = require("horcrux.clock")
local engine = require("horcrux.engine")

local cli = {}

local SOURCE = "docker-cli"
local MAX_OUTPUT = 16 * 1024 * 1024

-- ---- sizes and percentages ------------------------------------------------

-- go-units prints decimal sizes (HumanSize: B, kB, MB, …) and binary ones
-- (BytesSize: B, KiB, MiB, …). Case is ignored: "KB" and "kb" read as kB.
local MULTIPLIER = {
  [""] = 1,
  b = 1,
  kb = 1e3, mb = 1e6, gb = 1e9, tb = 1e12, pb = 1e15, eb = 1e18,
  kib = 2 ^ 10, mib = 2 ^ 20, gib = 2 ^ 30, tib = 2 ^ 40, pib = 2 ^ 50,
  eib = 2 ^ 60,
}
-- The bare prefixes, as docker's RAMInBytes also reads them ("512k").
for _, p in ipairs({ "k", "m", "g", "t", "p", "e" }) do
  MULTIPLIER[p] = MULTIPLIER[p .. "b"]
  MULTIPLIER[p .. "i"] = MULTIPLIER[p .. "ib"]
end

-- s without leading and trailing white space, in linear time (a pattern
-- like "%s+$" backtracks over every run of blanks: quadratic on output
-- that is mostly blanks).
local function trim(s)
  local first = s:find("%S")
  if not first then
    return ""
  end
  local last = #s
  local b = s:byte(last)
  while b == 32 or (b >= 9 and b <= 13) do
    last = last - 1
    b = s:byte(last)
  end
  return s:sub(first, last)
end
cli.trim = trim

-- The longest figure the CLI prints ("1.5e+03kB", "100.22%"): anything
-- longer is not one, and is refused before a pattern could backtrack over
-- it.
local FIGURE_MAX = 32

-- "2.5GiB" -> 2684354560. "--", garbage or a size past the integer range
-- -> nil. "%.3g" can print "1e+03kB"; tonumber reads that too.
function cli.parse_size(s)
  if type(s) ~= "string" or #s > 2 * FIGURE_MAX then
    return nil
  end
  s = trim(s)
  if #s > FIGURE_MAX then
    return nil
  end
  -- With an exponent first: "1.5EB" is 1.5 exabytes, not 1.5e+… of "B".
  local num, unit = s:match("^(%d+%.?%d*[eE][+-]%d+)%s*(%a*)$")
  if not num then
    num, unit = s:match("^(%d+%.?%d*)%s*(%a*)$")
  end
  if not num then
    return nil
  end
  local n = tonumber(num)
  local mult = MULTIPLIER[unit:lower()]
  if not n or not mult or n ~= n or n < 0 then
    return nil
  end
  return math.tointeger(math.floor(n * mult + 0.5))
end

-- "100.22%" -> 100.22; "--" -> nil.
function cli.parse_percent(s)
  if type(s) ~= "string" or #s > FIGURE_MAX then
    return nil
  end
  local num = trim(s):match("^(%-?%d+%.?%d*)%s*%%?$")
  local n = num and tonumber(num)
  if n == nil or n ~= n or n == math.huge or n == -math.huge then
    return nil
  end
  return n
end

-- "1.2kB / 3MB" -> 1200, 3000000; either side may be "--".
local function parse_pair(s)
  if type(s) ~= "string" or #s > 3 * FIGURE_MAX then
    return nil, nil
  end
  local slash = s:find("/", 1, true)
  if not slash then
    return cli.parse_size(s), nil -- Windows prints MemUsage without a limit
  end
  return cli.parse_size(s:sub(1, slash - 1)), cli.parse_size(s:sub(slash + 1))
end

-- ---- JSON lines -----------------------------------------------------------

local function str(v)
  if type(v) == "string" and v ~= "" and v ~= "--" then
    return v
  end
  return nil
end

-- A `{{json .}}` line of `docker <what>` and its ID, or nil, msg, kind.
local function decode_line(text, fn, what)
  if type(text) ~= "string" then
    error("bad argument #1 to '" .. fn .. "' (string expected, got "
      .. type(text) .. ")", 3)
  end
  -- horcrux.json returns nil, message on bad input; a raising decoder is
  -- caught the same way.
  local ok, o, msg = pcall(json.decode, text)
  if not ok then
    o, msg = nil, o
  end
  if type(o) ~= "table" then
    local excerpt = #text > 60 and text:sub(1, 60) .. "…" or text
    return nil, ("%s: bad output from the docker CLI (%s): %q"):format(
      SOURCE, msg or "not a JSON object", excerpt), "protocol"
  end
  local id = str(o.ID)
  if not id then
    return nil, ("%s: %s line without an ID"):format(SOURCE, what),
      "protocol"
  end
  return o, id
end

-- One line of `docker stats --no-stream --format '{{json .}}'`.
function cli.parse_stats_line(text)
  local o, id, kind = decode_line(text, "parse_stats_line", "stats")
  if not o then
    return nil, id, kind
  end
  local r = {
    id = id,
    name = str(o.Name),
    source = SOURCE,
    approximate = true,
  }
  local used, limit = parse_pair(o.MemUsage)
  -- A container that is not running has no cgroup: the CLI prints "0B / 0B"
  -- and zeros everywhere. Its figures are unknown, not 0 (DESIGN.md).
  if limit == 0 then
    return r
  end
  r.cpu_usage_percent = cli.parse_percent(o.CPUPerc)
  r.memory_usage_bytes = used
  r.memory_limit_bytes = limit
  r.memory_percent = cli.parse_percent(o.MemPerc)
  r.network_rx_bytes, r.network_tx_bytes = parse_pair(o.NetIO)
  r.block_read_bytes, r.block_write_bytes = parse_pair(o.BlockIO)
  local pids = str(o.PIDs)
  r.pids = pids and math.tointeger(tonumber(pids:match("^%d+$")))
  return r
end

-- The state word from the Status text of CLIs that print no State field
-- (docker's State.String()).
local function state_from_status(status)
  if type(status) ~= "string" then
    return nil
  end
  if status:match("^Up ") then
    return status:match("%(Paused%)$") and "paused" or "running"
  end
  if status:match("^Exited") then
    return "exited"
  end
  if status:match("^Restarting") then
    return "restarting"
  end
  if status == "Created" then
    return "created"
  end
  if status == "Removal In Progress" then
    return "removing"
  end
  if status == "Dead" then
    return "dead"
  end
  return nil
end

-- "name" or "name,other/alias" (links, with --no-trunc) -> the primary name.
local function primary_name(names)
  if type(names) ~= "string" then
    return nil
  end
  for n in names:gmatch("[^,]+") do
    n = trim(n):gsub("^/", "")
    if n ~= "" and not n:find("/", 1, true) then
      return n
    end
  end
  return nil
end

-- One line of `docker ps -a --no-trunc --format '{{json .}}'`.
function cli.parse_ps_line(text)
  local o, id, kind = decode_line(text, "parse_ps_line", "ps")
  if not o then
    return nil, id, kind
  end
  local state = str(o.State)
  return {
    id = id,
    name = primary_name(o.Names),
    status = state and state:lower() or state_from_status(o.Status),
    image = str(o.Image),
    source = SOURCE,
  }
end

-- The output of `docker inspect --type container ID`: a one-element array of
-- the Engine API's /containers/{id}/json object, which is returned as is.
function cli.parse_inspect(text)
  local ok, v, msg = pcall(json.decode, text)
  if not ok then
    v, msg = nil, v
  end
  if type(v) ~= "table" then
    return nil, ("%s: bad output from docker inspect (%s)"):format(
      SOURCE, msg or "not JSON"), "protocol"
  end
  local o = v[1]
  if type(o) ~= "table" then
    return nil, SOURCE .. ": docker inspect returned no container", "not_found"
  end
  return o
end

-- ---- running the CLI --------------------------------------------------------

-- Docker's grammar for names ([a-zA-Z0-9][a-zA-Z0-9_.-]*) also covers ids
-- and id prefixes. Checked even without a shell: "-x" would be an option.
local function valid_ref(s)
  return type(s) == "string" and #s <= 255
    and s:match("^[%w][%w_.-]*$") ~= nil
end
cli.valid_ref = valid_ref

-- The kind of a failed command, from what it printed: the one place the
-- CLI's words are read.
local KINDS = {
  { "No such container", "not_found" }, { "No such object", "not_found" },
  { "No such image", "not_found" },
  { "Cannot connect to the Docker daemon", "unavailable" },
  { "permission denied", "unavailable" },
  { "is already in use", "conflict" }, { "Conflict", "conflict" },
  { "cannot remove a running", "conflict" }, { "is not running", "conflict" },
  { "invalid", "bad_request" }, { "Invalid", "bad_request" },
  { "Error response from daemon", "server" },
}

function cli.classify(stderr)
  for _, k in ipairs(KINDS) do
    if stderr:find(k[1], 1, true) then
      return k[2]
    end
  end
  return "unavailable"
end
local classify = cli.classify

-- The daemon the CLI asks when its environment is `env` (K=V strings
-- and/or a map, as proc.run takes it; nil: ours, whose daemon is the
-- engine's): its DOCKER_HOST, else the CLI's default socket.
local function cli_host(env)
  if env == nil then
    return nil
  end
  if type(env.DOCKER_HOST) == "string" then
    return env.DOCKER_HOST
  end
  for _, kv in ipairs(env) do
    if type(kv) == "string" and kv:sub(1, 12) == "DOCKER_HOST=" then
      return kv:sub(13)
    end
  end
  return "unix:///var/run/docker.sock"
end

--- Runs `docker ARGS...` (never through a shell); returns its stdout or
-- nil, message, kind. opts: docker (the CLI's path), timeout (s, 10), env.
function cli.run(args, opts)
  opts = opts or {}
  local bin = opts.docker or "docker"
  local argv = { bin }
  for i = 1, #args do
    argv[#argv + 1] = args[i]
  end
  local what = "docker " .. args[1]
  -- Not while the breaker of the daemon the CLI asks is open, and never
  -- past the request's deadline.
  local admitted, why, wkind = engine.admit(cli_host(opts.env))
  if not admitted then
    return nil, ("%s: %s"):format(SOURCE, why), wkind
  end
  local left = clock.time_left()
  if left and left <= 0 then
    return nil, ("%s: %s not run: the request's deadline has passed")
      :format(SOURCE, what), "timeout"
  end
  local r, msg, kind = proc.run(argv, {
    timeout = math.min(opts.timeout or 10, left or math.huge),
    max_output = MAX_OUTPUT,
    env = opts.env,
  })
  if not r then
    if kind == "not_found" then
      return nil, ("%s: docker not found (%s; set the path of the docker "
        .. "binary, or install the CLI)"):format(SOURCE, msg), "unavailable"
    end
    return nil, ("%s: %s"):format(SOURCE, msg), kind or "unavailable"
  end
  if r.timed_out then
    return nil, ("%s: %s timed out after %gs"):format(
      SOURCE, what, opts.timeout or 10), "timeout"
  end
  if r.status ~= 0 then
    local err = trim(r.stderr):gsub("\n.*", "") -- the first line says it
    if err == "" then
      err = r.signal and ("killed by signal " .. r.signal)
        or ("exit status " .. tostring(r.status))
    end
    return nil, ("%s: %s: %s"):format(SOURCE, what, err), classify(r.stderr)
  end
  if r.truncated then
    return nil, ("%s: %s printed more than %d bytes"):format(
      SOURCE, what, MAX_OUTPUT), "limit"
  end
  return r.stdout
end

local function new_list()
  return setmetatable({}, json.array_mt)
end

local function parse_lines(out, parse)
  local list = new_list()
  for line in out:gmatch("[^\n]+") do
    if line:match("%S") then
      local rec, msg, kind = parse(line)
      if not rec then
        return nil, msg, kind
      end
      list[#list + 1] = rec
    end
  end
  return list
end

local function bad_ref(ref)
  return nil, ("%s: invalid container id or name %q"):format(
    SOURCE, tostring(ref)), "bad_request"
end

-- Stats of the given containers (an id, a name or a list of them), or of
-- every running one when ids is nil.
function cli.stats(ids, opts)
  if type(ids) == "string" then
    ids = { ids }
  end
  local args = { "stats", "--no-stream", "--format", "{{json .}}" }
  if ids ~= nil then
    if type(ids) ~= "table" then
      error("bad argument #1 to 'stats' (table, string or nil expected)", 2)
    end
    if #ids == 0 then
      return new_list()
    end
    args[#args + 1] = "--"
    for _, id in ipairs(ids) do
      if not valid_ref(id) then
        return bad_ref(id)
      end
      args[#args + 1] = id
    end
  end
  local out, msg, kind = cli.run(args, opts)
  if not out then
    return nil, msg, kind
  end
  return parse_lines(out, cli.parse_stats_line)
end

-- Every container (running or not unless opts.all == false).
function cli.ps(opts)
  local args = { "ps", "--no-trunc", "--format", "{{json .}}" }
  if not (opts and opts.all == false) then
    table.insert(args, 2, "-a")
  end
  local out, msg, kind = cli.run(args, opts)
  if not out then
    return nil, msg, kind
  end
  return parse_lines(out, cli.parse_ps_line)
end

-- The Engine API's inspect object of one container.
function cli.inspect(id, opts)
  if not valid_ref(id) then
    return bad_ref(id)
  end
  local out, msg, kind = cli.run(
    { "inspect", "--type", "container", "--", id }, opts)
  if not out then
    return nil, msg, kind
  end
  return cli.parse_inspect(out)
end

return cli
