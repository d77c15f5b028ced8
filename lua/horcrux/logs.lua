--- horcrux.logs: a container's logs from the Engine API, split into lines
-- tagged with their stream.
--
--   logs.QUERY                the route's query keys and their checkers
--   logs.options(query)       -> opts | nil, message, "bad_request", key
--   logs.params(args)         -> opts (both: input.query, then options)
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
local json = require "horcrux.json"
local input = require "horcrux.input"
local time = require "horcrux.time"
local metrics = require "horcrux.metrics"
local config = require "horcrux.config"

local M = {}

M.MAX_BYTES = 10 * 1024 * 1024
M.MAX_LINES = 100000

-- ---- query ---------------------------------------------------------------

--- since/until as the daemon takes them: horcrux.time.param.
M.time_param = time.param

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

--- The route's query keys and their checkers (horcrux.input's form).
M.QUERY = {
  tail = tail_param,
  since = M.time_param,
  ["until"] = M.time_param,
  timestamps = input.boolean,
  stdout = input.boolean,
  stderr = input.boolean,
}

--- The options of fetch() from a checked query: {tail, since, until_,
-- timestamps, stdout, stderr} (stdout and stderr default to true; not
-- both false).
function M.options(q)
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

--- The route's query, checked (M.QUERY, then M.options).
function M.params(args)
  local q, err, kind, key = input.query(args, M.QUERY)
  if not q then
    return nil, err, kind, key
  end
  return M.options(q)
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

-- "2026-01-02T03:04:05.123Z rest" -> time, rest. Only the first 40
-- bytes are looked at: a timestamp is shorter, and a pattern over the
-- whole payload would copy it to find out.
local function split_time(payload)
  local sp = payload:find(" ", 1, true)
  local head
  if sp and sp <= 40 then
    head = payload:sub(1, sp - 1)
  elseif not sp and #payload <= 40 then
    head = payload
  end
  if head and head:match("^%d%d%d%d%-%d%d%-%d%dT[%d:.]+Z$") then
    return head, sp and payload:sub(sp + 1) or ""
  end
  return nil, payload
end

-- Feeds one frame's payload of stream into pending/out. A line longer
-- than a frame (16 KiB) arrives in parts: they are kept in a list and
-- joined once at its newline, so a long line costs its length, not its
-- length times its parts.
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
      head[#head + 1] = part
      part = table.concat(head)
      pending[stream] = nil
    end
    emit(out, stream, part, ptime[stream] or time)
    ptime[stream] = nil
    time = nil
    pos = nl + 1
  end
  if pos <= #payload then
    local head = pending[stream] or {}
    head[#head + 1] = payload:sub(pos)
    pending[stream] = head
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
    -- one stream; with timestamps, every line starts with its own. Walked
    -- with a plain find: a pattern would rescan a long line from every
    -- position (quadratic in one C call, out of the budget's reach).
    local pos, n = 1, #raw
    while pos <= n do
      local nl = raw:find("\n", pos, true)
      local line = raw:sub(pos, (nl or n + 1) - 1)
      local t
      if timestamps then
        t, line = split_time(line)
      end
      emit(out, "stdout", line, t)
      pos = (nl or n) + 1
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
      emit(out, s, table.concat(pending[s]), ptime[s])
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

local function query_of(opts, tail)
  return {
    stdout = opts.stdout, stderr = opts.stderr,
    timestamps = opts.timestamps, tail = tostring(tail),
    since = opts.since, ["until"] = opts.until_,
  }
end

-- The sources that can give logs, in order.
local function log_sources()
  local out = {}
  for _, src in ipairs(config.sources()) do
    if type(src.logs) == "function" then
      out[#out + 1] = src
    end
  end
  return out
end

-- The raw stream, from the first source that can give logs: fewer lines
-- each time while the reply passes MAX_BYTES. Returns raw, info, truncated.
local function fetch_raw(ref, opts)
  local sources = log_sources()
  -- never more than MAX_LINES + 1 entries: one more than is kept says
  -- whether there were more
  local tail, truncated = opts.tail, false
  if tail == "all" or tail > M.MAX_LINES then
    tail = M.MAX_LINES + 1
  end
  while true do
    local raw, info, kind = metrics.ask("logs", sources, ref,
      query_of(opts, tail), M.MAX_BYTES)
    if raw or kind ~= "limit" or tail == 0 then
      return raw, info, kind, truncated
    end
    truncated = true -- past the byte cap: the newest lines only
    tail = tail // 4
  end
end

-- fetch()'s opts as a script may write them ({tail = 10}, {}, nil) made
-- what M.options makes of a checked query: stdout and stderr default to
-- true, tail to "all" (a number, or its digits); `until` or until_.
local function fetch_options(opts)
  if opts == nil then
    opts = {}
  elseif type(opts) ~= "table" then
    error(("bad argument #2 to 'fetch' (table expected, got %s)")
      :format(type(opts)), 3)
  end
  local tail = opts.tail
  if tail == nil then
    tail = "all"
  elseif type(tail) == "string" then
    local why
    tail, why = tail_param(tail)
    if not tail then
      return nil, "tail: " .. why, "bad_request", "tail"
    end
  elseif math.type(tail) ~= "integer" or tail < 0 then
    return nil, 'tail: must be "all" or a number of lines', "bad_request",
      "tail"
  end
  local q = { tail = tail, since = opts.since,
    ["until"] = opts.until_ or opts["until"], timestamps = opts.timestamps,
    stdout = opts.stdout, stderr = opts.stderr }
  return M.options(q)
end

--- The logs of ref (a name, an id or an id prefix, already checked).
function M.fetch(ref, opts)
  local checked, why, why_kind, key = fetch_options(opts)
  if not checked then
    return nil, why, why_kind, key
  end
  opts = checked
  local raw, info, kind, truncated = fetch_raw(ref, opts)
  if not raw then
    return nil, info, kind
  end
  local lines, bad, entries = M.demux(raw, info.tty, opts.timestamps)
  if bad then
    require("horcrux.log").warn("logs of %s: %s", info.id:sub(1, 12), bad)
  end
  if entries > M.MAX_LINES then
    truncated = true
  end
  if #lines > M.MAX_LINES then
    local keep = json.array()
    table.move(lines, #lines - M.MAX_LINES + 1, #lines, 1, keep)
    lines, truncated = keep, true
  end
  return lines, { id = info.id, tty = info.tty, truncated = truncated }
end

return M
