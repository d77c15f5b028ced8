--- fallback.lua: the source order -- where container figures and facts come
-- from, first to last. Operators may edit this file; `kill -HUP` the server
-- to apply it (a file that fails to load is refused and the running order
-- stays).
--
-- Every read that more than one source can answer tries them in this order:
-- the container list, one container, its stats, the collector's sampling,
-- logs, the stacks' labelled lists. A source answers with what it can (its
-- capabilities: the README's "source contract"); one that cannot reach its
-- data, or lacks the capability, hands over to the next; an answer about
-- the container itself (no such container, a bad id) is final.
--
-- See examples/ for a cgroup-first order and a simulated demo source.
local docker_api = require "horcrux.sources.docker_api"
local cgroup = require "horcrux.sources.cgroup"
local docker_cli = require "horcrux.sources.docker_cli"

return {
  sources = {
    docker_api, -- the Engine API over its socket: everything
    cgroup,     -- the cgroup files, read directly: figures, no names
    docker_cli, -- `docker stats` / `docker ps`; figures rounded (approximate)
  },
}
