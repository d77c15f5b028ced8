-- The README's "Reference: the Lua API for routes" names functions as
-- `module.name(...)`: each must exist in the module it names, so the
-- reference cannot drift from the code (a documented function that does
-- not exist fails here).
local http = require "http"

local MODULES = {
  engine = "horcrux.engine", errors = "horcrux.errors", input = "horcrux.input",
  metrics = "horcrux.metrics", live = "horcrux.live", filters = "horcrux.filters",
  stacks = "horcrux.stacks", logs = "horcrux.logs", manage = "horcrux.manage",
  json = "horcrux.json", clock = "horcrux.clock", shared = "horcrux.shared",
  view = "horcrux.view", record = "horcrux.record", time = "horcrux.time",
  log = "horcrux.log", images = "horcrux.images", registry = "horcrux.registry",
  exec = "horcrux.exec", networks = "horcrux.networks",
  volumes = "horcrux.volumes", compose = "horcrux.compose",
  swarm = "horcrux.swarm", fields = "horcrux.fields", hub = "horcrux.hub",
}

local function reference()
  local readme = http.read_file("README.md")
  local from = assert(readme:find("### Reference: the Lua API for routes", 1, true),
    "the README has no reference section")
  local to = readme:find("\n## ", from, true) or #readme
  return readme:sub(from, to)
end

-- The names in backticks of text that a module lacks, and how many names
-- were checked.
local function missing(text)
  local bad, seen = {}, 0
  for code in text:gmatch("`([^`\n]+)`") do
    for mod, name in code:gmatch("%f[%w_](%l+)%.([%a_][%w_]*)") do
      local path = MODULES[mod]
      if path then
        seen = seen + 1
        if require(path)[name] == nil then
          bad[#bad + 1] = mod .. "." .. name
        end
      end
    end
  end
  return bad, seen
end

describe("the README's Lua API reference", function()
  it("names only functions that exist", function()
    local bad, seen = missing(reference())
    assert.are.same({}, bad)
    -- the section is really there and read
    assert.is_true(seen > 60, seen)
  end)

  it("catches a documented function that does not exist", function()
    local bad = missing("| `engine.top(ref)` | `engine.topp(ref)`, `errors.check(v)` |")
    assert.are.same({ "engine.topp" }, bad)
  end)
end)
