--- horcrux.compose.check: what policy.lua says of a compose file, before
-- anything of it is made.
--
--   check.raw(file, policy)    -> true | nil, message, "forbidden", field
--       the file as written (before `docker-compose config`): what would
--       make the tool itself read host files (env_file, extends of another
--       file, build contexts, secrets and configs from files) is refused
--   check.file(file, ctx)      -> file (rewritten) | nil, message, kind,
--                                 field
--       the file as `docker-compose config` normalised it. ctx: name (the
--       project), policy, req, swarm (deployed as a swarm stack)
--
-- Every service is turned into the body POST /api/containers takes and
-- checked by the same rules (horcrux.manage.policy.allowed: privileged,
-- binds, host network and PID namespace, capabilities, devices, ports
-- beyond loopback, images, limits, policy.lua's create.check hook); the
-- networks and volumes the file defines by policy.lua's networks and
-- volumes sections; an image that is not here must come from a registry
-- images.pull allows. A service key horcrux does not know is refused
-- unless compose.allow lists it. The file is rewritten where the rules
-- make it so: a bind's source resolved (what the daemon will mount), a
-- published port without an address bound to create.default_host_ip (on a
-- swarm every published port is public, so it needs create.public_ports).
-- A field names where the refusal is: services.web.privileged.
local json = require "horcrux.json"
local engine = require "horcrux.engine"
local verdict = require "horcrux.manage.policy"
local registry = require "horcrux.registry"
local networks = require "horcrux.networks"
local volumes = require "horcrux.volumes"
local tables = require "horcrux.tables"

local M = {}

-- Service keys without a way to the host: passed as they are.
local PLAIN = {}
for k in ([[command entrypoint environment labels container_name hostname
  domainname working_dir user restart stop_grace_period stop_signal
  healthcheck depends_on expose tty stdin_open read_only init logging tmpfs
  shm_size cap_drop dns dns_search dns_opt extra_hosts ulimits
  mem_reservation memswap_limit mem_swappiness cpu_shares cpu_quota
  cpu_period cpuset cpu_count cpu_percent oom_score_adj profiles scale
  platform pull_policy links external_links mac_address pids_limit group_add
  blkio_config deploy]]):gmatch("%S+") do
  PLAIN[k] = true
end
-- Keys this file checks.
local CHECKED = { image = true, privileged = true, pid = true,
  network_mode = true, networks = true, cap_add = true, devices = true,
  ports = true, mem_limit = true, cpus = true, volumes = true, ipc = true,
  uts = true, userns_mode = true }
local TOP = { version = true, services = true, networks = true,
  volumes = true }

local function refused(field, fmt, ...)
  return nil, ("%s: " .. fmt):format(field, ...), "forbidden", field
end

local function bad(field, fmt, ...)
  return nil, ("%s: " .. fmt):format(field, ...), "bad_request", field
end

local function allowed_key(k, p)
  for _, a in ipairs(p.allow or {}) do
    if a == k then
      return true
    end
  end
  return false
end

local function is_table(v)
  return type(v) == "table"
end

-- ---- the file as written ------------------------------------------------------

function M.raw(file, policy)
  local p = verdict.section(policy, "compose")
  if not is_table(file) or not is_table(file.services) then
    return bad("services", "a compose file with services is expected")
  end
  for _, k in ipairs({ "secrets", "configs" }) do
    for name, def in pairs(is_table(file[k]) and file[k] or {}) do
      if is_table(def) and def.file and not allowed_key(k, p) then
        return refused(("%s.%s.file"):format(k, name), "reading a host file "
          .. "is refused (policy.lua: compose.allow)")
      end
    end
  end
  for name, svc in pairs(file.services) do
    local f = "services." .. tostring(name)
    if is_table(svc) then
      if svc.env_file ~= nil then
        return refused(f .. ".env_file", "reading a host file is refused; "
          .. "write the variables in environment")
      end
      if is_table(svc.extends) and svc.extends.file ~= nil then
        return refused(f .. ".extends.file", "reading another file is "
          .. "refused; extend a service of this file")
      end
      if svc.build ~= nil and not allowed_key("build", p) then
        return refused(f .. ".build", "building images is refused (the "
          .. "build context is read from the host) (policy.lua: "
          .. "compose.allow)")
      end
    end
  end
  return true
end

-- ---- pieces of a service ---------------------------------------------------

-- "64m", "1g", 1048576 -> bytes (docker's binary units), or nil.
local UNITS = { b = 1, k = 1024, m = 1024 ^ 2, g = 1024 ^ 3, t = 1024 ^ 4 }
local function bytes(v)
  if math.type(v) == "integer" then
    return v
  end
  if type(v) ~= "string" or #v > 32 then
    return nil
  end
  local n, u = v:lower():match("^(%d+%.?%d*)%s*([bkmgt]?)b?$")
  n = n and tonumber(n)
  return n and math.floor(n * (UNITS[u] or 1))
end

-- A port of the file as {host_ip, published, target, protocol}.
local function parse_port(v)
  if math.type(v) == "integer" then
    return { target = tostring(v), protocol = "tcp" }
  elseif is_table(v) then
    return { host_ip = v.host_ip, published = v.published and
      tostring(v.published), target = tostring(v.target),
      protocol = v.protocol or "tcp" }
  elseif type(v) ~= "string" or #v > 128 then
    return nil
  end
  local s, proto = v:match("^(.-)/(%a+)$")
  s, proto = s or v, proto or "tcp"
  local ip, rest = s:match("^%[([%x:.]+)%]:(.*)$")
  local parts = {}
  for x in ((rest or s) .. ":"):gmatch("([^:]*):") do
    parts[#parts + 1] = x
  end
  local n = #parts
  if not ip and n > 3 then -- an IPv6 address without brackets
    ip = table.concat(parts, ":", 1, n - 2)
  elseif not ip and n == 3 then
    ip = parts[1]
  end
  return { host_ip = ip ~= "" and ip or nil,
    published = n >= 2 and parts[n - 1] ~= "" and parts[n - 1] or nil,
    target = parts[n], protocol = proto:lower() }
end

local function port_text(pt, ip)
  ip = ip:find(":", 1, true) and ("[" .. ip .. "]") or ip
  return ("%s:%s:%s/%s"):format(ip, pt.published or "", pt.target,
    pt.protocol)
end

-- A volume of a service as {kind = "bind" | "volume" | "tmpfs" | "anon",
-- source, target, read_only}.
local function parse_volume(v)
  if is_table(v) then
    local kind = v.type or "volume"
    if kind == "volume" and not v.source then
      kind = "anon"
    end
    return { kind = kind, source = v.source, target = v.target,
      read_only = v.read_only == true }
  elseif type(v) ~= "string" then
    return nil
  end
  local parts = {}
  for x in (v .. ":"):gmatch("([^:]*):") do
    parts[#parts + 1] = x
  end
  if #parts == 1 then
    return { kind = "anon", target = parts[1] }
  end
  local src = parts[1]
  return { kind = src:sub(1, 1) == "/" and "bind" or "volume", source = src,
    target = parts[2], read_only = (parts[3] or ""):find("ro") ~= nil }
end

-- network_mode / pid as create's body says them.
local function mode(v)
  if type(v) ~= "string" then
    return nil
  end
  local other = v:match("^service:(.+)$") or v:match("^container:(.+)$")
  return other and ("container:" .. other) or v
end

local function caps(list)
  local out = json.array()
  for i, c in ipairs(is_table(list) and list or {}) do
    out[i] = tostring(c):upper():gsub("^CAP_", "")
  end
  return out
end

local function devices(list)
  local out = json.array()
  for i, d in ipairs(is_table(list) and list or {}) do
    local host = type(d) == "string" and d:match("^[^:]+") or tostring(d)
    out[i] = { host = host, container = host, permissions = "rwm" }
  end
  return out
end

local function service_networks(svc)
  local out = {}
  if is_table(svc.networks) then
    for k, v in pairs(svc.networks) do
      out[#out + 1] = math.type(k) == "integer" and v or k
    end
  end
  table.sort(out)
  return out
end

-- ---- a service -------------------------------------------------------------

-- The name a network or volume of the file has on the engine.
local function real_name(ctx, kind, key)
  local def = is_table(ctx.file[kind]) and ctx.file[kind][key]
  if is_table(def) and def.name then
    return def.name
  end
  if is_table(def) and is_table(def.external) and def.external.name then
    return def.external.name
  end
  if is_table(def) and def.external == true then
    return key
  end
  return ctx.name .. "_" .. key
end

-- The limits that apply: mem_limit and cpus for compose, the deploy
-- section's for a swarm.
local function limits(svc, ctx, spec)
  if ctx.swarm then
    local l = is_table(svc.deploy) and is_table(svc.deploy.resources)
      and svc.deploy.resources.limits
    l = is_table(l) and l or {}
    spec.memory_limit_bytes, spec.cpus = bytes(l.memory), tonumber(l.cpus)
  else
    spec.memory_limit_bytes, spec.cpus = bytes(svc.mem_limit),
      tonumber(svc.cpus)
  end
end

-- The ports as create's body (host_ip is what the rules look at), and
-- the service's ports rewritten with an address where they had none.
local function ports(svc, ctx, spec, f)
  spec.ports = json.array()
  local out = json.array()
  local default = (ctx.policy.create or {}).default_host_ip or "127.0.0.1"
  for i, v in ipairs(is_table(svc.ports) and svc.ports or {}) do
    local pt = parse_port(v)
    if not pt or not pt.target:match("^[%d-]+$") then
      return bad(("%s.ports[%d]"):format(f, i), "not a port")
    end
    if ctx.swarm then
      if pt.published then
        spec.ports[#spec.ports + 1] = { host_ip = "0.0.0.0" }
      end
      out[i] = v
    else
      local ip = pt.host_ip or default
      spec.ports[#spec.ports + 1] = { host_ip = ip }
      out[i] = port_text(pt, ip)
    end
  end
  return out
end

-- Binds and named volumes as create's body; the index of each bind's
-- entry in svc.volumes.
local function mounts(svc, ctx, spec, f)
  spec.binds, spec.volumes = json.array(), json.array()
  local at = {}
  for i, v in ipairs(is_table(svc.volumes) and svc.volumes or {}) do
    local m = parse_volume(v)
    if not m or type(m.target) ~= "string" then
      return bad(("%s.volumes[%d]"):format(f, i), "not a volume")
    elseif m.kind == "bind" then
      if ctx.swarm and (ctx.policy.create or {}).binds ~= true then
        return refused(("%s.volumes[%d]"):format(f, i), "a bind on a swarm "
          .. "is mounted on whichever node runs the task, so it cannot be "
          .. "checked here (policy.lua: create.binds = true allows any)")
      end
      spec.binds[#spec.binds + 1] = { source = m.source, target = m.target,
        read_only = m.read_only }
      at[#spec.binds] = i
    elseif m.kind == "volume" then
      spec.volumes[#spec.volumes + 1] = { name = real_name(ctx, "volumes",
        m.source), target = m.target }
    elseif m.kind ~= "anon" and m.kind ~= "tmpfs" then
      return refused(("%s.volumes[%d]"):format(f, i), "a %s mount is not "
        .. "something horcrux checks", m.kind)
    end
  end
  return at
end

-- The create body of service svc (and what it rewrites: ports, binds).
local function spec_of(svc, ctx, f)
  if type(svc.image) ~= "string" then
    return bad(f .. ".image", "every service needs an image")
  end
  local spec = { image = svc.image, privileged = svc.privileged == true,
    pid_mode = mode(svc.pid), cap_add = caps(svc.cap_add),
    devices = devices(svc.devices) }
  local nm = mode(svc.network_mode)
  if nm and nm ~= "none" and nm ~= "bridge" and nm ~= "default" then
    spec.network = nm
  end
  limits(svc, ctx, spec)
  local out_ports, err, kind, field = ports(svc, ctx, spec, f)
  if not out_ports then
    return nil, err, kind, field
  end
  local at
  at, err, kind, field = mounts(svc, ctx, spec, f)
  if not at then
    return nil, err, kind, field
  end
  return spec, out_ports, at
end

local function host_namespaces(svc, p, f)
  for _, k in ipairs({ "ipc", "uts", "userns_mode" }) do
    if svc[k] == "host" and not allowed_key(k, p) then
      return refused(f .. "." .. k, "the host's namespace is refused "
        .. "(policy.lua: compose.allow)")
    end
  end
  return true
end

-- An image that is not here is pulled by the tool: from a registry the
-- policy allows only.
local function image_source(image, policy, f)
  local img, err, kind = engine.image(image)
  if img then
    return true
  elseif kind ~= "not_found" then
    return nil, err, kind
  end
  local ref
  ref, err, kind = registry.parse(image)
  if not ref then
    return nil, err, kind, f
  end
  if not registry.allowed("pull", ref, policy) then
    return refused(f, "%s is not on the engine, and its registry %s is not "
      .. "one images may be pulled from (policy.lua: images.pull)", image,
      ref.registry)
  end
  return true
end

-- The key of the compose file that a field of create's body came from.
local function compose_field(field, at, ctx)
  local i = tonumber(field:match("^binds%[(%d+)%]"))
  if i then
    return ("volumes[%d]"):format(at[i])
  end
  local head, rest = field:match("^([%w_]+)(.*)$")
  local limit = ctx.swarm and "deploy.resources.limits." or ""
  local key = ({ network = "network_mode", pid_mode = "pid",
    memory_limit_bytes = ctx.swarm and limit .. "memory" or "mem_limit",
    cpus = limit .. "cpus" })[head or ""]
  if key then
    return key .. (rest or "")
  end
  return field
end

local function check_service(name, svc, ctx)
  local f = "services." .. name
  local p = verdict.section(ctx.policy, "compose")
  if not is_table(svc) then
    return bad(f, "must be an object")
  end
  for _, k in ipairs(tables.sorted_keys(svc)) do
    if not (PLAIN[k] or CHECKED[k] or k:match("^x%-") or allowed_key(k, p))
    then
      return refused(f .. "." .. k, "not something horcrux checks, so "
        .. "refused (policy.lua: compose.allow lists what may pass)")
    end
  end
  local ok, err, kind, field = host_namespaces(svc, p, f)
  if not ok then
    return nil, err, kind, field
  end
  local spec, out_ports, at, ffield = spec_of(svc, ctx, f)
  if not spec then
    return nil, out_ports, at, ffield
  end
  ok, err, kind, field = verdict.allowed(spec, ctx.policy, ctx.req)
  if not ok then
    local where = compose_field(field or "image", at, ctx)
    local text = err:sub(1, #(field or "") + 1) == (field or "") .. ":"
      and err:sub(#(field or "") + 2) or (" " .. err)
    return nil, ("%s.%s:%s"):format(f, where, text), kind, f .. "." .. where
  end
  ok, err, kind, field = image_source(svc.image, ctx.policy, f .. ".image")
  if not ok then
    return nil, err, kind, field
  end
  svc.ports = #out_ports > 0 and out_ports or svc.ports
  for i, b in ipairs(spec.binds) do -- the resolved source is mounted
    local v = svc.volumes[at[i]]
    if is_table(v) then
      v.source = b.source
    else
      svc.volumes[at[i]] = (v:gsub("^[^:]*", function() return b.source end))
    end
  end
  return true
end

-- ---- networks and volumes the file defines -----------------------------------

local function check_definitions(ctx)
  local file = ctx.file
  for _, key in ipairs(tables.sorted_keys(is_table(file.networks)
    and file.networks or {})) do
    local def = file.networks[key]
    def = is_table(def) and def or {}
    local f = "networks." .. key
    local ok, err, kind, field
    if def.external then
      ok, err, kind, field = verdict.network_allowed(real_name(ctx,
        "networks", key), ctx.policy)
      field = field and f
    else
      ok, err, kind, field = networks.check({ options = def.driver_opts,
        driver = def.driver or (ctx.swarm and "overlay" or "bridge") },
        ctx.policy, f)
    end
    if not ok then
      return nil, (err:gsub("^network:", f .. ":")), kind, field
    end
  end
  for _, key in ipairs(tables.sorted_keys(is_table(file.volumes)
    and file.volumes or {})) do
    local def = file.volumes[key]
    if is_table(def) and not def.external then
      local opts, err, kind, field = volumes.check({ driver = def.driver,
        options = def.driver_opts }, ctx.policy, "volumes." .. key)
      if not opts then
        return nil, err, kind, field
      end
      def.driver_opts = next(opts) and opts or def.driver_opts
    end
  end
  return true
end

function M.file(file, ctx)
  ctx.file = file
  local p = verdict.section(ctx.policy, "compose")
  if not is_table(file) or not is_table(file.services)
      or next(file.services) == nil then
    return bad("services", "the file defines no service")
  end
  for _, k in ipairs(tables.sorted_keys(file)) do
    if not (TOP[k] or k:match("^x%-") or allowed_key(k, p)) then
      return refused(k, "not something horcrux checks, so refused "
        .. "(policy.lua: compose.allow)")
    end
  end
  local ok, err, kind, field = check_definitions(ctx)
  if not ok then
    return nil, err, kind, field
  end
  for _, name in ipairs(tables.sorted_keys(file.services)) do
    ok, err, kind, field = check_service(name, file.services[name], ctx)
    if not ok then
      return nil, err, kind, field
    end
  end
  return file
end

M.parse_port, M.parse_volume, M.bytes = parse_port, parse_volume, bytes

return M
