--- fallback.lua: where container figures come from, in order. Operators may
-- edit this file; `kill -HUP` the server to apply it.
--
-- Each source is a table with a `name` and the functions it can answer:
--   list(opts)  -> array of {id, name, status, image}
--   inspect(id) -> {id, name, status, image, created, started}
--   stats(id)   -> the stats record (DESIGN.md, Metrics)
-- each returning its answer or nil, message, kind. The first source that
-- answers wins; one that is unavailable hands over to the next.
--
-- The collector of `horcrux serve` samples every running container from
-- the first source here that answers; the routes do the same for a
-- container the live view does not hold yet. See examples/ for a
-- cgroup-first policy and a simulated demo source.
local docker_api = require "horcrux.sources.docker_api"
local cgroup = require "horcrux.sources.cgroup"
local docker_cli = require "horcrux.sources.docker_cli"

return {
  sources = {
    docker_api, -- the Engine API over its socket
    cgroup,     -- the container's cgroup files, read directly
    docker_cli, -- `docker stats` / `docker ps`; figures rounded (approximate)
  },
}
