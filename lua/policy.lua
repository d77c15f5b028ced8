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

  -- Images (/api/images). Registries are host[:port] as in a reference
  -- ("127.0.0.1:5000", "registry.example.com"); "docker.io" is Docker Hub,
  -- the registry of a name without one ("busybox", "team/app"). None by
  -- default: a pull brings code from outside onto this host, a push sends
  -- images (and what is baked into them) out of it, so only the registries
  -- the operator names are reached.
  images = {
    pull = {},   -- registries images may be pulled from; true: any
    push = {},   -- registries images may be pushed to; true: any
    -- Credentials when the request brings no X-Registry-Auth header: a
    -- table by registry, { ["127.0.0.1:5000"] = { username = "u",
    -- password = "p" } } (or { identitytoken = "..." }), or the path of a
    -- docker CLI config.json whose "auths" hold them. Never logged.
    auth = nil,
  },

  -- POST /api/containers/:id/exec runs a command inside a container: a
  -- shell in it for whoever holds the token, with the container's data and
  -- secrets. So a container takes exec only when its creator said so.
  exec = {
    -- false: none; true: any; a label key: the containers carrying it with
    -- "true" or "1" (set when the container is made: labels cannot change
    -- later); or function(container, spec, req) returning nil to allow or
    -- a message to refuse. container: {id, name, image, labels, status}.
    containers = "horcrux.exec",
    -- "privileged": true in the body: every capability, the host's devices.
    privileged = false,
    -- "user" naming someone other than the container's own user: a list
    -- of the users allowed ({ "1000", "app" }), or true for any.
    users = {},
    -- Containers that are themselves privileged or share the host's PID
    -- or network namespace: an exec there is root on the host.
    privileged_containers = false,
    max_timeout = 300,              -- seconds a command may run
    max_output_bytes = 1024 * 1024, -- stdout and stderr, together
  },

  -- POST /api/networks (and the networks of a compose file).
  networks = {
    create = true,
    -- Drivers a network may use: macvlan and ipvlan put containers on the
    -- host's LAN; add them here to allow that. true: any.
    drivers = { "bridge", "overlay" },
    -- Driver options ("options") a network may set; true: any. Others can
    -- bind a network to a host interface or change the host's firewall.
    options = { "com.docker.network.driver.mtu",
      "com.docker.network.bridge.enable_icc" },
  },

  -- POST /api/volumes (and the volumes of a compose file).
  volumes = {
    create = true,
    drivers = { "local" }, -- true: any
    -- The local driver's "type" option: what the host mounts for the
    -- volume. A bind of a host path (o=bind, or type=none with a device)
    -- is checked as create.binds; other types (nfs, ext4 of a /dev
    -- device...) must be listed here. true: any.
    mount_types = { "tmpfs" },
  },

  -- POST /api/stacks: compose files, through Debian's docker-compose (and
  -- `docker stack deploy` when the engine is a swarm manager). Every
  -- service is checked against `create` (and the volumes and networks the
  -- file defines against `volumes` and `networks`) before anything is made.
  compose = {
    tool = "docker-compose", -- path of docker-compose (1.29)
    python = "python3",      -- reads YAML with compose's own PyYAML
    docker = "docker",       -- the CLI, for `docker stack deploy`
    timeout = 120,           -- seconds per command
    swarm = true,            -- a swarm manager deploys a swarm stack
    -- Service keys horcrux does not check that a file may use anyway, e.g.
    -- { "sysctls", "security_opt" }: each gives more than a container
    -- made through POST /api/containers can have.
    allow = {},
    -- Where the checked file of each stack is kept (for update, config,
    -- pull and down); left out: stacks/ under horcrux serve's --state-dir
    -- (/var/lib/horcrux/stacks by default).
    -- state_dir = "/srv/horcrux/stacks",
  },

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
