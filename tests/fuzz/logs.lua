--- Fuzz target "logs": horcrux.logs' demux(raw, tty, timestamps), the
-- parse of a logs reply, on any bytes.
--
-- Input: a first byte of flags (bit 0: tty, bit 1: timestamps), then the
-- reply (fuzzlib.expand: long replies, long lines, many frames).
--
-- Invariants: demux never raises, its cost grows with the reply's size
-- (lua_target.c's step and CPU budgets), and it answers lines, what was
-- wrong (nil or a string), entries. Each line is {stream, line[, time]}.
-- Without timestamps the lines are exactly those of the reply as the
-- module documents it, computed here independently:
--  - frames (no tty): an 8-byte header (stream 0..3, three zero bytes, a
--    big-endian 32-bit length) then the payload, a last payload cut short
--    taken as it is; bytes that are not a header stop the parse, and the
--    second value says so; entries is the number of frames. Each stream's
--    payloads joined, split at "\n": every piece but the last is a line,
--    and the last is one when it is not empty;
--  - tty: the whole reply as stdout, split the same way; entries is the
--    number of lines;
--  - a line loses one trailing "\r" (CR LF ends).
local demux = require("horcrux.logs").demux
local fz = require "fuzzlib"

local check, quote = fz.check, fz.quote

local STREAM = { [0] = "stdin", "stdout", "stderr", "system" }
local KNOWN = { stdin = true, stdout = true, stderr = true, system = true }

-- Appends to out[stream] the lines of text.
local function split(out, stream, text)
  local lines = out[stream] or {}
  out[stream] = lines
  local pos = 1
  while true do
    local nl = text:find("\n", pos, true)
    local piece = text:sub(pos, (nl or 0) - 1)
    if not nl and piece == "" then
      break
    end
    if piece:byte(-1) == 13 then
      piece = piece:sub(1, -2)
    end
    lines[#lines + 1] = piece
    if not nl then
      break
    end
    pos = nl + 1
  end
end

-- The expected lines per stream, whether the parse stops early, entries.
local function expected(raw, tty)
  local out = {}
  if tty then
    split(out, "stdout", raw)
    return out, false, #out.stdout
  end
  local joined, order, pos, frames = {}, {}, 1, 0
  local stopped = false
  while pos <= #raw do
    if #raw - pos + 1 < 8 then
      stopped = true
      break
    end
    local kind, z1, z2, z3, len = string.unpack(">BBBBI4", raw, pos)
    if kind > 3 or z1 ~= 0 or z2 ~= 0 or z3 ~= 0 then
      stopped = true
      break
    end
    local s = STREAM[kind]
    if not joined[s] then
      joined[s] = {}
      order[#order + 1] = s
    end
    local parts = joined[s]
    parts[#parts + 1] = raw:sub(pos + 8, pos + 7 + len)
    frames = frames + 1
    pos = pos + 8 + len
  end
  for _, s in ipairs(order) do
    split(out, s, table.concat(joined[s]))
  end
  return out, stopped, frames
end

return function(data)
  local flags = data:byte(1) or 0
  local tty, timestamps = flags & 1 == 1, flags & 2 == 2
  local raw = fz.expand(data:sub(2))
  local lines, bad, entries = demux(raw, tty, timestamps)
  check(type(lines) == "table", "lines is a %s", type(lines))
  check(bad == nil or type(bad) == "string", "second value is a %s", type(bad))
  check(math.type(entries) == "integer" and entries >= 0, "entries is %s",
    tostring(entries))
  local got = {}
  for i, l in ipairs(lines) do
    check(type(l) == "table" and KNOWN[l.stream] and type(l.line) == "string",
      "line %d is malformed", i)
    if not (l.time == nil or (timestamps and type(l.time) == "string")) then
      check(false, "line %d has a time %s", i, quote(l.time))
    end
    local g = got[l.stream] or {}
    got[l.stream] = g
    g[#g + 1] = l.line
  end
  if timestamps then
    return
  end
  local want, stopped, frames = expected(raw, tty)
  check((bad ~= nil) == stopped, "stopped early: %s, expected %s",
    quote(bad), tostring(stopped))
  check(entries == frames, "entries %d, expected %d", entries, frames)
  for s in pairs(KNOWN) do
    local g, w = got[s] or {}, want[s] or {}
    check(#g == #w, "%s: %d lines, expected %d", s, #g, #w)
    for i = 1, #w do
      if g[i] ~= w[i] then -- quote only on failure: it costs per call
        check(false, "%s line %d: %s, expected %s", s, i, quote(g[i]),
          quote(w[i]))
      end
    end
  end
end
