/*
 * lua_target.c - the libFuzzer driver of the targets written in Lua
 * (tests/fuzz/<target>.lua): the JSON bridge, the router and the id grammar,
 * the logs demux, the create-body validator, issue 12's parsers (objects).
 *
 * One lua_State per process, with every C module in package.preload (the
 * list is core/modules.def, as the host's) and package.path on the tree's
 * lua/ and tests/fuzz/. The target script returns a function of the input
 * bytes; it raises when an invariant breaks, and so does the library code
 * it calls when it fails. Either is a finding: the driver prints the error
 * with its traceback and aborts, so libFuzzer keeps the input.
 *
 * Three more things are findings:
 *  - more than HX_FUZZ_STEPS VM instructions for one input (a hook counts
 *    them, as the server's budget does);
 *  - more than HX_FUZZ_MS ms of this thread's CPU time for one input: the
 *    count hook does not fire inside one C call (a Lua pattern, gsub, rep),
 *    so a quadratic pattern match shows only on the clock, checked in the
 *    hook and after the call;
 *  - more than HX_FUZZ_MEM MiB of Lua heap (a capped allocator, as the
 *    server's --memory).
 *
 * libFuzzer cannot see Lua code: its coverage is the C it instruments. A
 * line hook therefore feeds Lua's own edges (previous line -> line, per
 * function) into libFuzzer's extra counters, so inputs that reach new Lua
 * branches are kept in the corpus.
 *
 * Built by tests/fuzz/CMakeLists.txt with HX_FUZZ_TARGET (the script's
 * name) and HX_FUZZ_ROOT (the source tree) defined; HX_FUZZ_ROOT in the
 * environment overrides the latter.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HX_MODULE(name) int luaopen_horcrux_##name(lua_State *L);
#include "modules.def"
#undef HX_MODULE

#ifndef HX_FUZZ_TARGET
#error "HX_FUZZ_TARGET must name tests/fuzz/<target>.lua"
#endif
#ifndef HX_FUZZ_ROOT
#define HX_FUZZ_ROOT "."
#endif

/* Lua's edges, seen by libFuzzer as coverage (see above). */
#define EDGES (1 << 16)
__attribute__((
    used,
    section("__libfuzzer_extra_counters"))) static uint8_t lua_edges[EDGES];

#define COUNT_EVERY 1000 /* instructions between count hooks */

static lua_State *L;
static int fuzz_ref = LUA_NOREF;
static long long max_steps = 50000000, steps;
static long long max_ns = 1000000000LL, start_ns;
static size_t mem_cap = (size_t)256 << 20, mem_used;
static uintptr_t prev_edge;

static long long cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void *capped_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  size_t old = ptr != NULL ? osize : 0;
  if (nsize == 0) {
    free(ptr);
    mem_used -= old;
    return NULL;
  }
  if (nsize > old && mem_used - old + nsize > mem_cap)
    return NULL;
  void *p = realloc(ptr, nsize);
  if (p != NULL)
    mem_used = mem_used - old + nsize;
  return p;
}

/* Prints why, with where Lua is, and aborts: libFuzzer saves the input. */
static void die(lua_State *co, const char *why) {
  luaL_traceback(co, co, why, 0);
  fprintf(stderr, "\nfuzz %s: %s\n", HX_FUZZ_TARGET, lua_tostring(co, -1));
  abort();
}

static void check_clock(lua_State *co) {
  long long used = cpu_ns() - start_ns;
  if (used > max_ns) {
    char msg[160];
    snprintf(msg, sizeof msg,
             "one input took %lld ms of CPU (budget %lld ms): a quadratic "
             "walk or a pattern that backtracks?",
             used / 1000000, max_ns / 1000000);
    die(co, msg);
  }
}

static void hook(lua_State *co, lua_Debug *ar) {
  if (ar->event == LUA_HOOKCOUNT) {
    steps += COUNT_EVERY;
    if (steps > max_steps) {
      char msg[120];
      snprintf(msg, sizeof msg, "one input ran past %lld VM instructions",
               max_steps);
      die(co, msg);
    }
    if ((steps / COUNT_EVERY) % 16 == 0)
      check_clock(co);
    return;
  }
  /* LUA_HOOKLINE: the edge from the line run before, in this function. */
  if (!lua_getinfo(co, "S", ar))
    return;
  uintptr_t here = (uintptr_t)ar->source * 31u + (uintptr_t)ar->linedefined;
  here = here * 2654435761u + (uintptr_t)ar->currentline;
  uintptr_t e = (here ^ (prev_edge >> 1)) * 0x9E3779B97F4A7C15u;
  lua_edges[(e >> 20) % EDGES]++;
  prev_edge = here;
}

static int traceback(lua_State *co) {
  const char *msg = lua_tostring(co, 1);
  if (msg == NULL)
    msg = lua_pushfstring(co, "(error object is a %s value)",
                          luaL_typename(co, 1));
  luaL_traceback(co, co, msg, 1);
  return 1;
}

static long long env_number(const char *name, long long def) {
  const char *v = getenv(name);
  return v != NULL && *v != '\0' ? atoll(v) : def;
}

static int open_target(lua_State *S) {
  static const luaL_Reg mods[] = {
#define HX_MODULE(name) {"horcrux." #name, luaopen_horcrux_##name},
#include "modules.def"
#undef HX_MODULE
      {NULL, NULL}};
  const char *root = lua_tostring(S, 1);
  luaL_openlibs(S);
  luaL_getsubtable(S, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  for (const luaL_Reg *m = mods; m->name != NULL; m++) {
    lua_pushcfunction(S, m->func);
    lua_setfield(S, -2, m->name);
  }
  lua_pop(S, 1);
  lua_getglobal(S, "package");
  lua_pushfstring(S, "%s/lua/?.lua;%s/lua/?/init.lua;%s/tests/fuzz/?.lua", root,
                  root, root);
  lua_setfield(S, -2, "path");
  lua_pushliteral(S, "");
  lua_setfield(S, -2, "cpath"); /* the modules are linked in, never loaded */
  lua_pop(S, 1);
  lua_getglobal(S, "require");
  lua_pushliteral(S, HX_FUZZ_TARGET);
  lua_call(S, 1, 1);
  luaL_checktype(S, -1, LUA_TFUNCTION);
  return 1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  const char *root = getenv("HX_FUZZ_ROOT");
  max_steps = env_number("HX_FUZZ_STEPS", max_steps);
  max_ns = env_number("HX_FUZZ_MS", max_ns / 1000000) * 1000000;
  mem_cap = (size_t)env_number("HX_FUZZ_MEM", (long long)(mem_cap >> 20)) << 20;
  L = lua_newstate(capped_alloc, NULL);
  if (L == NULL) {
    fprintf(stderr, "fuzz %s: cannot create a Lua state\n", HX_FUZZ_TARGET);
    exit(1);
  }
  lua_pushcfunction(L, traceback);
  lua_pushcfunction(L, open_target);
  lua_pushstring(L, root != NULL && *root != '\0' ? root : HX_FUZZ_ROOT);
  if (lua_pcall(L, 1, 1, 1) != LUA_OK) {
    fprintf(stderr, "fuzz %s: cannot load the target: %s\n", HX_FUZZ_TARGET,
            lua_tostring(L, -1));
    exit(1);
  }
  fuzz_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_settop(L, 0);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_pushcfunction(L, traceback);
  lua_rawgeti(L, LUA_REGISTRYINDEX, fuzz_ref);
  lua_pushlstring(L, (const char *)data, size);
  steps = 0;
  prev_edge = 0;
  start_ns = cpu_ns();
  lua_sethook(L, hook, LUA_MASKCOUNT | LUA_MASKLINE, COUNT_EVERY);
  int rc = lua_pcall(L, 1, 0, 1);
  lua_sethook(L, NULL, 0, 0);
  if (rc != LUA_OK) {
    fprintf(stderr, "\nfuzz %s: %s\n", HX_FUZZ_TARGET, lua_tostring(L, -1));
    abort();
  }
  check_clock(L);
  lua_settop(L, 0);
  /* A step of garbage collection per input keeps the heap near what one
   * input needs, so the memory cap means the same for every input. */
  lua_gc(L, LUA_GCSTEP, 0);
  return 0;
}
