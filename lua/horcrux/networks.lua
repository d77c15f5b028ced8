--- horcrux.networks: the engine's networks as the /api/networks routes show
-- and change them, under policy.lua's `networks` section (what a network
-- may be) and `create` (which networks a container may join).
--
--   networks.LIST_QUERY, networks.PRUNE_QUERY   the routes' query checkers
--   networks.FIELDS, networks.CONNECT_FIELDS, networks.DISCONNECT_FIELDS
--                                    the bodies (horcrux.fields)
--   networks.list(query)           -> [{id, name, driver, scope, internal,
--                                      attachable, labels, created, subnets}]
--   networks.inspect(name)         -> the same and {options, ipam,
--                                      containers}
--   networks.check(def, policy [, field]) -> true | nil, message,
--                                      "forbidden", field
--       def: {driver, options}: what policy.lua's networks section says
--   networks.create(spec, policy)  -> {id, name, warning}
--   networks.remove(name)          -> {name, removed = true}
--   networks.prune(query)          -> {deleted}
--   networks.connect(name, spec, policy, req)    -> {network, container,
--   networks.disconnect(name, spec, policy, req)     connected}
-- each answering its value or nil, message, kind[, field].
local json = require "horcrux.json"
local null = json.null
local engine = require "horcrux.engine"
local config = require "horcrux.config"
local input = require "horcrux.input"
local time = require "horcrux.time"
local fields = require "horcrux.fields"
local verdict = require "horcrux.manage.policy"

local M = {}

local listed = verdict.listed

local NAME = "^[%w][%w_.-]*$"

M.LIST_QUERY = { driver = input.string(64), label = input.string(512),
  name = input.string(255) }
M.PRUNE_QUERY = { label = input.string(512), ["until"] = time.param }

M.FIELDS = {
  name = fields.string(255, NAME, "a name: letters, digits and _ . -"),
  driver = fields.string(64, NAME, "a driver name"),
  internal = fields.boolean, attachable = fields.boolean,
  ipv6 = fields.boolean,
  labels = fields.map(256, 4096),
  options = fields.map(64, 1024),
  subnet = fields.cidr,
  ip_range = fields.cidr,
  gateway = fields.ip(),
}
M.CONNECT_FIELDS = {
  container = fields.string(255),
  aliases = fields.strings(16, 255),
  ipv4 = fields.ip(4),
}
M.DISCONNECT_FIELDS = { container = fields.string(255),
  force = fields.boolean }

-- ---- shapes ------------------------------------------------------------------

local function subnets(n)
  local out = json.array()
  local ipam = type(n.IPAM) == "table" and n.IPAM or {}
  for _, c in ipairs(type(ipam.Config) == "table" and ipam.Config or {}) do
    out[#out + 1] = { subnet = c.Subnet or null, gateway = c.Gateway or null,
      ip_range = c.IPRange or null }
  end
  return out
end

local function item(n)
  return {
    id = n.Id or null, name = n.Name or null, driver = n.Driver or null,
    scope = n.Scope or null, internal = n.Internal == true,
    attachable = n.Attachable == true,
    labels = type(n.Labels) == "table" and n.Labels or {},
    created = n.Created or null, subnets = subnets(n),
  }
end

local function filters_of(q, keys)
  local f = {}
  for _, k in ipairs(keys) do
    if q[k] then
      f[k] = json.array({ q[k] })
    end
  end
  return f
end

function M.list(q)
  local list, err, kind = engine.networks(filters_of(q or {},
    { "driver", "label", "name" }))
  if not list then
    return nil, err, kind
  end
  local out = json.array()
  for i, n in ipairs(list) do
    out[i] = item(n)
  end
  return out
end

function M.inspect(name)
  local n, err, kind = engine.network(name)
  if not n then
    return nil, err, kind
  end
  local out = item(n)
  out.options = type(n.Options) == "table" and n.Options or {}
  out.containers = json.array()
  for id, c in pairs(type(n.Containers) == "table" and n.Containers or {}) do
    out.containers[#out.containers + 1] = { id = id, name = c.Name or null,
      ipv4 = c.IPv4Address ~= "" and c.IPv4Address or null,
      ipv6 = c.IPv6Address ~= "" and c.IPv6Address or null }
  end
  table.sort(out.containers, function(a, b) return a.id < b.id end)
  return out
end

-- ---- policy --------------------------------------------------------------

function M.check(def, policy, field)
  local p = verdict.section(policy or config.policy(), "networks")
  field = field and (field .. ".") or ""
  if not p.create then
    return nil, field .. "name: creating networks is refused by the policy "
      .. "(policy.lua: networks.create)", "forbidden", field .. "name"
  end
  local driver = def.driver or "bridge"
  if not listed(p.drivers, driver) then
    return nil, ("%sdriver: the %s driver is refused by the policy%s "
      .. "(policy.lua: networks.drivers)"):format(field, driver,
      (driver == "macvlan" or driver == "ipvlan")
      and " (it puts containers on the host's LAN)" or ""), "forbidden",
      field .. "driver"
  end
  for _, k in ipairs(require("horcrux.tables").sorted_keys(def.options or {})) do
    if not listed(p.options, k) then
      return nil, ("%soptions: the driver option %s is refused by the policy "
        .. "(policy.lua: networks.options)"):format(field, k), "forbidden",
        field .. "options"
    end
  end
  return true
end

-- ---- changes -------------------------------------------------------------

function M.create(spec, policy)
  local ok, err, kind, field = M.check(spec, policy)
  if not ok then
    return nil, err, kind, field
  end
  local ipam
  if spec.subnet or spec.gateway or spec.ip_range then
    ipam = { Driver = "default", Config = json.array({ { Subnet = spec.subnet,
      Gateway = spec.gateway, IPRange = spec.ip_range } }) }
  end
  local r
  r, err, kind = engine.network_create({ Name = spec.name,
    Driver = spec.driver or "bridge", Internal = spec.internal,
    Attachable = spec.attachable, EnableIPv6 = spec.ipv6,
    Labels = spec.labels, Options = spec.options, IPAM = ipam,
    CheckDuplicate = true })
  if not r then
    return nil, err, kind
  end
  return { id = r.Id, name = spec.name,
    warning = r.Warning ~= "" and r.Warning or null }
end

--- DELETE /networks/{name}: a network containers are on is a conflict (the
-- daemon says 403 "has active endpoints"; 409 here, as for containers).
function M.remove(name)
  local ok, err, kind = engine.network_remove(name)
  if not ok then
    if kind == "forbidden" and (err or ""):find("active endpoints", 1, true)
    then
      kind = "conflict"
    end
    return nil, err, kind
  end
  return { name = name, removed = true }
end

function M.prune(q)
  local r, err, kind = engine.network_prune(filters_of(q or {},
    { "label", "until" }))
  if not r then
    return nil, err, kind
  end
  local deleted = json.array()
  for i, n in ipairs(type(r.NetworksDeleted) == "table" and r.NetworksDeleted
    or {}) do
    deleted[i] = n
  end
  return { deleted = deleted }
end

-- Connects (connected true) or disconnects a container: a network
-- create's rules let containers join (create.networks; macvlan and ipvlan
-- listed there) to connect; the manage hook asked about the container
-- (policy.lua: manage, action "connect" or "disconnect").
local function attach(name, spec, policy, req, connected)
  policy = policy or config.policy()
  local ok, err, kind, field = true, nil, nil, nil
  if connected then
    ok, err, kind, field = verdict.network_allowed(name, policy)
  end
  if not ok then
    return nil, err, kind, field
  end
  local ref
  ref, err, kind = input.ref(spec.container, "container")
  if not ref then
    return nil, err, kind, "container"
  end
  local ctr
  ctr, err, kind = verdict.may(connected and "connect" or "disconnect", ref,
    policy, req)
  if not ctr then
    return nil, err, kind, "container"
  end
  if connected then
    ok, err, kind = engine.network_connect(name, { Container = ctr.id,
      EndpointConfig = { Aliases = spec.aliases,
        IPAMConfig = spec.ipv4 and { IPv4Address = spec.ipv4 } or nil } })
  else
    ok, err, kind = engine.network_disconnect(name, { Container = ctr.id,
      Force = spec.force })
  end
  if not ok then
    return nil, err, kind
  end
  return { network = name, container = spec.container, connected = connected }
end

function M.connect(name, spec, policy, req)
  return attach(name, spec, policy, req, true)
end

function M.disconnect(name, spec, policy, req)
  return attach(name, spec, policy, req, false)
end

return M
