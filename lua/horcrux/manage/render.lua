--- horcrux.manage.render: a validated (and allowed) create spec in the two
-- forms the daemon takes, side by side so they stay the same container:
--
--   render.engine_body(spec, policy) -> the body of POST /containers/create
--   render.cli_args(spec, policy)    -> `docker create` arguments (argv[1..])
--                                       | nil, message, "bad_request", field
--
-- Only keys written here reach the daemon; nothing is copied from the
-- client's JSON. `policy` gives default_host_ip for ports without one.
local json = require "horcrux.json"

local M = {}

local sorted_keys = require("horcrux.tables").sorted_keys

--- The body of POST /containers/create for spec: only keys written here.
function M.engine_body(spec, policy)
  local p = policy.create or {}
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

-- `--mount` of a bind ({source}) or a named volume ({name}), or nil and
-- why: the CLI's mount syntax has no quoting for , or ".
local function mount_arg(m)
  local source = m.source or m.name
  if source:find("[,\"]") or m.target:find("[,\"]") then
    return nil, "the docker CLI cannot mount a path with , or \""
  end
  return ("type=%s,source=%s,target=%s%s"):format(m.source and "bind"
    or "volume", source, m.target, m.read_only and ",readonly" or "")
end

--- The same container as `docker create` arguments, or nil, message,
-- "bad_request", field for what the CLI cannot say as the API does.
function M.cli_args(spec, policy)
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
  for _, field in ipairs({ "binds", "volumes" }) do
    for _, m in ipairs(spec[field] or {}) do
      local arg, err = mount_arg(m)
      if not arg then
        return nil, field .. ": " .. err, "bad_request", field
      end
      add("--mount", arg)
    end
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

return M
