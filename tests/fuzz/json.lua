--- Fuzz target "json": the JSON bridge (core/jsonconv.c through
-- horcrux.json) on any bytes.
--
-- Invariants: decoding never raises and fails as nil, message, "protocol";
-- a decoded value always encodes (sorted keys, plain and pretty); encoding
-- is a fixed point (decode(encode(v)) encodes to the same text; after one
-- round trip when invalid UTF-8 was replaced); and the
-- value survives the round trip exactly (types, integer/float, array or
-- object, every string) whenever its strings are valid UTF-8 (the encoder
-- replaces invalid bytes with U+FFFD, by design). A deeper limit accepts
-- what the default accepts, with the same value.
local json = require "horcrux.json"
local fz = require "fuzzlib"

local check, quote = fz.check, fz.quote

local SORTED = { sort_keys = true, max_depth = 1000 }
local PRETTY = { sort_keys = true, pretty = true, max_depth = 1000 }

-- Whether every string (keys too) in v is valid UTF-8.
local function valid_utf8(v)
  local t = type(v)
  if t == "string" then
    return utf8.len(v) ~= nil
  elseif t == "table" then
    for k, x in next, v do
      if not valid_utf8(k) or not valid_utf8(x) then
        return false
      end
    end
  end
  return true
end

-- Raises where a and b differ, naming the path.
local function same(a, b, path)
  check(type(a) == type(b), "%s: %s became %s", path, type(a), type(b))
  if type(a) == "number" then
    -- An integral float from 2^53 on prints as digits ("%g" layout) and
    -- reads back as the integer of the same value: the value is kept.
    local retyped = math.type(a) == "float" and math.type(b) == "integer"
      and math.abs(a) >= 2 ^ 53
    check((math.type(a) == math.type(b) or retyped) and a == b,
      "%s: %s (%s) became %s (%s)", path, a, math.type(a), b, math.type(b))
  elseif type(a) == "table" then
    check(json.is_array(a) == json.is_array(b), "%s: array-ness changed", path)
    for k, x in next, a do
      same(x, rawget(b, k), path .. "[" .. quote(tostring(k)) .. "]")
    end
    for k in next, b do
      check(rawget(a, k) ~= nil, "%s: key %s appeared", path, quote(tostring(k)))
    end
  else
    check(a == b, "%s: %s became %s", path, quote(tostring(a)),
      quote(tostring(b)))
  end
end

return function(data)
  local v, err, kind = json.decode(data)
  local deep, derr = json.decode(data, { max_depth = 1000 })
  if v == nil then
    check(type(err) == "string" and kind == "protocol",
      "decode failed with %s, %s", quote(err), tostring(kind))
    if deep == nil then
      return
    end
    v = deep -- deeper than the default: the round trip below still holds
  else
    check(deep ~= nil, "max_depth 1000 refused what 128 took: %s", quote(derr))
    same(v, deep, "deep")
  end

  local text, eerr = json.encode(v, SORTED)
  check(text, "decoded value does not encode: %s", quote(eerr))
  local v2, err2 = json.decode(text, { max_depth = 1000 })
  check(v2 ~= nil, "encoder output does not decode: %s\n%s", quote(err2),
    quote(text))
  -- Invalid UTF-8 is written as the escape \ufffd, which reads back as the
  -- character: one round trip normalizes, the next must change nothing.
  local clean = valid_utf8(v)
  local text2 = json.encode(v2, SORTED)
  if not clean then
    text = text2
    text2 = json.encode(json.decode(text, { max_depth = 1000 }), SORTED)
  end
  check(text2 == text, "not a fixed point:\n%s\n%s", quote(text), quote(text2))

  local pretty = json.encode(v, PRETTY)
  check(pretty, "decoded value does not encode pretty")
  local v3 = json.decode(pretty, { max_depth = 1000 })
  check(v3 ~= nil and json.encode(json.decode(json.encode(v3, SORTED),
    { max_depth = 1000 }), SORTED) == text,
    "pretty output does not read back the same: %s", quote(pretty))

  if clean then
    same(v, v2, "value")
  end
end
