--- Helpers for specs that need a Docker engine.
--
--   local support = require "support"
--   local c = support.docker()              -- a client; errors when no engine
--   local id, name = support.run_container{ cmd = { "sleep", "60" } }
--   ... finally(function() support.remove(id) end)
--
-- Every container made here is labelled horcrux.test=1 and named
-- "hxtest-<name>-<unique>", so nothing else is ever touched. Specs remove
-- what they make (in `finally`); support.cleanup() removes every labelled
-- container, for scripts/test before and after a run. It also removes the
-- containers of specs running at the same time, so specs themselves should
-- not call it.
local docker = require "horcrux.docker"

local support = {}

--- The image test containers run: FROM scratch with a static busybox.
support.image = "horcrux-test:busybox"
--- The label every test container carries: key and value. HORCRUX_TEST_LABEL
-- (KEY=VALUE, default horcrux.test=1) lets runs that share an engine keep
-- apart: scripts/test removes the containers of its own label only.
local label_env = os.getenv("HORCRUX_TEST_LABEL") or "horcrux.test=1"
support.label, support.label_value = label_env:match("^([^=]+)=(.*)$")
if not support.label then
  support.label, support.label_value = label_env, "1"
end
--- "KEY=VALUE", for `docker run --label` and label filters.
support.label_arg = support.label .. "=" .. support.label_value

local client

--- A connected client for the engine DOCKER_HOST (or the default socket)
-- names. Raises, failing the test, when no engine answers: a missing engine
-- is never a silent skip. It ignores the daemon's breaker (as daemon.lua's
-- clients do): the breaker is the process's, and the code under test opens
-- it (the collector's 1.1 s stats batches on an engine that other runs'
-- containers load); the spec must still make and remove its containers.
function support.docker()
  if client then
    return client
  end
  local c, msg = docker.connect({ breaker = false })
  if c then
    local ok, err = c:ping()
    if ok then
      client = c
      return c
    end
    msg = err
  end
  error("Docker engine not reachable: " .. tostring(msg), 2)
end

local seq = 0

-- Six random digits from the kernel's randomness, not math.random's: a spec
-- may seed that (cgroup_spec does), and the same file runs in the normal
-- and the sanitizer run at the same time (scripts/test), both processes
-- then drawing the same numbers in the same second.
local function random6()
  local f = assert(io.open("/dev/urandom", "rb"))
  local b = f:read(4)
  f:close()
  return string.unpack("<I4", b) % 1000000
end

--- A name no other test (nor a parallel run) uses.
function support.unique_name(name)
  seq = seq + 1
  return string.format("hxtest-%s-%x-%d-%06d", name or "c", os.time(), seq,
    random6())
end

-- Raises with the engine's message unless the reply has status `want`.
local function expect(what, want, status, body)
  if status == want then
    return body
  end
  local msg = type(body) == "table" and body.message or body
  error(string.format("%s: %s", what, tostring(status and
    ("HTTP " .. status .. ": " .. tostring(msg)) or msg)), 3)
end

--- Creates (and unless start == false, starts) a container.
-- opts: name (a readable part of the name), cmd (argv, default a long
-- sleep), labels (added to horcrux.test=1), host_config (the API's
-- HostConfig), image (default support.image), start (default true), tty.
-- Returns the full id and the name.
--- A known CPU load: a busy loop. run_container holds a container running
-- it to BUSY_CPUS of a core (HostConfig.NanoCpus) unless opts.cpus says
-- otherwise: the specs compare its CPU % with the kernel's own count, which
-- a quarter of a core shows as well as a whole one, and a suite running four
-- spec files at once on two cores then does not give half the machine to
-- loops (it did: each loop took what the others left it).
support.BUSY = { "sh", "-c", "while :; do :; done" }
support.BUSY_CPUS = 0.25

--- Creates (and, unless opts.start is false, starts) a test container:
-- opts.name (made unique), image, cmd, labels, host_config, tty, and cpus
-- (cores, HostConfig.NanoCpus; support.BUSY_CPUS for support.BUSY).
function support.run_container(opts)
  opts = opts or {}
  local c = support.docker()
  local host_config = opts.host_config
  local cpus = opts.cpus
  if cpus == nil and opts.cmd == support.BUSY then
    cpus = support.BUSY_CPUS
  end
  if cpus then
    host_config = {}
    for k, v in pairs(opts.host_config or {}) do
      host_config[k] = v
    end
    host_config.NanoCpus = math.floor(cpus * 1e9)
  end
  local labels = { [support.label] = support.label_value }
  for k, v in pairs(opts.labels or {}) do
    labels[k] = v
  end
  local name = support.unique_name(opts.name)
  local status, body = c:request("POST", "/containers/create", { name = name }, {
    Image = opts.image or support.image,
    Cmd = opts.cmd or { "sleep", "600" },
    Labels = labels,
    HostConfig = host_config,
    ExposedPorts = opts.exposed_ports,
    Tty = opts.tty or nil,
    StopTimeout = 1,
  })
  local id = expect("create " .. name, 201, status, body).Id
  if opts.start ~= false then
    local st, b = c:request("POST", "/containers/" .. id .. "/start")
    if st ~= 204 then
      support.remove(id)
      expect("start " .. name, 204, st, b)
    end
  end
  return id, name
end

--- Pauses a running container; returns the daemon's status (204) and body.
-- runc's cgroup v1 freezer gives up now and then on a busy container when
-- the host is loaded (500, "unable to freeze"), and thaws it again: the
-- pause is asked up to three times, half a second apart, as a user would.
function support.pause(id)
  local c = support.docker()
  local status, body
  for _ = 1, 3 do
    status, body = c:request("POST", "/containers/" .. id .. "/pause")
    if status ~= 500 then break end
    io.stderr:write("pause ", id:sub(1, 12), ": ", tostring(status), " ",
      type(body) == "table" and tostring(body.message) or tostring(body), "; again\n")
    require("horcrux.clock").sleep(0.5)
  end
  return status, body
end

--- Removes a container (running or not) and its anonymous volumes; a
-- container that is already gone is fine.
function support.remove(id)
  local status, body = support.docker():request("DELETE", "/containers/" .. id,
    { force = true, v = true })
  if status ~= 404 then
    expect("remove " .. id, 204, status, body)
  end
end

--- Removes every container with the test label; returns how many.
function support.cleanup()
  local list = support.docker():containers {
    all = true,
    filters = { label = { support.label .. "=" .. support.label_value } },
  }
  if not list then
    error("cleanup: cannot list containers", 2)
  end
  for _, c in ipairs(list) do
    support.remove(c.Id)
  end
  return #list
end

return support
