/* async.c - run or yield a curl transfer (see async.h). */
#include "async.h"

const char hx_async_mark = 0;

int hx_can_yield(lua_State *L) {
  if (!lua_isyieldable(L))
    return 0;
  if (lua_getfield(L, LUA_REGISTRYINDEX, HX_ASYNC_THREADS) != LUA_TTABLE) {
    lua_pop(L, 1);
    return 0;
  }
  /* Only the host's own request coroutine: a coroutine that a script made
   * for itself would receive the mark instead of the host. */
  lua_pushthread(L);
  int yes = lua_rawget(L, -2) != LUA_TNIL;
  lua_pop(L, 2);
  return yes;
}

int hx_perform(lua_State *L, CURL *easy, lua_KContext ctx, lua_KFunction k) {
  if (hx_can_yield(L)) {
    lua_pushlightuserdata(L, (void *)&hx_async_mark);
    lua_pushlightuserdata(L, easy);
    return lua_yieldk(L, 2, ctx, k);
  }
  lua_pushinteger(L, (lua_Integer)curl_easy_perform(easy));
  return k(L, LUA_OK, ctx);
}
