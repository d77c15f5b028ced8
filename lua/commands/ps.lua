--- horcrux ps [-a|--all]: the containers, as `docker ps` prints them.
local engine = require "horcrux.engine"
local units = require "horcrux.units"

local USAGE = "usage: horcrux ps [-a|--all]\n"
local all = false
for _, a in ipairs(arg) do
  if a == "-a" or a == "--all" then
    all = true
  elseif a == "-h" or a == "--help" then
    io.stdout:write(USAGE)
    os.exit(0)
  else
    io.stderr:write("horcrux ps: unknown argument ", a, "\n", USAGE)
    os.exit(2)
  end
end

local list, err = engine.containers({ all = all })
if not list then
  io.stderr:write("horcrux ps: ", err, "\n")
  os.exit(1)
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
  if n and n > 20 then
    cmd = cmd:sub(1, utf8.offset(cmd, 20) - 1) .. "…"
  elseif not n and #cmd > 20 then
    cmd = cmd:sub(1, 19) .. "…"
  end
  return go_quote(cmd)
end

local function ports(c)
  local out = {}
  for _, p in ipairs(c.Ports or {}) do
    if p.PublicPort then
      out[#out + 1] = string.format("%s:%d->%d/%s", p.IP or "",
        p.PublicPort, p.PrivatePort, p.Type)
    else
      out[#out + 1] = string.format("%d/%s", p.PrivatePort, p.Type)
    end
  end
  return table.concat(out, ", ")
end

local rows, now = {}, os.time()
for _, c in ipairs(list) do
  local names = {}
  for i, n in ipairs(c.Names or {}) do
    names[i] = n:gsub("^/", "")
  end
  rows[#rows + 1] = {
    c.Id:sub(1, 12), c.Image or "", command(c),
    units.duration(now - (c.Created or now)) .. " ago",
    c.Status or "", ports(c), table.concat(names, ","),
  }
end
units.table(io.stdout,
  { "CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES" },
  rows)
