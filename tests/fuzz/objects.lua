--- Fuzz target "objects": the parsers of issue 12 that read what a client
-- sends or the daemon answers, on any bytes.
--
-- Input: a first byte choosing the part (its value mod 3), then the bytes
-- (fuzzlib.expand: long inputs from short ones).
--
--  0  horcrux.registry.parse(ref), the image reference grammar. It never
--     raises; it answers {ref, registry, path, tag, digest, name} or nil,
--     message, "bad_request". An accepted reference is of c:call's {image}
--     grammar (architecture.md: a client sends it, never refuses it), at
--     most 512 bytes; its registry is lower case; each part of its path is
--     [a-z0-9][a-z0-9._-]*; registry, path, tag and digest put together
--     give back what was parsed (Docker Hub's default and library/ aside).
--  1  horcrux.exec.frames(raw), the demultiplexing of an exec's output. It
--     never raises; stdout and stderr are exactly the payloads of the
--     frames of stream 1 and of the others, computed here independently: an
--     8-byte header (stream 0..3, three zero bytes, a big-endian 32-bit
--     length), a last payload cut short taken as it is, the first bytes that
--     are not a header ending the parse.
--  2  horcrux.compose.check on the JSON decoding of the bytes (the file as
--     `docker-compose config` would hand it over, so any shape), raw() and
--     file(), and its port, volume and size readers on every string in it.
--     Nothing raises; a refusal is nil, a message, a kind, and a field that
--     is a string or nil. The engine is a socket that does not exist (an
--     image's presence is asked of it: unavailable).
local registry = require "horcrux.registry"
local exec = require "horcrux.exec"
local json = require "horcrux.json"
local docker = require "horcrux.docker"
local engine = require "horcrux.engine"
local check_mod = require "horcrux.compose.check"
local config = require "horcrux.config"
local fz = require "fuzzlib"

local check, quote = fz.check, fz.quote

local DEAD = "unix:///nonexistent/hx-fuzz.sock"
engine.configure({ host = DEAD, timeout = 1, connect_timeout = 1 })
local client = docker.connect({ host = DEAD, timeout = 1, connect_timeout = 1 })

-- ---- 0: image references ----------------------------------------------------

local function reference(s)
  local p, msg, kind = registry.parse(s)
  if p == nil then
    check(type(msg) == "string" and kind == "bad_request",
      "parse(%s) refused with %s, %s", quote(s), quote(msg), tostring(kind))
    return
  end
  check(type(p) == "table" and p.ref == s and #s <= 512,
    "parse(%s) answered %s", quote(s), quote(p.ref))
  check(type(p.registry) == "string" and p.registry ~= ""
    and p.registry == p.registry:lower(), "registry %s", quote(p.registry))
  for part in (p.path .. "/"):gmatch("([^/]*)/") do
    check(part:find("^[a-z0-9][a-z0-9._-]*$") ~= nil, "path %s of %s",
      quote(p.path), quote(s))
  end
  local tail = (p.tag and ":" .. p.tag or "")
    .. (p.digest and "@" .. p.digest or "")
  check(p.name .. tail == s, "name %s and %s are not %s", quote(p.name),
    quote(tail), quote(s))
  local lower = p.name:lower()
  check(lower == p.path or lower:sub(-#p.path - 1) == "/" .. p.path
    or (p.registry == "docker.io" and p.path:find("^library/")),
    "path %s is not the end of %s", quote(p.path), quote(p.name))
  if client then
    local v, m, k = client:call("GET", "/images/{image}/json", { image = s })
    check(v == nil and k ~= "bad_request", "{image} refused %s (%s)",
      quote(s), quote(m))
  end
end

-- ---- 1: exec's frames -------------------------------------------------------

local function frames_expected(raw)
  local out, err, pos = {}, {}, 1
  while #raw - pos + 1 >= 8 do
    local stream, z1, z2, z3, len = string.unpack(">BBBBI4", raw, pos)
    if stream > 3 or z1 + z2 + z3 ~= 0 then
      break
    end
    local t = stream == 1 and out or err
    t[#t + 1] = raw:sub(pos + 8, pos + 7 + len)
    pos = pos + 8 + len
  end
  return table.concat(out), table.concat(err)
end

local function frames(raw)
  local stdout, stderr = exec.frames(raw)
  local want_out, want_err = frames_expected(raw)
  check(stdout == want_out, "stdout %s, expected %s", quote(stdout),
    quote(want_out))
  check(stderr == want_err, "stderr %s, expected %s", quote(stderr),
    quote(want_err))
end

-- ---- 2: compose files -------------------------------------------------------

local policy = config.policy()

local function refusal(what, ok, msg, kind, field)
  if ok then
    return
  end
  check(type(msg) == "string" and type(kind) == "string"
    and (field == nil or type(field) == "string"),
    "%s: nil, %s, %s, %s", what, quote(msg), quote(kind), quote(field))
end

-- Every string in v (at most 200 of them, a bounded walk).
local function strings(v, out, depth)
  if type(v) == "string" then
    out[#out + 1] = v
  elseif type(v) == "table" and depth < 8 then
    for k, x in pairs(v) do
      if #out >= 200 then
        return out
      end
      strings(k, out, depth + 1)
      strings(x, out, depth + 1)
    end
  end
  return out
end

local function compose(text)
  local v = json.decode(text)
  if v == nil then
    return
  end
  for _, s in ipairs(strings(v, {}, 0)) do
    check_mod.parse_port(s)
    check_mod.parse_volume(s)
    check_mod.bytes(s)
  end
  if type(v) ~= "table" then
    return
  end
  refusal("raw", check_mod.raw(v, policy))
  refusal("file", check_mod.file(v, { name = "fz", policy = policy,
    swarm = (#text % 2) == 1 }))
end

local PARTS = { [0] = reference, frames, compose }

return function(data)
  local part = PARTS[(data:byte(1) or 0) % 3]
  part(fz.expand(data:sub(2)))
end
