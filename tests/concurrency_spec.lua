-- Concurrency: many parallel requests over several workers at once on the
-- process-wide stores (the CPU sample store, the operators' shared dict,
-- the live view) while the collector writes the view. The shipped routes
-- plus a few on horcrux.shared, driven by wrk.
--
-- With any build this checks that every request is answered 2xx and that
-- no increment of a shared counter is lost across workers (the counter is
-- at least the number of increments answered, and at most that plus the
-- requests wrk left in flight when it stopped). scripts/tsan
-- runs it against a ThreadSanitizer build of the server (HORCRUX_BIN), where
-- a race makes the server exit non-zero (TSan's exitcode) and srv:stop()
-- fails; the reports themselves go to TSAN_OPTIONS' log_path.
local http = require "http"
local support = require "support"
local proc = require "horcrux.proc"

local ROOT = assert(proc.run({ "pwd" })).stdout:gsub("\n$", "")
local DURATION = tonumber(os.getenv("HORCRUX_CONCURRENCY_SECONDS")) or 8
local TOKEN = "concurrency-spec-token-0123456789"

-- The shipped routes, plus routes that write and read the shared dict.
local ROUTES = ([[
local shared = require "horcrux.shared"
assert(loadfile(%q, "t", _ENV))()

route("POST", "/t/incr/:key", function(req)
  local v, err = shared.incr("t:" .. req.params.key, 1, 0)
  if not v then
    return 500, { error = err }
  end
  return 200, { incremented = v }
end)

route("GET", "/t/get/:key", function(req)
  return 200, { value = shared.get("t:" .. req.params.key) or 0 }
end)

-- set, add, get, ttl, keys, delete and count in one request
route("GET", "/t/mix/:n", function(req)
  local k = "m:" .. req.params.n
  shared.set(k, ("x"):rep(64), 5)
  shared.add(k .. ":a", true, 0.5)
  local v = shared.get(k)
  shared.ttl(k)
  shared.keys(16)
  shared.delete(k .. ":a")
  shared.count()
  return 200, { ok = v ~= nil }
end)
]]):format(ROOT .. "/lua/routes.lua")

-- wrk: cycles through the paths; counts the answers of POST /t/incr that
-- were 200, which must equal the counter's value at the end.
local WRK = [[
local paths = {}
for p in os.getenv("HX_PATHS"):gmatch("%S+") do paths[#paths + 1] = p end
local token = os.getenv("HX_TOKEN")
local i, threads = 0, {}
incr_ok = 0 -- a global: done() reads it with thread:get
function setup(thread)
  thread:set("id", #threads)
  threads[#threads + 1] = thread
end
function request()
  i = i % #paths + 1
  local p = paths[i]
  if p:sub(1, 8) == "/t/incr/" then
    return wrk.format("POST", p, { Authorization = "Bearer " .. token })
  end
  return wrk.format("GET", p)
end
function response(status, headers, body)
  if status == 200 and body:find('"incremented"', 1, true) then
    incr_ok = incr_ok + 1
  end
end
function done(summary, latency, requests)
  local n = 0
  for _, t in ipairs(threads) do n = n + t:get("incr_ok") end
  io.write(("HX_INCR_OK %d\nHX_NON2XX %d\nHX_REQUESTS %d\nHX_ERRORS %d\n")
    :format(n, summary.errors.status, summary.requests,
      summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.timeout))
end
]]

describe("concurrent requests over several workers", function()
  local srv, ids, dir

  setup(function()
    assert(proc.which("wrk"), "wrk is not installed (apt-get install wrk)")
    ids = {}
    ids[1] = support.run_container { name = "conc-busy",
      cmd = { "sh", "-c", "while :; do :; done" } }
    ids[2] = support.run_container { name = "conc-idle" }
    ids[3] = support.run_container { name = "conc-idle" }
    dir = http.scripts_dir({ ["routes.lua"] = ROUTES })
    local env = { "PATH=" .. os.getenv("PATH"), "HORCRUX_TOKEN=" .. TOKEN }
    srv = http.start { scripts = dir,
      args = { "--workers", "4", "--interval", "0.2", "--no-access-log" },
      env = env }
  end)

  teardown(function()
    local ok, err = true, nil
    if srv then
      ok, err = pcall(srv.stop, srv)
    end
    for _, id in ipairs(ids or {}) do
      support.remove(id)
    end
    if dir then
      proc.run({ "rm", "-rf", dir })
    end
    assert(ok, err)
  end)

  it("answers them all, loses no shared increment, and stops cleanly",
    function()
      local paths = { "/healthz", "/api/stats", "/api/containers",
        "/t/incr/hits", "/t/mix/1", "/t/mix/2", "/t/incr/hits" }
      for _, id in ipairs(ids) do
        paths[#paths + 1] = "/api/containers/" .. id:sub(1, 12) .. "/stats"
        paths[#paths + 1] = "/api/containers/" .. id:sub(1, 12)
        paths[#paths + 1] = "/t/incr/hits"
      end
      local script = os.tmpname()
      local f = assert(io.open(script, "w"))
      f:write(WRK)
      f:close()
      finally(function() os.remove(script) end)
      local r = assert(proc.run({ "env", "HX_PATHS=" .. table.concat(paths, " "),
        "HX_TOKEN=" .. TOKEN, "wrk", "-t", "4", "-c", "32", "-d", DURATION .. "s", "--timeout", "30s",
        "-s", script, srv.url }, { timeout = DURATION + 60 }))
      print("\n" .. r.stdout)
      assert.equal(0, r.status, r.stderr)
      local incr_ok = tonumber(r.stdout:match("HX_INCR_OK (%d+)"))
      local non2xx = tonumber(r.stdout:match("HX_NON2XX (%d+)"))
      local requests = tonumber(r.stdout:match("HX_REQUESTS (%d+)"))
      local errors = tonumber(r.stdout:match("HX_ERRORS (%d+)"))
      assert.is_number(requests, r.stdout)
      assert.is_true(requests > 100, "too few requests: " .. requests)
      assert.equal(0, errors, "socket errors")
      assert.equal(0, non2xx, "answers other than 2xx")
      assert.is_true(srv:alive(), srv:logtext())
      local got = assert(http.get(srv.url .. "/t/get/hits"))
      assert.equal(200, got.status)
      -- wrk stops with requests in flight (one per connection at most):
      -- the server may have counted those without wrk seeing the answer
      local value = got.json.value
      assert.is_true(value >= incr_ok and value <= incr_ok + 32,
        ("%d increments answered, the counter says %d"):format(incr_ok,
          value))
    end)
end)
