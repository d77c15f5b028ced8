--- horcrux.fields: the JSON bodies of the image, exec, network, volume and
-- stack routes, checked field by field before anything reaches the daemon
-- (the container create body has its own, horcrux.manage.validate).
--
--   fields.check(body, spec [, required]) -> {field = value} | nil,
--       message (every bad field's, "; "), "bad_request",
--       {field = the first, fields = every bad one}
--   spec: {name = checker}; a checker is function(field, v) -> value | nil,
--   message. required: a list of names that must be there. A JSON null is
--   an absent field; an unknown field is refused, every one named.
--
-- Checkers: fields.string(max [, pattern, what, min]), fields.text(max),
-- fields.boolean,
-- fields.integer(min, max), fields.number(min, max),
-- fields.strings(max_items, max_len), fields.map(max_items, max_len),
-- fields.path (an absolute path, no . or .. part), fields.ip([version])
-- (an IPv4 or IPv6 address; version 4 or 6: only that one),
-- fields.cidr (an address and a prefix length). Every text is
-- length-checked before a pattern looks at it.
local json = require "horcrux.json"
local tables = require "horcrux.tables"

local M = {}

local function printable(s)
  return not s:find("[%c\127]")
end

local function is_object(v)
  if type(v) ~= "table" or (json.is_array(v) and #v > 0) then
    return false
  end
  local k = next(v)
  while type(k) == "string" do
    k = next(v, k)
  end
  return k == nil
end
M.is_object = is_object

-- A JSON array, or a Lua sequence (a caller's plain table): every key an
-- integer from 1 to its length.
local function is_list(v)
  if type(v) ~= "table" then
    return false
  elseif json.is_array(v) then
    return true
  end
  local len = #v
  for k in pairs(v) do
    if math.type(k) ~= "integer" or k < 1 or k > len then
      return false
    end
  end
  return true
end

--- Printable text of min (default 1) to max bytes, matching pattern when
-- given (what says it, for the refusal).
function M.string(max, pattern, what, min)
  min = min or 1
  return function(f, v)
    if type(v) ~= "string" or #v < min or #v > max or not printable(v)
        or (pattern and not v:match(pattern)) then
      return nil, ("%s: must be %s (%d to %d bytes)"):format(f,
        what or "printable text", min, max)
    end
    return v
  end
end

--- Text of several lines (a file): any bytes but NUL.
function M.text(max)
  return function(f, v)
    if type(v) ~= "string" or #v == 0 or #v > max or v:find("\0", 1, true) then
      return nil, ("%s: must be text without NUL bytes (1 to %d bytes)"):format(
        f, max)
    end
    return v
  end
end

function M.boolean(f, v)
  if type(v) ~= "boolean" then
    return nil, f .. ": must be true or false"
  end
  return v
end

function M.integer(min, max)
  return function(f, v)
    local n = math.type(v) == "integer" and v
      or (math.type(v) == "float" and math.tointeger(v))
    if not n or n < min or n > max then
      return nil, ("%s: must be an integer from %d to %d"):format(f, min, max)
    end
    return n
  end
end

function M.number(min, max)
  return function(f, v)
    if type(v) ~= "number" or v ~= v or v < min or v > max then
      return nil, ("%s: must be a number from %g to %g"):format(f, min, max)
    end
    return v
  end
end

--- An array of strings without NUL bytes.
function M.strings(max_items, max_len)
  return function(f, v)
    if not is_list(v) or #v > max_items then
      return nil, ("%s: must be an array of at most %d strings"):format(f,
        max_items)
    end
    local out = json.array()
    for i, s in ipairs(v) do
      if type(s) ~= "string" or #s > max_len or s:find("\0", 1, true) then
        return nil, ("%s[%d]: must be a string without NUL bytes (at most %d "
          .. "bytes)"):format(f, i, max_len)
      end
      out[i] = s
    end
    return out
  end
end

--- An object {"key": "value"}: keys printable (no "="), values strings.
function M.map(max_items, max_len)
  return function(f, v)
    if not is_object(v) then
      return nil, f .. ': must be an object {"key": "value"}'
    end
    local out, n = {}, 0
    for k, s in pairs(v) do
      n = n + 1
      if n > max_items or #k == 0 or #k > 255 or not printable(k)
          or k:find("=", 1, true) then
        return nil, ("%s: at most %d keys of 1 to 255 printable bytes "
          .. "without '='"):format(f, max_items)
      end
      if type(s) ~= "string" or #s > max_len or s:find("\0", 1, true) then
        return nil, ("%s.%s: must be a string without NUL bytes (at most %d "
          .. "bytes)"):format(f, k, max_len)
      end
      out[k] = s
    end
    return out
  end
end

function M.path(f, v)
  if type(v) ~= "string" or #v == 0 or #v > 4096 or v:sub(1, 1) ~= "/"
      or not printable(v) then
    return nil, f .. ": must be an absolute path (at most 4096 bytes)"
  end
  for part in v:gmatch("[^/]+") do
    if part == "." or part == ".." then
      return nil, f .. ": must not contain . or .. parts"
    end
  end
  return v
end

-- ---- addresses: parsed by parts (plain finds, patterns of bounded
-- length), as the daemon's Go net.ParseIP / ParseCIDR take them.

-- A dotted quad: four numbers 0-255, no leading zero (Go refuses them).
local function ipv4(s)
  local n, i = 0, 1
  while n < 4 do
    local j = s:find(".", i, true)
    local part = s:sub(i, (j or #s + 1) - 1)
    if not part:match("^%d%d?%d?$") or tonumber(part) > 255
        or (#part > 1 and part:sub(1, 1) == "0") then
      return false
    end
    n = n + 1
    if not j then
      return n == 4
    end
    i = j + 1
  end
  return false
end

-- How many 16-bit groups s ("1:db8", "" for none) holds, a dotted quad
-- (last, when v4_last) counting two; nil when a group is empty or bad.
local function groups(s, v4_last)
  local n, i = 0, 1
  while s ~= "" and n < 9 do
    local j = s:find(":", i, true)
    local g = s:sub(i, (j or #s + 1) - 1)
    if not j and v4_last and g:find(".", 1, true) then
      return ipv4(g) and n + 2 or nil
    elseif not g:match("^%x%x?%x?%x?$") then
      return nil
    end
    n = n + 1
    if not j then
      break
    end
    i = j + 1
  end
  return n
end

local function ipv6(s)
  local gap = s:find("::", 1, true)
  if not gap then
    return groups(s, true) == 8
  end
  local head, tail = groups(s:sub(1, gap - 1)), groups(s:sub(gap + 2), true)
  return head ~= nil and tail ~= nil and head + tail <= 7
end

-- 4 or 6 when s is an address of that version (and one of `version`'s).
local function ip_version(s, version)
  if #s <= 45 and version ~= 6 and ipv4(s) then
    return 4
  elseif #s <= 45 and version ~= 4 and ipv6(s) then
    return 6
  end
end

function M.ip(version)
  local what = version and ("an IPv%d address"):format(version)
    or "an IPv4 or IPv6 address"
  return function(f, v)
    if type(v) ~= "string" or not ip_version(v, version) then
      return nil, ("%s: must be %s"):format(f, what)
    end
    return v
  end
end

--- ADDRESS/BITS: an IPv4 address and 0-32, or an IPv6 one and 0-128.
function M.cidr(f, v)
  local slash = type(v) == "string" and #v <= 49 and v:find("/", 1, true)
  local bits = slash and v:sub(slash + 1)
  local ver = slash and ip_version(v:sub(1, slash - 1))
  if not ver or not bits:match("^%d%d?%d?$")
      or (#bits > 1 and bits:sub(1, 1) == "0")
      or tonumber(bits) > (ver == 4 and 32 or 128) then
    return nil, f .. ": must be an address and a prefix length, "
      .. "IPv4 (10.1.0.0/16, 0 to 32) or IPv6 (fd00::/64, 0 to 128)"
  end
  return v
end

function M.check(body, spec, required)
  if not is_object(body) then
    return nil, "the body must be a JSON object", "bad_request"
  end
  local extra = {}
  for k in pairs(body) do
    if not spec[k] then
      extra[#extra + 1] = tostring(k)
    end
  end
  if #extra > 0 then
    table.sort(extra)
    return nil, ("unknown field%s: %s (the fields are: %s)"):format(
      #extra > 1 and "s" or "", table.concat(extra, ", "),
      table.concat(tables.sorted_keys(spec), ", ")), "bad_request",
      { field = extra[1], fields = json.array(extra) }
  end
  -- every bad field is named (error.fields), so that a client fixes them
  -- in one round
  local out, msgs, bad = {}, {}, json.array()
  for _, k in ipairs(required or {}) do
    if body[k] == nil or body[k] == json.null then
      msgs[#msgs + 1], bad[#bad + 1] = k .. ": is required", k
    end
  end
  for _, k in ipairs(tables.sorted_keys(spec)) do
    local v = body[k]
    if v ~= nil and v ~= json.null then
      local r, err = spec[k](k, v)
      if r == nil then
        msgs[#msgs + 1], bad[#bad + 1] = err, k
      else
        out[k] = r
      end
    end
  end
  if #msgs > 0 then
    return nil, table.concat(msgs, "; "), "bad_request",
      { field = bad[1], fields = bad }
  end
  return out
end

return M
