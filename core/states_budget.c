/*
 * states_budget.c - the instruction budget of a request (see states.h).
 *
 * Counting. The budget is a Lua count hook: every HOOK_EVERY instructions
 * of a hooked thread charge the run HOOK_EVERY. In Lua 5.4 any count hook
 * makes every VM instruction of its thread go through luaG_traceexec,
 * whatever the count: about a tenth of a small request's instructions. So
 * a request starts unhooked, and the hook is set only once it has run for
 * a while.
 *
 * The tick. Each worker thread of the server has a timer of its own CPU
 * time (CLOCK_THREAD_CPUTIME_ID, a tick every TICK_MS ms of that thread's
 * CPU time; the kernel notices it at its own clock tick, so at 250 Hz it
 * comes every 4 ms). The tick is a signal sent to that thread alone; its
 * handler, when it finds a run in progress that is not armed yet, marks it
 * armed and sets the count hook on the thread that is running Lua code.
 * This is lua.c's own pattern (its SIGINT handler calls lua_sethook):
 * lua_sethook is meant to be called asynchronously, and the handler runs on
 * the thread it hooks, so nothing is shared with another thread. An idle
 * worker uses no CPU time and gets no tick.
 *
 * So: a request is counted from the first tick that falls while its Lua
 * code runs, and for the rest of the request (every resume after a wait
 * too). A request whose Lua code never spans a tick is never counted (it
 * ran less than a tick: there is nothing to stop); a runaway loop runs at
 * most one tick uncounted, then --budget instructions. What the budget
 * guarantees otherwise is as before: once exceeded, every thread of the
 * run raises at its next count, so pcall or a coroutine cannot catch its
 * way around it, and the host fails the run whatever it returns.
 *
 * The running thread. A route may run a coroutine of its own; the tick
 * must hook the thread that runs, not the request's thread that waits in
 * coroutine.resume. So in the server's states coroutine.resume, wrap and
 * close are this file's (Lua 5.4's own code, lcorolib.c, with the running
 * thread recorded around lua_resume and lua_resetthread); once a run is
 * armed, every thread it switches to is hooked (a thread already hooked
 * keeps its count, so a coroutine ping-pong cannot reset it forever).
 *
 * Where there is no tick (the loader, which runs on whatever thread loads,
 * a thread whose timer could not be made, a ThreadSanitizer build, which
 * delivers signals only at its next intercepted call: a Lua loop makes
 * none) the hook is set from the first instruction, as it always was.
 */
#include "states.h"

#include <errno.h>
#include <lauxlib.h>
#include <lualib.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* How often the count hook runs; the budget is checked at this grain. */
#define HOOK_EVERY 1000

/* The worker's tick, in ms of its own CPU time. */
#define TICK_MS 2

#if defined(__SANITIZE_THREAD__)
#define HX_TICKS 0
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define HX_TICKS 0
#endif
#endif
#ifndef HX_TICKS
#define HX_TICKS 1
#endif

/* The state whose run this thread is executing, for the tick's handler;
 * NULL between runs. */
static _Thread_local hx_state *volatile tls_active;

/* This thread has a tick: its runs start unhooked. */
static _Thread_local int tls_ticking;

static hx_state *state_of(lua_State *L) {
  return *(hx_state **)lua_getextraspace(L);
}

static void budget_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  hx_state *st = state_of(L);
  if (st == NULL || st->current == NULL || st->budget <= 0)
    return;
  hx_run *run = st->current;
  if (!run->exceeded) {
    run->used += HOOK_EVERY;
    if (run->used <= st->budget)
      return;
    run->exceeded = 1;
  }
  /* From now on every instruction of this thread raises, so a script
   * that catches the error with pcall cannot go on looping; any other
   * thread of the run (a coroutine's caller that caught its error) raises
   * at its next count, and the host fails the run whatever it returns. */
  lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
  luaL_error(L, "instruction budget of %I exceeded", (lua_Integer)st->budget);
}

/* The count hook on co, unless it has it already (its count goes on). */
static void hook(lua_State *co) {
  if (lua_gethook(co) != budget_hook)
    lua_sethook(co, budget_hook, LUA_MASKCOUNT, HOOK_EVERY);
}

/* The tick's handler (see the top of the file). */
static void on_tick(int sig) {
  (void)sig;
  int saved = errno;
  hx_state *st = tls_active;
  if (st != NULL) {
    hx_run *run = st->current;
    lua_State *co = st->running;
    if (run != NULL && co != NULL && !run->armed) {
      run->armed = 1;
      lua_sethook(co, budget_hook, LUA_MASKCOUNT, HOOK_EVERY);
    }
  }
  errno = saved;
}

void hx_state_arm(hx_state *st, lua_State *co, hx_run *run) {
  if (st->budget > 0 && (run->armed || !tls_ticking)) {
    run->armed = 1;
    hook(co);
  } else if (lua_gethook(co) != NULL) {
    lua_sethook(co, NULL, 0, 0); /* a pooled thread of an armed run */
  }
  st->running = co;
  st->current = run;
  atomic_signal_fence(memory_order_seq_cst);
  tls_active = st->budget > 0 ? st : NULL;
}

void hx_state_disarm(hx_state *st) {
  tls_active = NULL;
  atomic_signal_fence(memory_order_seq_cst);
  st->current = NULL;
  st->running = NULL;
}

/* ---- the tick ---------------------------------------------------------- */

static int tick_signal(void) { return SIGRTMIN + 4; }

int hx_budget_ticks_install(void) {
  if (!HX_TICKS)
    return -1;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_tick;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  return sigaction(tick_signal(), &sa, NULL);
}

static pthread_key_t timer_key;
static pthread_once_t timer_once = PTHREAD_ONCE_INIT;

static void timer_free(void *p) {
  timer_delete(*(timer_t *)p);
  free(p);
}

static void timer_key_make(void) { pthread_key_create(&timer_key, timer_free); }

int hx_budget_ticks_start(void) {
  if (!HX_TICKS || tls_ticking)
    return tls_ticking ? 0 : -1;
  pthread_once(&timer_once, timer_key_make);
  timer_t *t = malloc(sizeof *t);
  if (t == NULL)
    return -1;
  struct sigevent sev;
  memset(&sev, 0, sizeof sev);
  sev.sigev_notify = SIGEV_THREAD_ID;
  sev.sigev_signo = tick_signal();
  sev._sigev_un._tid = (pid_t)syscall(SYS_gettid);
  struct itimerspec every = {{0, TICK_MS * 1000000L}, {0, TICK_MS * 1000000L}};
  if (timer_create(CLOCK_THREAD_CPUTIME_ID, &sev, t) != 0) {
    free(t);
    return -1;
  }
  if (timer_settime(*t, 0, &every, NULL) != 0 ||
      pthread_setspecific(timer_key, t) != 0) {
    timer_free(t);
    return -1;
  }
  tls_ticking = 1;
  return 0;
}

/* ---- the coroutine functions of the server's states --------------------
 * Lua 5.4's lcorolib.c (MIT licence, Copyright (C) 1994-2022 Lua.org,
 * PUC-Rio), with the running thread recorded for the tick. */

/* co runs now: recorded, and hooked when the run is armed. */
static void enter(hx_state *st, lua_State *co) {
  st->running = co;
  atomic_signal_fence(memory_order_seq_cst);
  if (st->current != NULL && st->current->armed)
    hook(co);
}

static lua_State *getco(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  luaL_argexpected(L, co, 1, "thread");
  return co;
}

static int auxresume(lua_State *L, lua_State *co, int narg) {
  int status, nres;
  if (!lua_checkstack(co, narg)) {
    lua_pushliteral(L, "too many arguments to resume");
    return -1;
  }
  lua_xmove(L, co, narg);
  hx_state *st = state_of(L);
  enter(st, co);
  status = lua_resume(co, L, narg, &nres);
  enter(st, L);
  if (status == LUA_OK || status == LUA_YIELD) {
    if (!lua_checkstack(L, nres + 1)) {
      lua_pop(co, nres);
      lua_pushliteral(L, "too many results to resume");
      return -1;
    }
    lua_xmove(co, L, nres);
    return nres;
  }
  lua_xmove(co, L, 1);
  return -1;
}

/* lua_resetthread(co) from L: co's to-be-closed variables run in co. */
static int reset(lua_State *L, lua_State *co) {
  hx_state *st = state_of(L);
  enter(st, co);
  int status = lua_resetthread(co);
  enter(st, L);
  return status;
}

static int co_resume(lua_State *L) {
  lua_State *co = getco(L);
  int r = auxresume(L, co, lua_gettop(L) - 1);
  if (r < 0) {
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
  }
  lua_pushboolean(L, 1);
  lua_insert(L, -(r + 1));
  return r + 1;
}

static int co_auxwrap(lua_State *L) {
  lua_State *co = lua_tothread(L, lua_upvalueindex(1));
  int r = auxresume(L, co, lua_gettop(L));
  if (r < 0) {
    int stat = lua_status(co);
    if (stat != LUA_OK && stat != LUA_YIELD) {
      stat = reset(L, co);
      lua_xmove(co, L, 1);
    }
    if (stat != LUA_ERRMEM && lua_type(L, -1) == LUA_TSTRING) {
      luaL_where(L, 1);
      lua_insert(L, -2);
      lua_concat(L, 2);
    }
    return lua_error(L);
  }
  return r;
}

static int co_wrap(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_State *NL = lua_newthread(L);
  lua_pushvalue(L, 1);
  lua_xmove(L, NL, 1);
  lua_pushcclosure(L, co_auxwrap, 1);
  return 1;
}

static int co_close(lua_State *L) {
  static const char *const names[] = {"running", "normal"};
  lua_State *co = getco(L);
  int busy = -1;
  lua_Debug ar;
  if (L == co)
    busy = 0;
  else if (lua_status(co) == LUA_OK && lua_getstack(co, 0, &ar))
    busy = 1;
  if (busy >= 0)
    return luaL_error(L, "cannot close a %s coroutine", names[busy]);
  int status = reset(L, co);
  if (status == LUA_OK) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushboolean(L, 0);
  lua_xmove(co, L, 1);
  return 2;
}

int hx_budget_coroutines(lua_State *L) {
  static const luaL_Reg fns[] = {{"resume", co_resume},
                                 {"wrap", co_wrap},
                                 {"close", co_close},
                                 {NULL, NULL}};
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, -1, LUA_COLIBNAME);
  luaL_setfuncs(L, fns, 0);
  lua_pop(L, 2);
  return 0;
}
