-- live.stats_matching without an engine: a source made here, and the view
-- empty as it is before the collector's first round.
local live = require "horcrux.live"
local view = require "horcrux.view"
local filters = require "horcrux.filters"

local function id_of(i)
  return ("%064x"):format(i)
end

-- A source over n running containers, the first three labelled tier=web;
-- its stats() notes every id it is asked for. running = false: it cannot
-- say which containers run (as a source without a list).
local function source(n, running)
  local src = { name = "made-here", sampled = {} }
  local list = {}
  for i = 1, n do
    list[i] = { id = id_of(i), name = "c" .. i, status = "running",
      image = "busybox", labels = { tier = i <= 3 and "web" or "db" },
      networks = {} }
  end
  function src.list()
    return list
  end
  if running ~= false then
    function src.running()
      return list
    end
  end
  function src.stats(id)
    src.sampled[#src.sampled + 1] = id
    local i = tonumber(id, 16)
    return { id = id, name = "c" .. i, cpu_usage_percent = i }
  end
  return src
end

describe("live.stats_matching before the collector's first round", function()
  before_each(function()
    view.clear()
  end)

  it("samples only the containers a filter matches", function()
    local src = source(10)
    local f = assert(filters.parse({ { "label", "tier=web" } }))
    local out = assert(live.stats_matching(f, { src }))
    assert.equal(3, #out)
    assert.same({ id_of(1), id_of(2), id_of(3) }, src.sampled)
    table.sort(out, function(a, b) return a.id < b.id end)
    assert.equal(id_of(3), out[3].id)
  end)

  it("samples every running container without a filter", function()
    local src = source(10)
    assert.equal(10, #assert(live.stats_matching(assert(filters.parse({})),
      { src })))
    assert.equal(10, #src.sampled)
  end)

  it("samples all and matches the records when no source can say which run", function()
    local src = source(5, false)
    local out = assert(live.stats_matching(
      assert(filters.parse({ { "name", "c4" } })), { src }))
    assert.equal(1, #out)
    assert.equal(id_of(4), out[1].id)
    assert.equal(5, #src.sampled)
  end)
end)
