--- horcrux.tables: small helpers on tables, written once.
--
--   tables.sorted_keys(t) -> the keys of t, sorted (strings: byte order)
local M = {}

function M.sorted_keys(t)
  local keys = {}
  for k in pairs(t) do
    keys[#keys + 1] = k
  end
  table.sort(keys, function(a, b)
    return tostring(a) < tostring(b)
  end)
  return keys
end

return M
