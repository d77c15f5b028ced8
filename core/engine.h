/*
 * engine.h - Lua states for the host: modules preloaded, paths set, the
 * operator scripts loaded once per state, and the limits that stop a
 * runaway script (an instruction budget per request, a memory cap per
 * state).
 */
#ifndef HORCRUX_ENGINE_H
#define HORCRUX_ENGINE_H

#include <lua.h>
#include <stddef.h>

typedef struct hx_engine_config {
  const char *scripts_dir; /* operator scripts: routes.lua, ... */
  const char *lib_dir;     /* the shipped lua/ dir (library and defaults) */
  long long budget;        /* instructions per request; 0 = none */
  size_t memory_cap;       /* bytes per state; 0 = none */
} hx_engine_config;

typedef struct hx_state hx_state;

/* What the budget hook charges: set by the host around each resume. */
typedef struct hx_run {
  long long used;
} hx_run;

struct hx_state {
  lua_State *L;
  size_t mem_used;
  size_t mem_cap;
  long long budget;
  hx_run *current; /* the request being run, or NULL */
  int dispatch_ref;
  unsigned generation;
  int inflight;
  int retired;
  hx_state *next; /* the host's list of every state */
};

/* Creates a state with the modules preloaded and package.path set.
 * Returns NULL and a malloc'ed message in *err on failure. */
hx_state *hx_state_new(const hx_engine_config *cfg, char **err);

/* Loads the operator scripts (horcrux.app) and keeps the dispatcher.
 * Returns 0, or -1 with a malloc'ed message in *err. */
int hx_state_load_app(hx_state *st, const hx_engine_config *cfg, char **err);

void hx_state_close(hx_state *st);

/* Arms the budget on a thread about to be resumed for `run`. */
void hx_state_arm(hx_state *st, lua_State *co, hx_run *run);

/* Pushes the message handler that adds a traceback (for lua_pcall). */
int hx_traceback(lua_State *L);

/* Registers the C modules in package.preload. */
void hx_preload(lua_State *L);

#endif
