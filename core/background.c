/* background.c - the server's background threads (background.h). */
#include "background.h"

#include "aux.h"

#include <errno.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* stopping() for the thread's run{}: true at shutdown, and after a reload
 * so the thread starts again on the new scripts. Upvalues: the thread,
 * generation. */
static int l_stopping(lua_State *L) {
  hx_bg *t = lua_touserdata(L, lua_upvalueindex(1));
  lua_Integer gen = lua_tointeger(L, lua_upvalueindex(2));
  lua_pushboolean(L, atomic_load(&t->stop) ||
                         (lua_Integer)atomic_load(t->env.generation) != gen);
  return 1;
}

/* Protected: pushes require("horcrux.app")[t->loader](opts) (for the
 * collector fallback.lua, for the hooks thread hooks.lua, of the current
 * snapshot) and the generation it belongs to. Called with snap_mu held. */
static int bg_load(lua_State *L) {
  hx_bg *t = lua_touserdata(L, 1);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "horcrux.app");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, t->loader);
  hx_push_app_opts(L, &t->env.cfg->lua, t->env.snap);
  lua_call(L, 1, 1);
  lua_pushinteger(L, (lua_Integer)atomic_load(t->env.generation));
  return 2;
}

/* Protected: require(t->module).run{interval, history, [t->field] = what
 * bg_load pushed, stopping, state_dir, started_ns}. */
static int bg_run(lua_State *L) {
  hx_bg *t = lua_touserdata(L, 1);
  const hx_server_config *cfg = t->env.cfg;
  lua_getglobal(L, "require");
  lua_pushstring(L, t->module);
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "run");
  lua_createtable(L, 0, 5);
  lua_pushnumber(L, cfg->interval);
  lua_setfield(L, -2, "interval");
  lua_pushnumber(L, cfg->history); /* the collector's: the view's history */
  lua_setfield(L, -2, "history");
  lua_pushvalue(L, 2);
  lua_setfield(L, -2, t->field);
  lua_pushstring(L, cfg->state_dir);
  lua_setfield(L, -2, "state_dir");
  lua_pushinteger(L, (lua_Integer)cfg->started_ns);
  lua_setfield(L, -2, "started_ns");
  lua_pushlightuserdata(L, t);
  lua_pushvalue(L, 3);
  lua_pushcclosure(L, l_stopping, 2);
  lua_setfield(L, -2, "stopping");
  lua_call(L, 1, 0);
  return 0;
}

static void nap(hx_bg *t, int ms) {
  struct timespec ts = {0, 100 * 1000 * 1000};
  for (int i = 0; i < ms / 100 && !atomic_load(&t->stop); i++)
    nanosleep(&ts, NULL);
}

/* A thread of the server with a Lua state of its own (no instruction
 * budget: it runs for as long as the server), rebuilt after every
 * reload. */
static void *bg_main(void *arg) {
  hx_bg *t = arg;
  hx_states_config ec = t->env.cfg->lua;
  ec.budget = 0;
  while (!atomic_load(&t->stop)) {
    char *err = NULL;
    hx_state *st = hx_state_new(&ec, &err);
    if (st == NULL) {
      hx_log("error", "%s: %s", t->name, err);
      free(err);
      nap(t, 1000);
      continue;
    }
    lua_State *L = st->L;
    lua_pushcfunction(L, hx_traceback);
    lua_pushcfunction(L, bg_run);
    lua_pushlightuserdata(L, t);
    lua_pushcfunction(L, hx_traceback);
    lua_pushcfunction(L, bg_load);
    lua_pushlightuserdata(L, t);
    pthread_mutex_lock(t->env.snap_mu);
    int rc = lua_pcall(L, 1, 2, -3); /* -> loaded, generation */
    pthread_mutex_unlock(t->env.snap_mu);
    if (rc == LUA_OK) {
      lua_remove(L, -3); /* the second traceback handler */
      rc = lua_pcall(L, 3, 0, 1);
    }
    if (rc != LUA_OK) {
      hx_log("error", "%s stopped, restarting in 1 s: %s", t->name,
             lua_tostring(L, -1));
      nap(t, 1000);
    }
    hx_state_close(st);
  }
  return NULL;
}

void hx_bg_start(hx_bg *t, const hx_bg_env *env) {
  t->env = *env;
  if (pthread_create(&t->thread, NULL, bg_main, t) != 0) {
    hx_log("error", "cannot start the %s thread: %s", t->name, strerror(errno));
    return;
  }
  t->started = 1;
}

void hx_bg_stop(hx_bg *t) {
  if (!t->started)
    return;
  atomic_store(&t->stop, 1);
  pthread_join(t->thread, NULL);
  t->started = 0;
}
