--- horcrux.logs: a container's logs from the Engine API, split into lines
-- tagged with their stream.
--
--   logs.params(args)         -> opts | nil, message, "bad_request", key
--   logs.fetch(ref, opts)     -> lines, info | nil, message, kind
--       lines: [{stream = "stdout"|"stderr"|..., line = text[, time =
--       RFC 3339]}], oldest first; info: {id, tty, truncated}
--   logs.demux(raw, tty, timestamps) -> lines (what fetch does with a reply)
--   logs.text(lines)          -> the lines as plain text
--
-- The reply. A container without a TTY gets its streams multiplexed: each
-- frame is an 8-byte header (stream: 0 stdin, 1 stdout, 2 stderr, 3 the
-- daemon's own error; 3 zero bytes; the payload length, big-endian 32 bits)
-- then the payload. The daemon writes one frame per log message, and a
-- message longer than 16 KiB as several frames ("partial" messages, without
-- the final newline): frames are joined per stream until a newline. With a
-- TTY the reply is the raw terminal output (one stream, CR LF ends).
--
-- The cap. A reply past logs.MAX_BYTES is not read to its end (the client
-- fails it with kind "limit" as it passes the cap); fetch then asks for
-- the newest lines only (tail), fewer each time, until the reply fits, and
-- says truncated = true. At most logs.MAX_LINES lines are asked for (the
-- newest; one more says whether there were more), so the work of a reply
-- is bounded by both. A line longer than 16 KiB is several log entries:
-- when truncated, the oldest line may be the end of such a line.
local docker = require "horcrux.docker"
local json = require "horcrux.json"
local clock = require "horcrux.clock"
local input = require "horcrux.input"
local docker_api = require "horcrux.sources.docker_api"

local M = {}

M.MAX_BYTES = 10 * 1024 * 1024
M.MAX_LINES = 100000

-- ---- query ---------------------------------------------------------------

local function days_from_civil(y, m, d)
  y = m <= 2 and y - 1 or y
  local era = (y >= 0 and y or y - 399) // 400
  local yoe = y - era * 400
  local doy = (153 * (m + (m > 2 and -3 or 9)) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

local DURATION_UNIT = { s = 1, m = 60, h = 3600 }

--- A time for since/until, as the daemon takes it ("seconds[.nanos]" since
-- the epoch), from: Unix seconds ("1700000000", "1700000000.5"), RFC 3339
-- ("2026-01-02T03:04:05Z", "...+02:00", fractions), or a duration before
-- now ("90s", "10m", "1h30m").
function M.time_param(v)
  if #v > 40 then
    return nil, "too long"
  end
  local secs, frac = v:match("^(%d+)%.?(%d*)$")
  if secs and #secs <= 12 and #frac <= 9 then
    return frac ~= "" and (secs .. "." .. frac) or secs
  end
  if v:match("^%d+[smh][%dsmh]*$") then
    local total, rest = 0, v
    while rest ~= "" do
      local n, unit, tail = rest:match("^(%d+)([smh])(.*)$")
      if not n or #n > 9 then
        return nil, "must be Unix seconds, RFC 3339 or a duration like 10m"
      end
      total = total + tonumber(n) * DURATION_UNIT[unit]
      rest = tail
    end
    return tostring(clock.now_ns() // 1000000000 - total)
  end
  local Y, Mo, D, h, mi, s, fr, zone = v:match(
    "^(%d%d%d%d)%-(%d%d)%-(%d%d)[Tt ](%d%d):(%d%d):(%d%d)%.?(%d*)(.*)$")
  if Y and #fr <= 9 then
    local off
    if zone == "Z" or zone == "z" then
      off = 0
    else
      local sign, zh, zm = zone:match("^([+-])(%d%d):(%d%d)$")
      if not sign then
        return nil, "an RFC 3339 time needs Z or an offset like +02:00"
      end
      off = (tonumber(zh) * 3600 + tonumber(zm) * 60) * (sign == "+" and 1 or -1)
    end
    Y, Mo, D, h, mi, s = tonumber(Y), tonumber(Mo), tonumber(D), tonumber(h),
      tonumber(mi), tonumber(s)
    if Mo < 1 or Mo > 12 or D < 1 or D > 31 or h > 23 or mi > 59 or s > 60 then
      return nil, "not a valid date and time"
    end
    local t = days_from_civil(Y, Mo, D) * 86400 + h * 3600 + mi * 60 + s - off
    if t < 0 then
      return nil, "before 1970"
    end
    return fr ~= "" and (t .. "." .. fr) or tostring(t)
  end
  return nil, "must be Unix seconds, RFC 3339 or a duration like 10m"
end

local function tail_param(v)
  if v == "all" then
    return v
  end
  local n = v:match("^%d+$") and #v <= 9 and tonumber(v)
  if n then
    return math.tointeger(n)
  end
  return nil, 'must be "all" or a number of lines'
end

local PARAMS = {
  tail = tail_param,
  since = M.time_param,
  ["until"] = M.time_param,
  timestamps = input.boolean,
  stdout = input.boolean,
  stderr = input.boolean,
}

--- The route's query, checked: {tail, since, until_, timestamps, stdout,
-- stderr} (stdout and stderr default to true; not both false).
function M.params(args)
  local q, err, kind, key = input.query(args, PARAMS)
  if not q then
    return nil, err, kind, key
  end
  local opts = {
    tail = q.tail or "all",
    since = q.since,
    until_ = q["until"],
    timestamps = q.timestamps or false,
    stdout = q.stdout ~= false,
    stderr = q.stderr ~= false,
  }
  if not opts.stdout and not opts.stderr then
    return nil, "stdout=0 and stderr=0 leave nothing to show", "bad_request",
      "stdout"
  end
  return opts
end

-- ---- demultiplexing --------------------------------------------------------

local STREAM = { [0] = "stdin", "stdout", "stderr", "system" }

-- Adds one complete line of stream to out, splitting off the timestamp the
-- daemon put first when asked for timestamps.
local function emit(out, stream, line, time)
  local n = #out + 1
  if line:byte(-1) == 13 then -- "\r": a TTY's CR LF
    line = line:sub(1, -2)
  end
  out[n] = time and { stream = stream, time = time, line = line }
    or { stream = stream, line = line }
end

local function split_time(payload)
  local t, rest = payload:match("^(%d%d%d%d%-%d%d%-%d%dT[%d:.]+Z) (.*)$")
  if t then
    return t, rest
  end
  t = payload:match("^(%d%d%d%d%-%d%d%-%d%dT[%d:.]+Z)$")
  if t then
    return t, ""
  end
  return nil, payload
end

-- Feeds one frame's payload of stream into pending/out.
local function feed(out, pending, ptime, stream, payload, timestamps)
  local time
  if timestamps then
    time, payload = split_time(payload)
    if pending[stream] then
      time = nil -- a continuation: the line's time is its first part's
    end
  end
  local pos = 1
  while true do
    local nl = payload:find("\n", pos, true)
    if not nl then
      break
    end
    local part = payload:sub(pos, nl - 1)
    local head = pending[stream]
    if head then
      part = head .. part
      pending[stream] = nil
    end
    emit(out, stream, part, ptime[stream] or time)
    ptime[stream] = nil
    time = nil
    pos = nl + 1
  end
  if pos <= #payload then
    pending[stream] = (pending[stream] or "") .. payload:sub(pos)
    if ptime[stream] == nil then
      ptime[stream] = time
    end
  end
end

--- The lines of a logs reply, what was wrong with it (nil), and how many
-- log entries it held (frames; a TTY's lines). tty: the raw stream of a
-- TTY container; otherwise frames. A frame cut short (the last one of a
-- capped reply) is taken as far as it goes; bytes that are not a frame
-- header end the parse with what was read so far, and the 2nd value says
-- so.
function M.demux(raw, tty, timestamps)
  local out, pending, ptime = json.array(), {}, {}
  local bad, frames = nil, 0
  if tty then
    -- one stream; with timestamps, every line starts with its own
    for line in raw:gmatch("([^\n]*)\n") do
      local time
      if timestamps then
        time, line = split_time(line)
      end
      emit(out, "stdout", line, time)
    end
    local rest = raw:match("([^\n]+)$")
    if rest then
      local time
      if timestamps then
        time, rest = split_time(rest)
      end
      emit(out, "stdout", rest, time)
    end
  else
    local pos, n = 1, #raw
    while pos <= n do
      if n - pos + 1 < 8 then
        bad = "a frame header cut short"
        break
      end
      local kind, z1, z2, z3, len = string.unpack(">BBBBI4", raw, pos)
      if kind > 3 or z1 ~= 0 or z2 ~= 0 or z3 ~= 0 then
        bad = ("bytes that are not a frame header at offset %d"):format(pos - 1)
        break
      end
      local payload = raw:sub(pos + 8, pos + 7 + len)
      frames = frames + 1
      feed(out, pending, ptime, STREAM[kind], payload, timestamps)
      pos = pos + 8 + len
    end
  end
  -- what is left without a final newline is a line too, in stream order
  for _, s in ipairs({ "stdin", "stdout", "stderr", "system" }) do
    if pending[s] then
      emit(out, s, pending[s], ptime[s])
    end
  end
  return out, bad, tty and #out or frames
end

--- Plain text: each line as it was written (after its timestamp, when
-- asked for), one per line.
function M.text(lines)
  local parts = {}
  for i, l in ipairs(lines) do
    parts[i] = l.time and (l.time .. " " .. l.line) or l.line
  end
  if #parts == 0 then
    return ""
  end
  return table.concat(parts, "\n") .. "\n"
end

-- ---- fetching ------------------------------------------------------------

local capped_client, capped_for

-- A client of this state whose replies stop at MAX_BYTES, so a huge log is
-- never held whole in memory.
local function logs_client()
  if capped_client == nil or capped_for ~= M.MAX_BYTES then
    local c, err, kind = docker.connect({ max_response = M.MAX_BYTES })
    if not c then
      return nil, err, kind
    end
    capped_client, capped_for = c, M.MAX_BYTES
  end
  return capped_client
end

local function query_of(opts, tail)
  local q = {
    stdout = opts.stdout, stderr = opts.stderr,
    timestamps = opts.timestamps, tail = tostring(tail),
  }
  q.since = opts.since
  q["until"] = opts.until_
  return q
end

--- The logs of ref (a name, an id or an id prefix, already checked).
function M.fetch(ref, opts)
  local api, err, kind = docker_api.client()
  if not api then
    return nil, err, kind
  end
  local info
  info, err, kind = api:inspect(ref)
  if not info then
    return nil, err, kind
  end
  local id = info.Id
  local tty = type(info.Config) == "table" and info.Config.Tty == true
  local c
  c, err, kind = logs_client()
  if not c then
    return nil, err, kind
  end
  -- never more than MAX_LINES + 1 entries: one more than is kept says
  -- whether there were more
  local tail, truncated = opts.tail, false
  if tail == "all" or tail > M.MAX_LINES then
    tail = M.MAX_LINES + 1
  end
  local status, body, third
  while true do
    status, body, third = c:request("GET", "/containers/" .. id .. "/logs",
      query_of(opts, tail))
    if status or third ~= "limit" or tail == 0 then
      break
    end
    -- past the byte cap: the newest lines only, fewer each time
    truncated = true
    tail = tail // 4
  end
  if not status then
    return nil, body, third
  end
  if status ~= 200 then
    return require("horcrux.manage").daemon_error(status, body)
  end
  if type(body) ~= "string" then -- a JSON reply where a stream was expected
    body = json.encode(body) or ""
  end
  local lines, bad, entries = M.demux(body, tty, opts.timestamps)
  if bad then
    require("horcrux.log").warn("logs of %s: %s", id:sub(1, 12), bad)
  end
  if entries > M.MAX_LINES then
    truncated = true
  end
  if #lines > M.MAX_LINES then
    local keep = json.array()
    table.move(lines, #lines - M.MAX_LINES + 1, #lines, 1, keep)
    lines, truncated = keep, true
  end
  return lines, { id = id, tty = tty, truncated = truncated }
end

return M
