--- Fuzz target "view": the records the live view writes as JSON in C
-- (view.stats_json, core/view_json.c) against the same records encoded by
-- horcrux.json (json.encode(view.all(), {sort_keys = true})), on figures
-- read from cgroup files with any content.
--
-- Input: up to 11 parts separated by NUL bytes, each the content of one
-- file of a v2 container's cgroup (a copy of the v2-cgroupfs fixture;
-- parts missing keep the fixture's): cpu.stat, memory.current,
-- memory.max, memory.stat, io.stat, pids.current, memory.events,
-- cpu.pressure, memory.pressure, io.pressure, and the container's name.
-- view.sample() reads them; the invariant: stats_json() is the encoder's
-- text byte for byte (sample_age_ms aside: it is read at each call), for
-- every record and for a filter on the id; when the encoder refuses a
-- record (not expected: a float that is not finite), the text still decodes
-- and has the record.
local view = require "horcrux.view"
local cpu = require "horcrux.cpu"
local json = require "horcrux.json"
local fz = require "fuzzlib"

local check = fz.check
local ID = "971f5a28c0bdcdf3b0ebb5dd04e32dd6d730222ebe141ecde67db05cb64adfdc"
local FILES = { "cpu.stat", "memory.current", "memory.max", "memory.stat",
  "io.stat", "pids.current", "memory.events", "cpu.pressure",
  "memory.pressure", "io.pressure" }

local src = package.path:match("^(.-)/lua/%?%.lua")
local CG = src .. "/tests/fixtures/cgroup/"
local root = os.tmpname()
os.remove(root)
assert(os.execute("mkdir -m 700 '" .. root .. "' && cp -r '" .. CG
  .. "v2-cgroupfs/.' '" .. root .. "/'"))
local dir = root .. "/docker/" .. ID
local OPTS = { root = root, proc = src .. "/tests/fixtures/proc",
  sys = CG .. "sys" }
local fixture = {}

local function write(name, text)
  local f = assert(io.open(dir .. "/" .. name, "wb"))
  f:write(text)
  f:close()
end

for _, name in ipairs(FILES) do
  local f = assert(io.open(dir .. "/" .. name, "rb"))
  fixture[name] = f:read("a")
  f:close()
end
write("cgroup.freeze", "0\n")

local function strip(text)
  return (text:gsub('"sample_age_ms":%d+', '"sample_age_ms":0'))
end

return function(data)
  local parts = {}
  for p in (fz.expand(data) .. "\0"):gmatch("([^%z]*)%z") do
    parts[#parts + 1] = p
  end
  for i, name in ipairs(FILES) do
    write(name, parts[i] or fixture[name])
  end
  view.clear()
  cpu.clear()
  view.set_meta(ID, { name = parts[#FILES + 1] or "c", status = "running" })
  view.sample(OPTS)
  view.sample(OPTS)
  for _, want in ipairs({ false, { [ID] = true }, {} }) do
    local text, n = view.stats_json(want or nil)
    local all = want and next(want) == nil and json.array() or view.all()
    check(n == #all, "stats_json counts %d records, all() %d", n, #all)
    local enc = json.encode(all, { sort_keys = true })
    if enc then
      check(strip(enc) == strip(text), "stats_json %s\nencoder    %s",
        fz.quote(text), fz.quote(enc))
    else
      local back = json.decode(text)
      check(type(back) == "table" and #back == n,
        "stats_json wrote no JSON array: %s", fz.quote(text))
    end
  end
end
