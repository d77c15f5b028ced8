-- The collector at scale (issue 9): the view holds every container's
-- metadata, the list and the filters answer from it without the daemon,
-- what horcrux changes shows at once, and a round never waits on a slow
-- source longer than the interval.
local support = require "support"
local json = require "horcrux.json"
local clock = require "horcrux.clock"
local view = require "horcrux.view"
local cpu = require "horcrux.cpu"
local collector = require "horcrux.collector"
local cg_source = require "horcrux.sources.cgroup"
local api_source = require "horcrux.sources.docker_api"

local null = json.null

describe("the collector's view", function()
  before_each(function()
    view.clear()
  end)

  after_each(function()
    view.clear()
    cpu.clear()
  end)

  it("holds stopped containers' metadata too, and says when it can be trusted", function()
    local running = support.run_container { name = "cv-run",
      labels = { ["hx.cv"] = "1" } }
    local stopped = support.run_container { name = "cv-stopped", start = false,
      labels = { ["hx.cv"] = "1" } }
    finally(function()
      support.remove(running)
      support.remove(stopped)
    end)
    local state = collector.new { sources = { cg_source, api_source } }
    local s = collector.step(state)
    assert.is_true(s.trusted)
    assert.is_true(view.status().trusted)
    local metas = {}
    for _, m in ipairs(view.metas()) do
      metas[m.full_id] = m
    end
    assert.equal("running", metas[running].status)
    assert.equal("created", metas[stopped].status)
    assert.equal("1", metas[stopped].labels["hx.cv"])
    -- figures only for the running one, read in C from its cgroup
    assert.equal("cgroup", (view.get(running)).source)
    assert.is_nil((view.get(stopped)))
    assert.is_true(s.by_source.cgroup >= 1)
    -- the list and the filters answer from the view
    local live = require "horcrux.live"
    local filters = require "horcrux.filters"
    local f = filters.parse({ { "label", "hx.cv=1" } })
    local list, from = filters.list(f, true)
    assert.equal("view", from)
    local names = {}
    for _, c in ipairs(list) do
      names[c.id] = c.status
    end
    assert.equal("running", names[running:sub(1, 12)])
    assert.equal("created", names[stopped:sub(1, 12)])
    local recs = assert(filters.stats(f, assert(live.all())))
    assert.equal(1, #recs)
    assert.equal(running, recs[1].id)
    -- removed: forgotten, with the events
    support.remove(stopped)
    collector.step(state)
    assert.is_nil(view.meta(stopped))
  end)

  it("is not trusted without a source that lists every container", function()
    local state = collector.new { sources = { cg_source } }
    local s = collector.step(state)
    assert.is_false(s.trusted)
    assert.is_false(view.status().trusted)
    assert.is_nil(require("horcrux.live").list({}, true))
  end)

  it("never waits on a slow source longer than the interval, and keeps the last figures with their age", function()
    local id = support.run_container { name = "cv-slow" }
    finally(function() support.remove(id) end)
    local slow, asked = false, nil
    -- the API first; its batch honours the timeout the collector gives it,
    -- as horcrux.engine's client does
    local api = setmetatable({
      sample_many = function(ids, opts)
        asked = opts and opts.timeout
        if slow then
          clock.sleep(asked)
          local errs = {}
          for _, x in ipairs(ids) do
            errs[x] = { error = "timeout", kind = "timeout" }
          end
          return {}, errs
        end
        return api_source.sample_many(ids, opts)
      end,
    }, { __index = api_source })
    local state = collector.new { interval = 1.5, sources = { api } }
    collector.step(state)
    local first = assert(view.get(id))
    assert.equal("docker-api", first.source)
    assert.equal(1.5, asked)
    slow = true
    local t0 = clock.mono_ns()
    local s = collector.step(state)
    local took = (clock.mono_ns() - t0) / 1e9
    assert.is_true(took < 1.5 + 0.5, took)
    assert.is_true(s.failed >= 1)
    -- the last figures stay, and say their true age
    local rec = assert(view.get(id))
    assert.equal(first.read, rec.read)
    assert.is_true(rec.sample_age_ms >= took * 1000 - 50, rec.sample_age_ms)
    -- a shorter interval still gives an old engine the tick it needs
    slow = false
    collector.step { interval = 0.2, sources = { api } }
    assert.equal(1.1, asked)
  end)

  it("shows what horcrux itself changes at once, before the next round", function()
    local ms = require "manage_support"
    local srv = ms.start({ args = { "--interval", "5" } })
    finally(function()
      ms.cleanup()
      srv:stop()
    end)
    local tag = "cv" .. os.time() .. math.random(1000)
    local function listed()
      local r = ms.call(srv, "GET", "/api/containers?label=hx.cv=" .. tag)
      assert.equal(200, r.status, r.body)
      return r.json, r.headers["x-horcrux-source"]
    end
    -- the first round made the view trustworthy
    local list, from
    for _ = 1, 50 do
      list, from = listed()
      if from == "view" then
        break
      end
      clock.sleep(0.1)
    end
    assert.equal("view", from)
    local id = ms.create(srv, { labels = { ["hx.cv"] = tag }, start = true })
    list = listed()
    assert.equal(1, #list)
    assert.equal("running", list[1].status)
    local r = ms.call(srv, "POST", "/api/containers/" .. id .. "/stop?timeout=0")
    assert.equal(200, r.status, r.body)
    list = listed()
    assert.equal("exited", list[1].status)
    r = ms.call(srv, "DELETE", "/api/containers/" .. id)
    assert.equal(200, r.status, r.body)
    assert.same({}, (listed()))
  end)
end)

describe("view.unsampled", function()
  it("names the running containers the view holds no figures for", function()
    view.clear()
    local id = ("ab"):rep(32)
    view.set_meta(id, { status = "running" })
    assert.same({ id }, view.unsampled())
    view.put(id, { cpu_usage_percent = null })
    assert.same({}, view.unsampled())
    view.clear()
  end)
end)
