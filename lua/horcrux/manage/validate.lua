--- horcrux.manage.validate: the create body of POST /api/containers,
-- checked field by field before anything reaches the daemon.
--
--   validate.validate(body) -> spec | nil, message, "bad_request",
--                              {field =, fields =}
--   validate.FIELDS          the field names, sorted
--
-- The body (every field optional but image):
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
-- body sent to it is built from the validated fields only
-- (horcrux.manage.render), never copied from the client. No pattern here
-- backtracks without bound: every text is length-checked first.
local json = require "horcrux.json"
local tables = require "horcrux.tables"

local null = json.null

local M = {}

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
        table.concat(tables.sorted_keys(known), ", "))
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

local FIELD_NAMES = tables.sorted_keys(FIELDS)
M.FIELDS = FIELD_NAMES

--- The validated create request: every field checked and normalized.
-- Unknown fields are refused, all of them named; so are bad values, each
-- with its reason (the first is `field`, all of them `fields`).
function M.validate(body)
  if not is_object(body) then
    return nil, "the body must be a JSON object", "bad_request"
  end
  local extra = unknown_keys(body, FIELDS)
  if #extra > 0 then
    return nil, ("unknown field%s: %s (the fields are: %s)"):format(
      #extra > 1 and "s" or "", table.concat(extra, ", "),
      table.concat(FIELD_NAMES, ", ")), "bad_request",
      { field = extra[1], fields = json.array(extra) }
  end
  local spec, msgs, fields = {}, {}, json.array()
  if body.image == nil then
    msgs[1], fields[1] = "image: is required", "image"
  end
  for _, k in ipairs(FIELD_NAMES) do
    local v = body[k]
    if v ~= nil and v ~= null then
      local r, err, _, field = FIELDS[k](k, v)
      if r == nil then
        msgs[#msgs + 1], fields[#fields + 1] = err, field or k
      else
        spec[k] = r
      end
    end
  end
  if #msgs > 0 then
    return nil, table.concat(msgs, "; "), "bad_request",
      { field = fields[1], fields = fields }
  end
  return spec
end

return M
