/* states.c - Lua states, script loading, limits (see states.h). */
#include "states.h"

#include "async.h"
#include "aux.h"

#include <errno.h>
#include <lualib.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HX_MODULE(name) int luaopen_horcrux_##name(lua_State *L);
#include "modules.def"
#undef HX_MODULE

static char *dupmsg(const char *s) {
  char *d = strdup(s != NULL ? s : "unknown error");
  return d != NULL ? d : NULL;
}

/* The allocator: counts every byte of the state and refuses past the cap,
 * which Lua turns into a memory error in the running code only. */
static void *capped_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  hx_state *st = ud;
  size_t old = ptr != NULL ? osize : 0;
  if (nsize == 0) {
    st->mem_used -= old;
    free(ptr);
    return NULL;
  }
  if (st->mem_cap != 0 && nsize > old &&
      st->mem_used + (nsize - old) > st->mem_cap) {
    st->cap_hit = 1;
    return NULL;
  }
  void *p = realloc(ptr, nsize);
  if (p != NULL)
    st->mem_used = st->mem_used - old + nsize;
  return p;
}

int hx_traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      return 1;
    msg =
        lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

void hx_preload(lua_State *L) {
  static const luaL_Reg mods[] = {
#define HX_MODULE(name) {"horcrux." #name, luaopen_horcrux_##name},
#include "modules.def"
#undef HX_MODULE
      {NULL, NULL}};
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  for (const luaL_Reg *m = mods; m->name != NULL; m++) {
    lua_pushcfunction(L, m->func);
    lua_setfield(L, -2, m->name);
  }
  lua_pop(L, 1);
}

/* package.path: the operator's scripts first, then the shipped lua/ dir,
 * then whatever LUA_PATH or Lua's default gave. */
static int set_paths(lua_State *L) {
  const char *scripts = lua_tostring(L, 1), *lib = lua_tostring(L, 2);
  lua_getglobal(L, "package");
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;", scripts, scripts);
  luaL_addvalue(&b);
  if (strcmp(scripts, lib) != 0) {
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;", lib, lib);
    luaL_addvalue(&b);
  }
  lua_getfield(L, -2, "path");
  luaL_addvalue(&b);
  luaL_pushresult(&b);
  lua_setfield(L, -2, "path");
  lua_pushstring(L, scripts);
  lua_setfield(L, LUA_REGISTRYINDEX, "horcrux.scripts_dir");
  lua_pushstring(L, lib);
  lua_setfield(L, LUA_REGISTRYINDEX, "horcrux.lib_dir");
  return 0;
}

/* Protected: libraries, modules, paths; the sandbox when arg 3 is true. */
static int open_state(lua_State *L) {
  int sandbox = lua_toboolean(L, 3);
  luaL_openlibs(L);
  hx_preload(L);
  set_paths(L);
  if (sandbox) {
    hx_sandbox(L);
    hx_budget_coroutines(L);
  }
  return 0;
}

hx_state *hx_state_new(const hx_states_config *cfg, char **err) {
  hx_state *st = calloc(1, sizeof *st);
  if (st == NULL) {
    *err = dupmsg("out of memory");
    return NULL;
  }
  st->mem_cap = cfg->memory_cap;
  st->budget = cfg->budget;
  st->dispatch_ref = LUA_NOREF;
  st->request_slots_ref = LUA_NOREF;
  st->L = lua_newstate(capped_alloc, st);
  if (st->L == NULL) {
    free(st);
    *err = dupmsg("cannot create a Lua state");
    return NULL;
  }
  /* Every thread of the state copies this pointer from the main thread, so
   * the budget hook finds the state from any coroutine. */
  *(hx_state **)lua_getextraspace(st->L) = st;
  lua_State *L = st->L;
  lua_pushcfunction(L, hx_traceback);
  lua_pushcfunction(L, open_state);
  lua_pushstring(L, cfg->scripts_dir);
  lua_pushstring(L, cfg->lib_dir);
  lua_pushboolean(L, cfg->sandbox);
  if (lua_pcall(L, 3, 0, 1) != LUA_OK) {
    *err = dupmsg(lua_tostring(L, -1));
    hx_state_close(st);
    return NULL;
  }
  lua_settop(L, 0);
  /* A collection cycle starts when the heap has grown to 4 times what the
   * last one left (Lua's default: 2). The loaded scripts and modules are
   * most of a state's heap and never garbage, and marking them is most of
   * the work of a cycle; a request's garbage dies at once. Halving the
   * cycles saves 3 % of a small request's instructions, for a few hundred
   * KiB more per state. */
  lua_gc(L, LUA_GCINC, 400, 0, 0);
  return st;
}

const char *const hx_script_names[HX_SCRIPTS] = {"routes", "format", "fallback",
                                                 "policy", "hooks"};

/* Scripts bigger than this are a mistake, not a configuration. */
#define SCRIPT_MAX (16 << 20)

static char *read_all(const char *path, size_t *len, char **err) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return NULL;
  size_t cap = 8192, n = 0;
  char *buf = malloc(cap);
  while (buf != NULL) {
    n += fread(buf + n, 1, cap - n, f);
    if (n < cap || cap >= SCRIPT_MAX)
      break;
    char *p = realloc(buf, cap * 2);
    if (p == NULL) {
      free(buf);
      buf = NULL;
      break;
    }
    buf = p;
    cap *= 2;
  }
  int bad = ferror(f) || buf == NULL || n >= SCRIPT_MAX;
  fclose(f);
  if (bad) {
    free(buf);
    char msg[512];
    snprintf(msg, sizeof msg, "%s: cannot read it (or larger than %d bytes)",
             path, SCRIPT_MAX);
    *err = dupmsg(msg);
    return NULL;
  }
  *len = n;
  return buf;
}

static char *join(const char *dir, const char *name) {
  size_t n = strlen(dir) + strlen(name) + sizeof "/.lua";
  char *p = malloc(n);
  if (p != NULL)
    snprintf(p, n, "%s/%s.lua", dir, name);
  return p;
}

int hx_snapshot_read(const hx_states_config *cfg, hx_snapshot *snap,
                     char **err) {
  memset(snap, 0, sizeof *snap);
  *err = NULL;
  for (int i = 0; i < HX_SCRIPTS; i++) {
    const char *dirs[2] = {cfg->scripts_dir, cfg->lib_dir};
    for (int d = 0; d < 2 && snap->text[i] == NULL && *err == NULL; d++) {
      char *path = join(dirs[d], hx_script_names[i]);
      if (path == NULL)
        break;
      snap->text[i] = read_all(path, &snap->len[i], err);
      if (snap->text[i] != NULL)
        snap->path[i] = path;
      else
        free(path);
    }
    if (snap->text[i] == NULL) {
      if (*err == NULL) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s.lua not found in %s or %s",
                 hx_script_names[i], cfg->scripts_dir, cfg->lib_dir);
        *err = dupmsg(msg);
      }
      hx_snapshot_free(snap);
      return -1;
    }
  }
  return 0;
}

void hx_snapshot_free(hx_snapshot *snap) {
  for (int i = 0; i < HX_SCRIPTS; i++) {
    free(snap->path[i]);
    free(snap->text[i]);
    snap->path[i] = snap->text[i] = NULL;
  }
}

void hx_push_app_opts(lua_State *L, const hx_states_config *cfg,
                      const hx_snapshot *snap) {
  lua_createtable(L, 0, 4);
  lua_pushstring(L, cfg->scripts_dir);
  lua_setfield(L, -2, "scripts");
  if (cfg->state_dir != NULL) {
    lua_pushstring(L, cfg->state_dir);
    lua_setfield(L, -2, "state_dir");
  }
  lua_pushstring(L, cfg->lib_dir);
  lua_setfield(L, -2, "lib");
  lua_createtable(L, 0, HX_SCRIPTS);
  for (int i = 0; snap != NULL && i < HX_SCRIPTS; i++) {
    lua_createtable(L, 0, 2);
    lua_pushstring(L, snap->path[i]);
    lua_setfield(L, -2, "path");
    lua_pushlstring(L, snap->text[i], snap->len[i]);
    lua_setfield(L, -2, "text");
    lua_setfield(L, -2, hx_script_names[i]);
  }
  lua_setfield(L, -2, "sources");
}

#ifdef HX_BENCH_FLOOR
/* A build for `scripts/bench routes --floor` only (CMake option
 * HORCRUX_BENCH_FLOOR): every request is answered by this C function, with
 * the bench route's JSON and format.respond's shared headers (upvalue 1),
 * in place of the Lua dispatcher. What the bench then measures is
 * everything of horcrux's but the route's Lua: the HTTP layer, the guard,
 * the request table, the route's thread. */
static int floor_dispatch(lua_State *L) {
  lua_pushinteger(L, 200);
  lua_pushliteral(L, "{\"hello\":\"world\",\"n\":42}");
  lua_pushvalue(L, lua_upvalueindex(1));
  return 3;
}
#endif

/* Protected: require("horcrux.app").load(opts); the options are built here
 * so that a memory error while building them is caught too. Notes the
 * shared headers of format.respond's common answer (st->json_headers). */
static int load_app(lua_State *L) {
  const hx_states_config *cfg = lua_touserdata(L, 1);
  const hx_snapshot *snap = lua_touserdata(L, 2);
  hx_state *st = lua_touserdata(L, 3);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "horcrux.app");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "load");
  hx_push_app_opts(L, cfg, snap);
  lua_call(L, 1, 1);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "horcrux.format");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "JSON_HEADERS");
  st->json_headers = lua_istable(L, -1) ? lua_topointer(L, -1) : NULL;
#ifdef HX_BENCH_FLOOR
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, floor_dispatch, 1);
  lua_replace(L, -4); /* in place of the dispatcher */
#endif
  lua_pop(L, 2);
  return 1;
}

/* Runs require("horcrux.app").load{...} under a budget and keeps the
 * dispatcher it returns. */
int hx_state_load_app(hx_state *st, const hx_states_config *cfg,
                      const hx_snapshot *snap, char **err) {
  lua_State *L = st->L;
  /* Loading may take more than a request, but never forever; it is
   * counted from its first instruction (armed: it needs no tick). */
  hx_run load_run = {.armed = 1};
  long long budget = st->budget;
  st->budget = budget > 0 ? budget * 10 : 0;
  hx_state_arm(st, L, &load_run);
  lua_pushcfunction(L, hx_traceback);
  lua_pushcfunction(L, load_app);
  lua_pushlightuserdata(L, (void *)cfg);
  lua_pushlightuserdata(L, (void *)snap);
  lua_pushlightuserdata(L, st);
  int rc = lua_pcall(L, 3, 1, 1);
  lua_sethook(L, NULL, 0, 0);
  hx_state_disarm(st);
  st->budget = budget;
  if (rc != LUA_OK || !lua_isfunction(L, -1) || load_run.exceeded) {
    *err = dupmsg(rc != LUA_OK ? lua_tostring(L, -1)
                  : load_run.exceeded
                      ? "loading the scripts exceeded the instruction budget"
                      : "horcrux.app.load returned no dispatcher");
    lua_settop(L, 0);
    return -1;
  }
  st->dispatch_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_settop(L, 0);
  return 0;
}

lua_State *hx_state_thread(hx_state *st, int *ref) {
  if (st->nthreads > 0) {
    st->nthreads--;
    *ref = st->threads[st->nthreads].ref;
    return st->threads[st->nthreads].co;
  }
  lua_State *L = st->L;
  lua_State *co = lua_newthread(L);
  if (lua_getfield(L, LUA_REGISTRYINDEX, HX_ASYNC_THREADS) == LUA_TTABLE) {
    lua_pushvalue(L, -2);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3); /* async_threads[co] = true */
  }
  lua_pop(L, 1);
  *ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return co;
}

void hx_state_thread_done(hx_state *st, lua_State *co, int ref, int reuse) {
  /* A thread that returned runs the next function as it is. One that
   * failed or is left suspended is reset (its to-be-closed variables
   * closed) and dropped, not reused: an error raised by a hook (the
   * instruction budget) leaves hooks disabled in its thread, and nothing
   * in the API turns them on again. */
  if (reuse && lua_status(co) == LUA_OK && st->nthreads < HX_THREAD_POOL) {
    lua_settop(co, 0);
    st->threads[st->nthreads].co = co;
    st->threads[st->nthreads].ref = ref;
    st->nthreads++;
    return;
  }
  if (lua_status(co) != LUA_OK)
    lua_resetthread(co);
  lua_settop(co, 0);
  luaL_unref(st->L, LUA_REGISTRYINDEX, ref);
}

void hx_state_settle(hx_state *st) {
  if (st->mem_used <= st->settled + HX_SETTLE_SLACK)
    return;
  lua_gc(st->L, LUA_GCCOLLECT);
  st->settled = st->mem_used;
  malloc_trim(0);
}

void hx_state_close(hx_state *st) {
  if (st == NULL)
    return;
  if (st->L != NULL)
    lua_close(st->L);
  free(st->req_slot);
  free(st->req_free);
  free(st);
}
