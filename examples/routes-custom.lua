--- Custom routes: copy lua/routes.lua to a folder, append what you need from
-- here, and serve it with `horcrux serve --scripts FOLDER` (format.lua,
-- fallback.lua and policy.lua come from the shipped folder unless FOLDER
-- has its own).
local engine = require "horcrux.engine"
local metrics = require "horcrux.metrics"
local json = require "horcrux.json"
local check = require("horcrux.errors").check

-- CPU % of one container as plain text: `curl localhost:8080/cpu/web`
route("GET", "/cpu/:id", { query = {} }, function(req)
  local rec = check(metrics.stats(req.params.id))
  if rec.cpu_usage_percent == json.null then
    return 200, "not running\n"
  end
  return 200, string.format("%.1f\n", rec.cpu_usage_percent)
end)

-- The containers of one image, with the engine's own fields
route("GET", "/by-image/:image", { query = {} }, function(req)
  local list = check(engine.containers({ all = true,
    filters = { ancestor = { req.params.image } } }))
  local out = json.array()
  for _, c in ipairs(list) do
    out[#out + 1] = { id = c.Id:sub(1, 12), name = c.Names[1]:sub(2),
      status = c.Status }
  end
  return 200, out
end)
