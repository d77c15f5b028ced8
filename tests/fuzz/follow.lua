--- Fuzz target "follow": the C demux of log follow (core/logdemux.c,
-- through hub.demux) against horcrux.logs' demux, on any bytes cut into
-- any chunks.
--
-- Input: a byte of flags (bit 0: tty, bit 1: timestamps, bit 2: a small
-- line cap), a byte that seeds the chunk sizes, then the stream
-- (fuzzlib.expand: long streams, long lines, many frames).
--
-- Invariants: hub.demux never raises and costs in proportion to the
-- stream. Without a cap its lines are exactly logs.demux's -- stream, line
-- and time, in order -- however the stream was cut (a follow reads it as
-- the daemon writes it: headers, times and lines split between reads), and
-- it says bytes were not frames exactly when logs.demux does. With a cap,
-- no line is longer than it, a line is flagged truncated only when it was
-- cut (a TTY's with timestamps counts its time), and the lines that were
-- not cut are logs.demux's.
local hub = require "horcrux.hub"
local demux = require("horcrux.logs").demux
local fz = require "fuzzlib"

local check, quote = fz.check, fz.quote
local CAP = 50

-- raw cut into chunks of 0..40 bytes, from seed (a chunk of 0 bytes is a
-- read that brought nothing).
local function chunks(raw, seed)
  local out, pos, x = {}, 1, seed * 2654435761 % 4294967296
  while pos <= #raw do
    x = (x * 1103515245 + 12345) % 2147483648
    local n = (x >> 8) % 41
    out[#out + 1] = raw:sub(pos, pos + n - 1)
    pos = pos + n
  end
  return out
end

return function(data)
  local flags, seed = data:byte(1) or 0, data:byte(2) or 0
  local tty, timestamps, capped = flags & 1 == 1, flags & 2 == 2, flags & 4 == 4
  local raw = fz.expand(data:sub(3))
  local got, bad = hub.demux(chunks(raw, seed), tty, timestamps,
    capped and CAP or nil)
  local want, why = demux(raw, tty, timestamps)
  check(type(got) == "table" and type(bad) == "boolean", "bad results")
  if not capped then
    check(bad == (why ~= nil), "bad: %s, logs.demux: %s", tostring(bad),
      quote(why))
    check(#got == #want, "%d lines, logs.demux %d", #got, #want)
    for i, w in ipairs(want) do
      local g = got[i]
      check(g.stream == w.stream and g.line == w.line and g.time == w.time
        and not g.truncated,
        "line %d: %s %s %s, logs.demux: %s %s %s", i, g.stream, quote(g.line),
        quote(g.time), w.stream, quote(w.line), quote(w.time))
    end
    return
  end
  check(#got == #want, "capped: %d lines, logs.demux %d", #got, #want)
  for i, g in ipairs(got) do
    local w = want[i]
    check(#g.line <= CAP, "line %d: %d bytes past the cap", i, #g.line)
    check(g.stream == w.stream, "line %d: stream %s, logs.demux %s", i,
      g.stream, w.stream)
    if g.truncated then
      -- a TTY's line is cut before its time is split off: the cap counts
      -- the time
      check((#w.line >= CAP or (tty and timestamps))
        and w.line:sub(1, #g.line) == g.line,
        "line %d cut but not long: %s", i, quote(w.line))
    else
      check(g.line == w.line, "line %d: %s, logs.demux %s", i, quote(g.line),
        quote(w.line))
    end
  end
end
