/*
 * sandbox.c - what a script may not do in the server's Lua states (see
 * states.h, hx_sandbox).
 *
 * Operator scripts are trusted code; the instruction budget and the memory
 * cap exist for accidents, and these changes keep accidents (and snippets
 * copied from elsewhere) from switching them off or taking the server down:
 *
 *   debug     only debug.traceback and debug.getinfo: debug.sethook would
 *             switch the budget off, debug.getregistry and the set*
 *             functions would reach the host's own tables;
 *   os.exit   refused with an error, and a log line: the process is the
 *             server;
 *   load, loadfile, dofile, require
 *             text chunks only: a binary chunk (string.dump's output) is
 *             not checked by Lua's loader, and a crafted one crashes the
 *             process.
 */
#include "server.h"
#include "states.h"

#include <lauxlib.h>
#include <string.h>

/* os.exit in the server: refused (an error the route may catch, but the
 * line in the log stays). */
static int refused_exit(lua_State *L) {
  luaL_traceback(L, L,
                 "a script called os.exit: refused (the server keeps "
                 "serving)",
                 1);
  hx_log("warn", "%s", lua_tostring(L, -1));
  return luaL_error(L, "os.exit is refused in the server");
}

/* Calls the function in upvalue 1 (load or loadfile) with this call's
 * arguments, the one at mode_at (the mode) replaced by "t": a mode without
 * 't' is refused as Lua refuses a chunk of the wrong mode. The argument
 * after the mode (env) is passed on only when given: load and loadfile
 * tell an absent env from a nil one. */
static int call_text(lua_State *L, int mode_at) {
  int n = lua_gettop(L);
  const char *mode = luaL_optstring(L, mode_at, "bt");
  if (strchr(mode, 't') == NULL) {
    luaL_pushfail(L);
    lua_pushliteral(L, "binary chunks are not loaded in the server (mode "
                       "must allow 't')");
    return 2;
  }
  int env = n > mode_at;
  lua_settop(L, env ? mode_at + 1 : mode_at - 1); /* absent ones are nil */
  int base = lua_gettop(L);
  lua_pushvalue(L, lua_upvalueindex(1));
  for (int i = 1; i < mode_at; i++)
    lua_pushvalue(L, i);
  lua_pushliteral(L, "t");
  if (env)
    lua_pushvalue(L, mode_at + 1);
  lua_call(L, mode_at + env, LUA_MULTRET);
  return lua_gettop(L) - base;
}

/* load(chunk [, name [, mode [, env]]]) */
static int text_load(lua_State *L) { return call_text(L, 3); }

/* loadfile([name [, mode [, env]]]) */
static int text_loadfile(lua_State *L) { return call_text(L, 2); }

static int dofile_done(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  return lua_gettop(L) - 1;
}

/* dofile(name): Lua's, with a text chunk only. */
static int text_dofile(lua_State *L) {
  const char *name = luaL_optstring(L, 1, NULL);
  lua_settop(L, 1);
  if (luaL_loadfilex(L, name, "t") != LUA_OK)
    return lua_error(L);
  lua_callk(L, 0, LUA_MULTRET, 0, dofile_done);
  return dofile_done(L, 0, 0);
}

/* package.searchers[2], Lua files, as Lua's but for text chunks only:
 * package.searchpath over package.path, then luaL_loadfilex(..., "t").
 * Upvalue: the package table. */
static int search_text(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  lua_getfield(L, lua_upvalueindex(1), "searchpath");
  lua_pushvalue(L, 1);
  lua_getfield(L, lua_upvalueindex(1), "path");
  if (lua_type(L, -1) != LUA_TSTRING)
    return luaL_error(L, "'package.path' must be a string");
  lua_call(L, 2, 2);
  if (lua_isnil(L, -2))
    return 1; /* the message of the paths tried */
  const char *file = lua_tostring(L, -2);
  if (luaL_loadfilex(L, file, "t") != LUA_OK)
    return luaL_error(L, "error loading module '%s' from file '%s':\n\t%s",
                      name, file, lua_tostring(L, -1));
  lua_pushvalue(L, -3); /* the file name: the loader's second argument */
  return 2;
}

/* Replaces field k of the table at idx with a closure of f over the old
 * value. */
static void wrap(lua_State *L, int idx, const char *k, lua_CFunction f) {
  idx = lua_absindex(L, idx);
  lua_getfield(L, idx, k);
  lua_pushcclosure(L, f, 1);
  lua_setfield(L, idx, k);
}

/* debug with traceback and getinfo only, as the global and as
 * package.loaded.debug (what require "debug" gives). */
static void restrict_debug(lua_State *L) {
  static const char *const keep[] = {"traceback", "getinfo"};
  lua_getglobal(L, "debug");
  lua_createtable(L, 0, 2);
  for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++) {
    lua_getfield(L, -2, keep[i]);
    lua_setfield(L, -2, keep[i]);
  }
  lua_pushvalue(L, -1);
  lua_setglobal(L, "debug");
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushvalue(L, -2);
  lua_setfield(L, -2, "debug");
  lua_pop(L, 3);
}

int hx_sandbox(lua_State *L) {
  restrict_debug(L);
  lua_getglobal(L, "os");
  lua_pushcfunction(L, refused_exit);
  lua_setfield(L, -2, "exit");
  lua_pop(L, 1);
  lua_pushglobaltable(L);
  wrap(L, -1, "load", text_load);
  wrap(L, -1, "loadfile", text_loadfile);
  lua_pushcfunction(L, text_dofile);
  lua_setfield(L, -2, "dofile");
  lua_pop(L, 1);
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "searchers");
  lua_pushvalue(L, -2);
  lua_pushcclosure(L, search_text, 1);
  lua_rawseti(L, -2, 2);
  lua_pop(L, 2);
  return 0;
}
