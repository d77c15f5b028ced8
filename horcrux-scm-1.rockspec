-- horcrux's Lua modules as a rock: `luarocks make` (in this folder) builds
-- the C modules (horcrux.json, horcrux.docker, horcrux.cgroup, ... as
-- core/modules.def lists them) with CMake and installs them with the Lua
-- library modules (lua/horcrux/) into the tree. The horcrux program and its
-- operator scripts are not part of the rock: `cmake --install` puts those.
--
--   luarocks --lua-version 5.4 make [--tree DIR]
--
-- It sits at the top of the repository, beside CMakeLists.txt, because
-- `luarocks make` looks for the rockspec in the folder it runs in and
-- builds that folder.
rockspec_format = "3.0"
package = "horcrux"
version = "scm-1"
source = {
  -- `luarocks make` builds the checkout it runs in; this is where a
  -- published rock would fetch it from.
  url = "git+https://example.invalid/horcrux.git",
}
description = {
  summary = "A Docker Engine client, cgroup readers and container metrics for Lua 5.4",
  detailed = [[
horcrux.docker (the Engine API over libcurl), horcrux.cgroup (cgroup v1/v2
readers), horcrux.cpu (CPU % as docker stats computes it), horcrux.json,
horcrux.proc, horcrux.view, horcrux.shared, and the Lua library modules
built on them.
]],
}
dependencies = {
  "lua >= 5.4, < 5.5",
}
external_dependencies = {
  -- found by CMake through pkg-config: libcurl, libcjson, libcrypto
  -- (Debian: libcurl4-openssl-dev libcjson-dev libssl-dev)
}
build = {
  type = "cmake",
  variables = {
    CMAKE_BUILD_TYPE = "Release",
    CMAKE_INSTALL_PREFIX = "$(PREFIX)",
    HORCRUX_HOST = "OFF",
    HORCRUX_LUA_CDIR = "$(LIBDIR)",
    HORCRUX_LUA_LDIR = "$(LUADIR)",
  },
}
