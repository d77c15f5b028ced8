/* async.c - run or yield a curl transfer (see async.h). */
#include "async.h"

#include <errno.h>
#include <time.h>

const char hx_async_mark = 0;
const char hx_sleep_mark = 0;

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

int hx_sleep(lua_State *L, lua_Integer ms, lua_KContext ctx, lua_KFunction k) {
  if (ms < 0)
    ms = 0;
  if (hx_can_yield(L)) {
    lua_pushlightuserdata(L, (void *)&hx_sleep_mark);
    lua_pushinteger(L, ms);
    return lua_yieldk(L, 2, ctx, k);
  }
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
  lua_pushinteger(L, 0);
  return k(L, LUA_OK, ctx);
}
