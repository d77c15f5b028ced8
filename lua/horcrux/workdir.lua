--- horcrux.workdir: a private temporary folder for files a program run by
-- horcrux must read (a compose file, a registry login), removed after.
--
--   workdir.with(fn)          -> what fn(dir) returns; the folder (0700,
--                                under TMPDIR or /tmp) is removed after,
--                                also when fn raises
--   workdir.write(path, text) -> true | nil, message, "io"  (private by
--                                its folder's mode)
--   workdir.make(dir)         -> true | nil, message, kind  (mkdir -p, 0700)
--
-- The folder comes from mktemp(1) and goes with rm(1), both run from an
-- argv (horcrux.proc): Lua has no mkdtemp, and no shell is run.
local proc = require "horcrux.proc"

local M = {}

local function run(argv)
  local r, err, kind = proc.run(argv, { timeout = 10 })
  if not r then
    return nil, err, kind
  end
  if r.status ~= 0 then
    return nil, ("%s: %s"):format(argv[1], (r.stderr:gsub("%s+$", ""))),
      "io"
  end
  return r.stdout
end

local function tmp_root()
  local t = os.getenv("TMPDIR")
  t = t and t:match("^/[%w._/-]*$") and t:gsub("/+$", "")
  if t and t ~= "" then
    return t
  end
  return "/tmp"
end

--- Removes dir and what is in it, staying on its file system.
function M.remove(dir)
  if type(dir) == "string" and dir:match("^/.+/horcrux%-[%w]+%.[%w]+$") then
    run({ "rm", "-rf", "--one-file-system", "--", dir })
  end
end

function M.with(fn)
  local out, err, kind = run({ "mktemp", "-d",
    tmp_root() .. "/horcrux-work.XXXXXXXX" })
  if not out then
    return nil, "cannot make a temporary folder: " .. tostring(err), kind
  end
  local dir = out:gsub("%s+$", "")
  local res = table.pack(pcall(fn, dir))
  M.remove(dir)
  if not res[1] then
    error(res[2], 0)
  end
  return table.unpack(res, 2, res.n)
end

function M.write(path, text)
  local f, err = io.open(path, "wb")
  if not f then
    return nil, "cannot write " .. path .. ": " .. tostring(err), "io"
  end
  local ok, werr = f:write(text)
  f:close()
  if not ok then
    return nil, "cannot write " .. path .. ": " .. tostring(werr), "io"
  end
  return true
end

function M.make(dir)
  local ok, err, kind = run({ "mkdir", "-p", "-m", "0700", "--", dir })
  if not ok then
    return nil, err, kind
  end
  return true
end

return M
