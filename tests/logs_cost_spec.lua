-- The cost of horcrux.logs' demux grows with the size of the reply, never
-- faster: a reply four times longer costs at most ~4 times as much (the
-- bound is 8, for noise; a quadratic walk gives ~16).
--
-- Found by scripts/fuzz logs (tests/fuzz/regressions/logs holds its
-- inputs) and by measuring demux at growing sizes: a quadratic cost pins
-- a worker inside one C call (a Lua pattern, a string concatenation) where
-- the instruction budget never fires. Costs are CPU time per call
-- (os.clock), each call repeated until 0.1 s has passed, the least of three
-- such runs, so a loaded machine changes both sizes alike.
local logs = require "horcrux.logs"

local function cost(raw, tty)
  local best = math.huge
  for _ = 1, 3 do -- the least of three: a burst of other work inflates one
    local n, t0 = 0, os.clock()
    repeat
      logs.demux(raw, tty, false)
      n = n + 1
    until os.clock() - t0 > 0.1
    best = math.min(best, (os.clock() - t0) / n)
  end
  return best
end

-- cost(make(4n)) / cost(make(n)), with a message naming both.
local function growth(make, tty, n)
  local small, big = cost(make(n), tty), cost(make(4 * n), tty)
  return big / small, ("%d: %.2g s, %d: %.2g s per call"):format(n, small,
    4 * n, big)
end

describe("horcrux.logs demux costs what the reply's size says", function()
  it("on a TTY reply without a newline (a progress bar redrawn with \\r)",
    function()
      local ratio, msg = growth(function(n)
        return ("#"):rep(n - 1) .. "\r"
      end, true, 4096)
      assert.is_true(ratio < 8, "x" .. ratio .. ": " .. msg)
    end)

  it("on a TTY reply of long lines", function()
    local ratio, msg = growth(function(n)
      return (("x"):rep(n - 1) .. "\n"):rep(4)
    end, true, 4096)
    assert.is_true(ratio < 8, "x" .. ratio .. ": " .. msg)
  end)

  it("on frames that never end a line (a message split into many frames)",
    function()
      local frame = string.pack(">BBBBI4", 1, 0, 0, 0, 64) .. ("a"):rep(64)
      local ratio, msg = growth(function(n)
        return frame:rep(n)
      end, false, 4096)
      assert.is_true(ratio < 8, "x" .. ratio .. ": " .. msg)
    end)
end)
