/*
 * json.c - horcrux.json: JSON text <-> Lua values, shaped as lua-cjson shapes
 * them. The conversion itself is in jsondecode.c and jsonencode.c, which
 * horcrux.docker shares.
 *
 *   json.decode(text [, {max_depth = 128}])  -> value | nil, msg, "protocol"
 *   json.encode(value [, {pretty = false, sort_keys = false,
 *                         max_depth = 128}])
 *                                            -> text | nil, msg, "bad_request"
 *   json.encoder([opts])      a function(value) that encodes as
 *                             json.encode(value, opts), opts read once
 *   json.null                 the light userdata NULL, JSON null
 *   json.array([t])           tags t (or a new table) as a JSON array
 *   json.array_mt             the metatable of arrays
 *   json.is_array(v)          whether v is a table tagged as an array
 *
 * max_depth counts nested arrays and objects (a top-level [] is depth 1) and
 * may be at most 1000, where cJSON stops.
 */
#include "aux.h"
#include "jsonconv.h"

#include <cjson/cJSON.h>
#include <string.h>

static int check_depth(lua_State *L, int opts) {
  lua_Integer d = hx_opt_integer(L, opts, "max_depth", HX_JSON_DEFAULT_DEPTH);
  if (d < 1 || d > CJSON_NESTING_LIMIT)
    return luaL_argerror(L, opts,
                         lua_pushfstring(L, "max_depth must be 1..%d",
                                         (int)CJSON_NESTING_LIMIT));
  return (int)d;
}

static int l_decode(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  int depth = check_depth(L, 2);
  if (!hx_json_decode(L, s, len, depth))
    return hx_fail(L, HX_PROTOCOL, "%s", lua_tostring(L, -1));
  return 1;
}

/* The options of encode in one pass over the table (a route's answer is
 * encoded with them on every request: three lookups by name cost as much
 * as encoding a small body). 0 when the table holds a known key of the
 * wrong type or an out-of-range depth: the caller then reads them one by
 * one, which raises the same error as ever. */
static int quick_encode_opts(lua_State *L, int *depth, int *flags) {
  *depth = HX_JSON_DEFAULT_DEPTH;
  *flags = 0;
  if (lua_isnoneornil(L, 2))
    return 1;
  if (lua_type(L, 2) != LUA_TTABLE)
    return 0;
  int ok = 1;
  lua_pushnil(L);
  while (ok && lua_next(L, 2) != 0) {
    size_t n = 0;
    const char *k =
        lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &n) : "";
    int t = lua_type(L, -1);
    if (n == 6 && memcmp(k, "pretty", 6) == 0) {
      ok = t == LUA_TBOOLEAN;
      *flags |= ok && lua_toboolean(L, -1) ? HX_JSON_PRETTY : 0;
    } else if (n == 9 && memcmp(k, "sort_keys", 9) == 0) {
      ok = t == LUA_TBOOLEAN;
      *flags |= ok && lua_toboolean(L, -1) ? HX_JSON_SORT_KEYS : 0;
    } else if (n == 9 && memcmp(k, "max_depth", 9) == 0) {
      lua_Integer d = lua_tointegerx(L, -1, &ok);
      ok = ok && d >= 1 && d <= CJSON_NESTING_LIMIT;
      *depth = ok ? (int)d : *depth;
    }
    lua_pop(L, 1);
  }
  if (!ok)
    lua_pop(L, 1); /* the key lua_next left */
  return ok;
}

/* The options of encode at stack index 2 (nil or a table). */
static void encode_opts(lua_State *L, int *depth, int *flags) {
  if (!quick_encode_opts(L, depth, flags)) {
    *depth = check_depth(L, 2);
    *flags = (hx_opt_boolean(L, 2, "pretty", 0) ? HX_JSON_PRETTY : 0) |
             (hx_opt_boolean(L, 2, "sort_keys", 0) ? HX_JSON_SORT_KEYS : 0);
  }
}

static int encode_with(lua_State *L, int depth, int flags) {
  if (!hx_json_encode(L, 1, depth, flags))
    return hx_fail(L, HX_BAD_REQUEST, "%s", lua_tostring(L, -1));
  return 1;
}

static int l_encode(lua_State *L) {
  int depth, flags;
  luaL_checkany(L, 1);
  encode_opts(L, &depth, &flags);
  return encode_with(L, depth, flags);
}

/* encode with the options of its upvalues (depth, flags). */
static int l_encode_fixed(lua_State *L) {
  luaL_checkany(L, 1);
  return encode_with(L, (int)lua_tointeger(L, lua_upvalueindex(1)),
                     (int)lua_tointeger(L, lua_upvalueindex(2)));
}

/* json.encoder([opts]): encode with opts read once (an answer encoded on
 * every request with the same options need not read them each time). */
static int l_encoder(lua_State *L) {
  int depth, flags;
  lua_settop(L, 1);
  lua_pushnil(L);
  lua_insert(L, 1); /* the options where encode has them */
  encode_opts(L, &depth, &flags);
  lua_pushinteger(L, depth);
  lua_pushinteger(L, flags);
  lua_pushcclosure(L, l_encode_fixed, 2);
  return 1;
}

/* json.responder(settings, headers, slow): format.respond for a format.lua
 * whose settings table is `settings`. The common answer -- an integer
 * status 100-599, a table body, no headers of the route's -- is encoded
 * here as settings.pretty and settings.sort_keys say (read at each call,
 * so that a change of them applies at once) and answered with the shared
 * `headers`; anything else, and a body that does not encode, goes to
 * slow(status, body, headers), whose results (or error) are respond's.
 * Measured (callgrind, the bench's route): 1,800 instructions a request
 * fewer than the same checks in Lua behind two Lua calls. */
static int l_respond(lua_State *L) {
  int n = lua_gettop(L);
  if (n >= 2 && n <= 3 && lua_isnoneornil(L, 3) &&
      lua_type(L, 2) == LUA_TTABLE && lua_isinteger(L, 1)) {
    lua_Integer status = lua_tointeger(L, 1);
    int flags = 0;
    lua_getfield(L, lua_upvalueindex(1), "pretty");
    flags |= lua_toboolean(L, -1) ? HX_JSON_PRETTY : 0;
    lua_getfield(L, lua_upvalueindex(1), "sort_keys");
    flags |= lua_toboolean(L, -1) ? HX_JSON_SORT_KEYS : 0;
    lua_settop(L, 2);
    if (status >= 100 && status <= 599 &&
        hx_json_encode(L, 2, HX_JSON_DEFAULT_DEPTH, flags)) {
      lua_pushvalue(L, lua_upvalueindex(2));
      lua_remove(L, 2); /* status, text, headers */
      return 3;
    }
    lua_settop(L, 2);
  }
  lua_pushvalue(L, lua_upvalueindex(3));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}

static int l_responder(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TTABLE);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  lua_settop(L, 3);
  lua_pushcclosure(L, l_respond, 3);
  return 1;
}

static int l_array(lua_State *L) {
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  } else {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
  }
  hx_json_push_array_mt(L);
  if (lua_getmetatable(L, 1)) {
    /* Replacing another metatable would silently break its owner. */
    if (!lua_rawequal(L, -1, -2))
      return luaL_argerror(L, 1, "table already has a metatable");
    lua_settop(L, 1);
    return 1;
  }
  lua_setmetatable(L, 1);
  return 1;
}

static int l_is_array(lua_State *L) {
  int yes = 0;
  luaL_checkany(L, 1);
  if (lua_type(L, 1) == LUA_TTABLE && lua_getmetatable(L, 1)) {
    hx_json_push_array_mt(L);
    yes = lua_rawequal(L, -1, -2);
  }
  lua_pushboolean(L, yes);
  return 1;
}

static const luaL_Reg json_funcs[] = {
    {"decode", l_decode}, {"encode", l_encode},     {"encoder", l_encoder},
    {"array", l_array},   {"is_array", l_is_array}, {"responder", l_responder},
    {NULL, NULL},
};

HX_EXPORT int luaopen_horcrux_json(lua_State *L) {
  luaL_newlib(L, json_funcs);
  hx_json_push_null(L);
  lua_setfield(L, -2, "null");
  hx_json_push_array_mt(L);
  lua_setfield(L, -2, "array_mt");
  return 1;
}
