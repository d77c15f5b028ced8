--- policy.lua: what the management routes may do. Operators may edit this
-- file; `kill -HUP` the server to apply it (a file that fails to load, or
-- names a setting that does not exist, is refused and the running version
-- stays).
--
-- POST /api/containers is checked field by field against `create`. A
-- request that asks for something refused here is answered 403 with a
-- message naming the field, and nothing is sent to the daemon. The fields
-- the body can carry are listed in lua/horcrux/manage.lua.
--
-- By default a container may not get root on the host: no privileged
-- mode, no host paths mounted in, no host network or PID namespace, no
-- added capabilities, no host devices. To allow one, change its line --
-- e.g. `privileged = true`, or `binds = { "/srv/data" }` to let bind mounts
-- of /srv/data and below in (and nothing else).
return {
  create = {
    -- "privileged": true -- every capability and device of the host.
    privileged = false,
    -- "binds": [{"source": "/host/path", ...}] -- host paths mounted in.
    -- false: none; true: any path; a list: those paths and what is below
    -- them ({ "/srv/data" } allows /srv/data and /srv/data/x, not /srv).
    -- A source is compared as it resolves on the host (symlinks followed),
    -- and that resolved path is what the daemon mounts: a link planted in
    -- /srv/data cannot lead outside it.
    binds = false,
    -- "volumes": [{"name": ..., ...}] -- named volumes (Docker's own
    -- storage, not the host's files). A volume that is a bind of a host
    -- path (the local driver with o=bind) is checked as that bind.
    volumes = true,
    -- "network": "host" -- the host's network stack.
    host_network = false,
    -- "network": "container:<id>" -- another container's network stack.
    container_network = false,
    -- Networks "network" may name besides host and container:<id>: nil for
    -- any (but macvlan and ipvlan ones, which put the container on the
    -- host's LAN: list those to allow them), or a list such as
    -- { "bridge", "none", "backend" }.
    networks = nil,
    -- "pid_mode": "host" -- sees and signals every process of the host.
    host_pid = false,
    -- "pid_mode": "container:<id>" -- another container's processes.
    container_pid = false,
    -- "cap_add": capabilities that may be added, e.g. { "NET_ADMIN" };
    -- true for any (ALL included).
    cap_add = {},
    -- "devices": host devices (/dev/...) given to the container.
    devices = false,
    -- Images that may be run: nil for any local image, or a list of Lua
    -- patterns matched against the whole reference, e.g.
    -- { "^myorg/", "^horcrux%-test:" }.
    images = nil,
    -- Upper bounds: nil for none.
    max_memory_bytes = nil,
    max_cpus = nil,
    -- Where a port is published when the body gives no host_ip: loopback,
    -- so a published port is not reachable from other hosts unless asked.
    default_host_ip = "127.0.0.1",
    -- A "host_ip" beyond loopback (0.0.0.0, a LAN address) in the body.
    public_ports = false,
    -- A last word on what passed the rules above: function(spec, req)
    -- returning nil to allow, or field, message to refuse (403). spec is
    -- the validated body (see manage.lua), req the HTTP request.
    check = nil,
  },

  -- Which containers the lifecycle routes (start, stop, restart, kill,
  -- pause, unpause, remove, and the stacks' start/stop/restart) may act
  -- on: nil for any, or function(action, container, req) returning nil to
  -- allow, or a message to refuse (403). container is as the daemon knows
  -- it, whatever the request called it (a name, an id, an id prefix):
  -- {id, name, image, labels, status}.
  manage = nil,

  -- When the Engine API cannot be reached (kind "unavailable"), run the
  -- lifecycle through the docker CLI instead (never through a shell). Off:
  -- the CLI may talk to another engine than the one horcrux watches, and
  -- each command holds a worker thread while it runs (up to cli.timeout).
  cli_fallback = false,
  cli = {
    docker = "docker", -- path of the CLI
    timeout = 30,      -- seconds per command
    env = nil,         -- its environment ({ "K=V", ... }); nil: horcrux's
  },
}
