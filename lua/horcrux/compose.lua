--- horcrux.compose: stacks made from compose files (POST /api/stacks), by
-- the real tools -- Debian's docker-compose 1.29, and `docker stack deploy`
-- when the engine is a swarm manager -- under policy.lua.
--
--   compose.FIELDS                  the body: {name, compose}
--   compose.LOGS_QUERY              GET .../logs's query checkers
--   compose.name(s)                 -> s | nil, message, "bad_request"
--   compose.deploy(spec [, opts])   -> {name, mode, created, services,
--                                       output} | nil, message, kind, field
--   compose.down(name [, opts])     -> {name, mode, removed, volumes}
--   compose.config(name [, opts])   -> {name, mode, file}
--   compose.pull(name [, opts])     -> {name, images = [{image, status |
--                                       error}]}
--   compose.logs(name, query [, opts]) -> [{service, container, stream,
--                                       line[, time]}]
--   opts: policy, req (policy.lua's hooks see it)
--
-- deploy, in order, in a private temporary folder (the project folder: no
-- .env or relative path of anyone else's is read): the text is read as
-- YAML (by python3 and PyYAML, the parser docker-compose itself uses), the
-- parts that would make the tool read host files are refused
-- (compose.check.raw); `docker-compose config` normalises it (extends,
-- anchors, short forms; variables from an environment holding nothing but
-- PATH and the engine's address); every service, network and volume is
-- checked (compose.check.file) and the file rewritten where the rules say;
-- that checked file -- JSON, which both tools read as YAML -- is what is
-- deployed (`docker-compose up -d --no-build --remove-orphans`, or `docker
-- stack deploy --prune --resolve-image never`) and what is kept in
-- compose.state_dir (else stacks/ under --state-dir) for later updates,
-- config, pull and down. A refused file makes nothing. No shell is run:
-- every program gets an argv.
--
-- A stack horcrux did not deploy (no kept file) is not taken down here:
-- 404.
local json = require "horcrux.json"
local null = json.null
local proc = require "horcrux.proc"
local engine = require "horcrux.engine"
local config = require "horcrux.config"
local shared = require "horcrux.shared"
local workdir = require "horcrux.workdir"
local fields = require "horcrux.fields"
local input = require "horcrux.input"
local verdict = require "horcrux.manage.policy"
local check = require "horcrux.compose.check"

local M = {}

local MAX_OUTPUT = 4 * 1024 * 1024
local PROJECT = "com.docker.compose.project"
local NAMESPACE = "com.docker.stack.namespace"

M.FIELDS = { name = fields.string(63), compose = fields.text(1024 * 1024) }

-- YAML on stdin -> JSON on stdout, with the library docker-compose uses;
-- -I: no environment variable or user site changes what python runs.
local YAML_TO_JSON = table.concat({
  "import sys, json, yaml",
  "try:",
  "    v = yaml.safe_load(sys.stdin)",
  "except yaml.YAMLError as e:",
  "    sys.stderr.write(str(e)); sys.exit(2)",
  "json.dump(v, sys.stdout, default=str)",
}, "\n")

--- A project name as the tools keep it unchanged (docker-compose lower-
-- cases and drops what it does not take; a swarm stack takes no dot).
function M.name(s)
  if type(s) == "string" and #s <= 63 and s:match("^[a-z0-9][a-z0-9_-]*$") then
    return s
  end
  return nil, ("invalid stack name %q: lower-case letters, digits, _ and - "
    .. "(starting with a letter or digit, at most 63)"):format(
      type(s) == "string" and s:sub(1, 80) or tostring(s)), "bad_request",
    "name"
end

-- ---- running the tools -----------------------------------------------------

-- The environment of the tools: what reaches the engine, nothing else (a
-- compose file's ${VAR} must not read horcrux's own environment).
local function tool_env(home)
  local env = { "HOME=" .. home, "LANG=C.UTF-8" }
  for _, k in ipairs({ "PATH", "DOCKER_HOST", "DOCKER_TLS_VERIFY",
    "DOCKER_CERT_PATH", "DOCKER_API_VERSION" }) do
    local v = os.getenv(k)
    if v then
      env[#env + 1] = k .. "=" .. v
    end
  end
  return env
end

-- The lines of a program's output, CRs and blank lines dropped, at most
-- `max` (the last ones when from_end).
local function lines_of(text, max, from_end)
  local out = json.array()
  for line in text:gmatch("[^\r\n]+") do
    line = line:match("^%s*(.-)%s*$")
    if line ~= "" then
      out[#out + 1] = line
    end
  end
  if #out > max then
    local first = from_end and #out - max + 1 or 1
    out = json.array(table.move(out, first, first + max - 1, 1, {}))
  end
  return out
end

-- The first lines of a failed program's stderr (the reason, not pages).
local function reason(text)
  return table.concat(lines_of(text, 6), "; ")
end

-- Runs argv: its stdout and stderr, or nil, message, kind.
local function run(argv, p, home, stdin)
  local r, err, kind = proc.run(argv, { timeout = p.timeout,
    max_output = MAX_OUTPUT, env = tool_env(home), cwd = home,
    stdin = stdin })
  if not r then
    if kind == "not_found" then
      return nil, ("%s is not installed (%s; policy.lua: compose)"):format(
        argv[1], err), "unsupported"
    end
    return nil, ("%s: %s"):format(argv[1], err), kind
  end
  if r.timed_out then
    return nil, ("%s %s: no end after %g s (policy.lua: compose.timeout)")
      :format(argv[1], argv[#argv], p.timeout), "timeout"
  end
  if r.status ~= 0 or r.truncated then
    local why = reason(r.stderr)
    local kind2 = why:find("[Nn]o such") and "not_found" or "bad_request"
    return nil, ("%s: %s"):format(argv[1], why ~= "" and why
      or ("exit status " .. tostring(r.status))), kind2
  end
  return r.stdout, r.stderr
end

local function yaml(text, p, home)
  local out, err, kind = run({ p.python, "-I", "-c", YAML_TO_JSON }, p, home,
    text)
  if not out then
    return nil, "compose: not YAML: " .. err:gsub("^[^:]*: ", ""),
      kind == "bad_request" and "bad_request" or kind
  end
  local v = json.decode(out)
  if type(v) ~= "table" then
    return nil, "compose: the file is not a mapping", "bad_request"
  end
  return v
end

-- Whether the engine is a swarm manager (and policy.lua lets stacks go
-- there).
local function swarm_mode(p)
  if not p.swarm then
    return false
  end
  local info, err, kind = engine.info()
  if not info then
    return nil, err, kind
  end
  local s = type(info.Swarm) == "table" and info.Swarm or {}
  return s.LocalNodeState == "active" and s.ControlAvailable == true
end

-- ---- kept files ---------------------------------------------------------------

-- Where the stacks' files are kept: compose.state_dir, else stacks/ under
-- the server's --state-dir.
local function stacks_dir(p)
  return p.state_dir or (config.state_dir() .. "/stacks")
end

local function kept_path(p, name)
  return stacks_dir(p) .. "/" .. name .. ".json"
end

local function kept(p, name)
  local f = io.open(kept_path(p, name), "r")
  if not f then
    return nil, ("no stack %q deployed through horcrux (no file in %s)")
      :format(name, stacks_dir(p)), "not_found"
  end
  local text = f:read("a")
  f:close()
  local file = json.decode(text)
  if type(file) ~= "table" then
    return nil, "compose: the kept file of " .. name .. " is damaged", "io"
  end
  return file, kept_path(p, name)
end

-- fn(file, path, p) with the kept file of stack `name`, its path and the
-- compose settings; nil, message, kind when there is none. What down,
-- config, pull and logs start from.
local function with_stored(name, opts, fn)
  local p = verdict.section((opts or {}).policy or config.policy(), "compose")
  local file, path, kind = kept(p, name)
  if not file then
    return nil, path, kind
  end
  return fn(file, path, p)
end

local function keep(p, name, text)
  local ok, err, kind = workdir.make(stacks_dir(p))
  if not ok then
    return nil, err, kind
  end
  local tmp = kept_path(p, name) .. ".new"
  ok, err, kind = workdir.write(tmp, text)
  if not ok then
    return nil, err, kind
  end
  local renamed, rerr = os.rename(tmp, kept_path(p, name))
  if not renamed then
    return nil, "compose: " .. tostring(rerr), "io"
  end
  return true
end

-- ---- deploy -----------------------------------------------------------------

-- One deploy or down of a stack at a time (every worker): fn() under a
-- lock in horcrux.shared.
local function locked(name, p, fn)
  local key = "horcrux.stack:" .. name
  local ok = shared.add(key, true, p.timeout * 3 + 30)
  if not ok then
    return nil, ("stack %s: another deploy or down is under way"):format(name),
      "conflict"
  end
  local res = table.pack(pcall(fn))
  shared.delete(key)
  if not res[1] then
    error(res[2], 0)
  end
  return table.unpack(res, 2, res.n)
end

-- The file read, checked and written to dir/stack.json: the checked file,
-- or nil, message, kind, field.
local function prepare(spec, ctx, p, dir)
  local raw, err, kind, field = yaml(spec.compose, p, dir)
  if not raw then
    return nil, err, kind
  end
  local ok
  ok, err, kind, field = check.raw(raw, ctx.policy)
  if not ok then
    return nil, err, kind, field
  end
  ok, err, kind = workdir.write(dir .. "/compose.yml", spec.compose)
  if not ok then
    return nil, err, kind
  end
  local normal
  normal, err, kind = run({ p.tool, "--project-directory", dir, "-f",
    dir .. "/compose.yml", "-p", spec.name, "config" }, p, dir)
  if not normal then
    return nil, err, kind
  end
  local file
  file, err, kind = yaml(normal, p, dir)
  if not file then
    return nil, err, kind
  end
  file, err, kind, field = check.file(file, ctx)
  if not file then
    return nil, err, kind, field
  end
  file["x-horcrux"] = { mode = ctx.swarm and "swarm" or "compose" }
  return file
end

local function service_names(file)
  local out = json.array()
  for _, k in ipairs(require("horcrux.tables").sorted_keys(file.services)) do
    out[#out + 1] = k
  end
  return out
end

local function up(spec, ctx, p, dir, path)
  if ctx.swarm then
    return run({ p.docker, "stack", "deploy", "--compose-file", path,
      "--prune", "--resolve-image", "never", spec.name }, p, dir)
  end
  return run({ p.tool, "--project-directory", dir, "-f", path, "-p",
    spec.name, "up", "-d", "--no-build", "--remove-orphans" }, p, dir)
end

function M.deploy(spec, opts)
  opts = opts or {}
  local policy = opts.policy or config.policy()
  local p = verdict.section(policy, "compose")
  local name, err, kind, field = M.name(spec.name)
  if not name then
    return nil, err, kind, field
  end
  local swarm
  swarm, err, kind = swarm_mode(p)
  if swarm == nil then
    return nil, err, kind
  end
  local ctx = { name = name, policy = policy, req = opts.req, swarm = swarm }
  return locked(name, p, function()
    local existed = kept(p, name) ~= nil
    return workdir.with(function(dir)
      local file, e, k, f = prepare(spec, ctx, p, dir)
      if not file then
        return nil, e, k, f
      end
      local text = json.encode(file)
      local path = dir .. "/stack.json"
      local ok, out, errout
      ok, e, k = workdir.write(path, text)
      if not ok then
        return nil, e, k
      end
      out, errout, k = up(spec, ctx, p, dir, path)
      if not out then
        return nil, errout, k
      end
      ok, e, k = keep(p, name, text)
      if not ok then
        return nil, e, k
      end
      return { name = name, mode = swarm and "swarm" or "compose",
        created = not existed, services = service_names(file),
        output = lines_of(out .. "\n" .. (errout or ""), 100, true) }
    end)
  end)
end

-- ---- down, config, pull, logs ---------------------------------------------

local function mode_of(file)
  local x = type(file["x-horcrux"]) == "table" and file["x-horcrux"] or {}
  return x.mode == "swarm" and "swarm" or "compose"
end

-- Calls done() every 0.2 s until it is true, for up to 20 s: what the
-- engine refuses while a removed stack's tasks are still going. Whether
-- it ever was.
local function within_20s(done)
  for _ = 1, 100 do
    if done() then
      return true
    end
    require("horcrux.clock").sleep(0.2)
  end
  return false
end

-- A swarm stack's volumes (never removed by `docker stack rm`): removed
-- once its containers are gone.
local function swarm_volumes(name)
  local list = engine.volumes({ label = json.array({ NAMESPACE .. "=" .. name }) })
  local removed = json.array()
  for _, v in ipairs(type(list) == "table" and list.Volumes or {}) do
    if within_20s(function()
          local ok, _, kind = engine.volume_remove(v.Name)
          return ok or kind == "not_found"
        end) then
      removed[#removed + 1] = v.Name
    end
  end
  return removed
end

-- `docker stack rm`: the CLI (20.10) removes the services, then at once
-- the networks, which the engine refuses while a task of a removed service
-- is still attached ("is in use by task"); run again, it removes what is
-- left.
local function swarm_rm(name, p, dir)
  local out, err, k
  within_20s(function()
    out, err, k = run({ p.docker, "stack", "rm", name }, p, dir)
    return out or not tostring(err):find("is in use by task", 1, true)
  end)
  return out, err, k
end

--- Takes a stack horcrux deployed down: its containers, networks, and its
-- volumes only when opts.volumes.
function M.down(name, opts)
  local volumes = (opts or {}).volumes == true
  return with_stored(name, opts, function(file, path, p)
    local mode = mode_of(file)
    return locked(name, p, function()
      return workdir.with(function(dir)
        local out, err, k
        if mode == "swarm" then
          out, err, k = swarm_rm(name, p, dir)
        else
          out, err, k = run({ p.tool, "--project-directory", dir, "-f", path,
            "-p", name, "down", "--remove-orphans",
            volumes and "--volumes" or nil }, p, dir)
        end
        if not out then
          return nil, err, k
        end
        local vols = volumes and mode == "swarm" and swarm_volumes(name)
          or null
        os.remove(path)
        return { name = name, mode = mode, removed = true,
          volumes = volumes, removed_volumes = vols }
      end)
    end)
  end)
end

function M.config(name, opts)
  return with_stored(name, opts, function(file)
    return { name = name, mode = mode_of(file), file = file }
  end)
end

--- Pulls the images of a stack horcrux deployed, each from a registry
-- policy.lua allows; the results, or when some failed a failure carrying
-- them.
function M.pull(name, opts)
  return with_stored(name, opts, function(file)
    local seen, results, first = {}, json.array(), nil
    for _, svc in ipairs(service_names(file)) do
      local image = file.services[svc].image
      if not seen[image] then
        seen[image] = true
        local r, e, k = require("horcrux.images").pull(image, opts)
        results[#results + 1] = r and { image = image, status = r.status }
          or { image = image, error = { code = k, message = e } }
        first = first or (not r and { e, k })
      end
    end
    if first then
      return nil, ("pull of stack %s: %s"):format(name, first[1]), first[2],
        { images = results }
    end
    return { name = name, images = results }
  end)
end

M.LOGS_QUERY = {
  tail = require("horcrux.logs").QUERY.tail,
  since = require("horcrux.logs").QUERY.since,
  timestamps = input.boolean,
}

-- The containers of a deployed stack (on this node, for a swarm), each
-- with its service.
local function members(name, swarm)
  local label = (swarm and NAMESPACE or PROJECT) .. "=" .. name
  local list, err, kind = engine.containers({ all = true,
    filters = { label = json.array({ label }) } })
  if not list then
    return nil, err, kind
  end
  local out = {}
  for i, c in ipairs(list) do
    local labels = type(c.Labels) == "table" and c.Labels or {}
    out[i] = { id = c.Id,
      service = labels[swarm and "com.docker.swarm.service.name"
        or "com.docker.compose.service"] or null,
      name = type(c.Names) == "table" and tostring(c.Names[1] or "")
        :gsub("^/", "") or c.Id }
  end
  return out
end

--- The logs of a deployed stack's containers (on this node, for a
-- swarm), each line tagged with its service and container; oldest first
-- per container, containers in service order.
function M.logs(name, q, opts)
  return with_stored(name, opts, function(file)
    local list, err, kind = members(name, mode_of(file) == "swarm")
    if not list then
      return nil, err, kind
    end
    local logs = require "horcrux.logs"
    local lopts = assert(logs.options({ tail = q.tail, since = q.since,
      timestamps = q.timestamps }))
    local out = json.array()
    for _, c in ipairs(list) do
      for _, l in ipairs(logs.fetch(c.id, lopts) or {}) do
        l.service, l.container = c.service, c.name
        out[#out + 1] = l
      end
    end
    return out
  end)
end

return M
