--- format.lua: how answers look on the wire. Operators may edit this file;
-- `kill -HUP` the server to apply it (a file that fails to load, or names
-- a setting that does not exist, is refused and the running version stays).
--
-- A route returns status, body[, headers]: a table body is sent as JSON, a
-- string as it is (text/plain unless the route sets Content-Type), nil as
-- an empty body. Error answers have one shape everywhere,
-- {"error": {"code", "message", ...}}, with the status of their kind
-- (horcrux.errors; the README's table).
local output = require "horcrux.format"

local M = {
  -- true: indented JSON (easier to read, a little slower)
  pretty = false,
  -- object keys in byte order, so the same answer is always the same text
  sort_keys = true,
}

--- Turns what a route returned into the status, the body text and the
-- headers the server sends, as the settings above say. Replace it to send
-- another format:
--   function M.respond(status, body, headers)
--     ... return status, text, headers
--   end
M.respond = output.responder(M)

return M
