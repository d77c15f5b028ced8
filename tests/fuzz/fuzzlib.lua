--- fuzzlib: what the Lua fuzz targets (tests/fuzz/<target>.lua) share.
--
-- A target is a module returning a function of the input bytes. It raises
-- (fuzzlib.check) when an invariant breaks; lua_target.c turns any error
-- into a crash that libFuzzer keeps.
local M = {}

--- The most bytes an expanded input may stand for.
M.MAX = 64 * 1024

--- The bytes an input stands for. Costs that grow faster than the input
-- (a quadratic walk, a backtracking pattern) show only on long inputs, and
-- libFuzzer's inputs are short; so an input that starts with "\xA5" is a
-- repetition:
--
--   "\xA5" n1 (2 bytes, big-endian) n2 (2) len1 (1) unit1 len2 (1) unit2 tail
--     -> (unit1:rep(n1) .. unit2):rep(n2) .. tail, cut at MAX bytes
--
-- e.g. 16 KiB lines without a short input: unit1 "x", n1 16384, unit2 "\n".
-- Anything else stands for itself.
function M.expand(data)
  if data:byte(1) ~= 0xA5 or #data < 7 then
    return data
  end
  local n1, n2, len1, pos = string.unpack(">I2I2B", data, 2)
  local unit1 = data:sub(pos, pos + len1 - 1)
  pos = pos + len1
  local len2 = data:byte(pos) or 0
  local unit2 = data:sub(pos + 1, pos + len2)
  local tail = data:sub(pos + 1 + len2)
  if #unit1 * n1 > M.MAX then
    n1 = M.MAX // math.max(#unit1, 1)
  end
  local line = unit1:rep(n1) .. unit2
  if #line * n2 > M.MAX then
    n2 = M.MAX // math.max(#line, 1)
  end
  return (line:rep(n2) .. tail):sub(1, M.MAX)
end

--- s quoted for a message: printable ASCII as is, the rest as \xHH, at most
-- 120 bytes of it.
function M.quote(s)
  if type(s) ~= "string" then
    return tostring(s)
  end
  local q = s:sub(1, 120):gsub("[^ -~]", function(c)
    return ("\\x%02x"):format(c:byte())
  end)
  return '"' .. q .. (#s > 120 and ('"... (%d bytes)'):format(#s) or '"')
end

--- Raises "invariant: <message>" unless ok.
function M.check(ok, fmt, ...)
  if not ok then
    error("invariant: " .. fmt:format(...), 2)
  end
  return ok
end

return M
