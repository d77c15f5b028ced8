--- horcrux events [OPTIONS]: the engine's events as they come, one line
-- each, as `docker events` prints them:
--
--   2024-05-01T10:00:00.123456789Z container start 53816c2d...  (image=busybox, name=web)
--
-- (the time in the local zone, to the nanosecond; the actor's attributes
-- sorted by key).
--
--   --since T        events from T on (Unix seconds, RFC 3339, or a
--                    duration before now: 10m, 1h30m)
--   --until T        up to T, then exit (without it, until Ctrl-C)
--   -f, --filter K=V as docker's: type=container, event=start,
--                    container=NAME, label=KEY[=VALUE], image=..., repeatable
--   --format json    one JSON object per line, the engine's own message
--                    (also --format '{{json .}}')
--
-- It follows the engine's /events stream through horcrux.engine; each line
-- is written as soon as its event comes, to a terminal, a pipe or a file.
local engine = require "horcrux.engine"
local json = require "horcrux.json"
local time = require "horcrux.time"

local USAGE = "usage: horcrux events [--since T] [--until T] "
  .. "[-f|--filter KEY=VALUE]... [--format json]\n"

local function usage(msg)
  io.stderr:write("horcrux events: ", msg, "\n", USAGE)
  os.exit(2)
end

local function options(args)
  local o = { filters = {} }
  local i = 1
  local function value(flag, inline)
    if inline then
      return inline
    end
    i = i + 1
    if args[i] == nil then
      usage(flag .. " needs a value")
    end
    return args[i]
  end
  while i <= #args do
    local a = args[i]
    local flag, inline = a:match("^(%-%-[%w-]+)=(.*)$")
    flag = flag or a
    if flag == "--since" or flag == "--until" then
      local v = value(flag, inline)
      local t, why = time.param(v)
      if not t then
        usage(flag .. " " .. v .. ": " .. tostring(why))
      end
      o[flag:sub(3)] = t
    elseif flag == "-f" or flag == "--filter" then
      local v = value(flag, inline)
      local k, x = v:match("^([%w._-]+)=(.*)$")
      if not k then
        usage("--filter " .. v .. ": KEY=VALUE expected")
      end
      o.filters[k] = o.filters[k] or {}
      table.insert(o.filters[k], x)
    elseif flag == "--format" then
      local v = value(flag, inline)
      if v ~= "json" and v:gsub("%s", "") ~= "{{json.}}" then
        usage("--format: only json (or '{{json .}}') is known")
      end
      o.json = true
    elseif a == "-h" or a == "--help" then
      io.stdout:write(USAGE)
      os.exit(0)
    else
      usage("unknown argument " .. a)
    end
    i = i + 1
  end
  return o
end

-- "Z" or "+02:00", for Unix second s in the local zone (Go's Z07:00).
local function zone(s)
  local z = os.date("%z", s)
  if z == "+0000" or z == "-0000" then
    return "Z"
  end
  return z:sub(1, 3) .. ":" .. z:sub(4, 5)
end

local function stamp(ev)
  local ns = math.tointeger(ev.timeNano)
  if not ns then
    local s = math.tointeger(ev.time)
    if not s then
      return ""
    end
    ns = s * 1000000000
  end
  local s, frac = ns // 1000000000, ns % 1000000000
  return os.date("%Y-%m-%dT%H:%M:%S", s) .. string.format(".%09d", frac)
    .. zone(s) .. " "
end

local function line(ev)
  local actor = type(ev.Actor) == "table" and ev.Actor or {}
  local out = { stamp(ev), tostring(ev.Type or ""), " ",
    tostring(ev.Action or ev.status or ""), " ", tostring(actor.ID or ev.id
      or "") }
  local attrs = type(actor.Attributes) == "table" and actor.Attributes or {}
  local keys = {}
  for k in pairs(attrs) do
    keys[#keys + 1] = tostring(k)
  end
  if #keys > 0 then
    table.sort(keys)
    for i, k in ipairs(keys) do
      keys[i] = k .. "=" .. tostring(attrs[k])
    end
    out[#out + 1] = " (" .. table.concat(keys, ", ") .. ")"
  end
  out[#out + 1] = "\n"
  return table.concat(out)
end

local o = options(arg)
io.stdout:setvbuf("no") -- every event out at once, to a pipe too
local ok, err = engine.events({
  since = o.since,
  ["until"] = o["until"],
  filters = next(o.filters) and o.filters or nil,
}, function(ev)
  if type(ev) == "table" then
    io.stdout:write(o.json and (json.encode(ev) .. "\n") or line(ev))
  end
end)
if not ok then
  io.stderr:write("horcrux events: ", tostring(err), "\n")
  os.exit(1)
end
