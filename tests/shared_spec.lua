-- horcrux.shared: the operators' key/value store, one per process.
--
-- The first part calls the module in busted's own Lua state; the last starts
-- `horcrux serve --workers 4` and has routes on every worker count into one
-- key, which is what the store is for.
local shared = require("horcrux.shared")
local clock = require("horcrux.clock")
local proc = require("horcrux.proc")
local http = require("http")

describe("horcrux.shared", function()
  local saved

  before_each(function()
    shared.clear()
    saved = shared.set_limits({ max_entries = shared.DEFAULT_MAX_ENTRIES,
      max_bytes = shared.DEFAULT_MAX_BYTES })
  end)

  after_each(function()
    shared.set_limits(saved)
    shared.clear()
  end)

  it("stores each type and gives it back as it went in", function()
    assert.is_true(shared.set("s", "text\0with zero"))
    assert.is_true(shared.set("i", 42))
    assert.is_true(shared.set("f", 2.0))
    assert.is_true(shared.set("big", math.maxinteger))
    assert.is_true(shared.set("t", true))
    assert.is_true(shared.set("no", false))
    assert.is_true(shared.set("empty", ""))
    assert.equal("text\0with zero", shared.get("s"))
    assert.equal("integer", math.type(shared.get("i")))
    assert.equal(42, shared.get("i"))
    assert.equal("float", math.type(shared.get("f")))
    assert.equal(2.0, shared.get("f"))
    assert.equal(math.maxinteger, shared.get("big"))
    assert.is_true(shared.get("t"))
    assert.is_false(shared.get("no"))
    assert.equal("", shared.get("empty"))
    assert.is_nil(shared.get("absent"))
    assert.equal(7, shared.count())
  end)

  it("gives back long strings whole, up to VALUE_MAX", function()
    local long = string.rep("0123456789abcdef", shared.VALUE_MAX // 16)
    assert.equal(shared.VALUE_MAX, #long)
    assert.is_true(shared.set("long", long))
    assert.equal(long, shared.get("long"))
    assert.is_true(shared.set("long", "short again"))
    assert.equal("short again", shared.get("long"))
  end)

  it("replaces a value, and deletes with delete() or set(key, nil)", function()
    shared.set("k", 1)
    shared.set("k", "one")
    assert.equal("one", shared.get("k"))
    assert.equal(1, shared.count())
    assert.is_true(shared.delete("k"))
    assert.is_false(shared.delete("k"))
    assert.is_nil(shared.get("k"))
    shared.set("k", 2)
    assert.is_true(shared.set("k", nil))
    assert.is_nil(shared.get("k"))
    assert.equal(0, shared.count())
  end)

  it("lets entries expire after their ttl", function()
    assert.is_true(shared.set("short", "v", 0.2))
    assert.is_true(shared.set("forever", "v"))
    assert.is_true(shared.set("zero", "v", 0))
    local left = shared.ttl("short")
    assert.is_true(left > 0 and left <= 0.2)
    assert.equal(0, shared.ttl("forever"))
    assert.equal(0, shared.ttl("zero"))
    assert.equal("v", shared.get("short"))
    clock.sleep(0.3)
    assert.is_nil(shared.get("short"))
    assert.equal("v", shared.get("forever"))
    local v, msg, kind = shared.ttl("short")
    assert.is_nil(v)
    assert.equal("not found", msg)
    assert.equal("not_found", kind)
    assert.equal(2, shared.count())
    assert.are.same({ "forever", "zero" }, (function()
      local k = shared.keys()
      table.sort(k)
      return k
    end)())
  end)

  it("adds only when the key is absent or expired", function()
    assert.is_true(shared.add("lock", "me", 0.2))
    local ok, msg, kind = shared.add("lock", "you")
    assert.is_nil(ok)
    assert.equal("exists", msg)
    assert.equal("conflict", kind)
    assert.equal("me", shared.get("lock"))
    clock.sleep(0.3)
    assert.is_true(shared.add("lock", "you"))
    assert.equal("you", shared.get("lock"))
  end)

  it("increments numbers, keeping integers integers", function()
    shared.set("n", 10)
    assert.equal(11, shared.incr("n", 1))
    assert.equal("integer", math.type(shared.incr("n", -1)))
    assert.equal(10, shared.get("n"))
    local f = shared.incr("n", 0.5)
    assert.equal("float", math.type(f))
    assert.equal(10.5, f)
    shared.set("g", 1.5)
    assert.equal(2.5, shared.incr("g", 1))
    assert.equal("float", math.type(shared.get("g")))
    -- integer arithmetic wraps as Lua's + does
    shared.set("max", math.maxinteger)
    assert.equal(math.mininteger, shared.incr("max", 1))
  end)

  it("creates an absent key with init, and fails without one", function()
    local v, msg, kind = shared.incr("new", 1)
    assert.is_nil(v)
    assert.equal("not found", msg)
    assert.equal("not_found", kind)
    assert.is_nil(shared.get("new"))
    assert.equal(5, shared.incr("new", 1, 4))
    assert.equal("integer", math.type(shared.get("new")))
    assert.equal(6, shared.incr("new", 1, 100)) -- init only for a new key
    -- the ttl applies to the key incr creates
    assert.equal(1, shared.incr("tmp", 1, 0, 0.2))
    assert.equal(2, shared.incr("tmp", 1, 0, 0.2))
    clock.sleep(0.3)
    assert.equal(1, shared.incr("tmp", 1, 0))
    assert.equal(0, shared.ttl("tmp"))
  end)

  it("refuses to increment a value that is not a number", function()
    shared.set("s", "10")
    shared.set("b", true)
    for _, k in ipairs({ "s", "b" }) do
      local v, msg, kind = shared.incr(k, 1, 0)
      assert.is_nil(v)
      assert.matches("not a number", msg)
      assert.equal("bad_request", kind)
    end
    assert.equal("10", shared.get("s"))
  end)

  it("counts each increment once when coroutines of one state interleave", function()
    -- One Lua state and no threads: no increment can race another here,
    -- so this checks the read-modify-write path only. Atomicity across
    -- threads is "horcrux.shared across workers" below (4 workers, 200
    -- parallel POSTs), and under ThreadSanitizer, concurrency_spec.
    local cos = {}
    for i = 1, 10 do
      cos[i] = coroutine.wrap(function()
        for _ = 1, 100 do
          shared.incr("c", 1, 0)
          coroutine.yield()
        end
      end)
    end
    for _ = 1, 100 do
      for i = 1, 10 do cos[i]() end
    end
    assert.equal(1000, shared.get("c"))
  end)

  it("refuses new keys with limit when max_entries is reached", function()
    local prev = shared.set_limits({ max_entries = 3 })
    assert.equal(shared.DEFAULT_MAX_ENTRIES, prev.max_entries)
    assert.equal(shared.DEFAULT_MAX_BYTES, prev.max_bytes)
    assert.is_true(shared.set("a", 1))
    assert.is_true(shared.set("b", 2))
    assert.is_true(shared.set("c", 3))
    local ok, msg, kind = shared.set("d", 4)
    assert.is_nil(ok)
    assert.matches("max_entries 3", msg)
    assert.equal("limit", kind)
    assert.equal("limit", select(3, shared.add("d", 4)))
    assert.equal("limit", select(3, shared.incr("d", 1, 0)))
    -- nothing was evicted, and replacing a held key is fine
    assert.equal(1, shared.get("a"))
    assert.is_true(shared.set("a", "new"))
    assert.equal(3, shared.count())
    -- expired entries make room
    shared.set("b", 2, 0.1)
    clock.sleep(0.2)
    assert.is_true(shared.set("d", 4))
    assert.is_nil(shared.get("b"))
  end)

  it("refuses with limit when max_bytes is reached", function()
    local per = shared.ENTRY_OVERHEAD
    shared.set_limits({ max_bytes = 2 * (per + 1 + 100) })
    assert.is_true(shared.set("a", string.rep("x", 100)))
    assert.is_true(shared.set("b", string.rep("x", 100)))
    local ok, msg, kind = shared.set("c", "x")
    assert.is_nil(ok)
    assert.matches("max_bytes", msg)
    assert.equal("limit", kind)
    -- a smaller value in place of a larger one fits
    assert.is_true(shared.set("b", "x"))
    assert.is_true(shared.set("c", "x"))
    -- a larger one in place of a smaller one may not
    assert.equal("limit", select(3, shared.set("c", string.rep("x", 200))))
    assert.equal("x", shared.get("c"))
  end)

  it("lists keys, up to max, and counts and clears them", function()
    for i = 1, 1500 do
      shared.set("k" .. i, i)
    end
    assert.equal(1500, shared.count())
    assert.equal(1024, #shared.keys())
    assert.equal(10, #shared.keys(10))
    local all = shared.keys(0)
    assert.equal(1500, #all)
    local seen = {}
    for _, k in ipairs(all) do seen[k] = true end
    for i = 1, 1500 do assert.is_true(seen["k" .. i]) end
    assert.equal(1500, shared.clear())
    assert.equal(0, shared.count())
    assert.are.same({}, shared.keys())
  end)

  it("raises on misuse", function()
    local cases = {
      function() shared.set(1, "v") end,
      function() shared.set("", "v") end,
      function() shared.set(string.rep("k", shared.KEY_MAX + 1), "v") end,
      function() shared.set("k", {}) end,
      function() shared.set("k", print) end,
      function() shared.set("k", string.rep("v", shared.VALUE_MAX + 1)) end,
      function() shared.set("k", "v", -1) end,
      function() shared.set("k", "v", 0 / 0) end,
      function() shared.set("k", "v", "soon") end,
      function() shared.add("k", nil) end,
      function() shared.get(nil) end,
      function() shared.incr("k", "1") end,
      function() shared.incr("k", 1, "0") end,
      function() shared.keys(-1) end,
      function() shared.set_limits({ max_entries = 0 }) end,
      function() shared.set_limits({ max_bytes = "many" }) end,
    }
    for i, f in ipairs(cases) do
      assert.has_error(f, nil, "case " .. i)
    end
    assert.is_true(shared.set(string.rep("k", shared.KEY_MAX), "v"))
    assert.equal(1, shared.count())
    assert.error_matches(function() shared.set_limits({ max_entries = 0 }) end,
      "max_entries out of range 1..4194304", nil, true)
    assert.error_matches(function() shared.set_limits({ max_bytes = 2 ^ 40 + 1 }) end,
      "max_bytes out of range 1..1099511627776", nil, true)
  end)
end)

describe("horcrux.shared across workers", function()
  local TOKEN = "shared-spec-token"
  local ENV = { "HORCRUX_TOKEN=" .. TOKEN, "PATH=" .. os.getenv("PATH") }
  local ROUTES = [[
local shared = require "horcrux.shared"
route("POST", "/count", function()
  local n, err = shared.incr("hits", 1, 0)
  if not n then error(err) end
  return 204
end)
route("GET", "/count", function()
  return 200, { hits = shared.get("hits") or 0 }
end)
]]
  local srv, dir

  setup(function()
    dir = http.scripts_dir({ ["routes.lua"] = ROUTES })
    srv = http.start({ scripts = dir, env = ENV, args = { "--workers", "4" } })
  end)

  teardown(function()
    if srv then
      assert.are.equal(0, srv:stop().status)
    end
    if dir then
      proc.run({ "rm", "-rf", dir })
    end
  end)

  it("counts 200 parallel POSTs exactly once each", function()
    local CLIENTS, EACH = 8, 25
    local outs, children = {}, {}
    for c = 1, CLIENTS do
      outs[c] = os.tmpname()
      local argv = { "curl", "-s", "--max-time", "30",
        "-w", "%{http_code}\\n", "-X", "POST", "--data", "",
        "-H", "Authorization: Bearer " .. TOKEN }
      for _ = 1, EACH do
        argv[#argv + 1] = srv.url .. "/count"
        argv[#argv + 1] = "-o"
        argv[#argv + 1] = "/dev/null"
      end
      children[c] = assert(proc.spawn(argv, { stdout = outs[c] }))
    end
    local codes = {}
    for c = 1, CLIENTS do
      local st = children[c]:wait(60)
      assert.is_truthy(st, "curl did not finish")
      assert.equal(0, st.status)
      for code in http.read_file(outs[c]):gmatch("%d+") do
        codes[code] = (codes[code] or 0) + 1
      end
      os.remove(outs[c])
    end
    assert.are.same({ ["204"] = CLIENTS * EACH }, codes)
    local r = assert(http.get(srv.url .. "/count"))
    assert.equal(200, r.status)
    assert.are.same({ hits = 200 }, r.json)
  end)
end)
