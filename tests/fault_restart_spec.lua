-- Fault: the daemon restarts under load. `horcrux serve` runs against a
-- private dockerd (tests/daemon.lua; the shared engine is never touched),
-- with requests running all the time; the daemon goes down (SIGTERM, live
-- restore: its containers keep running), one of its containers dies while
-- it is down, and it comes back.
--
-- Bounds: horcrux answers every request throughout (/healthz always 200,
-- the others with a status, never a dropped connection), and within 5 s of
-- the new daemon answering, /api/containers and /api/stats answer from it:
-- a container created after the restart is listed and in the live view,
-- the one that died while the daemon was down is out of the view, and the
-- view holds the survivors again with samples taken after the restart.
local http = require "http"
local support = require "support"
local daemon = require "daemon"
local proc = require "horcrux.proc"
local clock = require "horcrux.clock"

local PATH = "PATH=" .. os.getenv("PATH")
local WITHIN_S = 5

-- The load: two shell loops of curl over the routes, one line per request
-- ("<status> <path> <seconds>") appended to `out`.
local LOOP = [[
while :; do
  for p in /healthz /api/stats /api/containers /api/containers/$2/stats; do
    curl -s -o /dev/null -m 10 -w "%{http_code} $p %{time_total}\n" "$1$p"
  done
done >>"$3"
]]

local function by_id(list)
  local out = {}
  for _, r in ipairs(list or {}) do
    out[r.id] = r
  end
  return out
end

local function get_json(url)
  local r = http.get(url, { timeout = 10 })
  if r and r.status == 200 and type(r.json) == "table" then
    return r.json
  end
  return nil
end

describe("fault: a private dockerd restarted under load", function()
  local d, srv, ids, names

  setup(function()
    local ok, why = daemon.available()
    assert(ok, why) -- a missing dockerd fails the spec, never skips it
    d = daemon.start()
    local ok2, err = pcall(function()
      d:load_image(support.image)
      ids, names = {}, {}
      for i = 1, 3 do
        ids[i], names[i] = d:run { name = "fault" }
      end
      srv = http.start { args = { "--interval", "0.5" },
        env = { "DOCKER_HOST=" .. d.host, PATH } }
    end)
    if not ok2 then
      d:stop()
      error(err)
    end
  end)

  teardown(function()
    local ok, err = true, nil
    if srv then
      ok, err = pcall(srv.stop, srv)
    end
    if d then
      d:stop()
    end
    assert(ok, err)
  end)

  it("keeps answering, and answers from the new daemon within 5 s", function()
    -- the view holds the three containers before anything happens
    local deadline = clock.mono_ns() + 10e9
    repeat
      local view = by_id(get_json(srv.url .. "/api/stats"))
      local all = view[ids[1]] and view[ids[2]] and view[ids[3]]
      if not all then
        clock.sleep(0.1)
      end
    until all or clock.mono_ns() > deadline
    assert(clock.mono_ns() <= deadline,
      "the view never held the containers\n" .. srv:logtext())

    local pid = d:client():inspect(ids[3]).State.Pid
    assert.is_true(pid > 0)

    local out = os.tmpname()
    local loads = {}
    for i = 1, 2 do
      loads[i] = assert(proc.spawn({ "sh", "-c", LOOP, "sh", srv.url, ids[1],
        out }))
    end
    finally(function()
      for _, l in ipairs(loads) do
        l:kill("KILL")
        l:wait(5)
      end
      os.remove(out)
    end)
    clock.sleep(1)

    -- down; one container dies while nobody watches; up again
    local t_down = clock.mono_ns()
    d:down()
    assert(proc.run({ "kill", "-KILL", tostring(pid) }).status == 0)
    clock.sleep(1)
    d:up()
    local t_up = clock.mono_ns()
    -- what the server's breaker thought when the daemon answered again
    local hz = get_json(srv.url .. "/healthz") or {}
    local breaker = hz.breaker or { state = "closed" }
    local new_id, new_name = d:run { name = "fault-new" }
    local ran = (clock.mono_ns() - t_up) / 1e9

    -- Two clocks: the view is back (the survivors sampled again, the dead
    -- one out) within WITHIN_S of the daemon answering; the new container
    -- is listed and in the view within WITHIN_S of existing -- creating it
    -- took the loaded private daemon 3.1-3.3 s in CI, and once more than
    -- the whole bound.
    local t_ran, t_back, t_new = clock.mono_ns(), nil, nil
    local recovered, last
    repeat
      local list = by_id(get_json(srv.url .. "/api/containers?all=0"))
      local view = by_id(get_json(srv.url .. "/api/stats"))
      local age_limit = (clock.mono_ns() - t_up) / 1e6
      local fresh = true
      for _, id in ipairs({ ids[1], ids[2], new_id }) do
        local rec = view[id]
        fresh = fresh and rec ~= nil
          and (rec.sample_age_ms == nil or rec.sample_age_ms <= age_limit)
      end
      last = { listed = (list[new_id:sub(1, 12)] or list[new_id]) ~= nil,
        dead_listed = (list[ids[3]:sub(1, 12)] or list[ids[3]]) ~= nil,
        view_new = view[new_id] ~= nil, dead_in_view = view[ids[3]] ~= nil,
        fresh = fresh }
      local now = clock.mono_ns()
      if not t_back and fresh and not last.dead_listed and not last.dead_in_view then
        t_back = now
      end
      if not t_new and last.listed and last.view_new then
        t_new = now
      end
      recovered = t_back ~= nil and t_new ~= nil
      if not recovered then
        clock.sleep(0.1)
      end
    until recovered or clock.mono_ns() - t_up > 15e9
    local took = (clock.mono_ns() - t_up) / 1e9
    local back_s = t_back and (t_back - t_up) / 1e9 or took
    local new_s = t_new and (t_new - t_ran) / 1e9 or took
    clock.sleep(1) -- load after the recovery too

    for _, l in ipairs(loads) do
      l:kill("KILL")
      l:wait(5)
    end
    local counts, dropped, healthz_bad, slowest = {}, 0, 0, 0
    for line in io.lines(out) do
      local code, path, secs = line:match("^(%d+) (%S+) ([%d.]+)")
      if code then
        counts[code] = (counts[code] or 0) + 1
        if code == "000" then
          dropped = dropped + 1
        elseif path == "/healthz" and code ~= "200" then
          healthz_bad = healthz_bad + 1
        end
        slowest = math.max(slowest, tonumber(secs))
      end
    end
    local summary = {}
    for code, n in pairs(counts) do
      summary[#summary + 1] = code .. ": " .. n
    end
    table.sort(summary)
    print(("\nfault restart: daemon down %.1f s; the view back %.2f s after "
      .. "it answered (the breaker was %s%s); the new container ran %.2f s "
      .. "after it answered and was listed and in the view %.2f s later; "
      .. "requests %s; slowest %.2f s"):format((t_up - t_down) / 1e9, back_s,
      breaker.state, breaker.next_probe_in and (", next probe in "
      .. breaker.next_probe_in .. " s") or "", ran, new_s,
      table.concat(summary, ", "), slowest))

    assert.is_true(srv:alive(), "horcrux serve died\n" .. srv:logtext())
    assert.equal(0, dropped, "requests without an answer")
    assert.equal(0, healthz_bad, "/healthz answered other than 200")
    assert.is_true(recovered, ("not recovered after 15 s: %s (%s)\n%s")
      :format(require("horcrux.json").encode(last), new_name,
        srv:logtext():sub(-3000)))
    assert.is_true(back_s <= WITHIN_S, ("the view back in %.2f s"):format(back_s))
    assert.is_true(new_s <= WITHIN_S, ("the new container in the view %.2f s "
      .. "after it ran"):format(new_s))
  end)
end)
