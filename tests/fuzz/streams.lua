--- Fuzz target "streams": the parsers and framing of horcrux.hub and
-- horcrux.streams on any bytes.
--
-- Input: a first byte picks the part, the rest (fuzzlib.expand) is the text.
--   0: hub.sse(id, event, data) -- the SSE frame, read back as an
--      EventSource does (lines end at \r, \n or \r\n; data: fields joined
--      with \n), gives the data with each line end made \n, and the frame
--      ends with one blank line.
--   1: hub.stream{last_id = text} -- a Last-Event-ID: never raises; the
--      id is kept only when the text is 1-18 decimal digits (blanks around
--      allowed), and is then that number.
--   2: streams.interval(text) -- ?interval=: a number 0.1..3600 or nil, why.
local hub = require "horcrux.hub"
local streams = require "horcrux.streams"
local fz = require "fuzzlib"

local check, quote = fz.check, fz.quote

local function read_back(frame)
  local data, pos = {}, 1
  local lines = {}
  while pos <= #frame do
    local s, e = frame:find("\r\n", pos, true)
    local a = frame:find("[\r\n]", pos)
    if a and (not s or a < s) then
      s, e = a, a
    end
    if not s then
      lines[#lines + 1] = frame:sub(pos)
      break
    end
    lines[#lines + 1] = frame:sub(pos, s - 1)
    pos = e + 1
  end
  for _, l in ipairs(lines) do
    if l:sub(1, 6) == "data: " then
      data[#data + 1] = l:sub(7)
    end
  end
  return table.concat(data, "\n"), lines
end

return function(input)
  local part = input:byte(1) or 0
  local text = fz.expand(input:sub(2))
  if part % 3 == 0 then
    local frame = hub.sse(0, "e", text)
    local got, lines = read_back(frame)
    local want = text:gsub("\r\n", "\n"):gsub("\r", "\n")
    check(got == want, "sse data %s read back as %s", quote(want), quote(got))
    check(frame:sub(-2) == "\n\n" and lines[#lines] == "",
      "the frame ends in one blank line")
  elseif part % 3 == 1 then
    local s = hub.stream({ topic = "events", last_id = text })
    local digits = text:match("^[ \t]*(%d+)[ \t]*$")
    if digits and #digits <= 18 then
      check(s.last_id == math.tointeger(tonumber(digits)),
        "last_id %s kept as %s", quote(text), tostring(s.last_id))
    else
      check(s.last_id == nil, "last_id %s must be refused", quote(text))
    end
  else
    local v, why = streams.interval(text)
    check((v == nil and type(why) == "string") or
      (type(v) == "number" and v >= 0.1 and v <= 3600),
      "interval %s gave %s", quote(text), tostring(v))
  end
end
