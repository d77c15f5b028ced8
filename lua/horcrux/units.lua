--- horcrux.units: sizes and durations printed the way the docker CLI prints
-- them (go-units), so `horcrux ps`/`horcrux stats` read like docker's.
local M = {}

local function scaled(n, base, units, precision)
  local i = 1
  n = n + 0.0
  while n >= base and i < #units do
    n = n / base
    i = i + 1
  end
  return string.format("%." .. precision .. "g", n) .. units[i]
end

--- Decimal units with 3 significant digits, as docker stats prints NET I/O
-- and BLOCK I/O (go-units HumanSizeWithPrecision(n, 3)): 1.05kB, 50.9MB.
function M.human(n)
  return scaled(n, 1000, { "B", "kB", "MB", "GB", "TB", "PB", "EB" }, 3)
end

--- Binary units with 4 significant digits, as docker stats prints MEM
-- USAGE (go-units BytesSize): 536KiB, 23.54GiB.
function M.bytes(n)
  return scaled(n, 1024, { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" }, 4)
end

--- "5 minutes", "About an hour", ... as docker ps's CREATED and STATUS.
function M.duration(seconds)
  local s = math.floor(seconds)
  if s < 1 then return "Less than a second" end
  if s == 1 then return "1 second" end
  if s < 60 then return s .. " seconds" end
  local m = s // 60
  if m == 1 then return "About a minute" end
  if m < 60 then return m .. " minutes" end
  local h = math.floor(s / 3600 + 0.5)
  if h == 1 then return "About an hour" end
  if h < 48 then return h .. " hours" end
  if h < 24 * 7 * 2 then return h // 24 .. " days" end
  if h < 24 * 30 * 2 then return h // (24 * 7) .. " weeks" end
  if h < 24 * 365 * 2 then return h // (24 * 30) .. " months" end
  return h // (24 * 365) .. " years"
end

--- Prints rows under a header, columns padded like docker's tabwriter
-- (tabwriter.NewWriter(out, 10, 1, 3, ' ', 0): three spaces after a cell,
-- every column but the last at least 10 wide).
local function width(s)
  return utf8.len(s) or #s -- characters, so "…" counts as one column
end

function M.table(out, header, rows)
  local widths = {}
  for i, h in ipairs(header) do
    widths[i] = math.max(width(h), 7) -- with the 3 spaces: 10
  end
  for _, r in ipairs(rows) do
    for i, cell in ipairs(r) do
      if width(cell) > widths[i] then
        widths[i] = width(cell)
      end
    end
  end
  local function line(cells)
    local parts = {}
    for i, cell in ipairs(cells) do
      parts[i] = i < #cells
        and cell .. string.rep(" ", widths[i] - width(cell) + 3) or cell
    end
    out:write(table.concat(parts), "\n")
  end
  line(header)
  for _, r in ipairs(rows) do
    line(r)
  end
end

return M
