--- horcrux.manage.policy: what policy.lua lets the management routes do.
--
--   policy.check(p)                  -> p | raises naming a bad setting
--   policy.DEFAULT                   the policy when policy.lua gives none
--   policy.allowed(spec, p, req)     -> spec | nil, msg, "forbidden", field
--       (or another kind when the daemon must be asked and cannot answer)
--   policy.may(action, ref, p, req)  -> container | nil, msg, kind
--
-- allowed() checks a validated create spec (horcrux.manage.validate) and
-- returns it with bind sources resolved: a host path is compared, and sent
-- to the daemon, as realpath() resolves it, so a symlink planted inside an
-- allowed folder (a container that writes `ln -s / /data/root` into a bind
-- of /srv/data) cannot lead the next create outside it. A named volume that
-- is itself a bind of a host path (the local driver with o=bind) counts as
-- that bind; a network whose driver puts the container on the host's LAN
-- (macvlan, ipvlan) needs to be listed in create.networks; a port published
-- on an address that is not loopback needs create.public_ports.
--
-- may() resolves the container first and hands the hook the container as
-- the daemon knows it ({id, name, image, labels, status}), so a deny-list
-- by name cannot be passed by an id prefix or another spelling.
local null = require("horcrux.json").null
local proc = require "horcrux.proc"
local engine = require "horcrux.engine"
local tables = require "horcrux.tables"

local M = {}

local SETTINGS = {
  create = "table", manage = "function", cli_fallback = "boolean",
  cli = "table", images = "table", exec = "table", networks = "table",
  volumes = "table", compose = "table",
}
local CREATE_SETTINGS = {
  privileged = "boolean", binds = "boolean|table", volumes = "boolean",
  host_network = "boolean", container_network = "boolean",
  networks = "table", host_pid = "boolean", container_pid = "boolean",
  cap_add = "boolean|table", devices = "boolean", images = "table",
  max_memory_bytes = "number", max_cpus = "number",
  default_host_ip = "string", public_ports = "boolean", check = "function",
}
local CLI_SETTINGS = { docker = "string", timeout = "number", env = "table" }
-- The sections of the routes beyond containers, and their settings.
local SECTIONS = {
  images = { pull = "boolean|table", push = "boolean|table",
    auth = "string|table" },
  exec = { containers = "boolean|string|function", privileged = "boolean",
    users = "boolean|table", privileged_containers = "boolean",
    max_timeout = "number", max_output_bytes = "number" },
  networks = { create = "boolean", drivers = "boolean|table",
    options = "boolean|table" },
  volumes = { create = "boolean", drivers = "boolean|table",
    mount_types = "boolean|table" },
  compose = { tool = "string", python = "string", docker = "string",
    timeout = "number", swarm = "boolean", allow = "table",
    state_dir = "string" },
}

--- What a setting of those sections means when policy.lua leaves it out:
-- nothing that reaches beyond the engine's own objects (see policy.lua).
M.SECTION_DEFAULTS = {
  images = { pull = {}, push = {} },
  exec = { containers = "horcrux.exec", privileged = false, users = {},
    privileged_containers = false, max_timeout = 300,
    max_output_bytes = 1024 * 1024 },
  networks = { create = true, drivers = { "bridge", "overlay" },
    options = { "com.docker.network.driver.mtu",
      "com.docker.network.bridge.enable_icc" } },
  volumes = { create = true, drivers = { "local" }, mount_types = { "tmpfs" } },
  compose = { tool = "docker-compose", python = "python3", docker = "docker",
    timeout = 120, swarm = true, allow = {} }, -- state_dir: compose.lua
}

--- Nothing that gives a container root on the host: what a missing
-- setting means.
M.DEFAULT = {
  create = { volumes = true, default_host_ip = "127.0.0.1" },
  cli_fallback = false,
}

local function check_settings(t, allowed, where)
  for k, v in pairs(t) do
    local want = allowed[k]
    if not want then
      local names = tables.sorted_keys(allowed)
      error(("policy.lua: unknown setting %s%s (settings: %s)"):format(
        where, tostring(k), table.concat(names, ", ")), 0)
    end
    if not want:find(type(v), 1, true) then
      error(("policy.lua: %s%s must be %s, got %s"):format(where, k,
        want:gsub("|", " or "), type(v)), 0)
    end
  end
end

function M.check(p)
  if type(p) ~= "table" then
    error("policy.lua must return a table", 0)
  end
  check_settings(p, SETTINGS, "")
  check_settings(p.create or {}, CREATE_SETTINGS, "create.")
  check_settings(p.cli or {}, CLI_SETTINGS, "cli.")
  for name, settings in pairs(SECTIONS) do
    check_settings(p[name] or {}, settings, name .. ".")
  end
  return p
end

--- policy.lua's section `name` (images, exec, networks, volumes, compose)
-- with the defaults filled in for what it leaves out.
function M.section(p, name)
  local given = (p or {})[name] or {}
  local out = {}
  for k, v in pairs(M.SECTION_DEFAULTS[name]) do
    out[k] = v
  end
  for k, v in pairs(given) do
    out[k] = v
  end
  return out
end

-- ---- the create verdict ---------------------------------------------------

local function refused(field, what, setting)
  return nil, ("%s: %s is refused by the policy (policy.lua: create.%s)")
    :format(field, what, setting), "forbidden", field
end

local function under(path, prefix)
  if prefix == "/" then
    return true
  end
  prefix = prefix:gsub("/+$", "")
  return path == prefix or path:sub(1, #prefix + 1) == prefix .. "/"
end

--- Whether a setting that is a list (or true: anything) holds v; a
-- number listed matches its text (exec.users = {1000} lists user "1000").
local function listed(list, v)
  if list == true then
    return true
  end
  for _, x in ipairs(type(list) == "table" and list or {}) do
    if x == v or (math.type(x) == "integer" and tostring(x) == v) then
      return true
    end
  end
  return false
end
M.listed = listed

-- The daemon reads host paths on its own host: they can be resolved here
-- only when it is this machine's (a unix socket).
local function local_daemon()
  local host = os.getenv("DOCKER_HOST") or ""
  return host == "" or host:sub(1, 7) == "unix://"
end

-- Whether host path `source` (resolved) may be mounted: true, or nil, why.
local function bind_ok(source, p)
  if p.binds == true then
    return true
  end
  if type(p.binds) ~= "table" then
    return nil
  end
  for _, prefix in ipairs(p.binds) do
    local real = proc.realpath(prefix)
    if real and under(source, real) then
      return true
    end
  end
  return nil
end

-- Resolves spec.binds[i].source in place; refuses what the policy does not
-- allow.
local function check_binds(spec, p)
  for i, b in ipairs(spec.binds or {}) do
    local field = ("binds[%d].source"):format(i)
    if p.binds ~= true then
      if not local_daemon() then
        return nil, field .. ": host paths cannot be checked against the "
          .. "policy on a remote engine (policy.lua: create.binds = true "
          .. "allows any)", "forbidden", field
      end
      local real, err = proc.realpath(b.source)
      if not real then
        return nil, ("%s: %s"):format(field, err), "bad_request", field
      end
      if not bind_ok(real, p) then
        local what = real == b.source and b.source
          or ("%s (which leads to %s)"):format(b.source, real)
        return refused(field, "mounting the host path " .. what, "binds")
      end
      b.source = real
    end
  end
  return true
end

-- A named volume that is a bind of a host path (local driver, o=bind or
-- type=none with a device) is checked as that bind. A volume that does not
-- exist yet is made by the daemon as a fresh local one: nothing to check.
local function check_volumes(spec, p)
  local vols = spec.volumes or {}
  if #vols > 0 and p.volumes == false then
    return refused("volumes", "a named volume", "volumes")
  end
  for i, v in ipairs(vols) do
    local info, err, kind = engine.call("GET", "/volumes/{volume}",
      { volume = v.name })
    if info == nil and kind ~= "not_found" then
      return nil, err, kind
    end
    local o = type(info) == "table" and type(info.Options) == "table"
      and info.Options or {}
    local device = type(o.device) == "string" and o.device or nil
    local is_bind = type(o.o) == "string" and (("," .. o.o .. ","):find(
      ",bind,", 1, true) or ("," .. o.o .. ","):find(",rbind,", 1, true))
    if device and (is_bind or o.type == "none" or o.type == "bind") then
      local real = local_daemon() and proc.realpath(device) or nil
      if p.binds ~= true and not (real and bind_ok(real, p)) then
        return refused(("volumes[%d].name"):format(i),
          ("the volume %q, a bind of the host path %s"):format(v.name,
            device), "binds")
      end
    end
  end
  return true
end

local LAN_DRIVERS = { macvlan = true, ipvlan = true }

local function check_network(spec, p)
  local net = spec.network
  if net == "host" and not p.host_network then
    return refused("network", "the host network", "host_network")
  elseif net and net:match("^container:") then
    if not p.container_network then
      return refused("network", "another container's network",
        "container_network")
    end
    return true
  elseif net and p.networks and not listed(p.networks, net) then
    return refused("network", ("the network %q"):format(net), "networks")
  end
  if net and net ~= "host" and net ~= "bridge" and net ~= "none"
      and not (p.networks and listed(p.networks, net)) then
    local info, err, kind = engine.call("GET", "/networks/{network}",
      { network = net })
    if info == nil and kind ~= "not_found" then
      return nil, err, kind
    end
    local driver = type(info) == "table" and info.Driver
    if LAN_DRIVERS[driver] then
      return refused("network", ("the %s network %q (it puts the container "
        .. "on the host's LAN)"):format(driver, net), "networks")
    end
  end
  return true
end

local LOOPBACK = { ["127.0.0.1"] = true, ["::1"] = true, localhost = true }

local function check_ports(spec, p)
  if p.public_ports then
    return true
  end
  for i, pt in ipairs(spec.ports or {}) do
    local ip = pt.host_ip
    if ip and not LOOPBACK[ip] and not ip:match("^127%.%d+%.%d+%.%d+$") then
      return refused(("ports[%d].host_ip"):format(i),
        ("publishing on %s (beyond loopback)"):format(ip), "public_ports")
    end
  end
  return true
end

local function check_image(spec, p)
  if not p.images then
    return true
  end
  for _, pat in ipairs(p.images) do
    if spec.image:match(pat) then
      return true
    end
  end
  return refused("image", ("the image %q"):format(spec.image), "images")
end

local function check_process(spec, p)
  if spec.privileged and not p.privileged then
    return refused("privileged", "a privileged container", "privileged")
  end
  if spec.pid_mode == "host" and not p.host_pid then
    return refused("pid_mode", "the host PID namespace", "host_pid")
  elseif spec.pid_mode and spec.pid_mode ~= "host" and not p.container_pid then
    return refused("pid_mode", "another container's PID namespace",
      "container_pid")
  end
  for i, cap in ipairs(spec.cap_add or {}) do
    local ok = p.cap_add == true
    if type(p.cap_add) == "table" then
      for _, c in ipairs(p.cap_add) do
        ok = ok or tostring(c):upper():gsub("^CAP_", "") == cap
      end
    end
    if not ok then
      return refused(("cap_add[%d]"):format(i),
        ("adding the capability %s"):format(cap), "cap_add")
    end
  end
  if spec.devices and #spec.devices > 0 and not p.devices then
    return refused("devices[1].host", ("the host device %s"):format(
      spec.devices[1].host), "devices")
  end
  return true
end

local function check_limits(spec, p)
  if p.max_memory_bytes and (spec.memory_limit_bytes or math.huge)
      > p.max_memory_bytes then
    return nil, ("memory_limit_bytes: at most %d bytes are allowed by the "
      .. "policy (policy.lua: create.max_memory_bytes)%s"):format(
        p.max_memory_bytes, spec.memory_limit_bytes and "" or
        "; give a memory_limit_bytes"), "forbidden", "memory_limit_bytes"
  end
  if p.max_cpus and (spec.cpus or math.huge) > p.max_cpus then
    return nil, ("cpus: at most %g CPUs are allowed by the policy "
      .. "(policy.lua: create.max_cpus)%s"):format(p.max_cpus,
        spec.cpus and "" or "; give cpus"), "forbidden", "cpus"
  end
  return true
end

--- Whether create's rules let a container join the network `net` (a name,
-- "host", "container:<id>"): true | nil, message, kind, "network".
function M.network_allowed(net, policy)
  return check_network({ network = net }, (policy or M.DEFAULT).create or {})
end

--- Whether create's rules let the host path `path` be mounted: its
-- resolved form (symlinks followed, as the daemon would mount it) | nil,
-- message, kind, field. field names where path came from.
function M.bind_allowed(path, policy, field)
  local spec = { binds = { { source = path } } }
  local ok, err, kind = check_binds(spec, (policy or M.DEFAULT).create or {})
  if not ok then
    return nil, (err:gsub("^binds%[1%]%.source", field or "source")), kind,
      field
  end
  return spec.binds[1].source
end

-- In order: what needs no daemon first, so a refused body costs no call.
local CHECKS = { check_image, check_process, check_ports, check_limits,
  check_binds, check_network, check_volumes }

function M.allowed(spec, policy, req)
  local p = (policy or M.DEFAULT).create or {}
  for _, check in ipairs(CHECKS) do
    local ok, err, kind, field = check(spec, p)
    if not ok then
      return nil, err, kind, field
    end
  end
  if p.check then
    local field, msg = p.check(spec, req)
    if field ~= nil then
      return nil, ("%s: %s"):format(tostring(field),
        tostring(msg or "refused by the policy (policy.lua: create.check)")),
        "forbidden", tostring(field)
    end
  end
  return spec
end

-- ---- lifecycle -----------------------------------------------------------

--- The container a lifecycle action names, as the hook sees it.
local function resolve(ref)
  local info, err, kind = engine.inspect(ref)
  if not info then
    return nil, err, kind
  end
  local config = type(info.Config) == "table" and info.Config or {}
  local state = type(info.State) == "table" and info.State or {}
  return {
    id = info.Id,
    name = type(info.Name) == "string" and info.Name:gsub("^/", "") or null,
    image = config.Image or null,
    labels = type(config.Labels) == "table" and config.Labels or {},
    status = state.Status or null,
  }
end

--- Whether the policy lets `action` be done to ref (or to a container
-- already resolved): the container, or nil, message, kind.
function M.may(action, ref, policy, req)
  local p = policy or M.DEFAULT
  if not p.manage then
    return type(ref) == "table" and ref or { id = ref }
  end
  local ctr, err, kind = ref, nil, nil
  if type(ref) ~= "table" then
    ctr, err, kind = resolve(ref)
    if not ctr then
      return nil, err, kind
    end
  end
  local msg = p.manage(action, ctr, req)
  if msg ~= nil and msg ~= true then
    return nil, ("%s %s: %s"):format(action, tostring(ctr.name ~= null
      and ctr.name or ctr.id), tostring(msg)), "forbidden"
  end
  return ctr
end

return M
