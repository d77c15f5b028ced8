--- fallback.lua: where container figures come from, in order. Operators may
-- edit this file; `kill -HUP` the server to apply it.
--
-- Each source is a table with a `name` and the functions it can answer:
--   list(opts)  -> array of {id, name, status, image}
--   inspect(id) -> {id, name, status, image, created, started}
--   stats(id)   -> the stats record (DESIGN.md, Metrics)
-- each returning its answer or nil, message, kind. The first source that
-- answers wins; one that is unavailable hands over to the next.
local docker_api = require "horcrux.sources.docker_api"

return {
  sources = {
    docker_api,
  },
}
