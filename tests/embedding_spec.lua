-- The library as an embedder or a `horcrux run` script uses it, with no
-- operator script anywhere: the library's own source order, misuse that
-- raises instead of answering about another container, and the typed
-- helpers' failures (`nil, message, kind`) said before anything is sent.
local http = require "http"
local support = require "support"
local proc = require "horcrux.proc"
local json = require "horcrux.json"

local PATH = "PATH=" .. os.getenv("PATH")

local function tmpfile(text)
  local name = os.tmpname()
  local f = assert(io.open(name, "w"))
  f:write(text)
  f:close()
  return name
end

describe("the library without operator scripts", function()
  local id, name
  setup(function()
    id, name = support.run_container({ name = "embed" })
  end)
  teardown(function()
    if id then support.remove(id) end
  end)

  it("orders its own three sources, each a source (horcrux run)", function()
    -- a fresh state, where require gives the loader's data beside the module
    local script = tmpfile([[
local config = require "horcrux.config"
local out = {}
for i, s in ipairs(config.sources()) do
  out[i] = type(s) == "table" and tostring(s.name) or type(s) .. ":" .. tostring(s)
end
print(table.concat(out, ","))
local r = require("horcrux.metrics").stats_many({ "no-such-container-embed" })
print(r[1].kind, #(r[1].tried or {}))
]])
    finally(function() os.remove(script) end)
    local r = proc.run({ http.bin, "run", script }, { timeout = 30, env = { PATH,
      "DOCKER_HOST=" .. (os.getenv("DOCKER_HOST") or "unix:///var/run/docker.sock") } })
    assert.are.equal(0, r.status, r.stderr)
    local lines = {}
    for l in r.stdout:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.are.equal("cgroup,docker-api,docker-cli", lines[1])
    assert.are.equal("not_found\t0", lines[2])
  end)

  it("metrics.stats, inspect and stats_many raise on a ref that is not a string", function()
    local metrics = require "horcrux.metrics"
    -- a nil once reached `docker stats` as no argument: some other
    -- container's record came back
    local ok, err = pcall(metrics.stats, nil)
    assert.is_false(ok)
    assert.matches("bad argument #1 to 'stats' %(string expected, got nil%)", err)
    ok, err = pcall(metrics.inspect, nil)
    assert.is_false(ok)
    assert.matches("string expected, got nil", err)
    ok, err = pcall(metrics.stats_many, { id, 42 })
    assert.is_false(ok)
    assert.matches("ids%[2%]: string expected, got number", err)
    ok, err = pcall(metrics.stats_many, nil)
    assert.is_false(ok)
    assert.matches("table expected, got nil", err)
    -- a string still answers
    local rec, source = metrics.stats(name)
    assert.is_table(rec, source)
    assert.are.equal(id, rec.id)
  end)

  it("live.all and live.stats_matching name each record without a collector", function()
    local live = require "horcrux.live"
    local filters = require "horcrux.filters"
    local view = require "horcrux.view"
    assert.are.equal(0, view.count()) -- no collector: sampled now, cgroup first
    local function find(recs)
      for _, r in ipairs(recs) do
        if r.id == id then return r end
      end
    end
    local rec = find(assert(live.all()))
    assert.is_table(rec)
    assert.are.equal(name, rec.name)
    local f = assert(filters.parse({ { "name", name } }))
    rec = find(assert(live.stats_matching(f)))
    assert.is_table(rec)
    assert.are.equal(name, rec.name)
  end)

  it("logs.fetch takes opts as a script writes them, or none", function()
    local logs = require "horcrux.logs"
    local talk = support.run_container({ name = "embed-talk",
      cmd = { "sh", "-c", "echo out 1; echo err 1 >&2; echo out 2; sleep 600" } })
    finally(function() support.remove(talk) end)
    local lines, info
    for _ = 1, 40 do -- the three lines are written as it starts
      lines, info = logs.fetch(talk)
      if lines and #lines == 3 then break end
      require("horcrux.clock").sleep(0.1)
    end
    assert.is_table(lines, info)
    assert.are.equal(3, #lines)
    assert.are.equal(talk, info.id)
    -- a number for tail, both streams unless one is false
    -- (the two streams are two pipes: their lines' order is the daemon's)
    lines = assert(logs.fetch(talk, { tail = 2 }))
    assert.are.equal(2, #lines)
    lines = assert(logs.fetch(talk, { tail = "all", stdout = false }))
    assert.are.same({ { stream = "stderr", line = "err 1" } }, lines)
    lines = assert(logs.fetch(talk, { stderr = false, timestamps = true }))
    assert.are.same({ "out 1", "out 2" }, { lines[1].line, lines[2].line })
    assert.matches("^%d%d%d%d%-", lines[1].time)
    local v, err, kind = logs.fetch(talk, { tail = "x" })
    assert.is_nil(v)
    assert.are.equal("bad_request", kind, err)
    v, err, kind = logs.fetch(talk, { stdout = false, stderr = false })
    assert.is_nil(v)
    assert.are.equal("bad_request", kind, err)
  end)

  it("engine.action says bad_request for a word that is no action, nothing sent", function()
    local engine = require "horcrux.engine"
    local v, err, kind, status = engine.action(name, "explode")
    assert.is_nil(v)
    assert.are.equal("bad_request", kind, err)
    assert.is_nil(status)
    assert.matches('unknown action "explode"', err)
    -- a path the word would have made is not asked either
    v, err, kind = engine.action(name, "../../x")
    assert.is_nil(v)
    assert.are.equal("bad_request", kind, err)
    assert.has_error(function() engine.action(name, nil) end)
    -- the six still work
    local r = assert(engine.action(name, "start"))
    assert.is_false(r.changed)
    r = assert(engine.action(name, "pause"))
    assert.is_true(r.changed)
    r = assert(engine.action(name, "unpause"))
    assert.is_true(r.changed)
    assert.are.equal("table", type(json.decode(json.encode(r))))
  end)
end)
