--- POST /api/containers/:id/rename with {"name": "new-name"}: renames a
-- container. A POST changes state, so the server asks for the bearer token
-- before the route runs (401 without, 403 with a wrong one) and refuses it
-- in --read-only mode (403); the route only checks its own input. Append to
-- a copy of lua/routes.lua, as examples/routes-top.lua says.
--
--   curl -s -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
--     -d '{"name": "web-2"}' localhost:8080/api/containers/web/rename
--   {"id":"web","name":"web-2"}
local engine = require "horcrux.engine"
local input = require "horcrux.input"
local manage = require "horcrux.manage"
local check = require("horcrux.errors").check

route("POST", "/api/containers/:id/rename", { query = {} }, function(req)
  local ref = check(input.ref(req.params.id))
  local body = check(input.json_body(req))
  local name = check(input.ref(body.name, "name")) -- else 400 naming it
  check(manage.may("rename", ref, nil, req)) -- policy.lua's manage hook
  check(engine.call("POST", "/containers/{id}/rename", { id = ref },
    { name = name }))
  return 200, { id = ref, name = name }
end)
