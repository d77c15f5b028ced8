-- scripts/lib.sh: the helpers scripts/test and scripts/run stop things with.
-- hx_stop_sessions must stop the sessions it is given and return, whatever
-- other children the script has: a bare `wait` there once waited for the
-- dockerd that scripts/test had started (its child too, stopped by a later
-- hook), and a CI run hung until its time ran out.
local proc = require "horcrux.proc"

local function bash(program)
  local r = proc.run({ "bash", "-c", program, "spec" }, { timeout = 30 })
  assert.is_false(r.timed_out, "the program did not end: " .. r.stderr)
  assert.equal(0, r.status, r.stderr .. r.stdout)
  return r.stdout
end

describe("scripts/lib.sh", function()
  it("hx_stop_sessions stops a job's whole session and waits for nothing else",
    function()
      local out = bash([[
        set -u
        source scripts/lib.sh
        # alive: running, not a zombie that init has yet to reap
        alive() { local s; s=$(ps -o stat= -p "$1") && [ "${s#Z}" = "$s" ]; }
        sleep 120 & other=$!            # a child the script keeps, as dockerd
        # a job: a session leader with a grandchild in its session
        setsid bash -c 'sleep 121 & echo $! >"$0"; wait' "$TMPDIR/g.$$" & job=$!
        for i in $(seq 50); do [ -s "$TMPDIR/g.$$" ] && break; sleep 0.1; done
        grand=$(cat "$TMPDIR/g.$$"); rm -f "$TMPDIR/g.$$"
        t0=$EPOCHREALTIME
        hx_stop_sessions "$job"
        printf 'took %s\n' "$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')"
        alive "$job" && echo "job alive"
        alive "$grand" && echo "grandchild alive"
        alive "$other" && echo "other alive"
        kill "$other"; wait "$other" 2>/dev/null
        hx_stop_sessions                 # nothing to stop: returns at once
        echo done
      ]])
      local took = tonumber(out:match("took ([%d.]+)"))
      assert.is_not_nil(took, out)
      -- TERM, a second, KILL: about a second, never the other child's 120
      assert.is_true(took < 5, out)
      assert.is_nil(out:find("job alive", 1, true), out)
      assert.is_nil(out:find("grandchild alive", 1, true), out)
      assert.is_truthy(out:find("other alive", 1, true), out)
      assert.is_truthy(out:find("done", 1, true), out)
    end)
  -- A killed run leaves its private dockerd's root (/tmp/hxd.*) behind;
  -- scripts/test sweeps those whose daemon is gone, and no other.
  it("hx_sweep_daemon_roots removes the roots whose dockerd is gone, and only those",
    function()
      local out = bash([[
        set -u
        source scripts/lib.sh
        top=$(mktemp -d "${TMPDIR:-/tmp}/hxsweep.XXXXXX")
        sleep 120 & live=$!
        sleep 0 & dead=$!; wait "$dead"
        mkdir -p "$top"/r.gone/data/m "$top"/r.live "$top"/r.new "$top"/r.dead
        mount -t tmpfs hxsweep "$top/r.gone/data/m"  # a mount left under it
        echo x >"$top/r.gone/data/m/f"
        echo "$live" >"$top/r.live/docker.pid"
        echo "$dead" >"$top/r.dead/docker.pid"
        for r in gone live dead; do touch -d '-20 minutes' "$top/r.$r"; done
        hx_sweep_daemon_roots "$top/r.*" | sed "s|^$top/|removed |"
        for r in gone live new dead; do [ -d "$top/r.$r" ] && echo "kept r.$r"; done
        grep -q " $top/" /proc/self/mounts && echo "a mount is left"
        kill "$live"; wait "$live" 2>/dev/null
        umount "$top/r.gone/data/m" 2>/dev/null
        rm -rf "$top"
        echo done
      ]])
      local lines = {}
      for l in out:gmatch("[^\n]+") do
        lines[#lines + 1] = l
      end
      table.sort(lines)
      assert.same({ "done", "kept r.live", "kept r.new", "removed r.dead",
        "removed r.gone" }, lines)
    end)
end)
