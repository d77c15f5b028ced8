--- Stream clients for the specs: tests/stream_client.py in the background
-- (SSE, NDJSON, WebSocket, a slow reader), its JSON lines in a file.
local http = require "http"
local json = require "horcrux.json"
local proc = require "horcrux.proc"

local M = {}

local PY = "/usr/bin/python3"
local CLIENT = "tests/stream_client.py"

--- A client in the background: mode, url, seconds, extra header lines.
function M.client(mode, url, seconds, headers)
  local path = os.tmpname()
  local argv = { PY, CLIENT, mode, url, tostring(seconds) }
  for _, h in ipairs(headers or {}) do
    argv[#argv + 1] = h
  end
  local p = assert(proc.spawn(argv, { stdout = path, stderr = path }))
  return { proc = p, path = path }
end

--- Its messages so far (waits for it to end when wait is set); a line
-- that is not JSON is {raw = line}.
function M.lines(c, wait)
  if wait then
    c.proc:wait(30)
  end
  local out = {}
  for line in http.read_file(c.path):gmatch("[^\n]+") do
    local ok, v = pcall(json.decode, line)
    out[#out + 1] = ok and v or { raw = line }
  end
  return out
end

return M
