/*
 * errors.c - horcrux.errors: structured failures a route can let propagate.
 *
 *   errors.status(kind)                -> HTTP status (500 for an unknown kind)
 *   errors.KINDS                       {kind = status, ...} (a copy)
 *   errors.new(kind, message [, extra]) -> failure
 *   errors.raise(kind, message [, extra])      raises a failure
 *   errors.check(v, ...)               -> v, ... when v is neither nil nor
 *                                        false; else raises the failure of
 *                                        `nil, message, kind [, extra]`
 *   errors.is(v)                       -> true for a failure
 *   errors.body(kind, message [, extra]) or errors.body(failure)
 *                                      -> {error = {code, message, ...}}
 *   errors.answer(kind, message [, extra]) or errors.answer(failure)
 *                                      -> status, body [, headers]: a
 *                                        route's return
 *
 * A failure is a table {kind =, message =, [field =, tried =, ...]} with
 * the metatable errors.failure_mt (its __tostring is "message (kind)").
 * `extra` is a table whose fields go into the failure and the error body
 * ({field = "image"}, {tried = {...}}); a string extra is taken as the
 * field a message is about, as `input.query` returns it. An extra's
 * `headers` table ({["Retry-After"] = "5"}) is not in the body: answer
 * gives it as the answer's headers.
 *
 * The dispatcher of `horcrux serve` answers a failure raised by a route
 * with errors.answer(); any other error is a bug (500 with a request id).
 * The kinds and their statuses are kinds.c's table: the host's own
 * refusals use the same one.
 */
#include "aux.h"
#include "kinds.h"

#include <string.h>

#define FAILURE_MT "horcrux.failure"

static const char *kind_arg(lua_State *L, int idx) {
  const char *k = luaL_optstring(L, idx, "internal");
  return k[0] != '\0' ? k : "internal";
}

static int l_status(lua_State *L) {
  lua_pushinteger(L, hx_kind_status(luaL_optstring(L, 1, NULL)));
  return 1;
}

/* Copies the fields of the extra at idx into the table on top: a table's
 * string keys, a string as the field. Anything else (the HTTP status that
 * horcrux.engine's calls give as a 4th value, nil) adds nothing. */
static void add_extra(lua_State *L, int idx) {
  int t = lua_type(L, idx);
  if (t == LUA_TSTRING) {
    lua_pushvalue(L, idx);
    lua_setfield(L, -2, "field");
  } else if (t == LUA_TTABLE) {
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
      if (lua_type(L, -2) == LUA_TSTRING) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, -4);
      } else {
        lua_pop(L, 1);
      }
    }
  }
}

/* Pushes a failure of kind (idx k), message (idx m), extra (idx e). */
static void push_failure(lua_State *L, int k, int m, int e) {
  const char *kind = kind_arg(L, k);
  const char *msg = lua_tostring(L, m);
  lua_createtable(L, 0, 4);
  add_extra(L, e);
  lua_pushstring(L, kind);
  lua_setfield(L, -2, "kind");
  lua_pushstring(L, msg != NULL ? msg : "failed");
  lua_setfield(L, -2, "message");
  luaL_setmetatable(L, FAILURE_MT);
}

static int is_failure(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx))
    return 0;
  luaL_getmetatable(L, FAILURE_MT);
  int same = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return same;
}

static int l_new(lua_State *L) {
  luaL_checkstring(L, 2);
  push_failure(L, 1, 2, 3);
  return 1;
}

static int l_raise(lua_State *L) {
  luaL_checkstring(L, 2);
  push_failure(L, 1, 2, 3);
  return lua_error(L);
}

static int l_check(lua_State *L) {
  if (lua_toboolean(L, 1))
    return lua_gettop(L);
  if (is_failure(L, 2)) {
    lua_pushvalue(L, 2);
    return lua_error(L);
  }
  push_failure(L, 3, 2, 4);
  return lua_error(L);
}

static int l_is(lua_State *L) {
  lua_pushboolean(L, is_failure(L, 1));
  return 1;
}

/* Pushes the failure for (failure) or (kind, message[, extra]) args. */
static void failure_of_args(lua_State *L) {
  if (is_failure(L, 1)) {
    lua_pushvalue(L, 1);
    return;
  }
  luaL_checkstring(L, 2);
  push_failure(L, 1, 2, 3);
}

/* {error = {code = kind, message = ..., <other fields>}} of the failure on
 * top (replaced). */
static void body_of_failure(lua_State *L) {
  int f = lua_gettop(L);
  lua_createtable(L, 0, 1);
  lua_createtable(L, 0, 4);
  lua_pushnil(L);
  while (lua_next(L, f) != 0) {
    const char *key =
        lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    if (key != NULL && strcmp(key, "kind") == 0) {
      lua_setfield(L, -3, "code");
    } else if (key != NULL && strcmp(key, "headers") == 0) {
      lua_pop(L, 1); /* the answer's headers (l_answer), not the body's */
    } else {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, -4);
    }
  }
  lua_setfield(L, -2, "error");
  lua_replace(L, f);
}

static int l_body(lua_State *L) {
  failure_of_args(L);
  body_of_failure(L);
  return 1;
}

static int l_answer(lua_State *L) {
  failure_of_args(L);
  int f = lua_gettop(L);
  lua_getfield(L, f, "kind");
  lua_pushinteger(L, hx_kind_status(lua_tostring(L, -1)));
  lua_replace(L, -2);
  lua_pushvalue(L, f);
  body_of_failure(L);
  if (lua_getfield(L, f, "headers") != LUA_TTABLE) {
    lua_pop(L, 1);
    return 2;
  }
  return 3;
}

static int failure_tostring(lua_State *L) {
  lua_getfield(L, 1, "message");
  lua_getfield(L, 1, "kind");
  lua_pushfstring(L, "%s (%s)", luaL_optstring(L, -2, "?"),
                  luaL_optstring(L, -1, "?"));
  return 1;
}

static const luaL_Reg funcs[] = {{"status", l_status}, {"new", l_new},
                                 {"raise", l_raise},   {"check", l_check},
                                 {"is", l_is},         {"body", l_body},
                                 {"answer", l_answer}, {NULL, NULL}};

HX_EXPORT int luaopen_horcrux_errors(lua_State *L) {
  luaL_newlib(L, funcs);
  if (luaL_newmetatable(L, FAILURE_MT)) {
    lua_pushcfunction(L, failure_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "horcrux.failure");
    lua_setfield(L, -2, "__name");
  }
  lua_setfield(L, -2, "failure_mt");
  lua_newtable(L);
  for (const hx_kind *k = hx_kinds; k->kind != NULL; k++) {
    lua_pushinteger(L, k->status);
    lua_setfield(L, -2, k->kind);
  }
  lua_setfield(L, -2, "KINDS");
  return 1;
}
