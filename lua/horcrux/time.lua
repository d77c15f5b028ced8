--- horcrux.time: times as the daemon writes them and as users give them.
--
--   time.parse(s)  -> ns since the epoch (integer) | nil, reason
--   time.format(ns) -> "2026-11-30T08:33:31.123456789Z"
--   time.param(v)  -> "seconds[.nanos]" for the daemon's since/until
--                     | nil, why
--
-- parse takes RFC 3339 ("2006-01-02T15:04:05.999999999Z" or with
-- "+07:00"/"-07:00"; 0..9 fraction digits, more truncated to ns; "t", "z"
-- and a space for "T" as RFC 3339 §5.6 allows). Reasons: "zero" for Go's
-- zero time "0001-01-01T00:00:00Z" (the daemon's "not running"), "syntax"
-- for anything else that is not RFC 3339, "range" for a time outside int64
-- ns (1677..2262). A non-string raises. Patterns are anchored and bounded:
-- the input may come from outside.
--
-- param takes what a user writes for "since"/"until": Unix seconds
-- ("1700000000", "1700000000.5"), RFC 3339, or a duration before now
-- ("90s", "10m", "1h30m").
local clock = require "horcrux.clock"

local M = {}

-- Seconds from 1970-01-01 to 0001-01-01, Go's zero time.
local ZERO_TIME_S = -62135596800
local MAX_LEN = 64

-- Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
-- days_from_civil).
local function days_from_civil(y, m, d)
  if m <= 2 then
    y = y - 1
  end
  local era = y // 400
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = (153 * mp + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

local function days_in_month(y, m)
  if m == 2 then
    local leap = (y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0
    return leap and 29 or 28
  end
  return (m == 4 or m == 6 or m == 9 or m == 11) and 30 or 31
end

-- The zone suffix: offset seconds, or nil.
local function zone(rest)
  if rest == "Z" or rest == "z" then
    return 0
  end
  local sign, oh, om = rest:match("^([+-])(%d%d):(%d%d)$")
  if not sign then
    return nil
  end
  oh, om = tonumber(oh), tonumber(om)
  if oh > 23 or om > 59 then
    return nil
  end
  local off = (oh * 60 + om) * 60
  return sign == "-" and -off or off
end

-- Fields of an RFC 3339 text: y, mo, d, h, mi, sec, frac_ns, offset_s; nil
-- when it is not one.
local function fields(s)
  if #s > MAX_LEN then
    return nil
  end
  local y, mo, d, h, mi, sec, rest =
    s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)[Tt ](%d%d):(%d%d):(%d%d)(.*)$")
  if not y then
    return nil
  end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  h, mi, sec = tonumber(h), tonumber(mi), tonumber(sec)
  local frac = 0
  local digits, tail = rest:match("^%.(%d+)(.*)$")
  if digits then
    rest = tail
    frac = tonumber((digits .. "00000000"):sub(1, 9))
  end
  local off = zone(rest)
  if off == nil or mo < 1 or mo > 12 or d < 1 or d > days_in_month(y, mo)
    or h > 23 or mi > 59 or sec > 60 then
    return nil
  end
  return y, mo, d, h, mi, sec, frac, off, digits
end

function M.parse(s)
  if type(s) ~= "string" then
    error("time.parse: string expected, got " .. type(s), 2)
  end
  local y, mo, d, h, mi, sec, frac, off = fields(s)
  if not y then
    return nil, "syntax"
  end
  local secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec
    - off
  if secs == ZERO_TIME_S and frac == 0 then
    return nil, "zero"
  end
  -- int64 ns spans -9223372037 s + 145224192 ns .. 9223372036 s +
  -- 854775807 ns. (At the lower edge secs * 10^9 wraps, and adding frac
  -- wraps back: Lua integers are two's complement.)
  if secs < -9223372037 or secs > 9223372036
    or (secs == -9223372037 and frac < 145224192)
    or (secs == 9223372036 and frac > 854775807) then
    return nil, "range"
  end
  return secs * 1000000000 + frac
end

function M.format(ns)
  return os.date("!%Y-%m-%dT%H:%M:%S", ns // 1000000000)
    .. string.format(".%09dZ", ns % 1000000000)
end

local DURATION_UNIT = { s = 1, m = 60, h = 3600 }
local SYNTAX = "must be Unix seconds, RFC 3339 or a duration like 10m"

-- "1h30m" -> seconds, or nil.
local function duration(v)
  local total, pos = 0, 1
  while pos <= #v do
    local n, unit = v:match("^(%d+)([smh])", pos)
    if not n or #n > 9 then
      return nil
    end
    total = total + tonumber(n) * DURATION_UNIT[unit]
    pos = pos + #n + 1
  end
  return total
end

function M.param(v)
  if #v > 40 then
    return nil, "too long"
  end
  local secs, frac = v:match("^(%d+)%.?(%d*)$")
  if secs and #secs <= 12 and #frac <= 9 then
    return frac ~= "" and (secs .. "." .. frac) or secs
  end
  if v:match("^%d+[smh]") then
    local total = duration(v)
    if not total then
      return nil, SYNTAX
    end
    return tostring(clock.now_ns() // 1000000000 - total)
  end
  if v:match("^%d%d%d%d%-") then
    local y, mo, d, h, mi, sec, _, off, digits = fields(v)
    if not y or (digits and #digits > 9) then
      return nil, "not a valid RFC 3339 time (it needs Z or an offset like "
        .. "+02:00)"
    end
    local t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec
      - off
    if t < 0 then
      return nil, "before 1970"
    end
    return digits and (t .. "." .. digits) or tostring(t)
  end
  return nil, SYNTAX
end

return M
