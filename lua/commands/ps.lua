--- horcrux ps [-a|--all] [-q|--quiet] [--no-trunc] [-f|--filter KEY=VALUE]...:
-- the containers, as `docker ps` prints them. The filters are docker's
-- (status=, label=, name=, id=, ancestor=, network=, ...), handed to the
-- daemon as docker hands them.
local engine = require "horcrux.engine"
local units = require "horcrux.units"

local USAGE = "usage: horcrux ps [-a|--all] [-q|--quiet] [--no-trunc] "
  .. "[-f|--filter KEY=VALUE]...\n"

local function usage(msg)
  io.stderr:write("horcrux ps: ", msg, "\n", USAGE)
  os.exit(2)
end

local all, quiet, no_trunc, filters = false, false, false, nil
local i = 1
while i <= #arg do
  local a = arg[i]
  local flag, inline = a:match("^(%-%-[%w-]+)=(.*)$")
  flag = flag or a
  if a == "-h" or a == "--help" then
    io.stdout:write(USAGE)
    os.exit(0)
  elseif a == "--all" then
    all = true
  elseif a == "--quiet" then
    quiet = true
  elseif a == "--no-trunc" then
    no_trunc = true
  elseif flag == "-f" or flag == "--filter" then
    local v = inline
    if not v then
      i = i + 1
      v = arg[i]
    end
    local k, x = (v or ""):match("^([%w._-]+)=(.*)$")
    if not k then
      usage("--filter " .. tostring(v or "") .. ": KEY=VALUE expected")
    end
    filters = filters or {}
    filters[k] = filters[k] or {}
    table.insert(filters[k], x)
  elseif a:match("^%-[aq]+$") then -- -a, -q, -aq
    all = all or a:find("a", 2, true) ~= nil
    quiet = quiet or a:find("q", 2, true) ~= nil
  else
    usage("unknown argument " .. a)
  end
  i = i + 1
end

local list, err = engine.containers({ all = all, filters = filters })
if not list then
  io.stderr:write("horcrux ps: ", err, "\n")
  os.exit(1)
end

if quiet then
  for _, c in ipairs(list) do
    io.stdout:write(no_trunc and c.Id or c.Id:sub(1, 12), "\n")
  end
  os.exit(0)
end

-- Go's strconv.Quote, as docker ps prints COMMAND: \" and \\, C escapes
-- for control characters, \xNN for other bytes below 0x20, 0x7f and
-- bytes that are not UTF-8; printable characters as they are.
local ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\a"] = "\\a",
  ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n", ["\r"] = "\\r",
  ["\t"] = "\\t", ["\v"] = "\\v" }

local function go_quote(s)
  local valid = utf8.len(s) ~= nil
  return '"' .. s:gsub('[%z\1-\31"\\\127-\255]', function(ch)
    local b = ch:byte()
    if ESCAPES[ch] then
      return ESCAPES[ch]
    elseif b < 0x80 or not valid then
      return ("\\x%02x"):format(b)
    end
  end) .. '"'
end

-- Docker's Ellipsis: more than 20 characters are cut to 19 and "…"
-- (characters, not bytes: a cut inside one would print a lone byte).
local function command(c)
  local cmd = c.Command or ""
  local n = utf8.len(cmd)
  if no_trunc then
    return go_quote(cmd)
  elseif n and n > 20 then
    cmd = cmd:sub(1, utf8.offset(cmd, 20) - 1) .. "…"
  elseif not n and #cmd > 20 then
    cmd = cmd:sub(1, 19) .. "…"
  end
  return go_quote(cmd)
end

-- Docker's DisplayablePorts: sorted by private port, then address, public
-- port and protocol; a port published on the same number, or not at all,
-- runs with its neighbours into a range ("8000-8002/tcp",
-- "0.0.0.0:8000-8002->8000-8002/tcp"), each address apart; one published
-- on another number is listed alone after those. An IPv6 address is in
-- brackets ("[::]:8080->80/tcp"), as Go's net.JoinHostPort writes it.
local function host_port(ip, port)
  return (ip:find(":", 1, true) and "[" .. ip .. "]" or ip) .. ":" .. port
end

local function ports(c)
  local list = {}
  for _, p in ipairs(type(c.Ports) == "table" and c.Ports or {}) do
    if type(p) == "table" and math.type(p.PrivatePort) then
      list[#list + 1] = { private = math.tointeger(p.PrivatePort) or 0,
        public = math.tointeger(p.PublicPort) or 0,
        ip = type(p.IP) == "string" and p.IP or "",
        type = type(p.Type) == "string" and p.Type or "" }
    end
  end
  table.sort(list, function(a, b)
    if a.private ~= b.private then return a.private < b.private end
    if a.ip ~= b.ip then return a.ip < b.ip end
    if a.public ~= b.public then return a.public < b.public end
    return a.type < b.type
  end)
  local function group(g)
    local span = g.first == g.last and tostring(g.first)
      or g.first .. "-" .. g.last
    if g.ip ~= "" then
      span = host_port(g.ip, span) .. "->" .. span
    end
    return span .. "/" .. g.type
  end
  local out, mapped, groups, keys = {}, {}, {}, {}
  for _, p in ipairs(list) do
    if p.ip ~= "" and p.public ~= p.private then
      mapped[#mapped + 1] = ("%s->%d/%s"):format(host_port(p.ip, p.public),
        p.private, p.type)
    else
      local key = p.ip .. "/" .. p.type
      local g = groups[key]
      if not g then
        groups[key] = { first = p.private, last = p.private, ip = p.ip,
          type = p.type }
        keys[#keys + 1] = key
      elseif p.private == g.last + 1 then
        g.last = p.private
      else
        out[#out + 1] = group(g)
        groups[key] = { first = p.private, last = p.private, ip = p.ip,
          type = p.type }
      end
    end
  end
  for _, key in ipairs(keys) do
    out[#out + 1] = group(groups[key])
  end
  table.move(mapped, 1, #mapped, #out + 1, out)
  return table.concat(out, ", ")
end

local rows, now = {}, os.time()
for _, c in ipairs(list) do
  local names = {}
  for i, n in ipairs(c.Names or {}) do
    names[i] = n:gsub("^/", "")
  end
  rows[#rows + 1] = {
    no_trunc and c.Id or c.Id:sub(1, 12), c.Image or "", command(c),
    units.duration(now - (c.Created or now)) .. " ago",
    c.Status or "", ports(c), table.concat(names, ","),
  }
end
units.table(io.stdout,
  { "CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES" },
  rows)
