--- horcrux: every library module behind one require, loaded on first use.
--
--   local hx = require "horcrux"
--   local top = hx.check(hx.engine.top(ref))      -- horcrux.engine
--   return 200, hx.json.array()                   -- horcrux.json
--
-- hx.NAME is require("horcrux.NAME") (hx.sources.cgroup is
-- horcrux.sources.cgroup); hx.check is horcrux.errors.check, the one a
-- route uses most. Nothing is loaded until it is used.
local function loader(prefix)
  return setmetatable({}, { __index = function(t, name)
    if type(name) ~= "string" or not name:match("^[%a_][%w_]*$") then
      return nil
    end
    local path = prefix .. "." .. name
    local ok, mod = pcall(require, path)
    if not ok then
      error(("%s: %s"):format(path, tostring(mod)), 2)
    end
    rawset(t, name, mod)
    return mod
  end })
end

local hx = loader("horcrux")
rawset(hx, "sources", loader("horcrux.sources"))
rawset(hx, "check", require("horcrux.errors").check)
return hx
