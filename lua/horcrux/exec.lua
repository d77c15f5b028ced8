--- horcrux.exec: a command run inside a running container to its end,
-- under policy.lua's `exec` section.
--
--   exec.FIELDS                     the body's fields (horcrux.fields)
--   exec.run(ref, body [, opts])    -> {exit_code, stdout, stderr,
--                                       timed_out, killed, truncated,
--                                       duration} | nil, message, kind[, extra]
--       opts: policy, req (for policy.lua's hooks)
--   exec.allowed(info, spec, policy, req) -> true | nil, message,
--                                       "forbidden", field
--   exec.frames(raw)                -> stdout, stderr: the daemon's
--                                       multiplexed output, byte for byte
--   exec.TERMINAL_QUERY             the query of the terminal's route
--                                       (cmd, user, workdir, privileged,
--                                       rows and cols: the TTY's size)
--   exec.terminal(ref, req [, opts]) -> hub.stream{exec = ...} | nil,
--                                       message, kind[, extra]: an
--                                       interactive exec (TTY) whose bytes
--                                       the host pumps over the request's
--                                       WebSocket (core/stream.c, "exec")
--
-- The body: {"cmd": [...] (required, no shell), "timeout": seconds
-- (default 30, at most exec.max_timeout), "user", "env": {"K": "v"},
-- "workdir", "privileged", "encoding": "utf-8" (default: the output as JSON
-- text, bytes that are not UTF-8 made U+FFFD by the encoder) | "base64"
-- (the output's bytes, base64)}.
--
-- The timeout. The daemon cannot stop an exec: the attached call is given
-- the timeout, and a command still running past it is killed here, by the
-- host pid the daemon reports for it (exec inspect's Pid): SIGKILL to it
-- and every process it started, after checking that the pid is inside the
-- container's cgroup (a pid reused since is never signalled). That needs
-- the daemon's host (a unix socket) and the right to signal; without that
-- right, `kill -9` of its pid in the container's namespace runs as root
-- inside the container (which then needs a `kill`). Its output so far is
-- not kept (the client drops a transfer it cut); the answer says
-- timed_out, killed, and the exit code the kill left (137).
--
-- The terminal (GET /api/containers/:id/exec/ws, a WebSocket): the same
-- policy, checked before the exec is created; it needs the token (a GET
-- that changes state: the guard asks it only of POST and the like) and is
-- refused in read-only mode. It has no timeout: it lasts as long as the
-- command or the client.
--
-- Output is bounded: past exec.max_output_bytes it is cut (truncated:
-- true); a command that writes 64 KiB more than that is killed and the
-- answer is a failure of kind "limit".
local json = require "horcrux.json"
local null = json.null
local engine = require "horcrux.engine"
local config = require "horcrux.config"
local clock = require "horcrux.clock"
local proc = require "horcrux.proc"
local fields = require "horcrux.fields"
local verdict = require "horcrux.manage.policy"

local M = {}

local DEFAULT_TIMEOUT = 30
local SLACK = 64 * 1024 -- reply bytes past max_output_bytes (frames)
local KILL_MARGIN = 2   -- seconds kept for the kill before a deadline

M.FIELDS = {
  cmd = fields.strings(1024, 65536),
  timeout = fields.number(0.001, 86400),
  user = fields.string(64, "^[%w_.-]+:?[%w_.-]*$",
    "a user name or uid, with an optional :group"),
  env = fields.map(1024, 65536),
  workdir = fields.path,
  privileged = fields.boolean,
  encoding = function(f, v)
    if v == "utf-8" or v == "base64" then
      return v
    end
    return nil, f .. ': must be "utf-8" (the default) or "base64"'
  end,
}

-- ---- output ------------------------------------------------------------------

function M.frames(raw)
  local parts = { {}, {} }
  local pos, n = 1, #raw
  while n - pos + 1 >= 8 do
    local stream, z1, z2, z3, len = string.unpack(">BBBBI4", raw, pos)
    if stream > 3 or z1 ~= 0 or z2 ~= 0 or z3 ~= 0 then
      break -- not a frame: what came so far is the answer
    end
    local t = parts[stream == 1 and 1 or 2] -- the daemon's own (3): stderr
    t[#t + 1] = raw:sub(pos + 8, pos + 7 + len)
    pos = pos + 8 + len
  end
  return table.concat(parts[1]), table.concat(parts[2])
end

-- ---- policy --------------------------------------------------------------

local function refused(field, fmt, ...)
  return nil, ("%s: " .. fmt):format(field, ...), "forbidden", field
end

local YES = { ["true"] = true, ["1"] = true, yes = true }

-- The container as policy hooks see it ({id, name, image, labels, status}).
local function container_of(info)
  local c = type(info.Config) == "table" and info.Config or {}
  local s = type(info.State) == "table" and info.State or {}
  return { id = info.Id,
    name = type(info.Name) == "string" and info.Name:gsub("^/", "") or null,
    image = c.Image or null,
    labels = type(c.Labels) == "table" and c.Labels or {},
    status = s.Status or null }
end

-- "", "root", "0", "root:root", "0:0" are one user.
local function same_user(a, b)
  local function canon(u)
    u = (u == nil or u == null) and "" or u
    if u == "" or u == "root" or u == "0" or u == "root:root" or u == "0:0" then
      return "0"
    end
    return u
  end
  return canon(a) == canon(b)
end

-- Whether exec.containers lets a command run in ctr.
local function container_allowed(ctr, spec, p, req)
  local rule = p.containers
  local name = ctr.name ~= null and ctr.name or ctr.id
  if rule == true then
    return true
  elseif type(rule) == "string" then
    if YES[ctr.labels[rule] or ""] then
      return true
    end
    return refused("container", "exec in %s is refused: it does not carry "
      .. "the label %s=true (policy.lua: exec.containers)", name, rule)
  elseif type(rule) == "function" then
    local msg = rule(ctr, spec, req)
    if msg == nil then
      return true
    end
    return refused("container", "exec in %s is refused: %s", name,
      tostring(msg))
  end
  return refused("container", "exec is refused in every container "
    .. "(policy.lua: exec.containers)")
end

--- What policy.lua's exec section says of spec in the container `info`
-- (the daemon's inspect object).
function M.allowed(info, spec, policy, req)
  local p = verdict.section(policy, "exec")
  local ctr = container_of(info)
  local ok, err, kind, field = container_allowed(ctr, spec, p, req)
  if not ok then
    return nil, err, kind, field
  end
  local hc = type(info.HostConfig) == "table" and info.HostConfig or {}
  if (hc.Privileged == true or hc.PidMode == "host"
      or hc.NetworkMode == "host") and not p.privileged_containers then
    return refused("container", "%s runs privileged or in the host's PID or "
      .. "network namespace: an exec there is root on the host (policy.lua: "
      .. "exec.privileged_containers)", ctr.name)
  end
  if spec.privileged and not p.privileged then
    return refused("privileged", "a privileged exec is refused by the policy "
      .. "(policy.lua: exec.privileged)")
  end
  local own = (type(info.Config) == "table" and info.Config.User) or ""
  if spec.user and not same_user(spec.user, own)
      and not verdict.listed(p.users, spec.user) then
    return refused("user", "running as %q (the container's user is %q) is "
      .. "refused by the policy (policy.lua: exec.users)", spec.user,
      own == "" and "root" or own)
  end
  if spec.timeout > p.max_timeout then
    return refused("timeout", "at most %g seconds are allowed by the policy "
      .. "(policy.lua: exec.max_timeout)", p.max_timeout)
  end
  ok, err, kind = verdict.may("exec", ctr, policy, req)
  if not ok then
    return nil, err, kind, "container"
  end
  return true
end

-- ---- stopping a command ---------------------------------------------------

local function read_file(path)
  local f = io.open(path, "r")
  if not f then
    return nil
  end
  local s = f:read("a")
  f:close()
  return s
end

-- pid and every process it started (at most 256), through
-- /proc/PID/task/TID/children.
local function tree(pid)
  local out, seen, i = { pid }, { [pid] = true }, 1
  while i <= #out and #out < 256 do
    local p = out[i]
    for tid in (read_file(("/proc/%d/task/%d/children"):format(p, p)) or "")
        :gmatch("%d+") do
      local c = math.tointeger(tonumber(tid))
      if c and not seen[c] then
        seen[c], out[#out + 1] = true, c
      end
    end
    i = i + 1
  end
  return out
end

local function local_daemon()
  local host = os.getenv("DOCKER_HOST") or ""
  return host == "" or host:sub(1, 7) == "unix://"
end

-- The command's pid in the container's PID namespace (NSpid's last).
local function ns_pid(pid)
  local line = (read_file(("/proc/%d/status"):format(pid)) or "")
    :match("\nNSpid:([^\n]*)")
  local last
  for n in (line or ""):gmatch("%d+") do
    last = n
  end
  return last
end

-- Kills the process tree of host pid `pid` of container `cid`: true, or
-- nil and why.
local function kill_tree(pid, cid)
  if not local_daemon() then
    return nil, "the engine is not on this host (DOCKER_HOST), so its "
      .. "processes cannot be signalled from here"
  end
  local cg = read_file(("/proc/%d/cgroup"):format(pid))
  if not cg or not cg:find(cid, 1, true) then
    return nil, "its process has already ended"
  end
  local argv = { "kill", "-KILL" }
  for _, p in ipairs(tree(pid)) do
    argv[#argv + 1] = tostring(p)
  end
  local r = proc.run(argv, { timeout = 5 })
  if r and r.status == 0 then
    return true
  end
  -- no right to signal it here: from inside the container, as root
  local nspid = ns_pid(pid)
  if not nspid then
    return nil, "cannot signal it: " .. (r and r.stderr or "kill failed")
  end
  local k = engine.exec_create(cid, { Cmd = { "kill", "-9", nspid },
    User = "0", AttachStdout = true, AttachStderr = true })
  if k and engine.exec_start(k.Id, { timeout = 5 }) then
    return true
  end
  return nil, "cannot signal it, from the host or in the container"
end

-- The exec's inspect object once it no longer runs (waiting up to
-- `wait` seconds), or the last one seen.
local function finished(id, wait)
  local deadline = clock.mono_ns() + wait * 1e9
  local info
  repeat
    info = engine.exec_inspect(id)
    if type(info) ~= "table" or info.Running == false then
      break
    end
    clock.sleep(0.02)
  until clock.mono_ns() > deadline
  return type(info) == "table" and info or {}
end

-- Ends exec `id` in container `cid` still running: killed, exit code, why.
local function stop(id, cid)
  local info = engine.exec_inspect(id)
  if type(info) ~= "table" or info.Running ~= true then
    return false, type(info) == "table" and info.ExitCode or null,
      "it had ended"
  end
  local ok, why = kill_tree(info.Pid, cid)
  local after = finished(id, 2)
  return ok == true and after.Running == false, after.ExitCode or null, why
end

-- ---- run ------------------------------------------------------------------

-- The seconds the command may run: its own timeout, less when the
-- request's deadline (clock.time_left, where the host has one) comes
-- first, keeping time for the kill.
local function budget(t)
  local left = clock.time_left and clock.time_left()
  if left then
    return math.min(t, left - KILL_MARGIN)
  end
  return t
end

local function create_body(spec)
  local env
  if spec.env then
    env = json.array()
    for _, k in ipairs(require("horcrux.tables").sorted_keys(spec.env)) do
      env[#env + 1] = k .. "=" .. spec.env[k]
    end
  end
  return { Cmd = spec.cmd, Env = env, User = spec.user,
    WorkingDir = spec.workdir, Privileged = spec.privileged == true,
    AttachStdin = false, AttachStdout = true, AttachStderr = true,
    Tty = false }
end

-- The checked body, or nil, message, kind, field.
local function spec_of(body, p)
  local spec, err, kind, field = fields.check(body, M.FIELDS, { "cmd" })
  if not spec then
    return nil, err, kind, field
  end
  if #spec.cmd == 0 then
    return nil, "cmd: must name a program", "bad_request", "cmd"
  end
  spec.timeout = spec.timeout or math.min(DEFAULT_TIMEOUT, p.max_timeout)
  return spec
end

-- The running container ref names, its inspect object.
local function running(ref)
  local info, err, kind = engine.inspect(ref)
  if not info then
    return nil, err, kind
  end
  local s = type(info.State) == "table" and info.State or {}
  if s.Running ~= true or s.Paused == true then
    return nil, ("exec in %s: the container is %s"):format(ref,
      s.Paused and "paused" or "not running"), "conflict"
  end
  return info
end

-- ---- the terminal -----------------------------------------------------------

M.TERMINAL_QUERY = {
  cmd = require("horcrux.input").string(4096),
  user = require("horcrux.input").string(64),
  workdir = require("horcrux.input").string(1024),
  privileged = require("horcrux.input").boolean,
  rows = require("horcrux.input").integer(1, 65535),
  cols = require("horcrux.input").integer(1, 65535),
}

-- ?cmd=sh or ?cmd=["sh","-l"] (a JSON array of strings) -> the argv.
-- The running container ref names, if the policy lets spec run in it:
-- its inspect | nil, message, kind [, field].
local function target(ref, spec, policy, req)
  local info, err, kind = running(ref)
  if not info then
    return nil, err, kind
  end
  local ok, field
  ok, err, kind, field = M.allowed(info, spec, policy, req)
  if not ok then
    return nil, err, kind, field
  end
  return info
end

local function argv_of(text)
  if text == nil or text == "" then
    return nil, "cmd: name a program (?cmd=sh, or a JSON array)",
      "bad_request", "cmd"
  end
  if text:sub(1, 1) ~= "[" then
    return { text }
  end
  local v = json.decode(text)
  if type(v) ~= "table" or #v == 0 then
    return nil, "cmd: a JSON array of strings", "bad_request", "cmd"
  end
  for i = 1, #v do
    if type(v[i]) ~= "string" then
      return nil, "cmd: a JSON array of strings", "bad_request", "cmd"
    end
  end
  return v
end

-- The daemon's unix socket (a tcp:// daemon cannot be hijacked here).
local function daemon_socket()
  local host = os.getenv("DOCKER_HOST") or ""
  if host == "" then
    return "/var/run/docker.sock"
  end
  local path = host:match("^unix://(/.+)$")
  if not path or #path >= 108 then
    return nil, "exec over WebSocket needs the daemon on a unix socket "
      .. "(DOCKER_HOST is " .. host .. ")", "unsupported"
  end
  return path
end

-- The TTY's first size: ?rows= and ?cols=, both or neither (true then).
local function size_of(q)
  if (q.rows == nil) ~= (q.cols == nil) then
    local missing = q.rows == nil and "rows" or "cols"
    return nil, ("%s: give ?rows= and ?cols= together, or neither")
      :format(missing), "bad_request", missing
  end
  return true
end

local function wants_websocket(req)
  local up = (req.headers.upgrade or ""):lower()
  local co = (req.headers.connection or ""):lower()
  return up:find("websocket", 1, true) ~= nil
    and co:find("upgrade", 1, true) ~= nil
end

--- The terminal of GET /api/containers/:id/exec/ws (query checked by
-- TERMINAL_QUERY): refused in read-only mode and without the token, then
-- policy.lua's exec rules as for run, then the exec is created (Tty,
-- stdin attached) and the stream object that starts it returned.
function M.terminal(ref, req, opts)
  opts = opts or {}
  if req.read_only then
    return nil, "horcrux runs in read-only mode: nothing may change",
      "forbidden"
  end
  if not req.authenticated then
    return nil, "an exec needs the token (Authorization: Bearer ..., or "
      .. "from a browser in the WebSocket's protocols: README \"Security\")",
      "unauthorized"
  end
  if not wants_websocket(req) then
    return nil, "an exec's terminal needs a WebSocket upgrade",
      "bad_request"
  end
  local q = req.query or {}
  local cmd, err, kind, field = argv_of(q.cmd)
  if not cmd then
    return nil, err, kind, field
  end
  local size
  size, err, kind, field = size_of(q)
  if not size then
    return nil, err, kind, field
  end
  local sock
  sock, err, kind = daemon_socket()
  if not sock then
    return nil, err, kind
  end
  local policy = opts.policy or config.policy()
  local spec = { cmd = cmd, user = q.user, workdir = q.workdir,
    privileged = q.privileged, timeout = 0 }
  local info
  info, err, kind, field = target(ref, spec, policy, req)
  if not info then
    return nil, err, kind, field
  end
  local body = create_body(spec)
  body.AttachStdin, body.Tty = true, true
  local x
  x, err, kind = engine.exec_create(info.Id, body)
  if not x then
    return nil, err, kind
  end
  local c = engine.client()
  -- the host sets the size once the exec started (core/stream.c, "exec")
  return require("horcrux.hub").stream({ topic = "exec/" .. x.Id,
    exec = { id = x.Id, socket = sock, api = c and c:api_version() or "",
      rows = q.rows, cols = q.cols } })
end

function M.run(ref, body, opts)
  opts = opts or {}
  local policy = opts.policy or config.policy()
  local p = verdict.section(policy, "exec")
  local spec, err, kind, field = spec_of(body, p)
  if not spec then
    return nil, err, kind, field
  end
  local info
  info, err, kind, field = target(ref, spec, policy, opts.req)
  if not info then
    return nil, err, kind, field
  end
  local t = budget(spec.timeout)
  if t <= 0 then
    return nil, "exec: no time is left before the request's deadline",
      "timeout"
  end
  local x
  x, err, kind = engine.exec_create(info.Id, create_body(spec))
  if not x then
    return nil, err, kind
  end
  local t0 = clock.mono_ns()
  local raw
  raw, err, kind = engine.exec_start(x.Id, { timeout = t,
    max_response = p.max_output_bytes + SLACK })
  local out = { duration = (clock.mono_ns() - t0) / 1e9, timed_out = false,
    killed = false, truncated = false }
  if raw then
    out.stdout, out.stderr = M.frames(raw)
    if #out.stdout + #out.stderr > p.max_output_bytes then
      out.truncated = true
      out.stdout = out.stdout:sub(1, p.max_output_bytes)
      out.stderr = out.stderr:sub(1, p.max_output_bytes - #out.stdout)
    end
    out.exit_code = finished(x.Id, 2).ExitCode or null
    if spec.encoding == "base64" then -- every byte, as the command wrote it
      local b64 = require("horcrux.registry").base64
      out.stdout, out.stderr = b64(out.stdout), b64(out.stderr)
      out.encoding = "base64"
    end
    return out
  end
  if kind ~= "timeout" and kind ~= "limit" then
    return nil, err, kind
  end
  local why
  out.killed, out.exit_code, why = stop(x.Id, info.Id)
  if kind == "limit" then
    return nil, ("exec: the command wrote more than %d bytes; %s"):format(
      p.max_output_bytes + SLACK, out.killed and "it was killed"
      or ("it could not be killed: " .. tostring(why))), "limit",
      { killed = out.killed }
  end
  out.timed_out, out.stdout, out.stderr = true, "", ""
  if not out.killed then
    out.kill_error = why
  end
  return out
end

return M
