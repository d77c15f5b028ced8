/*
 * clock.c - horcrux.clock: time for scripts that sample.
 *
 *   clock.now_ns()      wall clock, ns since the epoch (an integer)
 *   clock.mono_ns()     monotonic clock, ns (an integer)
 *   clock.sleep(sec)    -> true; sleeps; inside a `horcrux serve` request
 *                       it yields to the host, so the worker thread keeps
 *                       serving, and ends by the request's deadline: a
 *                       sleep cut by it, or begun after it, is
 *                       nil, msg, "timeout"
 *   clock.time_left()   seconds left before the running request's deadline
 *                       (0 once it has passed), or nil: no deadline (outside
 *                       `horcrux serve`, or --deadline 0)
 */
#include "async.h"
#include "aux.h"
#include "deadline.h"

#include <limits.h>
#include <stdio.h>
#include <time.h>

static int l_now_ns(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)hx_real_ns());
  return 1;
}

static int l_mono_ns(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)hx_mono_ns());
  return 1;
}

/* nil, msg, "timeout" of a sleep of `ms` that the deadline cut (or that
 * began after it). */
static int sleep_cut(lua_State *L, lua_Integer ms) {
  char dl[64], note[64];
  snprintf(note, sizeof note, "clock.sleep(%.3g) was cut", (double)ms / 1000);
  hx_deadline_note(note);
  return hx_fail(L, HX_TIMEOUT, "clock.sleep: cut by %s",
                 hx_deadline_message(dl, sizeof dl));
}

/* ctx: the sleep asked for in ms, negated when the deadline cuts it. */
static int sleep_done(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  lua_pop(L, 1); /* the host's result */
  if (ctx < 0)
    return sleep_cut(L, -(lua_Integer)ctx);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_sleep(lua_State *L) {
  lua_Number s = luaL_checknumber(L, 1);
  luaL_argcheck(L, s >= 0 && s <= 86400, 1, "seconds out of range 0..86400");
  lua_Integer ms = (lua_Integer)(s * 1000 + 0.5);
  long left = hx_deadline_left_ms();
  if (left <= 0)
    return sleep_cut(L, ms);
  if (ms > left)
    return hx_sleep(L, left, (lua_KContext)-ms, sleep_done);
  return hx_sleep(L, ms, (lua_KContext)ms, sleep_done);
}

static int l_time_left(lua_State *L) {
  long left = hx_deadline_left_ms();
  if (left == LONG_MAX)
    lua_pushnil(L);
  else
    lua_pushnumber(L, left > 0 ? (lua_Number)left / 1000 : 0);
  return 1;
}

static const luaL_Reg funcs[] = {{"now_ns", l_now_ns},
                                 {"mono_ns", l_mono_ns},
                                 {"sleep", l_sleep},
                                 {"time_left", l_time_left},
                                 {NULL, NULL}};

HX_EXPORT int luaopen_horcrux_clock(lua_State *L) {
  luaL_newlib(L, funcs);
  return 1;
}
