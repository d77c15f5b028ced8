-- The shape of horcrux.docker's source: two files by concern, each under
-- 1,200 lines with every function under 80, one exported symbol, and its
-- second file declared in core/modules.def (the one module list).
local FILES = { "core/docker.c", "core/docker_transfer.c" }
local build = os.getenv("HORCRUX_BUILD") or "build"

local function read_lines(path)
  local lines = {}
  for line in io.lines(path) do
    lines[#lines + 1] = line
  end
  return lines
end

-- Top-level functions of a clang-formatted C file. A declaration starts
-- at a line that begins with an identifier in column 0; it is a function
-- when a line ending in "{" follows before any ";" and the declaration has
-- a "(" but no "=" (an initializer) and is no type. Its body closes with
-- "}" alone in column 0. The length counts the signature lines too.
local function functions(lines)
  local found, open, start = {}, false, nil
  for i, line in ipairs(lines) do
    if open then
      if line:find("^}%s*$") then
        local head = table.concat(lines, " ", start, start + 2 < i and start + 2 or i)
        found[#found + 1] = { name = head:match("([%w_]+)%s*%(") or "?",
          lines = i - start + 1, at = start }
        open, start = false, nil
      end
    else
      if line:find("^[%a_]") then
        start = start or i
      end
      if start and line:find("{%s*$") then
        local head = table.concat(lines, " ", start, i)
        open = head:find("%(") and not head:find("=") and
          not head:find("^typedef") and not head:find("^struct") and
          not head:find("^enum") and not head:find("^union")
        if not open then
          start = nil
        end
      elseif line:find(";%s*$") then
        start = nil
      end
    end
  end
  return found
end

describe("horcrux.docker source", function()
  it("is two files, each under 1,200 lines, every function under 80", function()
    local seen = 0
    for _, path in ipairs(FILES) do
      local lines = read_lines(path)
      assert.is_true(#lines < 1200, path .. " has " .. #lines .. " lines")
      local fns = functions(lines)
      assert.is_true(#fns > 10, path .. ": the function scan found " .. #fns)
      for _, f in ipairs(fns) do
        assert.is_true(f.lines < 80, string.format("%s:%d: %s is %d lines",
          path, f.at, f.name, f.lines))
      end
      seen = seen + #fns
    end
    assert.is_true(seen > 60, "only " .. seen .. " functions found")
  end)

  it("the scan measures what it should", function()
    local long = { "static int f(lua_State *L,", "                int x) {" }
    for i = 1, 100 do long[#long + 1] = "  x = x + " .. i .. ";" end
    long[#long + 1] = "}"
    local fns = functions(long)
    assert.are.equal(1, #fns)
    assert.are.equal(103, fns[1].lines)
    assert.are.equal("f", fns[1].name)
  end)

  it("exports luaopen_horcrux_docker only", function()
    local p = assert(io.popen("nm -D --defined-only " .. build ..
      "/lib/horcrux/docker.so"))
    local exported = {}
    for line in p:lines() do
      local kind, sym = line:match("^%x+ (%a) (%S+)$")
      if kind and kind:match("[TDBR]") then
        exported[#exported + 1] = sym
      end
    end
    p:close()
    assert.are.same({ "luaopen_horcrux_docker" }, exported)
  end)

  it("core/modules.def names the second file; CMake builds it into the module", function()
    local def = table.concat(read_lines("core/modules.def"), "\n")
    assert.matches("\nHX_MODULE%(docker%)\n", def)
    assert.matches("\nHX_MODULE_FILE%(docker, docker_transfer%)\n", def)
    -- The module links without the transfer file's symbols missing: a
    -- method defined there answers.
    local docker = require "horcrux.docker"
    local c = assert(docker.connect { host = "unix:///nonexistent/x.sock",
      api_version = "1.41" })
    assert.are.same({}, c:stats_many {})
    c:close()
  end)
end)
