-- The bounded store core under horcrux.cpu, horcrux.shared and horcrux.view
-- (core/store.c), on its own: tests/store_test.c, built beside the modules
-- (and with ASan in the sanitizer run), checks the index, the order, the
-- bounds, copying out and several threads writing and reading at once.
local proc = require "horcrux.proc"

local build = os.getenv("HORCRUX_BUILD") or "build"

describe("the store core", function()
  it("passes its C checks, threads included", function()
    local r = proc.run({ build .. "/store_test" }, { timeout = 60 })
    assert.are.equal(0, r.status, r.stderr)
    assert.are.equal("store_test: ok\n", r.stdout)
  end)
end)
