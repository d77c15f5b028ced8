--- horcrux.log: one line per event on stderr, the server's format:
-- "<RFC 3339 UTC time> <level> <message>".
local clock = require "horcrux.clock"

local M = {}

local function line(level, fmt, ...)
  local ns = clock.now_ns()
  local msg = select("#", ...) > 0 and string.format(fmt, ...) or tostring(fmt)
  io.stderr:write(string.format("%s.%03dZ %s %s\n",
    os.date("!%Y-%m-%dT%H:%M:%S", ns // 1000000000),
    (ns % 1000000000) // 1000000, level, msg))
end

function M.info(fmt, ...) line("info", fmt, ...) end
function M.warn(fmt, ...) line("warn", fmt, ...) end
function M.error(fmt, ...) line("error", fmt, ...) end

return M
