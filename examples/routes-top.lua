--- GET /api/containers/:id/top: the processes running in a container, as
-- `docker top` shows them. Serve it beside the shipped routes:
--
--   mkdir -p /etc/horcrux && cp lua/routes.lua /etc/horcrux/
--   cat examples/routes-top.lua >> /etc/horcrux/routes.lua
--   horcrux serve --scripts /etc/horcrux        (or kill -HUP a running one)
--
--   curl -s localhost:8080/api/containers/web/top
--   [{"CMD":"httpd -f -p 8000","PID":"2718","TIME":"00:00:00","UID":"root",...}]
--
-- A bad id is refused (400) before the daemon is asked, an unknown
-- container is 404, a stopped one 409: engine.top's failures propagate
-- through check() with their kind, so the route has no error plumbing.
local engine = require "horcrux.engine"
local json = require "horcrux.json"
local input = require "horcrux.input"
local check = require("horcrux.errors").check

route("GET", "/api/containers/:id/top", { query = { ps_args = input.string(64) } },
  function(req)
    local top = check(engine.top(req.params.id, req.query.ps_args))
    local out = json.array()
    for i, row in ipairs(top.Processes or {}) do
      out[i] = {}
      for j, title in ipairs(top.Titles or {}) do
        out[i][title] = row[j]
      end
    end
    return 200, out
  end)
