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
-- The cgroup files come first: they are what the daemon itself reads, so
-- the figures are the same, and reading them costs the daemon nothing and
-- horcrux microseconds a container (at 500 containers the Engine API first
-- kept the view 7.6 s old and cost the daemon a fifth of a core). What they
-- cannot say -- names of containers the collector has not seen, stopped
-- containers, labels, logs -- is a partial answer or none, and the Engine
-- API answers it. See examples/ for an API-first order and a simulated
-- demo source.
local cgroup = require "horcrux.sources.cgroup"
local docker_api = require "horcrux.sources.docker_api"
local docker_cli = require "horcrux.sources.docker_cli"

return {
  sources = {
    cgroup,     -- the cgroup files, read directly (in C): figures, no names
    docker_api, -- the Engine API over its socket: everything
    docker_cli, -- `docker stats` / `docker ps`; figures rounded (approximate)
  },
}
