--- horcrux stats [OPTIONS] [CONTAINER...]: the containers' figures, live, as
-- `docker stats` prints them, from the sources of fallback.lua (the Engine
-- API first).
--
--   -a, --all        every container, not only the running ones
--   --no-stream      one table, then exit
--   --interval S     seconds between tables (default 1; 0.1 .. 3600)
--   --no-trunc       full ids
--   CONTAINER...     names, ids or id prefixes: only these
--
-- On a terminal each table replaces the last (the screen is cleared, as
-- docker does); elsewhere (a pipe, a file) the tables follow one another,
-- each under its own header line. Ctrl-C ends it. The figures are the
-- library's stats records, computed as docker stats computes them (CPU %
-- over the time since the previous table, memory without the inactive
-- file pages).
local metrics = require "horcrux.metrics"
local units = require "horcrux.units"
local json = require "horcrux.json"
local clock = require "horcrux.clock"
local proc = require "horcrux.proc"

local USAGE = "usage: horcrux stats [-a|--all] [--no-stream] [--interval S] "
  .. "[--no-trunc] [CONTAINER...]\n"
local HEADER = { "CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT",
  "MEM %", "NET I/O", "BLOCK I/O", "PIDS" }

local function fail(msg, code)
  io.stderr:write("horcrux stats: ", msg, "\n")
  os.exit(code or 1)
end

local function options(args)
  local o = { refs = {}, interval = 1 }
  local i = 1
  while i <= #args do
    local a = args[i]
    local flag, value = a:match("^(%-%-[%w-]+)=(.*)$")
    flag = flag or a
    if a == "--" then
      table.move(args, i + 1, #args, #o.refs + 1, o.refs)
      break
    elseif a == "-a" or a == "--all" then
      o.all = true
    elseif a == "--no-stream" then
      o.no_stream = true
    elseif a == "--no-trunc" then
      o.no_trunc = true
    elseif flag == "--interval" then
      if not value then
        i = i + 1
        value = args[i]
      end
      local s = tonumber(value or "")
      if not s or s < 0.1 or s > 3600 then
        io.stderr:write("horcrux stats: --interval needs seconds from 0.1 ",
          "to 3600\n", USAGE)
        os.exit(2)
      end
      o.interval = s
    elseif a == "-h" or a == "--help" then
      io.stdout:write(USAGE)
      os.exit(0)
    elseif a:sub(1, 1) == "-" then
      io.stderr:write("horcrux stats: unknown option ", a, "\n", USAGE)
      os.exit(2)
    else
      o.refs[#o.refs + 1] = a
    end
    i = i + 1
  end
  return o
end

local function num(v)
  return v ~= nil and v ~= json.null and v or nil
end

local function pct(v)
  v = num(v)
  return v and string.format("%.2f%%", v) or "--"
end

local function size(f, v)
  v = num(v)
  return v and f(v) or "--"
end

local function pair(f, a, b)
  return size(f, a) .. " / " .. size(f, b)
end

-- A container that does not run: docker stats shows its figures as zeros
-- ("0B / 0B", "0.00%", 0), not "--", which it keeps for a failed read.
local AT_REST = { "memory_usage_bytes", "memory_limit_bytes",
  "memory_percent", "network_rx_bytes", "network_tx_bytes",
  "block_read_bytes", "block_write_bytes", "pids" }

local function at_rest(rec)
  local out = {}
  for k, v in pairs(rec) do
    out[k] = v
  end
  for _, k in ipairs(AT_REST) do
    out[k] = num(out[k]) or 0
  end
  return out
end

-- Running as docker stats (and docker ps) count it: paused ones too.
local function runs(c)
  return c.status == "running" or c.status == "paused"
end

-- The containers of one table: {id, name, running} in the list's order
-- (what `docker ps` lists), or the refs given, in their order, with the
-- names the list knows. A record from the cgroup files knows no name; the
-- list does.
local function targets(o)
  local list, err = metrics.list({ all = true })
  if not list and #o.refs == 0 then
    return nil, err
  end
  local out, by = {}, {}
  for _, c in ipairs(list or {}) do
    -- a list from the cgroup files (no daemon) knows no name: null
    local name = type(c.name) == "string" and c.name or nil
    by[c.id] = c
    if name then
      by[name] = c
    end
    if #o.refs == 0 and (o.all or runs(c)) then
      out[#out + 1] = { ref = c.id, name = name, running = runs(c) }
    end
  end
  for _, ref in ipairs(o.refs) do
    local c = by[ref] or by[ref:sub(1, 12)]
    if not c and #ref < 12 then -- an id prefix
      for _, x in ipairs(list or {}) do
        if x.id:sub(1, #ref) == ref then
          c = x
          break
        end
      end
    end
    out[#out + 1] = { ref = ref, name = c and type(c.name) == "string"
      and c.name or nil, running = not c or runs(c), given = true }
  end
  return out
end

-- A record's failure as the user reads it: when no source could answer,
-- what each one said ("no metric source could answer (cgroup: ...;
-- docker-api: ...)").
local function why(r)
  local text = tostring(r.error)
  if type(r.tried) == "table" and #r.tried > 1 then
    local each = {}
    for _, t in ipairs(r.tried) do
      local name, err = tostring(t.source), tostring(t.error)
      -- most sources' messages start with their name already
      each[#each + 1] = err:sub(1, #name + 1) == name .. ":" and err
        or name .. ": " .. err
    end
    text = text .. " (" .. table.concat(each, "; ") .. ")"
  end
  return text
end

-- One table's rows; errors of the refs given on the first table go to
-- stderr (a container that stopped later keeps its row, with "--").
local function rows(o, list, first)
  local refs = {}
  for i, t in ipairs(list) do
    refs[i] = t.ref
  end
  local records = metrics.stats_many(refs)
  local out, failed = {}, 0
  for i, t in ipairs(list) do
    local r = records[i]
    local rec = r.record or {}
    if r.record and not t.running then
      rec = at_rest(rec)
    end
    if not r.record and not t.given and r.kind == "not_found" then
      goto gone -- removed since the list: no row, as docker stats does
    end
    if not r.record then
      if t.given or t.running then
        failed = failed + 1
      end
      if first and t.given then
        io.stderr:write("horcrux stats: ", t.ref, ": ", why(r), "\n")
      end
    end
    local id = type(rec.id) == "string" and rec.id or t.ref
    out[#out + 1] = {
      o.no_trunc and id or id:sub(1, 12),
      t.name or (type(rec.name) == "string" and rec.name)
        or (t.given and t.ref) or "--",
      t.running and pct(rec.cpu_usage_percent) or "0.00%",
      pair(units.bytes, rec.memory_usage_bytes, rec.memory_limit_bytes),
      pct(rec.memory_percent),
      pair(units.human, rec.network_rx_bytes, rec.network_tx_bytes),
      pair(units.human, rec.block_read_bytes, rec.block_write_bytes),
      tostring(num(rec.pids) or "--"),
    }
    ::gone::
  end
  return out, failed
end

-- A writer that collects a table's text, so a frame goes out in one write.
local function buffer()
  local parts = {}
  return {
    write = function(self, ...)
      for _, s in ipairs({ ... }) do
        parts[#parts + 1] = s
      end
      return self
    end,
    text = function() return table.concat(parts) end,
  }
end

local o = options(arg)
local tty = proc.isatty(1)
local first = true
local next_at = clock.mono_ns()
while true do
  local list, err = targets(o)
  if not list then
    fail(err)
  end
  local r, failed = rows(o, list, first)
  local b = buffer()
  units.table(b, HEADER, r)
  -- docker's own redraw: clear the screen, cursor home, the table
  io.stdout:write(tty and not o.no_stream and "\27[2J\27[H" or "", b:text())
  io.stdout:flush()
  if o.no_stream then
    os.exit(failed > 0 and 1 or 0)
  end
  if first and #o.refs > 0 and failed == #o.refs then
    os.exit(1) -- none of the containers named is there
  end
  first = false
  next_at = next_at + math.floor(o.interval * 1e9)
  local now = clock.mono_ns()
  if next_at > now then
    clock.sleep((next_at - now) / 1e9)
  else
    next_at = now -- sampling took longer than the interval: no burst
  end
end
