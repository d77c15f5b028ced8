--- Helpers for the stack specs (compose, swarm): the compose file they
-- deploy and a scripts folder with a policy.lua of their own.
--
--   local st = require "stack_support"
--   st.two_services([extra])   -- a file: web (2 replicas) and db on "back"
--   local dir = st.scripts("return { compose = { state_dir = 'STATE' } }")
local proc = require "horcrux.proc"
local support = require "support"

local M = {}

local function labels(indent)
  return ("%slabels: {%s: %q}\n"):format(indent, support.label,
    support.label_value)
end

-- Neither httpd nor sleep, as pid 1, ends on SIGTERM: without this every
-- update and `down` waits out the 10 s grace of each container.
local STOP = "    stop_signal: SIGKILL\n"

--- A compose file with two services on a network of its own, everything
-- labelled with the test label; `extra` goes into web's definition.
function M.two_services(extra)
  return "services:\n"
    .. "  web:\n    image: " .. support.image .. "\n"
    .. '    command: ["httpd", "-f", "-p", "8000"]\n'
    .. "    networks: [back]\n" .. labels("    ")
    .. "    deploy: {replicas: 2}\n" .. STOP .. (extra or "")
    .. "  db:\n    image: " .. support.image .. "\n"
    .. '    command: ["sleep", "600"]\n' .. STOP
    .. "    networks: [back]\n" .. labels("    ")
    .. "networks:\n  back:\n" .. labels("    ")
end

--- A new folder with policy.lua = text, STATE replaced by a folder inside
-- it (compose.state_dir).
function M.scripts(text)
  local dir = assert(proc.run({ "mktemp", "-d", "/tmp/hxtest-scripts.XXXXXX" }))
    .stdout:gsub("%s+$", "")
  local f = assert(io.open(dir .. "/policy.lua", "w"))
  f:write((text:gsub("STATE", dir .. "/state")))
  f:close()
  return dir
end

return M
