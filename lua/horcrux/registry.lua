--- horcrux.registry: image references and the registries they name, read
-- as Docker reads them, and the credentials horcrux hands the daemon.
--
--   registry.parse(ref)   -> {ref, registry, path, tag, digest, name}
--                            | nil, message, "bad_request"
--   registry.allowed(op, parsed, policy) -> true | nil, message, "forbidden"
--       op "pull" or "push": policy.lua's images.pull / images.push
--   registry.credentials(registry, req, policy)
--       -> {username, password, serveraddress} | {identitytoken, ...}
--          | false (none) | nil, message, kind
--   registry.cli_config(registry, auth) -> the text of a docker CLI
--                            config.json holding auth for registry
--   registry.base64(s), registry.unbase64(s) -> s | nil
--
-- A reference is [registry/]path[:tag][@digest]. The first part is a
-- registry when it has a "." or a ":" or is "localhost" (or holds an upper
-- case letter), as Docker decides; else the registry is Docker Hub,
-- "docker.io" (also written index.docker.io, registry-1.docker.io), and a
-- one-part path is library/<path>. So "127.0.0.1:5000/team/app:1.2" is
-- registry 127.0.0.1:5000, path team/app, tag 1.2; "busybox" is docker.io,
-- library/busybox, no tag.
--
-- Credentials, first found: the request's X-Registry-Auth header (base64url
-- JSON, as the docker CLI sends it: {username, password, serveraddress} or
-- {identitytoken}); policy.lua's images.auth, a table by registry
-- ({["127.0.0.1:5000"] = {username =, password =}}) or the path of a
-- docker CLI config.json (its "auths"; credential helpers are not read).
-- They are never logged and never put in a message: a header that does not
-- decode is refused without being quoted.
local json = require "horcrux.json"
local verdict = require "horcrux.manage.policy"

local M = {}

local HUB = "docker.io"
local HUB_ALIASES = { ["docker.io"] = true, ["index.docker.io"] = true,
  ["registry-1.docker.io"] = true }
-- The key the docker CLI files Docker Hub's credentials under.
local HUB_KEY = "https://index.docker.io/v1/"
local MAX_REF = 512

-- ---- base64 (standard and URL alphabets) ---------------------------------

local ALPHA = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local DECODE = {}
for i = 1, 64 do
  DECODE[ALPHA:byte(i)] = i - 1
end
DECODE[("-"):byte()] = 62
DECODE[("_"):byte()] = 63

-- 12 bits -> their two characters: one table index a character pair.
local PAIR = {}
for i = 0, 4095 do
  PAIR[i] = ALPHA:sub((i >> 6) + 1, (i >> 6) + 1)
    .. ALPHA:sub((i & 63) + 1, (i & 63) + 1)
end

function M.base64(s)
  local out, n, k = {}, #s, 0
  local full = n - n % 3
  for i = 1, full, 3 do
    local a, b, c = s:byte(i, i + 2)
    local v = (a << 16) | (b << 8) | c
    k = k + 1
    out[k] = PAIR[v >> 12] .. PAIR[v & 4095]
  end
  if n > full then
    local a, b = s:byte(full + 1, n)
    local v = (a << 16) | ((b or 0) << 8)
    local q = PAIR[v >> 12] .. PAIR[v & 4095]
    out[k + 1] = b and q:sub(1, 3) .. "=" or q:sub(1, 2) .. "=="
  end
  return table.concat(out)
end

--- Decodes standard or URL-safe base64, padded or not; nil when s is not
-- base64.
function M.unbase64(s)
  if type(s) ~= "string" then
    return nil
  end
  s = s:gsub("=+$", "")
  if #s % 4 == 1 then
    return nil
  end
  local out, acc, bits = {}, 0, 0
  for i = 1, #s do
    local d = DECODE[s:byte(i)]
    if not d then
      return nil
    end
    acc, bits = ((acc << 6) | d) & 0xffffff, bits + 6
    if bits >= 8 then
      bits = bits - 8
      out[#out + 1] = string.char((acc >> bits) & 255)
    end
  end
  return table.concat(out)
end

-- ---- references ------------------------------------------------------------

local function bad(ref, why)
  return nil, ("invalid image reference %q: %s"):format(
    type(ref) == "string" and ref:sub(1, 80) or tostring(ref), why),
    "bad_request"
end

-- Whether the first part of a name is a registry (Docker's rule).
local function is_registry(part)
  return part:find("[.:]") ~= nil or part == "localhost"
    or part:lower() ~= part
end

function M.parse(ref)
  if type(ref) ~= "string" or #ref == 0 or #ref > MAX_REF then
    return bad(ref, ("1 to %d bytes"):format(MAX_REF))
  end
  if not ref:match("^[%w][%w._/:@-]*$") then
    return bad(ref, "letters, digits and . _ / : @ -")
  end
  local name, digest = ref, nil
  local at = ref:find("@", 1, true)
  if at then
    name, digest = ref:sub(1, at - 1), ref:sub(at + 1)
    if not digest:match("^[%w+._-]+:%x+$") or #digest < 32 then
      return bad(ref, "a digest is algorithm:hex")
    end
  end
  local slash = name:match("^.*()/") or 0
  local tag
  local colon = name:find(":", slash + 1, true)
  if colon then
    name, tag = name:sub(1, colon - 1), name:sub(colon + 1)
    if not tag:match("^[%w_][%w_.-]*$") or #tag > 128 then
      return bad(ref, "a tag is letters, digits and _ . - (at most 128)")
    end
  end
  local first = name:match("^[^/]+")
  local reg, path = HUB, name
  if name:find("/", 1, true) and is_registry(first) then
    reg, path = first:lower(), name:sub(#first + 2)
  end
  if HUB_ALIASES[reg] then
    reg = HUB
    if not path:find("/", 1, true) then
      path = "library/" .. path
    end
  end
  for part in (path .. "/"):gmatch("([^/]*)/") do
    if not part:match("^[a-z0-9][a-z0-9._-]*$") then
      return bad(ref, "each part of a repository name is lower-case "
        .. "letters, digits and . _ -")
    end
  end
  return { ref = ref, registry = reg, path = path, tag = tag,
    digest = digest, name = name }
end

-- ---- policy ---------------------------------------------------------------

local function normal(host)
  host = tostring(host):lower()
  return HUB_ALIASES[host] and HUB or host
end

--- Whether policy.lua's images[op] (a list of registries, or true for any)
-- lets op reach the registry of parsed.
function M.allowed(op, parsed, policy)
  local list = verdict.section(policy, "images")[op]
  if list == true then
    return true
  end
  for _, host in ipairs(type(list) == "table" and list or {}) do
    if normal(host) == parsed.registry then
      return true
    end
  end
  return nil, ("%s %s: the registry %s is not one policy.lua lets images "
    .. "be %s (policy.lua: images.%s)"):format(op, parsed.ref,
    parsed.registry, op == "pull" and "pulled from" or "pushed to", op),
    "forbidden"
end

-- ---- credentials ----------------------------------------------------------

local AUTH_KEYS = { username = true, password = true, email = true,
  serveraddress = true, identitytoken = true, registrytoken = true }

-- The auth object of a decoded value: string fields of AUTH_KEYS only.
local function auth_of(v)
  if type(v) ~= "table" then
    return nil
  end
  local out = {}
  for k, s in pairs(v) do
    if AUTH_KEYS[k] and type(s) == "string" and #s <= 8192 and s ~= "" then
      out[k] = s
    end
  end
  return next(out) and out or nil
end

local function from_header(value)
  local text = #value <= 16384 and M.unbase64(value)
  local ok, v = pcall(json.decode, text or "")
  local auth = ok and auth_of(v)
  if not auth then
    return nil, "X-Registry-Auth: not the base64url encoding of a JSON "
      .. "object {username, password, serveraddress} or {identitytoken}",
      "bad_request"
  end
  return auth
end

-- {username, password} from a config.json "auth" (base64 user:pass).
local function split_auth(b64)
  local text = M.unbase64(b64 or "")
  local colon = text and text:find(":", 1, true)
  if not colon then
    return nil
  end
  return { username = text:sub(1, colon - 1), password = text:sub(colon + 1) }
end

-- The entry of a docker CLI config.json for reg: its "auths" key is the
-- host, maybe with a scheme and a path (Docker Hub's is HUB_KEY).
local function from_config_file(path, reg)
  local f = io.open(path, "r")
  if not f then
    return nil, ("policy.lua: images.auth names %s, which cannot be read")
      :format(path), "unavailable"
  end
  local text = f:read("a")
  f:close()
  local ok, v = pcall(json.decode, text)
  if not ok or type(v) ~= "table" or type(v.auths) ~= "table" then
    return nil, ("policy.lua: images.auth: %s is not a docker config.json "
      .. "with \"auths\""):format(path), "unavailable"
  end
  for key, entry in pairs(v.auths) do
    local host = tostring(key):gsub("^%a+://", ""):gsub("/.*$", "")
    if normal(host) == reg and type(entry) == "table" then
      local auth = auth_of(entry) or split_auth(entry.auth)
      if auth and entry.identitytoken then
        auth.identitytoken = entry.identitytoken
      end
      return auth or false
    end
  end
  return false
end

function M.credentials(reg, req, policy)
  local header = req and req.headers and req.headers["x-registry-auth"]
  local auth, err, kind
  if header and header ~= "" then
    auth, err, kind = from_header(header)
  else
    local conf = verdict.section(policy, "images").auth
    if type(conf) == "string" then
      auth, err, kind = from_config_file(conf, reg)
    elseif type(conf) == "table" then
      for host, v in pairs(conf) do
        if normal(host) == reg then
          auth = auth_of(v)
        end
      end
    end
  end
  if auth == nil and err then
    return nil, err, kind
  end
  if not auth then
    return false
  end
  auth.serveraddress = auth.serveraddress or (reg == HUB and HUB_KEY or reg)
  return auth
end

--- A docker CLI config.json that holds auth for reg, and nothing else.
function M.cli_config(reg, auth)
  local entry = {}
  if auth.identitytoken then
    entry.identitytoken = auth.identitytoken
  end
  if auth.username then
    entry.auth = M.base64(auth.username .. ":" .. (auth.password or ""))
  end
  return json.encode({ auths = { [reg == HUB and HUB_KEY or reg] = entry } })
end

return M
