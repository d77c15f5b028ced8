/*
 * embed.c - a C program that uses horcrux's modules from its own lua_State:
 * lists the running containers with their CPU % (two samples through the
 * shared store).
 *
 *   cmake --build build --target example_embed
 *   LUA_CPATH='build/lib/?.so' LUA_PATH='lua/?.lua' build/example_embed
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>

static const char script[] =
    "local metrics = require 'horcrux.metrics'\n"
    "local list = assert(metrics.list({ all = false }))\n"
    "local ids = {}\n"
    "for i, c in ipairs(list) do ids[i] = c.id end\n"
    "local out = {}\n"
    "for i, r in ipairs(metrics.stats_many(ids)) do\n"
    "  if r.record then\n"
    "    out[#out + 1] = string.format('%s %s %.1f%%', ids[i],\n"
    "      list[i].name, tonumber(r.record.cpu_usage_percent) or 0)\n"
    "  end\n"
    "end\n"
    "return table.concat(out, '\\n')\n";

int main(void) {
  lua_State *L = luaL_newstate();
  if (L == NULL)
    return 1;
  luaL_openlibs(L);
  int rc = 0;
  if (luaL_loadstring(L, script) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK) {
    fprintf(stderr, "embed: %s\n", lua_tostring(L, -1));
    rc = 1;
  } else {
    puts(lua_tostring(L, -1));
  }
  lua_close(L);
  return rc;
}
