--- horcrux.volumes: the engine's volumes as the /api/volumes routes show
-- and change them, under policy.lua's `volumes` section (and `create.binds`
-- for a volume that is a bind of a host path).
--
--   volumes.LIST_QUERY, volumes.PRUNE_QUERY, volumes.REMOVE_QUERY
--   volumes.FIELDS                the create body (horcrux.fields)
--   volumes.list(query)         -> [{name, driver, mountpoint, scope, labels,
--                                   options, created}]
--   volumes.inspect(name)       -> the same
--   volumes.check(def, policy [, field]) -> the options to send (a bind's
--                                   device resolved) | nil, message, kind,
--                                   field; def: {driver, options}
--   volumes.create(spec, policy) -> {name, driver, mountpoint}
--   volumes.remove(name, query) -> {name, removed = true}
--   volumes.prune(query)        -> {deleted, space_reclaimed}
--
-- A local volume with o=bind (or type=none and a device) mounts a host
-- path: it is checked as a bind (create.binds, the path resolved as the
-- daemon would mount it, and sent resolved). Any other mount type the
-- local driver would make the host mount (nfs, ext4 of a /dev device...)
-- must be listed in volumes.mount_types.
local json = require "horcrux.json"
local null = json.null
local verdict = require "horcrux.manage.policy"
local engine = require "horcrux.engine"
local fields = require "horcrux.fields"
local input = require "horcrux.input"
local config = require "horcrux.config"

local M = {}

local listed = verdict.listed

M.LIST_QUERY = { dangling = input.boolean, driver = input.string(64),
  label = input.string(512), name = input.string(255) }
M.PRUNE_QUERY = { label = input.string(512) }
M.REMOVE_QUERY = { force = input.boolean }
M.FIELDS = {
  -- the local driver's rule (Docker's volume/local): 2 bytes at least
  name = fields.string(255, "^[%w][%w_.-]+$", "a volume name: letters, "
    .. "digits and _ . - (starting with a letter or digit)", 2),
  driver = fields.string(64, "^[%w][%w_.:/-]*$", "a driver name"),
  labels = fields.map(256, 4096),
  options = fields.map(32, 4096),
}

local function item(v)
  return {
    name = v.Name or null, driver = v.Driver or null,
    mountpoint = v.Mountpoint or null, scope = v.Scope or null,
    labels = type(v.Labels) == "table" and v.Labels or {},
    options = type(v.Options) == "table" and v.Options or {},
    created = v.CreatedAt or null,
  }
end

function M.list(q)
  q = q or {}
  local f = {}
  if q.dangling ~= nil then f.dangling = json.array({ tostring(q.dangling) }) end
  for _, k in ipairs({ "driver", "label", "name" }) do
    if q[k] then f[k] = json.array({ q[k] }) end
  end
  local r, err, kind = engine.volumes(f)
  if not r then
    return nil, err, kind
  end
  local out = json.array()
  for i, v in ipairs(type(r.Volumes) == "table" and r.Volumes or {}) do
    out[i] = item(v)
  end
  table.sort(out, function(a, b) return tostring(a.name) < tostring(b.name) end)
  return out
end

function M.inspect(name)
  local v, err, kind = engine.volume(name)
  if not v then
    return nil, err, kind
  end
  return item(v)
end

-- Whether the local driver's options make a bind of a host path.
local function is_bind(o)
  local flags = "," .. (o.o or "") .. ","
  return o.device ~= nil and (flags:find(",bind,", 1, true) ~= nil
    or flags:find(",rbind,", 1, true) ~= nil or o.type == "none"
    or o.type == "bind")
end

function M.check(def, policy, field)
  policy = policy or config.policy()
  local p = verdict.section(policy, "volumes")
  field = field and (field .. ".") or ""
  local function refused(f, msg, setting)
    return nil, ("%s%s: %s is refused by the policy (policy.lua: %s)"):format(
      field, f, msg, setting), "forbidden", field .. f
  end
  if not p.create then
    return refused("name", "creating volumes", "volumes.create")
  end
  local driver = def.driver or "local"
  if not listed(p.drivers, driver) then
    return refused("driver", "the volume driver " .. driver, "volumes.drivers")
  end
  local o = {}
  for k, v in pairs(def.options or {}) do
    o[k] = v
  end
  if driver ~= "local" or next(o) == nil then
    return o
  end
  if is_bind(o) then
    local real, err, kind, f = verdict.bind_allowed(o.device, policy,
      field .. "options.device")
    if not real then
      return nil, err, kind, f
    end
    o.device = real
  elseif not (o.type and listed(p.mount_types, o.type)) then
    return refused("options.type", o.type and ("mounting a %s file system")
      :format(o.type) or "a local volume with options but no listed type",
      "volumes.mount_types")
  end
  return o
end

function M.create(spec, policy)
  local opts, err, kind, field = M.check(spec, policy)
  local v
  if opts then
    v, err, kind = engine.volume_create({ Name = spec.name,
      Driver = spec.driver or "local", Labels = spec.labels,
      DriverOpts = next(opts) and opts or nil })
  end
  if not v then
    return nil, err, kind, field
  end
  return { name = v.Name, driver = v.Driver, mountpoint = v.Mountpoint or null }
end

--- A volume a container uses is a conflict (409); ?force=1 removes it
-- anyway where the driver allows.
function M.remove(name, q)
  local ok, err, kind = engine.volume_remove(name,
    { force = (q or {}).force or nil })
  if not ok then
    return nil, err, kind
  end
  return { name = name, removed = true }
end

--- Every volume no container uses (named ones too, as API 1.41 prunes),
-- only those with ?label= when given.
function M.prune(q)
  q = q or {}
  local r, err, kind = engine.volume_prune(q.label
    and { label = json.array({ q.label }) } or nil)
  if not r then
    return nil, err, kind
  end
  local deleted = json.array()
  for i, n in ipairs(type(r.VolumesDeleted) == "table" and r.VolumesDeleted
    or {}) do
    deleted[i] = n
  end
  return { deleted = deleted, space_reclaimed = r.SpaceReclaimed or 0 }
end

return M
