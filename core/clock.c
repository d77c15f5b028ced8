/*
 * clock.c - horcrux.clock: time for scripts that sample.
 *
 *   clock.now_ns()      wall clock, ns since the epoch (an integer)
 *   clock.mono_ns()     monotonic clock, ns (an integer)
 *   clock.sleep(sec)    sleeps; inside a `horcrux serve` request it yields
 *                       to the host, so the worker thread keeps serving
 */
#include "async.h"
#include "aux.h"

#include <time.h>

static int l_now_ns(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)hx_real_ns());
  return 1;
}

static int l_mono_ns(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)hx_mono_ns());
  return 1;
}

static int sleep_done(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  lua_pop(L, 1); /* the host's result */
  return 0;
}

static int l_sleep(lua_State *L) {
  lua_Number s = luaL_checknumber(L, 1);
  luaL_argcheck(L, s >= 0 && s <= 86400, 1, "seconds out of range 0..86400");
  return hx_sleep(L, (lua_Integer)(s * 1000 + 0.5), 0, sleep_done);
}

static const luaL_Reg funcs[] = {{"now_ns", l_now_ns},
                                 {"mono_ns", l_mono_ns},
                                 {"sleep", l_sleep},
                                 {NULL, NULL}};

HX_EXPORT int luaopen_horcrux_clock(lua_State *L) {
  luaL_newlib(L, funcs);
  return 1;
}
