--- tests/bench/view_serve.lua: what answering GET /api/stats, GET
-- /api/containers and a label-filtered /api/stats costs in-process, with a
-- view of N containers sampled from a v2 fixture tree (no engine needed):
--
--   build/horcrux run tests/bench/view_serve.lua [N [REPEATS]]
--
-- (HX_VIEW_ROOT=DIR: the tree is made there, kept, and used by the next
-- runs given the same DIR and N.)
-- Prints the median and least ms of each answer over REPEATS (default 20),
-- cold (the first after a round: every container sampled again) and warm
-- (the same round), and the answers' sizes. Under valgrind --tool=callgrind
-- give REPEATS = 1.
local view = require "horcrux.view"
local live = require "horcrux.live"
local filters = require "horcrux.filters"
local json = require "horcrux.json"
local clock = require "horcrux.clock"

local N = tonumber(arg and arg[1]) or 1000
local REPEATS = tonumber(arg and arg[2]) or 20
local CG = "tests/fixtures/cgroup/"
local V2A = "971f5a28c0bdcdf3b0ebb5dd04e32dd6d730222ebe141ecde67db05cb64adfdc"

local function run(argv)
  local ok = os.execute(argv)
  assert(ok, argv)
end

-- HX_VIEW_ROOT: where the tree is made and kept (made only when missing)
local keep = os.getenv("HX_VIEW_ROOT")
local root = keep or os.tmpname()
local made = io.open(root .. "/cgroup.controllers")
local given = made ~= nil
if made then
  made:close()
else
  if not keep then
    os.remove(root)
  end
  run("mkdir -p -m 700 " .. root)
end
local f = assert(io.open(root .. "/cgroup.controllers", "wb"))
f:write("cpu io memory pids\n")
f:close()
local src = CG .. "v2-cgroupfs/docker/" .. V2A .. "/"
local files = {}
for _, name in ipairs({ "cgroup.freeze", "cgroup.procs", "cpu.stat",
  "io.stat", "memory.current", "memory.max", "memory.stat", "pids.current",
  "cpu.pressure", "memory.pressure", "io.pressure" }) do
  local h = io.open(src .. name, "rb")
  if h then
    files[name] = h:read("a")
    h:close()
  end
end
local ids = {}
for i = 1, N do
  ids[i] = ("%064x"):format(i)
end
for i = 1, given and 0 or N do
  local dir = root .. "/docker/" .. ids[i]
  run("mkdir -p " .. dir)
  for name, text in pairs(files) do
    local h = assert(io.open(dir .. "/" .. name, "wb"))
    h:write(text)
    h:close()
  end
end
for i, id in ipairs(ids) do
  view.set_meta(id, { id = id:sub(1, 12), name = "hxbench-scale-" .. i,
    status = "running", image = "horcrux-test:busybox",
    image_id = "sha256:" .. ("ab"):rep(32), created = "2026-11-30T19:00:00Z",
    labels = { ["horcrux.bench"] = "scale", ["horcrux.bench.run"] = "run1",
      ["horcrux.bench.group"] = i % 10 == 0 and "tenth" or "idle" },
    networks = { bridge = ("cd"):rep(32) } })
end
if os.getenv("HIST") then view.set_limits({ history = tonumber(os.getenv("HIST")) }) end
view.set_status({ trusted = true, listed_by = "docker-api", followed = true })
local opts = { root = root, proc = "tests/fixtures/proc",
  sys = CG .. "sys" }
view.sample(opts)
view.sample(opts)

local label = assert(filters.parse({ { "label", "horcrux.bench.group=tenth" } }))
local none = assert(filters.parse({}))
local asks = {
  { "stats", function() return live.stats_json(none) end },
  { "list", function()
    -- as the route answers (live.list_json where it is, the table else)
    if live.list_json then
      return assert(live.list_json(none, true))
    end
    return json.encode(assert(filters.list(none, true)), { sort_keys = true })
  end },
  { "label", function() return live.stats_json(label) end },
}

local function ms(t0)
  return (clock.mono_ns() - t0) / 1e6
end

local function stat(xs)
  table.sort(xs)
  return xs[(#xs + 1) // 2], xs[1]
end

local cold, warm, size = {}, {}, {}
for _, a in ipairs(asks) do
  cold[a[1]], warm[a[1]] = {}, {}
end
for _ = 1, REPEATS do
  view.sample(opts) -- a new round: every record is new
  for _, a in ipairs(asks) do
    local t0 = clock.mono_ns()
    local text = a[2]()
    local c = ms(t0)
    t0 = clock.mono_ns()
    a[2]()
    local w = ms(t0)
    table.insert(cold[a[1]], c)
    table.insert(warm[a[1]], w)
    size[a[1]] = #text
  end
end
print(("%d containers, %d repeats (ms: median / least)"):format(N, REPEATS))
for _, a in ipairs(asks) do
  local cm, cl = stat(cold[a[1]])
  local wm, wl = stat(warm[a[1]])
  print(("%-6s cold %7.2f / %7.2f  warm %7.2f / %7.2f  %8d bytes"):format(
    a[1], cm, cl, wm, wl, size[a[1]]))
end
print(("footprint: %.0f bytes a container"):format(view.footprint().bytes / N))
if not keep then
  run("rm -rf " .. root)
end
local function rss_kb()
  local h = io.open("/proc/self/status")
  local text = h and h:read("a") or ""
  if h then h:close() end
  return tonumber(text:match("VmRSS:%s*(%d+)")) or 0
end
print(("RSS: %.1f MB (view and Lua heap: %.1f MB)"):format(rss_kb() / 1024,
  collectgarbage("count") / 1024))
