--- tests/registry.lua: a real image registry for a spec (Debian's
-- docker-registry, the CNCF distribution), on a loopback port, its config,
-- data and log in a folder of its own, stopped by its pid.
--
--   local registry = require "registry"
--   local reg = registry.start{ user = "u", password = "p" } -- auth optional
--   -- reg.host: "127.0.0.1:PORT", reg.log: its log file
--   finally(function() reg:stop() end)
--   reg:requests()   -- the request lines it logged ("GET /v2/ ...")
--
-- The engine treats 127.0.0.0/8 registries as insecure (plain HTTP), so no
-- certificate is needed. With user/password the registry asks for basic
-- auth (an htpasswd file, bcrypt made by python3's crypt, at its lowest
-- cost: the registry checks it on every request of a push).
local proc = require "horcrux.proc"
local clock = require "horcrux.clock"

local M = {}
local Registry = {}
Registry.__index = Registry

M.BIN = "/usr/bin/docker-registry"

local function run(argv, opts)
  local r, err = proc.run(argv, opts or { timeout = 30 })
  if not r then
    error(table.concat(argv, " ") .. ": " .. tostring(err), 3)
  end
  return r
end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

-- a file's text, "" when it cannot be read
local read = require("http").read_file

function M.available()
  if not proc.which(M.BIN) then
    return false, M.BIN .. " is not installed (Debian's docker-registry)"
  end
  return true
end

local CONFIG = [[
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: %s/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:%d
  secret: horcrux-test-secret
]]

local AUTH = [[
auth:
  htpasswd:
    realm: horcrux-test
    path: %s/htpasswd
]]

local function htpasswd(dir, user, password)
  local r = run({ "python3", "-W", "ignore", "-c",
    "import crypt, sys; print(sys.argv[1] + ':' + crypt.crypt(sys.argv[2], "
    .. "crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))", user, password })
  assert(r.status == 0, "htpasswd: " .. r.stderr)
  write(dir .. "/htpasswd", r.stdout)
end

-- Whether it answers GET /v2/ (200, or 401 with auth).
local function answers(host)
  local r = proc.run({ "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
    "--max-time", "2", "http://" .. host .. "/v2/" }, { timeout = 5 })
  return r and (r.stdout == "200" or r.stdout == "401")
end

function Registry:spawn(port)
  self.port, self.host = port, "127.0.0.1:" .. port
  local conf = CONFIG:format(self.dir, port)
  if self.user then
    conf = conf .. AUTH:format(self.dir)
  end
  write(self.dir .. "/config.yml", conf)
  local p = assert(proc.spawn({ M.BIN, "serve", self.dir .. "/config.yml" },
    { stdout = self.log, stderr = self.log }))
  self.proc, self.pid = p, p:pid()
  local deadline = clock.mono_ns() + 15e9
  while clock.mono_ns() < deadline do
    if answers(self.host) then
      return true
    end
    if p:wait(0) then
      self.proc = nil
      return false -- the port was taken: another try
    end
    clock.sleep(0.1)
  end
  error("docker-registry did not answer within 15 s:\n" .. read(self.log))
end

--- Starts a registry; opts: user, password (basic auth).
function M.start(opts)
  opts = opts or {}
  local dir = run({ "mktemp", "-d", "/tmp/hxtest-registry.XXXXXX" }).stdout
    :gsub("%s+$", "")
  local reg = setmetatable({ dir = dir, log = dir .. "/log",
    user = opts.user, password = opts.password }, Registry)
  if reg.user then
    htpasswd(dir, reg.user, reg.password)
  end
  for _ = 1, 5 do
    if reg:spawn(math.random(20000, 60000)) then
      return reg
    end
  end
  reg:stop()
  error("docker-registry: no free port in 5 tries:\n" .. read(reg.log))
end

--- The request lines of its access log ("GET /v2/ HTTP/1.1" ...).
function Registry:requests()
  local out = {}
  for line in read(self.log):gmatch("[^\n]+") do
    local req = line:match('"(%u+ /[^"]*)"')
    if req then
      out[#out + 1] = req
    end
  end
  return out
end

function Registry:logtext()
  return read(self.log)
end

--- Stops it (by its pid) and removes its folder. Safe to call twice.
function Registry:stop()
  if self.proc then
    self.proc:kill("TERM")
    if not self.proc:wait(10) then
      self.proc:kill("KILL")
      self.proc:wait(5)
    end
    self.proc = nil
  end
  if self.dir then
    run({ "rm", "-rf", "--one-file-system", self.dir })
    self.dir = nil
  end
end

return M
