--- horcrux.swarm: the engine's swarm, when it is a manager: nodes,
-- services with their replica state, tasks, and the stacks they form.
--
--   swarm.state()                -> {node_state, manager, node_id, nodes,
--                                    managers}
--   swarm.nodes()                -> [{id, hostname, role, availability,
--                                    state, address, leader, engine}]
--   swarm.services(stack)        -> [{id, name, stack, image, mode,
--                                    replicas = {desired, running}, ports}]
--   swarm.tasks(q)               -> [{id, service, slot, node, desired_state,
--                                    state, message, error, container}]
--   swarm.stacks()               -> [{name, services, replicas = {desired,
--                                    running}}]
--   swarm.QUERY_SERVICES, swarm.QUERY_TASKS   the routes' query checkers
-- each answering its value or nil, message, kind. A node that is not a
-- manager answers the daemon's own refusal (503, kind "unavailable").
--
-- Replicas come from the daemon's own count (GET /services?status=true,
-- API 1.41: ServiceStatus.RunningTasks and DesiredTasks).
local json = require "horcrux.json"
local engine = require "horcrux.engine"
local input = require "horcrux.input"

local null = json.null

local M = {}

local NAMESPACE = "com.docker.stack.namespace"

M.QUERY_SERVICES = { stack = input.string(63) }
M.QUERY_TASKS = { stack = input.string(63), service = input.string(255),
  node = input.string(255) }

-- The daemon answers 503 "This node is not a swarm manager": say so in
-- horcrux's words.
local function manager_only(v, err, kind)
  if v == nil and (err or ""):find("not a swarm manager", 1, true) then
    return nil, "swarm: this engine is not a swarm manager (docker swarm "
      .. "init, or ask a manager)", "unavailable"
  end
  return v, err, kind
end

function M.nodes()
  local list, err, kind = manager_only(engine.nodes())
  if not list then
    return nil, err, kind
  end
  local out = json.array()
  for i, n in ipairs(list) do
    local spec = type(n.Spec) == "table" and n.Spec or {}
    local st = type(n.Status) == "table" and n.Status or {}
    local desc = type(n.Description) == "table" and n.Description or {}
    local ms = type(n.ManagerStatus) == "table" and n.ManagerStatus or {}
    out[i] = { id = n.ID, hostname = desc.Hostname or null,
      role = spec.Role or null, availability = spec.Availability or null,
      state = st.State or null, address = st.Addr or null,
      leader = ms.Leader == true,
      engine = type(desc.Engine) == "table" and desc.Engine.EngineVersion
        or null }
  end
  return out
end

function M.state()
  local info, err, kind = engine.info()
  if not info then
    return nil, err, kind
  end
  local s = type(info.Swarm) == "table" and info.Swarm or {}
  local out = { node_state = s.LocalNodeState or null,
    manager = s.ControlAvailable == true,
    node_id = s.NodeID ~= "" and s.NodeID or null,
    nodes = s.Nodes or null, managers = s.Managers or null }
  if out.manager then
    out.nodes = M.nodes() or null
  end
  return out
end

local function service_item(s)
  local spec = type(s.Spec) == "table" and s.Spec or {}
  local labels = type(spec.Labels) == "table" and spec.Labels or {}
  local task = type(spec.TaskTemplate) == "table" and spec.TaskTemplate or {}
  local cs = type(task.ContainerSpec) == "table" and task.ContainerSpec or {}
  local m = type(spec.Mode) == "table" and spec.Mode or {}
  local st = type(s.ServiceStatus) == "table" and s.ServiceStatus or {}
  local ports = json.array()
  local ep = type(s.Endpoint) == "table" and s.Endpoint or {}
  for _, p in ipairs(type(ep.Ports) == "table" and ep.Ports or {}) do
    ports[#ports + 1] = { target = p.TargetPort or null,
      published = p.PublishedPort or null, protocol = p.Protocol or null,
      mode = p.PublishMode or null }
  end
  return { id = s.ID, name = spec.Name or null,
    stack = labels[NAMESPACE] or null,
    image = type(cs.Image) == "string" and cs.Image:gsub("@sha256:%x+$", "")
      or null,
    mode = m.Global and "global" or "replicated",
    replicas = { desired = st.DesiredTasks or null,
      running = st.RunningTasks or null },
    ports = ports }
end

function M.services(stack)
  local f = stack and { label = json.array({ NAMESPACE .. "=" .. stack }) }
  local list, err, kind = manager_only(engine.services(f))
  if not list then
    return nil, err, kind
  end
  local out = json.array()
  for i, s in ipairs(list) do
    out[i] = service_item(s)
  end
  table.sort(out, function(a, b) return tostring(a.name) < tostring(b.name) end)
  return out
end

-- Service names by id, for the tasks' records.
local function service_names()
  local names = {}
  for _, s in ipairs(M.services() or {}) do
    names[s.id] = s.name
  end
  return names
end

function M.tasks(q)
  q = q or {}
  local f = {}
  if q.stack then f.label = json.array({ NAMESPACE .. "=" .. q.stack }) end
  if q.service then f.service = json.array({ q.service }) end
  if q.node then f.node = json.array({ q.node }) end
  local list, err, kind = manager_only(engine.tasks(f))
  if not list then
    return nil, err, kind
  end
  local names, out = service_names(), json.array()
  for i, t in ipairs(list) do
    local st = type(t.Status) == "table" and t.Status or {}
    local cst = type(st.ContainerStatus) == "table" and st.ContainerStatus
      or {}
    out[i] = { id = t.ID, service = names[t.ServiceID] or t.ServiceID,
      slot = t.Slot or null, node = t.NodeID or null,
      desired_state = t.DesiredState or null, state = st.State or null,
      message = st.Message or null,
      error = st.Err ~= "" and st.Err or null,
      container = cst.ContainerID and cst.ContainerID:sub(1, 12) or null }
  end
  table.sort(out, function(a, b)
    if a.service ~= b.service then
      return tostring(a.service) < tostring(b.service)
    end
    return (tonumber(a.slot) or 0) < (tonumber(b.slot) or 0)
  end)
  return out
end

function M.stacks()
  local list, err, kind = M.services()
  if not list then
    return nil, err, kind
  end
  local by, order = {}, json.array()
  for _, s in ipairs(list) do
    if s.stack ~= null then
      local st = by[s.stack]
      if not st then
        st = { name = s.stack, services = json.array(),
          replicas = { desired = 0, running = 0 } }
        by[s.stack] = st
        order[#order + 1] = st
      end
      st.services[#st.services + 1] = s
      st.replicas.desired = st.replicas.desired + (tonumber(s.replicas.desired) or 0)
      st.replicas.running = st.replicas.running + (tonumber(s.replicas.running) or 0)
    end
  end
  table.sort(order, function(a, b) return a.name < b.name end)
  return order
end

return M
