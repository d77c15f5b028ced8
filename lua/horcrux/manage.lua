--- horcrux.manage: creating containers and driving their lifecycle
-- through the Engine API, under the operator's policy (policy.lua).
--
--   manage.policy()                       -> the policy table (loaded once)
--   manage.load_policy([name])            -> loads policy.lua again, checked
--   manage.check_policy_table(p)          -> p | raises naming a bad setting
--   manage.validate(body)                 -> spec | nil, msg, "bad_request", field
--   manage.allowed(spec, policy, req)     -> true | nil, msg, "forbidden", field
--   manage.engine_body(spec, policy)      -> the Engine API create body
--   manage.create(spec, policy)           -> {id, name, started, warnings}
--   manage.action(ref, action, opts, policy) -> {id, action, changed}
--   manage.remove(ref, opts, policy)      -> {id, removed = true}
--   manage.may(action, ref, policy, req)  -> true | nil, msg, "forbidden"
-- The calls to the daemon return their answer or nil, message, kind[,
-- extra]; kinds as horcrux.docker's (not_found, conflict, bad_request,
-- unavailable, timeout, server).
--
-- The create body (POST /api/containers), every field optional but image:
--   image               string, an image reference (no pull: it must be
--                       local)
--   name                string, [a-zA-Z0-9][a-zA-Z0-9_.-]*
--   cmd, entrypoint     arrays of strings (no shell is involved)
--   env                 object {"NAME": "value"}
--   labels              object {"key": "value"}
--   ports               [{"container": 80, "host": 8080, "protocol": "tcp",
--                         "host_ip": "127.0.0.1"}]; host absent: exposed
--                       only; host 0: any free port; host_ip absent: the
--                       policy's default_host_ip
--   memory_limit_bytes  integer >= 6 MiB
--   cpus                number 0.01..1024 (Docker's NanoCpus)
--   restart_policy      "no" | "always" | "unless-stopped" | "on-failure" |
--                       "on-failure:N"
--   network             "bridge" | "none" | "host" | "container:<id>" | a
--                       network name
--   privileged          boolean
--   binds               [{"source": "/host/path", "target": "/path",
--                         "read_only": false}]   host paths mounted in
--   volumes             [{"name": "vol", "target": "/path",
--                         "read_only": false}]   named volumes
--   pid_mode            "host" | "container:<id>"
--   cap_add, cap_drop   arrays of capability names ("NET_ADMIN", "ALL")
--   devices             [{"host": "/dev/x", "container": "/dev/x",
--                         "permissions": "rwm"}]
--   user, working_dir, hostname   strings
--   tty, read_only      booleans (read_only: a read-only root filesystem)
--   stop_timeout        integer seconds 0..86400
--   start               boolean: start it once created
-- An unknown field is refused (400) with its name: the daemon reads its
-- own body's keys without regard to case and lets a duplicate win, so the
-- body sent to it is built here from the validated fields only, never
-- copied from the client.
local json = require "horcrux.json"
local docker_api = require "horcrux.sources.docker_api"

local null = json.null

local M = {}

-- ---- the policy ----------------------------------------------------------

local SETTINGS = {
  create = "table", manage = "function", cli_fallback = "boolean",
  cli = "table",
}
local CREATE_SETTINGS = {
  privileged = "boolean", binds = "boolean|table", volumes = "boolean",
  host_network = "boolean", container_network = "boolean",
  networks = "table", host_pid = "boolean", container_pid = "boolean",
  cap_add = "boolean|table", devices = "boolean", images = "table",
  max_memory_bytes = "number", max_cpus = "number",
  default_host_ip = "string", check = "function",
}
local CLI_SETTINGS = { docker = "string", timeout = "number", env = "table" }

local function check_settings(t, allowed, where)
  for k, v in pairs(t) do
    local want = allowed[k]
    if not want then
      local names = {}
      for name in pairs(allowed) do
        names[#names + 1] = name
      end
      table.sort(names)
      error(("policy.lua: unknown setting %s%s (settings: %s)"):format(
        where, tostring(k), table.concat(names, ", ")), 0)
    end
    if not want:find(type(v), 1, true) then
      error(("policy.lua: %s%s must be %s, got %s"):format(where, k,
        want:gsub("|", " or "), type(v)), 0)
    end
  end
end

--- Checks a policy table; raises with the bad setting named.
function M.check_policy_table(p)
  if type(p) ~= "table" then
    error("policy.lua must return a table", 0)
  end
  check_settings(p, SETTINGS, "")
  check_settings(p.create or {}, CREATE_SETTINGS, "create.")
  check_settings(p.cli or {}, CLI_SETTINGS, "cli.")
  return p
end

--- Loads policy.lua (found on package.path: the scripts dir first, then
-- the shipped one) in an environment where assigning an undeclared global
-- is an error, checks it, and makes it what require "policy" returns.
function M.load_policy(name)
  name = name or "policy"
  local path, err = package.searchpath(name, package.path)
  if not path then
    error(name .. ".lua not found: " .. err, 0)
  end
  local env = require("horcrux.app").strict_env()
  local chunk
  chunk, err = loadfile(path, "t", env)
  if not chunk then
    error(err, 0)
  end
  local p = M.check_policy_table(chunk())
  package.loaded[name] = p
  return p
end

--- The policy in force in this Lua state: what require "policy" gives
-- when the host has loaded it already (from its snapshot of the scripts),
-- checked; else policy.lua loaded now.
function M.policy()
  local p = package.loaded.policy
  if type(p) == "table" then
    return M.check_policy_table(p)
  end
  return M.load_policy()
end

-- ---- validating the create body ------------------------------------------

local KiB = 1024
local MIN_MEMORY = 6 * KiB * KiB -- the daemon's own minimum

local function printable(s)
  return not s:find("[%c\127]")
end

-- A JSON array (or, from Lua callers, a plain sequence; {} from a client
-- that writes an empty [] as {} too).
local function is_array(v)
  if type(v) ~= "table" then
    return false
  end
  if json.is_array(v) then
    return true
  end
  local n = 0
  for k in pairs(v) do
    n = n + 1
    if math.type(k) ~= "integer" then
      return false
    end
  end
  return n == #v
end

-- A JSON object: string keys only (an empty [] is taken as {} too).
local function is_object(v)
  if type(v) ~= "table" then
    return false
  end
  for k in pairs(v) do
    if type(k) ~= "string" then
      return false
    end
  end
  return true
end

local function bad(field, fmt, ...)
  return nil, field .. ": " .. fmt:format(...), "bad_request", field
end

-- A clean absolute path: no NUL or control bytes, no . or .. segments;
-- repeated and trailing slashes dropped.
local function abs_path(field, v)
  if type(v) ~= "string" then
    return bad(field, "must be a string (an absolute path)")
  end
  if #v == 0 or #v > 4096 or v:sub(1, 1) ~= "/" or not printable(v) then
    return bad(field, "must be an absolute path (at most 4096 bytes)")
  end
  local segs = {}
  for seg in v:gmatch("[^/]+") do
    if seg == "." or seg == ".." then
      return bad(field, "must not contain . or .. segments")
    end
    segs[#segs + 1] = seg
  end
  return "/" .. table.concat(segs, "/")
end

local function string_of(field, v, max, pattern, what)
  if type(v) ~= "string" then
    return bad(field, "must be a string")
  end
  if #v == 0 or #v > max or (pattern and not v:match(pattern))
      or not printable(v) then
    return bad(field, "must be %s (at most %d bytes)", what, max)
  end
  return v
end

local function boolean(field, v)
  if type(v) ~= "boolean" then
    return bad(field, "must be true or false")
  end
  return v
end

local function integer(field, v, min, max)
  local n = math.type(v) == "integer" and v
    or (math.type(v) == "float" and math.tointeger(v))
  if not n or n < min or n > max then
    return bad(field, "must be an integer from %d to %d", min, max)
  end
  return n
end

local function strings(field, v, max_items, max_len)
  if not is_array(v) then
    return bad(field, "must be an array of strings")
  end
  if #v > max_items then
    return bad(field, "at most %d items", max_items)
  end
  local out = json.array()
  for i, s in ipairs(v) do
    if type(s) ~= "string" or #s > max_len or s:find("\0", 1, true) then
      return bad(("%s[%d]"):format(field, i),
        "must be a string without NUL bytes (at most %d bytes)", max_len)
    end
    out[i] = s
  end
  return out
end

-- Checks the keys of an object against `known`; returns the first unknown.
local function unknown_keys(obj, known)
  local extra = {}
  for k in pairs(obj) do
    if type(k) ~= "string" or not known[k] then
      extra[#extra + 1] = tostring(k)
    end
  end
  table.sort(extra)
  return extra
end

local function objects(field, v, known, max_items, each)
  if not is_array(v) then
    return bad(field, "must be an array of objects")
  end
  if #v > max_items then
    return bad(field, "at most %d items", max_items)
  end
  local out = json.array()
  for i, item in ipairs(v) do
    local f = ("%s[%d]"):format(field, i)
    if not is_object(item) then
      return bad(f, "must be an object")
    end
    local extra = unknown_keys(item, known)
    if #extra > 0 then
      return bad(f .. "." .. extra[1], "unknown field (fields: %s)",
        (function()
          local names = {}
          for k in pairs(known) do
            names[#names + 1] = k
          end
          table.sort(names)
          return table.concat(names, ", ")
        end)())
    end
    local r, err, kind, ff = each(f, item)
    if r == nil then
      return nil, err, kind, ff
    end
    out[i] = r
  end
  return out
end

local function ip(field, v)
  if type(v) ~= "string" then
    return bad(field, "must be an IP address")
  end
  local a, b, c, d = v:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  if a then
    for _, n in ipairs({ a, b, c, d }) do
      if #n > 3 or tonumber(n) > 255 then
        return bad(field, "must be an IP address")
      end
    end
    return v
  end
  local colons = select(2, v:gsub(":", ""))
  if #v <= 45 and colons >= 2 and v:match("^[%x:%.]+$") then
    return v
  end
  return bad(field, "must be an IP address")
end

local NAME = "^[%w][%w_.-]*$"

-- "container:<ref>" -> the ref, or nil when v is not of that form.
local function container_ref(v)
  local ref = v:match("^container:(.*)$")
  if ref and #ref <= 255 and ref:match(NAME) then
    return ref
  end
  return ref and false or nil
end

local function capability(field, v)
  if not is_array(v) then
    return bad(field, "must be an array of capability names")
  end
  if #v > 64 then
    return bad(field, "at most 64 items")
  end
  local out = json.array()
  for i, s in ipairs(v) do
    local c = type(s) == "string" and s:upper():gsub("^CAP_", "")
    if not c or #c > 64 or not c:match("^[A-Z_]+$") then
      return bad(("%s[%d]"):format(field, i),
        "must be a capability name such as NET_ADMIN")
    end
    out[i] = c
  end
  return out
end

-- The part binds and volumes share: a mount's `target` (an absolute path)
-- and `read_only` (default false), added to out.
local function mount(ff, b, out)
  local target, err, kind, fld = abs_path(ff .. ".target", b.target)
  if not target then
    return nil, err, kind, fld
  end
  local ro = false
  if b.read_only ~= nil then
    ro, err, kind, fld = boolean(ff .. ".read_only", b.read_only)
    if ro == nil then
      return nil, err, kind, fld
    end
  end
  out.target, out.read_only = target, ro
  return out
end

local FIELDS -- name -> function(field, value) -> normalized | nil, ...
FIELDS = {
  image = function(f, v)
    return string_of(f, v, 255, "^[%w][%w._/:@-]*$", "an image reference")
  end,
  name = function(f, v)
    return string_of(f, v, 255, NAME, "a name: letters, digits and _ . - "
      .. "starting with a letter or digit")
  end,
  cmd = function(f, v) return strings(f, v, 1024, 65536) end,
  entrypoint = function(f, v) return strings(f, v, 1024, 65536) end,
  env = function(f, v)
    if not is_object(v) then
      return bad(f, 'must be an object {"NAME": "value"}')
    end
    local out, n = {}, 0
    for k, s in pairs(v) do
      n = n + 1
      if n > 1024 then
        return bad(f, "at most 1024 variables")
      end
      if type(k) ~= "string" or #k == 0 or #k > 255 or k:find("=", 1, true)
          or not printable(k) then
        return bad(f, "names are 1 to 255 printable bytes without '='")
      end
      if type(s) ~= "string" or #s > 65536 or s:find("\0", 1, true) then
        return bad(f .. "." .. k, "must be a string without NUL bytes "
          .. "(at most 65536 bytes)")
      end
      out[k] = s
    end
    return out
  end,
  labels = function(f, v)
    if not is_object(v) then
      return bad(f, 'must be an object {"key": "value"}')
    end
    local out, n = {}, 0
    for k, s in pairs(v) do
      n = n + 1
      if n > 256 then
        return bad(f, "at most 256 labels")
      end
      if type(k) ~= "string" or #k == 0 or #k > 255 or not printable(k) then
        return bad(f, "keys are 1 to 255 printable bytes")
      end
      if type(s) ~= "string" or #s > 4096 or s:find("\0", 1, true) then
        return bad(f .. "." .. k, "must be a string without NUL bytes "
          .. "(at most 4096 bytes)")
      end
      out[k] = s
    end
    return out
  end,
  ports = function(f, v)
    return objects(f, v,
      { container = true, host = true, protocol = true, host_ip = true }, 256,
      function(ff, p)
        if p.container == nil then
          return bad(ff .. ".container", "is required (the container's port)")
        end
        local container, err, kind, fld = integer(ff .. ".container",
          p.container, 1, 65535)
        if not container then
          return nil, err, kind, fld
        end
        local out = { container = container, protocol = "tcp" }
        if p.host ~= nil then
          out.host, err, kind, fld = integer(ff .. ".host", p.host, 0, 65535)
          if not out.host then
            return nil, err, kind, fld
          end
        end
        if p.protocol ~= nil then
          if p.protocol ~= "tcp" and p.protocol ~= "udp"
              and p.protocol ~= "sctp" then
            return bad(ff .. ".protocol", "must be tcp, udp or sctp")
          end
          out.protocol = p.protocol
        end
        if p.host_ip ~= nil then
          if p.host == nil then
            return bad(ff .. ".host_ip", "needs host (a port to publish)")
          end
          out.host_ip, err, kind, fld = ip(ff .. ".host_ip", p.host_ip)
          if not out.host_ip then
            return nil, err, kind, fld
          end
        end
        return out
      end)
  end,
  memory_limit_bytes = function(f, v)
    return integer(f, v, MIN_MEMORY, 1 << 62)
  end,
  cpus = function(f, v)
    if type(v) ~= "number" or v ~= v or v < 0.01 or v > 1024 then
      return bad(f, "must be a number from 0.01 to 1024")
    end
    return v
  end,
  restart_policy = function(f, v)
    if v == "no" or v == "always" or v == "unless-stopped"
        or v == "on-failure" then
      return { name = v, retries = 0 }
    end
    local n = type(v) == "string" and v:match("^on%-failure:(%d+)$")
    n = n and #n <= 7 and tonumber(n)
    if n and n >= 1 then
      return { name = "on-failure", retries = n }
    end
    return bad(f, 'must be "no", "always", "unless-stopped", "on-failure" '
      .. 'or "on-failure:N"')
  end,
  network = function(f, v)
    if type(v) ~= "string" then
      return bad(f, "must be a string")
    end
    local ref = container_ref(v)
    if ref == false then
      return bad(f, '"container:" must be followed by a container name or id')
    end
    if ref or (#v <= 255 and v:match(NAME)) then
      return v
    end
    return bad(f, 'must be "bridge", "none", "host", "container:<id>" or a '
      .. "network name")
  end,
  privileged = boolean,
  binds = function(f, v)
    return objects(f, v, { source = true, target = true, read_only = true },
      64, function(ff, b)
        local source, err, kind, fld = abs_path(ff .. ".source", b.source)
        if not source then
          return nil, err, kind, fld
        end
        return mount(ff, b, { source = source })
      end)
  end,
  volumes = function(f, v)
    return objects(f, v, { name = true, target = true, read_only = true },
      64, function(ff, b)
        local name, err, kind, fld = string_of(ff .. ".name", b.name, 255,
          "^[%w][%w_.-]+$", "a volume name: letters, digits and _ . -")
        if not name then
          return nil, err, kind, fld
        end
        return mount(ff, b, { name = name })
      end)
  end,
  pid_mode = function(f, v)
    if v == "host" then
      return v
    end
    local ref = type(v) == "string" and container_ref(v)
    if ref then
      return v
    end
    return bad(f, 'must be "host" or "container:<id>"')
  end,
  cap_add = capability,
  cap_drop = capability,
  devices = function(f, v)
    return objects(f, v, { host = true, container = true, permissions = true },
      64, function(ff, d)
        local host, err, kind, fld = abs_path(ff .. ".host", d.host)
        if not host then
          return nil, err, kind, fld
        end
        local container = host
        if d.container ~= nil then
          container, err, kind, fld = abs_path(ff .. ".container", d.container)
          if not container then
            return nil, err, kind, fld
          end
        end
        local perms = d.permissions or "rwm"
        if type(perms) ~= "string" or not perms:match("^[rwm]+$") or #perms > 3 then
          return bad(ff .. ".permissions", "must be made of r, w and m")
        end
        return { host = host, container = container, permissions = perms }
      end)
  end,
  user = function(f, v)
    return string_of(f, v, 64, "^[%w_.-]+:?[%w_.-]*$",
      "a user name or uid, with an optional :group")
  end,
  working_dir = abs_path,
  hostname = function(f, v)
    return string_of(f, v, 63, "^[%w][%w.-]*$", "a host name")
  end,
  tty = boolean,
  read_only = boolean,
  stop_timeout = function(f, v) return integer(f, v, 0, 86400) end,
  start = boolean,
}

local FIELD_NAMES = {}
for k in pairs(FIELDS) do
  FIELD_NAMES[#FIELD_NAMES + 1] = k
end
table.sort(FIELD_NAMES)
M.FIELDS = FIELD_NAMES

--- The validated create request: every field checked and normalized.
-- Unknown fields are refused, all of them named.
function M.validate(body)
  if not is_object(body) then
    return nil, "the body must be a JSON object", "bad_request"
  end
  local extra = unknown_keys(body, FIELDS)
  if #extra > 0 then
    return nil, ("unknown field%s: %s (the fields are: %s)"):format(
      #extra > 1 and "s" or "", table.concat(extra, ", "),
      table.concat(FIELD_NAMES, ", ")), "bad_request", extra[1]
  end
  if body.image == nil then
    return bad("image", "is required")
  end
  local spec = {}
  for _, k in ipairs(FIELD_NAMES) do
    local v = body[k]
    if v ~= nil and v ~= null then
      local r, err, kind, field = FIELDS[k](k, v)
      if r == nil then
        return nil, err, kind, field
      end
      spec[k] = r
    end
  end
  return spec
end

-- ---- the policy's verdict --------------------------------------------------

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

local function listed(list, v)
  for _, x in ipairs(list) do
    if x == v then
      return true
    end
  end
  return false
end

--- Whether the policy lets spec be created: true, or nil, message,
-- "forbidden", field.
function M.allowed(spec, policy, req)
  local p = (policy or M.policy()).create or {}
  if p.images then
    local ok = false
    for _, pat in ipairs(p.images) do
      if spec.image:match(pat) then
        ok = true
        break
      end
    end
    if not ok then
      return refused("image", ("the image %q"):format(spec.image), "images")
    end
  end
  if spec.privileged and not p.privileged then
    return refused("privileged", "a privileged container", "privileged")
  end
  for i, b in ipairs(spec.binds or {}) do
    local ok = p.binds == true
    if type(p.binds) == "table" then
      for _, prefix in ipairs(p.binds) do
        ok = ok or under(b.source, prefix)
      end
    end
    if not ok then
      return refused(("binds[%d].source"):format(i),
        ("mounting the host path %s"):format(b.source), "binds")
    end
  end
  if spec.volumes and #spec.volumes > 0 and not p.volumes then
    return refused("volumes", "a named volume", "volumes")
  end
  local net = spec.network
  if net == "host" and not p.host_network then
    return refused("network", "the host network", "host_network")
  elseif net and net:match("^container:") then
    if not p.container_network then
      return refused("network", "another container's network",
        "container_network")
    end
  elseif net and p.networks and not listed(p.networks, net) then
    return refused("network", ("the network %q"):format(net), "networks")
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
  if p.check then
    local field, msg = p.check(spec, req)
    if field ~= nil then
      return nil, ("%s: %s"):format(tostring(field),
        tostring(msg or "refused by the policy (policy.lua: create.check)")),
        "forbidden", tostring(field)
    end
  end
  return true
end

--- Whether the policy lets `action` be done to ref.
function M.may(action, ref, policy, req)
  local p = policy or M.policy()
  if p.manage then
    local msg = p.manage(action, ref, req)
    if msg ~= nil and msg ~= true then
      return nil, ("%s %s: %s"):format(action, ref, tostring(msg)),
        "forbidden"
    end
  end
  return true
end

-- ---- the Engine API body -------------------------------------------------

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do
    keys[#keys + 1] = k
  end
  table.sort(keys)
  return keys
end

--- The body of POST /containers/create for spec: only keys written here.
function M.engine_body(spec, policy)
  local p = (policy or M.policy()).create or {}
  local host = {}
  local body = { Image = spec.image, HostConfig = host }
  body.Cmd = spec.cmd
  body.Entrypoint = spec.entrypoint
  if spec.env then
    local env = json.array()
    for _, k in ipairs(sorted_keys(spec.env)) do
      env[#env + 1] = k .. "=" .. spec.env[k]
    end
    body.Env = env
  end
  body.Labels = spec.labels
  if spec.ports and #spec.ports > 0 then
    local exposed, bindings = {}, {}
    for _, pt in ipairs(spec.ports) do
      local key = pt.container .. "/" .. pt.protocol
      exposed[key] = {}
      if pt.host then
        local list = bindings[key] or json.array()
        list[#list + 1] = {
          HostIp = pt.host_ip or p.default_host_ip or "",
          HostPort = pt.host == 0 and "" or tostring(pt.host),
        }
        bindings[key] = list
      end
    end
    body.ExposedPorts = exposed
    if next(bindings) then
      host.PortBindings = bindings
    end
  end
  host.Memory = spec.memory_limit_bytes
  if spec.cpus then
    host.NanoCpus = math.floor(spec.cpus * 1e9 + 0.5)
  end
  if spec.restart_policy then
    host.RestartPolicy = {
      Name = spec.restart_policy.name,
      MaximumRetryCount = spec.restart_policy.retries,
    }
  end
  host.NetworkMode = spec.network
  host.Privileged = spec.privileged
  local mounts = json.array()
  for _, b in ipairs(spec.binds or {}) do
    mounts[#mounts + 1] = { Type = "bind", Source = b.source,
      Target = b.target, ReadOnly = b.read_only }
  end
  for _, v in ipairs(spec.volumes or {}) do
    mounts[#mounts + 1] = { Type = "volume", Source = v.name,
      Target = v.target, ReadOnly = v.read_only }
  end
  if #mounts > 0 then
    host.Mounts = mounts
  end
  host.PidMode = spec.pid_mode
  host.CapAdd = spec.cap_add
  host.CapDrop = spec.cap_drop
  if spec.devices then
    local devs = json.array()
    for i, d in ipairs(spec.devices) do
      devs[i] = { PathOnHost = d.host, PathInContainer = d.container,
        CgroupPermissions = d.permissions }
    end
    host.Devices = devs
  end
  host.ReadonlyRootfs = spec.read_only
  body.User = spec.user
  body.WorkingDir = spec.working_dir
  body.Hostname = spec.hostname
  if spec.tty then
    body.Tty = true
  end
  body.StopTimeout = spec.stop_timeout
  return body
end

-- ---- talking to the daemon -----------------------------------------------

local STATUS_KIND = {
  [400] = "bad_request", [404] = "not_found", [409] = "conflict",
}

-- nil, message, kind for a reply that is not a success.
local function daemon_error(status, body)
  local msg = type(body) == "table" and body.message
  if type(msg) ~= "string" then
    msg = type(body) == "string" and body ~= "" and body:sub(1, 200)
      or ("HTTP " .. tostring(status))
  end
  return nil, "docker: " .. msg,
    STATUS_KIND[status] or (status >= 500 and "server" or "bad_request")
end
M.daemon_error = daemon_error

local function client()
  return docker_api.client()
end

-- ---- the docker CLI, when the policy allows it -----------------------------

local function trim(s)
  return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end

local function cli_kind(stderr)
  if stderr:find("No such container", 1, true)
      or stderr:find("No such image", 1, true) then
    return "not_found"
  elseif stderr:find("Conflict", 1, true)
      or stderr:find("is already in use", 1, true)
      or stderr:find("cannot remove a running", 1, true)
      or stderr:find("is not running", 1, true) then
    return "conflict"
  elseif stderr:find("Cannot connect to the Docker daemon", 1, true) then
    return "unavailable"
  elseif stderr:find("invalid", 1, true) or stderr:find("Invalid", 1, true) then
    return "bad_request"
  end
  return "server"
end

-- Runs `docker ARGS...` (no shell); returns its trimmed stdout or nil,
-- message, kind.
local function cli(policy, args)
  local proc = require "horcrux.proc"
  local o = policy.cli or {}
  local argv = { o.docker or "docker" }
  for _, a in ipairs(args) do
    argv[#argv + 1] = a
  end
  local r, msg, kind = proc.run(argv, { timeout = o.timeout or 30,
    env = o.env, max_output = 1 << 20 })
  if not r then
    return nil, "docker-cli: " .. tostring(msg),
      kind == "not_found" and "unavailable" or (kind or "unavailable")
  end
  if r.timed_out then
    return nil, ("docker-cli: docker %s timed out"):format(args[1]), "timeout"
  end
  if r.status ~= 0 then
    local err = trim(r.stderr):gsub("\n.*", "")
    return nil, ("docker-cli: docker %s: %s"):format(args[1],
      err ~= "" and err or ("exit status " .. tostring(r.status))),
      cli_kind(r.stderr)
  end
  return trim(r.stdout)
end

local function fallback_allowed(policy, kind)
  return kind == "unavailable" and policy.cli_fallback == true
end

-- `docker create` arguments for spec, or nil, message, "bad_request" for
-- what the CLI cannot say as the API does.
local function cli_create_args(spec, policy)
  local p = policy.create or {}
  local a = { "create" }
  local function add(...)
    for _, x in ipairs({ ... }) do
      a[#a + 1] = x
    end
  end
  if spec.name then add("--name", spec.name) end
  for _, k in ipairs(sorted_keys(spec.labels or {})) do
    add("--label", k .. "=" .. spec.labels[k])
  end
  for _, k in ipairs(sorted_keys(spec.env or {})) do
    add("--env", k .. "=" .. spec.env[k])
  end
  for _, pt in ipairs(spec.ports or {}) do
    if pt.host then
      local hip = pt.host_ip or p.default_host_ip or ""
      if hip:find(":", 1, true) then
        hip = "[" .. hip .. "]"
      end
      add("--publish", ("%s%s%s:%d/%s"):format(hip, hip ~= "" and ":" or "",
        pt.host == 0 and "" or tostring(pt.host), pt.container, pt.protocol))
    else
      add("--expose", pt.container .. "/" .. pt.protocol)
    end
  end
  if spec.memory_limit_bytes then add("--memory", spec.memory_limit_bytes .. "b") end
  if spec.cpus then add("--cpus", ("%g"):format(spec.cpus)) end
  if spec.restart_policy then
    local rp = spec.restart_policy
    add("--restart", rp.retries > 0 and (rp.name .. ":" .. rp.retries) or rp.name)
  end
  if spec.network then add("--network", spec.network) end
  if spec.privileged then add("--privileged") end
  for _, b in ipairs(spec.binds or {}) do
    if b.source:find("[,\"]") or b.target:find("[,\"]") then
      return nil, "binds: the docker CLI cannot mount a path with , or \"",
        "bad_request", "binds"
    end
    add("--mount", ("type=bind,source=%s,target=%s%s"):format(b.source,
      b.target, b.read_only and ",readonly" or ""))
  end
  for _, v in ipairs(spec.volumes or {}) do
    if v.target:find("[,\"]") then
      return nil, "volumes: the docker CLI cannot mount at a path with , or \"",
        "bad_request", "volumes"
    end
    add("--mount", ("type=volume,source=%s,target=%s%s"):format(v.name,
      v.target, v.read_only and ",readonly" or ""))
  end
  if spec.pid_mode then add("--pid", spec.pid_mode) end
  for _, c in ipairs(spec.cap_add or {}) do add("--cap-add", c) end
  for _, c in ipairs(spec.cap_drop or {}) do add("--cap-drop", c) end
  for _, d in ipairs(spec.devices or {}) do
    add("--device", d.host .. ":" .. d.container .. ":" .. d.permissions)
  end
  if spec.read_only then add("--read-only") end
  if spec.user then add("--user", spec.user) end
  if spec.working_dir then add("--workdir", spec.working_dir) end
  if spec.hostname then add("--hostname", spec.hostname) end
  if spec.tty then add("--tty") end
  if spec.stop_timeout then add("--stop-timeout", tostring(spec.stop_timeout)) end
  local cmd = spec.cmd or {}
  if spec.entrypoint then
    if #spec.entrypoint > 1 then
      return nil, "entrypoint: the docker CLI takes a one-word entrypoint",
        "bad_request", "entrypoint"
    end
    add("--entrypoint", spec.entrypoint[1] or "")
  end
  add("--", spec.image)
  for _, x in ipairs(cmd) do
    add(x)
  end
  return a
end

local function cli_create(spec, policy)
  local args, err, kind, field = cli_create_args(spec, policy)
  if not args then
    return nil, err, kind, field
  end
  local id
  id, err, kind = cli(policy, args)
  if not id then
    return nil, err, kind
  end
  id = id:match("(%x+)%s*$") or id
  local out = { id = id, name = spec.name or null, started = false,
    warnings = json.array(), via = "docker-cli" }
  if spec.start then
    local ok
    ok, err, kind = cli(policy, { "start", "--", id })
    if not ok then
      return nil, err, kind, { id = id, created = true }
    end
    out.started = true
  end
  return out
end

-- ---- lifecycle -------------------------------------------------------------

--- Creates the container of a validated (and allowed) spec; starts it when
-- spec.start. A start that fails leaves the created container and says
-- so: the 4th value is {id =, created = true}.
function M.create(spec, policy)
  policy = policy or M.policy()
  local c, err, kind = client()
  if not c then
    if fallback_allowed(policy, kind) then
      return cli_create(spec, policy)
    end
    return nil, err, kind
  end
  local query = spec.name and { name = spec.name } or nil
  local status, body, third = c:request("POST", "/containers/create", query,
    M.engine_body(spec, policy), "application/json")
  if not status then
    err, kind = body, third
    if fallback_allowed(policy, kind) then
      return cli_create(spec, policy)
    end
    return nil, err, kind
  end
  if status ~= 201 or type(body) ~= "table" or type(body.Id) ~= "string" then
    if status == 201 then
      return nil, "docker: create answered without an Id", "protocol"
    end
    return daemon_error(status, body)
  end
  local id = body.Id
  local warnings = json.array()
  for _, w in ipairs(type(body.Warnings) == "table" and body.Warnings or {}) do
    warnings[#warnings + 1] = w
  end
  local out = { id = id, name = spec.name or null, started = false,
    warnings = warnings }
  if spec.start then
    local st, b, k3 = c:request("POST", "/containers/" .. id .. "/start")
    if st ~= 204 and st ~= 304 then
      if st == nil then
        return nil, b, k3, { id = id, created = true }
      end
      local _, msg, k = daemon_error(st, b)
      return nil, msg, k, { id = id, created = true }
    end
    out.started = true
  end
  return out
end

--- The lifecycle actions and what they take.
M.ACTIONS = {
  start = {}, stop = { timeout = true }, restart = { timeout = true },
  kill = { signal = true }, pause = {}, unpause = {},
}

-- Replies that mean "it already was so": 304 for start and stop; for
-- pause and unpause the daemon says it in words (409, and 500 before 23.0).
local function unchanged(action, status, body)
  if status == 304 then
    return true
  end
  local msg = type(body) == "table" and type(body.message) == "string"
    and body.message or ""
  if action == "pause" and status == 409 then
    return msg:find("is already paused", 1, true) ~= nil
  elseif action == "unpause" and (status == 409 or status == 500) then
    return msg:find("is not paused", 1, true) ~= nil
  end
  return false
end

local function cli_action(ref, action, opts, policy)
  local args = { action }
  if opts.timeout and (action == "stop" or action == "restart") then
    args[#args + 1] = "--time"
    args[#args + 1] = tostring(opts.timeout)
  end
  if opts.signal and action == "kill" then
    args[#args + 1] = "--signal"
    args[#args + 1] = opts.signal
  end
  args[#args + 1] = "--"
  args[#args + 1] = ref
  local ok, err, kind = cli(policy, args)
  if not ok then
    return nil, err, kind
  end
  -- the CLI does not say whether anything changed
  return { id = ref, action = action, changed = null, via = "docker-cli" }
end

--- POST /containers/{ref}/{action}: {id = ref, action, changed}. opts:
-- timeout (stop, restart: seconds), signal (kill).
function M.action(ref, action, opts, policy)
  policy = policy or M.policy()
  opts = opts or {}
  if not M.ACTIONS[action] then
    error("manage.action: unknown action " .. tostring(action), 2)
  end
  local c, err, kind = client()
  if not c then
    if fallback_allowed(policy, kind) then
      return cli_action(ref, action, opts, policy)
    end
    return nil, err, kind
  end
  local query
  if opts.timeout and (action == "stop" or action == "restart") then
    query = { t = opts.timeout }
  elseif opts.signal and action == "kill" then
    query = { signal = opts.signal }
  end
  local status, body, third = c:request("POST",
    "/containers/" .. ref .. "/" .. action, query)
  if not status then
    err, kind = body, third
    if fallback_allowed(policy, kind) then
      return cli_action(ref, action, opts, policy)
    end
    return nil, err, kind or "unavailable"
  end
  if status == 204 or status == 200 then
    return { id = ref, action = action, changed = true }
  elseif unchanged(action, status, body) then
    return { id = ref, action = action, changed = false }
  end
  return daemon_error(status, body)
end

--- DELETE /containers/{ref}: opts.force (a running one too), opts.volumes
-- (its anonymous volumes too). A running container without force is a
-- conflict (409).
function M.remove(ref, opts, policy)
  policy = policy or M.policy()
  opts = opts or {}
  local c, err, kind = client()
  local function via_cli()
    local args = { "rm" }
    if opts.force then args[#args + 1] = "--force" end
    if opts.volumes then args[#args + 1] = "--volumes" end
    args[#args + 1] = "--"
    args[#args + 1] = ref
    local ok, e, k = cli(policy, args)
    if not ok then
      return nil, e, k
    end
    return { id = ref, removed = true, via = "docker-cli" }
  end
  if not c then
    if fallback_allowed(policy, kind) then
      return via_cli()
    end
    return nil, err, kind
  end
  local query = {}
  if opts.force then query.force = true end
  if opts.volumes then query.v = true end
  local status, body, third = c:request("DELETE", "/containers/" .. ref, query)
  if not status then
    err, kind = body, third
    if fallback_allowed(policy, kind) then
      return via_cli()
    end
    return nil, err, kind or "unavailable"
  end
  if status == 204 or status == 200 then
    return { id = ref, removed = true }
  end
  return daemon_error(status, body)
end

return M
