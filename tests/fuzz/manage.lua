--- Fuzz target "manage": horcrux.manage's validate(body), the check of
-- POST /api/containers, on the JSON decoding of any bytes.
--
-- Invariants: validate never raises (a raise is a 500 for a client's
-- body); it answers a spec, or nil, message, "bad_request"[, extra]; and a
-- spec holds only what the module's header promises. The 4th value of a
-- refusal is the error's extra fields: {field = the first bad field,
-- fields = every one}: known fields, a name
-- and image of the documented grammar, clean absolute paths (no "." or ".."
-- segment, no control bytes) for every bind, volume target, device and
-- working_dir, integers in range, booleans, string arrays without NUL.
local json = require "horcrux.json"
local manage = require "horcrux.manage"
local fz = require "fuzzlib"

local check, quote = fz.check, fz.quote

local function clean_path(what, p)
  check(type(p) == "string" and p:sub(1, 1) == "/" and #p <= 4096
    and not p:find("[%c\127]"), "%s: %s is not a clean absolute path", what,
    quote(p))
  for seg in p:gmatch("[^/]+") do
    check(seg ~= "." and seg ~= "..", "%s: %s has a %s segment", what,
      quote(p), seg)
  end
end

local function int_in(what, v, lo, hi)
  check(math.type(v) == "integer" and v >= lo and v <= hi,
    "%s: %s is not an integer in %d..%d", what, tostring(v), lo, hi)
end

local function strings(what, v)
  check(type(v) == "table", "%s is a %s", what, type(v))
  for i, s in ipairs(v) do
    check(type(s) == "string" and not s:find("\0", 1, true),
      "%s[%d] is %s", what, i, quote(s))
  end
end

local NAME = "^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"
local BOOLEANS = { privileged = true, tty = true, read_only = true,
  start = true }

local function check_spec(spec, body)
  check(type(spec) == "table", "spec is a %s", type(spec))
  for k in pairs(spec) do
    check(body[k] ~= nil, "spec has %s, which the body had not", quote(k))
  end
  check(type(spec.image) == "string" and #spec.image <= 255
    and spec.image:find("^[a-zA-Z0-9][a-zA-Z0-9._/:@-]*$"), "image %s",
    quote(spec.image))
  if spec.name ~= nil then
    check(type(spec.name) == "string" and #spec.name <= 255
      and spec.name:find(NAME), "name %s", quote(spec.name))
  end
  for k in pairs(BOOLEANS) do
    check(spec[k] == nil or type(spec[k]) == "boolean", "%s is %s", k,
      tostring(spec[k]))
  end
  for _, k in ipairs({ "cmd", "entrypoint" }) do
    if spec[k] ~= nil then
      strings(k, spec[k])
    end
  end
  for i, b in ipairs(spec.binds or {}) do
    clean_path(("binds[%d].source"):format(i), b.source)
    clean_path(("binds[%d].target"):format(i), b.target)
    check(type(b.read_only) == "boolean", "binds[%d].read_only", i)
  end
  for i, v in ipairs(spec.volumes or {}) do
    clean_path(("volumes[%d].target"):format(i), v.target)
    check(type(v.name) == "string" and v.name:find(NAME), "volumes[%d].name %s",
      i, quote(v.name))
  end
  for i, d in ipairs(spec.devices or {}) do
    clean_path(("devices[%d].host"):format(i), d.host)
    clean_path(("devices[%d].container"):format(i), d.container)
    check(type(d.permissions) == "string" and d.permissions:find("^[rwm]+$"),
      "devices[%d].permissions %s", i, quote(d.permissions))
  end
  if spec.working_dir ~= nil then
    clean_path("working_dir", spec.working_dir)
  end
  for i, p in ipairs(spec.ports or {}) do
    int_in(("ports[%d].container"):format(i), p.container, 1, 65535)
    if p.host ~= nil then
      int_in(("ports[%d].host"):format(i), p.host, 0, 65535)
    end
    check(p.protocol == "tcp" or p.protocol == "udp" or p.protocol == "sctp",
      "ports[%d].protocol %s", i, quote(p.protocol))
  end
  if spec.memory_limit_bytes ~= nil then
    int_in("memory_limit_bytes", spec.memory_limit_bytes, 6 * 1024 * 1024,
      1 << 62)
  end
  if spec.stop_timeout ~= nil then
    int_in("stop_timeout", spec.stop_timeout, 0, 86400)
  end
  if spec.cpus ~= nil then
    check(type(spec.cpus) == "number" and spec.cpus >= 0.01
      and spec.cpus <= 1024, "cpus %s", tostring(spec.cpus))
  end
  for _, k in ipairs({ "env", "labels" }) do
    for name, v in pairs(spec[k] or {}) do
      check(type(name) == "string" and #name > 0 and type(v) == "string"
        and not v:find("\0", 1, true), "%s.%s is %s", k, quote(name), quote(v))
      check(k ~= "env" or not name:find("=", 1, true), "env name %s has '='",
        quote(name))
    end
  end
end

return function(data)
  local body = json.decode(fz.expand(data))
  if body == nil then
    return
  end
  local spec, msg, kind, extra = manage.validate(body)
  if spec == nil then
    local field = type(extra) == "table" and extra.field or extra
    check(type(msg) == "string" and kind == "bad_request"
      and (extra == nil or (type(extra) == "table"
        and (field == nil or type(field) == "string"))),
      "refused with %s, %s, %s", quote(msg), quote(kind), quote(field))
    return
  end
  check_spec(spec, body)
end
