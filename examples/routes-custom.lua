--- Custom routes: copy lua/routes.lua to a folder, append what you need from
-- here, and serve it with `horcrux serve --scripts FOLDER` (format.lua and
-- fallback.lua come from the shipped folder unless FOLDER has its own).
local format = require "format"
local metrics = require "horcrux.metrics"
local docker = require "horcrux.docker"

-- CPU % of one container as plain text: `curl localhost:8080/cpu/web`
route("GET", "/cpu/:id", function(req)
  local rec, err, kind = metrics.stats(req.params.id)
  if not rec then
    return format.fail(err, kind)
  end
  if rec.cpu_usage_percent == require("horcrux.json").null then
    return 200, "not running\n"
  end
  return 200, string.format("%.1f\n", rec.cpu_usage_percent)
end)

-- The containers of one image, with the engine's own fields
local client = assert(docker.connect())
route("GET", "/by-image/:image", function(req)
  local list, err, kind = client:containers({ all = true,
    filters = { ancestor = { req.params.image } } })
  if not list then
    return format.fail(err, kind)
  end
  local out = require("horcrux.json").array()
  for _, c in ipairs(list) do
    out[#out + 1] = { id = c.Id:sub(1, 12), name = c.Names[1]:sub(2), status = c.Status }
  end
  return 200, out
end)
