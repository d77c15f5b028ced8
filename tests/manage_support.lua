--- Helpers for the management specs (manage, logs, filters, stacks, guard):
-- a server with a token, JSON requests with or without it, and the
-- daemon's own view of a container to compare before and after.
--
--   local ms = require "manage_support"
--   local srv = ms.start()                       -- token ms.TOKEN
--   local r = ms.call(srv, "POST", "/api/containers", { image = ... })
--   local id = ms.create(srv, { cmd = {...} })   -- labelled, named, tracked
--   ms.cleanup()                                  -- removes what was tracked
local http = require "http"
local support = require "support"
local json = require "horcrux.json"

local M = {}

M.TOKEN = "manage-spec-token"
M.PATH = "PATH=" .. os.getenv("PATH")
M.DEAD_DOCKER = "DOCKER_HOST=unix:///nonexistent/docker.sock"

--- Starts horcrux serve with the token; opts: env (more K=V), args,
-- scripts, token (false: none).
function M.start(opts)
  opts = opts or {}
  local env = { M.PATH }
  if opts.token ~= false then
    env[#env + 1] = "HORCRUX_TOKEN=" .. (opts.token or M.TOKEN)
  end
  for _, e in ipairs(opts.env or {}) do
    env[#env + 1] = e
  end
  return http.start({ scripts = opts.scripts, env = env, args = opts.args })
end

--- An HTTP request to srv. body: a table (sent as JSON with Content-Type
-- application/json) or a string (as is). opts: token (false: none, a
-- string: that one), headers, timeout.
function M.call(srv, method, path, body, opts)
  opts = opts or {}
  local headers = {}
  for k, v in pairs(opts.headers or {}) do
    headers[k] = v
  end
  local token = opts.token
  if token == nil then
    token = M.TOKEN
  end
  if token then
    headers.Authorization = "Bearer " .. token
  end
  if type(body) == "table" then
    body = assert(json.encode(body))
    headers["Content-Type"] = headers["Content-Type"] or "application/json"
  end
  return assert(http.request(method, srv.url .. path,
    { body = body, headers = headers, timeout = opts.timeout }))
end

local tracked = {}

--- Remembers a container (an id or a name) to remove at cleanup().
function M.track(ref)
  tracked[#tracked + 1] = ref
  return ref
end

--- Removes every tracked container.
function M.cleanup()
  for _, ref in ipairs(tracked) do
    pcall(support.remove, ref)
  end
  tracked = {}
end

--- The body of a test container: labelled, uniquely named, sleeping.
function M.body(extra)
  local b = {
    image = support.image,
    name = support.unique_name("mg"),
    cmd = { "sleep", "600" },
    labels = { [support.label] = "1" },
    stop_timeout = 1,
  }
  for k, v in pairs(extra or {}) do
    if k == "labels" then
      for lk, lv in pairs(v) do
        b.labels[lk] = lv
      end
    else
      b[k] = v
    end
  end
  return b
end

--- Creates a container through horcrux (tracked); returns id, name.
function M.create(srv, extra)
  local b = M.body(extra)
  M.track(b.name)
  local r = M.call(srv, "POST", "/api/containers", b)
  assert(r.status == 201, "create: " .. tostring(r.status) .. " " .. r.body)
  return r.json.id, b.name
end

--- The daemon's inspect object, or nil when there is no such container.
function M.inspect(ref)
  local c = support.docker()
  local info, err, kind = c:inspect(ref)
  if not info and kind ~= "not_found" then
    error("inspect " .. ref .. ": " .. tostring(err))
  end
  return info
end

--- What must not change when a request is refused: the container's state
-- and identity, as the daemon reports them.
function M.snapshot(ref)
  local info = M.inspect(ref)
  if not info then
    return nil
  end
  local s = info.State
  return {
    id = info.Id, status = s.Status, running = s.Running, paused = s.Paused,
    started = s.StartedAt, finished = s.FinishedAt, pid = s.Pid,
    restarts = info.RestartCount,
  }
end

--- The status word of a container (nil when it is gone).
function M.status(ref)
  local info = M.inspect(ref)
  return info and info.State.Status
end

--- The HTTP status and kind horcrux answers for a daemon's HTTP status:
-- the client's one mapping (architecture.md: 400, 404, 409 as they are,
-- other 4xx bad_request, 5xx server = 502).
function M.answer_for(daemon_status)
  local kinds = { [400] = "bad_request", [401] = "unauthorized", [403] = "forbidden",
    [404] = "not_found", [409] = "conflict" }
  local kind = kinds[daemon_status]
    or (daemon_status >= 400 and daemon_status < 500 and "bad_request")
    or (daemon_status >= 500 and "server") or "protocol"
  local status = ({ bad_request = 400, unauthorized = 401, forbidden = 403,
    not_found = 404, conflict = 409 })[kind] or 502
  return status, kind
end

--- What this daemon answers to starting a container whose program does
-- not exist (400 on current engines, 500 on some older ones), asked of it
-- directly with a container made and removed here.
function M.bad_start_status()
  local c = support.docker()
  local st, body = c:request("POST", "/containers/create",
    { name = support.unique_name("badstart") },
    { Image = support.image, Cmd = { "/no/such/program" },
      Labels = { [support.label] = support.label_value } })
  assert(st == 201, "create: " .. tostring(st))
  local status = c:request("POST", "/containers/" .. body.Id .. "/start")
  support.remove(body.Id)
  assert(status ~= 204, "the daemon started a container with no program")
  return status
end

--- Waits until f() is truthy (at most `seconds`); returns its value.
function M.eventually(seconds, f)
  local clock = require "horcrux.clock"
  local deadline = clock.mono_ns() + seconds * 1e9
  while true do
    local v = f()
    if v or clock.mono_ns() > deadline then
      return v
    end
    clock.sleep(0.1)
  end
end

return M
