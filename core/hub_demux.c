/* hub_demux.c - hub.demux(chunks, tty, timestamps[, max_line]): the log
 * follow's C demultiplexer (logdemux.c) over a list of chunks, for specs
 * and the fuzz target that hold it to horcrux.logs' demux. */
#include "hub.h"

#include "logdemux.h"

#include <lauxlib.h>
#include <string.h>

#define DEMUX_MT "horcrux.hub.demux"

static int demux_line(void *ud, const char *stream, const char *line,
                      size_t len, const char *time, int truncated) {
  lua_State *L = ud;
  lua_createtable(L, 0, 4);
  lua_pushstring(L, stream);
  lua_setfield(L, -2, "stream");
  lua_pushlstring(L, line, len);
  lua_setfield(L, -2, "line");
  if (time != NULL) {
    lua_pushstring(L, time);
    lua_setfield(L, -2, "time");
  }
  if (truncated) {
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "truncated");
  }
  lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
  return 0;
}

static int l_demux_gc(lua_State *L) {
  hx_demux_free(luaL_checkudata(L, 1, DEMUX_MT));
  return 0;
}

static int l_demux(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  int tty = lua_toboolean(L, 2), ts = lua_toboolean(L, 3);
  lua_Integer max = luaL_optinteger(L, 4, (lua_Integer)1 << 40);
  luaL_argcheck(L, max > 0, 4, "max_line must be positive");
  hx_demux *d = lua_newuserdatauv(L, sizeof *d, 0); /* 5: freed by __gc */
  memset(d, 0, sizeof *d);
  luaL_setmetatable(L, DEMUX_MT);
  hx_demux_init(d, tty, ts, (size_t)max, demux_line, L);
  lua_newtable(L); /* 6: the lines */
  int rc = 0;
  for (lua_Integer i = 1; rc == 0; i++) {
    if (lua_rawgeti(L, 1, i) == LUA_TNIL) {
      lua_pop(L, 1);
      break;
    }
    size_t n;
    const char *p = luaL_checklstring(L, -1, &n);
    lua_insert(L, -2); /* the chunk stays below the lines while fed */
    rc = hx_demux_feed(d, p, n);
    lua_remove(L, -2);
  }
  if (rc == 0 || rc == -1)
    rc = hx_demux_finish(d);
  if (rc == -2)
    return luaL_error(L, "hub.demux: out of memory");
  lua_pushboolean(L, d->bad);
  return 2;
}

/* Sets hub.demux in the module table on top of the stack. */
void hx_hub_demux_open(lua_State *L) {
  if (luaL_newmetatable(L, DEMUX_MT)) {
    lua_pushcfunction(L, l_demux_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, l_demux);
  lua_setfield(L, -2, "demux");
}
