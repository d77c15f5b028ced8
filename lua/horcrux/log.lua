--- horcrux.log: one line per event on stderr, the server's format:
-- "<RFC 3339 UTC time> <level> <message>"; a line logged while the host
-- serves a request (a route's) starts its message with "id=<request id> ".
--
-- The message is escaped as the server escapes its own lines
-- (core/logline.h): a backslash and every byte that is not printable ASCII
-- ("\n", "\r", "\t", "\\", else "\xHH"), so text from a client or the
-- daemon (a path, a traceback quoting it) never forges a line of its own.
local clock = require "horcrux.clock"

local M = {}

local ESCAPES = { ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
  ["\\"] = "\\\\" }

local function escape(c)
  return ESCAPES[c] or ("\\x%02x"):format(c:byte())
end

--- s with what a log line must not carry escaped (one pass, no
-- backtracking).
function M.escape(s)
  return (s:gsub("[\0-\31\\\127-\255]", escape))
end

-- The request each of the host's request coroutines serves (M.bind), so a
-- line a route logs names its request: weak both ways, a pooled coroutine
-- or a finished request is not kept for it.
local running = coroutine.running
local requests = setmetatable({}, { __mode = "kv" })

--- Ties the running coroutine to req (the dispatcher, at each request):
-- what is logged from it until the next bind starts with "id=<req.id> ",
-- the id of the request's access line and of its 500 answer.
function M.bind(req)
  local co, main = running()
  if not main then
    requests[co] = req
  end
end

local function line(level, fmt, ...)
  local ns = clock.now_ns()
  local msg = select("#", ...) > 0 and string.format(fmt, ...) or tostring(fmt)
  local req = requests[running()]
  if req then
    msg = "id=" .. tostring(req.id) .. " " .. msg
  end
  io.stderr:write(string.format("%s.%03dZ %s %s\n",
    os.date("!%Y-%m-%dT%H:%M:%S", ns // 1000000000),
    (ns % 1000000000) // 1000000, level, M.escape(msg)))
end

function M.info(fmt, ...) line("info", fmt, ...) end
function M.warn(fmt, ...) line("warn", fmt, ...) end
function M.error(fmt, ...) line("error", fmt, ...) end

return M
