--- tests/hook_receiver.lua: a webhook receiver (tests/hook_receiver.py)
-- for a spec, on a port the kernel gives it.
--
--   local r = receiver.start{log = path, status = 200, secret = s,
--                            down = true, port = n}
--   r.port, r.log; r:up() (a down one starts listening); r:said() (its
--   output and whether it runs, for a failure's message); r:stop()
--
-- start raises unless the receiver holds its port: a fixed or random port
-- can be taken (a whole suite keeps thousands of loopback client sockets in
-- TIME_WAIT, each holding its port against a bind), and a receiver that
-- did not get it must not pass for one that did.
local proc = require "horcrux.proc"
local clock = require "horcrux.clock"

local M = {}

local Receiver = {}
Receiver.__index = Receiver

-- a file's text, "" when it cannot be read
local read_file = require("http").read_file

-- Waits up to 10 s for a line of the receiver's output that `pattern`
-- (anchored at a line's start) matches; its captures, or raises.
function Receiver:wait_line(what, pattern)
  local deadline = clock.mono_ns() + 10e9
  repeat
    local text = "\n" .. read_file(self.out)
    local got = { text:match("\n" .. pattern .. "\n") }
    if got[1] then
      return table.unpack(got)
    end
    if not self.proc:running() then
      break
    end
    clock.sleep(0.05)
  until clock.mono_ns() > deadline
  error(("hook_receiver.py (port %s): %s: %s"):format(tostring(self.port or
    self.want_port), what, self:said()), 3)
end

function M.start(opts)
  opts = opts or {}
  local r = setmetatable({ log = opts.log or os.tmpname(), out = os.tmpname(),
    want_port = opts.port or 0 }, Receiver)
  local argv = { "python3", "tests/hook_receiver.py", tostring(r.want_port),
    r.log, tostring(opts.status or 200) }
  if opts.secret then
    argv[#argv + 1] = opts.secret
  end
  if opts.down then
    argv[#argv + 1] = "--down"
  end
  r.proc = assert(proc.spawn(argv, { stdout = r.out, stderr = r.out }))
  r.port = tonumber(r:wait_line("never held its port", "ready (%d+)"))
  return r
end

--- A receiver started down listens from now on.
function Receiver:up()
  assert(self.proc:kill("USR1"))
  self:wait_line("did not come up", "(up)")
end

function Receiver:said()
  return ("%s; its output: %q"):format(self.proc:running() and "running"
    or "not running", read_file(self.out):sub(1, 2000))
end

function Receiver:stop()
  if self.proc:running() then
    self.proc:kill("TERM")
    self.proc:wait(5)
  end
end

return M
