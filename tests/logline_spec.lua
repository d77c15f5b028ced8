-- Issue 8, defect 8: nothing a client sends forges a log line. A path with
-- "%0d%0a" is decoded by the server; written as it is, the rest of the path
-- would be a line of its own (a forged "POST .../kill 200"). Every line the
-- server writes, access and error lines alike, escapes control characters
-- and the backslash.
local http = require "http"
local clock = require "horcrux.clock"

local FORGED = "2026-01-01T00:00:00.000Z access POST /api/containers/x/kill 200"

local function encode(s)
  return (s:gsub("[^%w._-]", function(c) return ("%%%02X"):format(c:byte()) end))
end

-- Every line of the log is one of the server's: a time, a level, a message.
local function every_line_is_a_log_line(text)
  for line in text:gmatch("[^\n]+") do
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ %a+ ", line)
    assert.is_nil(line:find("^" .. FORGED:gsub("%p", "%%%0")), line)
  end
end

describe("horcrux serve log lines", function()
  local srv, dir

  setup(function()
    dir = http.scripts_dir({ ["routes.lua"] = [[
route("GET", "/fail/*what", function(req) error("refused " .. req.params.what) end)
route("GET", "/say/*what", function(req)
  require("horcrux.log").warn("a route says %s", req.params.what)
  return 200, "said"
end)
]] })
    srv = http.start({ scripts = dir })
  end)

  teardown(function()
    if srv then
      srv:stop()
    end
  end)

  it("escapes a CR LF decoded into the access line", function()
    local r = assert(http.get(srv.url .. "/nothing" .. encode("\r\n" .. FORGED)))
    assert.are.equal(404, r.status)
    clock.sleep(0.1)
    local text = srv:logtext()
    every_line_is_a_log_line(text)
    local line = text:match("[^\n]* access GET /nothing[^\n]*")
    assert.truthy(line, text)
    assert.truthy(line:find("/nothing\\r\\n2026-01-01T00:00:00.000Z access POST", 1, true), line)
    assert.truthy(line:find(" 404 ", 1, true), line)
  end)

  it("escapes the backslash, other control bytes and non-ASCII bytes", function()
    local r = assert(http.get(srv.url .. "/odd" .. encode("\\n\t\0\27[31m\127\x80")))
    assert.are.equal(404, r.status)
    clock.sleep(0.1)
    local text = srv:logtext()
    every_line_is_a_log_line(text)
    -- %00 stays encoded in the path (server.c's unescape), so it is "%00"
    assert.truthy(text:find("GET /odd\\\\n\\t%00\\x1b[31m\\x7f\\x80 404", 1, true), text)
  end)

  it("escapes what an error line quotes: a route's error and its traceback", function()
    local r = assert(http.get(srv.url .. "/fail/" .. encode("x\n" .. FORGED)))
    assert.are.equal(500, r.status)
    clock.sleep(0.1)
    local text = srv:logtext()
    every_line_is_a_log_line(text)
    local line = text:match("[^\n]* error id=" .. r.json.error.request_id .. "[^\n]*")
    assert.truthy(line, text)
    assert.truthy(line:find("refused x\\n2026-01-01T00:00:00.000Z access POST", 1, true), line)
    assert.truthy(line:find("stack traceback:\\n", 1, true), line) -- one line
  end)

  it("escapes what a route logs through horcrux.log", function()
    local r = assert(http.get(srv.url .. "/say/" .. encode("y\r\n" .. FORGED)))
    assert.are.equal(200, r.status)
    clock.sleep(0.1)
    local text = srv:logtext()
    every_line_is_a_log_line(text)
    assert.truthy(text:find(" warn id=" .. r.headers["x-request-id"]
      .. " a route says y\\r\\n2026-01-01T00:00:00.000Z", 1, true), text)
  end)
end)
