/*
 * states.h - Lua states for the host: modules preloaded, paths set, the
 * operator scripts loaded once per state, and the limits that stop a
 * runaway script (an instruction budget per request, a memory cap per
 * state).
 */
#ifndef HORCRUX_STATES_H
#define HORCRUX_STATES_H

#include <lua.h>
#include <stddef.h>

typedef struct hx_states_config {
  const char *scripts_dir; /* operator scripts: routes.lua, ... */
  const char *lib_dir;     /* the shipped lua/ dir (library and defaults) */
  long long budget;        /* instructions per request; 0 = none */
  size_t memory_cap;       /* bytes per state; 0 = none */
  int sandbox;             /* the server's states: hx_sandbox applies */
  const char *state_dir;   /* serve's --state-dir; NULL: the library's */
} hx_states_config;

typedef struct hx_state hx_state;

/* The operator scripts as read at one moment (start or SIGHUP): every state
 * loads these texts, never the files again, so the workers and the
 * collector all run the version that was validated, even if the files have
 * changed since. */
#define HX_SCRIPTS 5
typedef struct hx_snapshot {
  char *path[HX_SCRIPTS];
  char *text[HX_SCRIPTS];
  size_t len[HX_SCRIPTS];
} hx_snapshot;

/* The names of the scripts, in snapshot order: "routes", "format",
 * "fallback", "policy", "hooks". */
extern const char *const hx_script_names[HX_SCRIPTS];

/* Reads each script from the scripts dir, else the lib dir. Returns 0, or
 * -1 with a malloc'ed message in *err. */
int hx_snapshot_read(const hx_states_config *cfg, hx_snapshot *snap,
                     char **err);
void hx_snapshot_free(hx_snapshot *snap);

/* What the budget hook charges: set by the host around each resume. Once
 * the budget is exceeded, `exceeded` stays set and every thread the run
 * resumes raises again, so the run fails whatever a script catches
 * (pcall, a coroutine's error): the host answers it as failed. `armed`:
 * the run is counted (states_budget.c: from the first tick of its worker's
 * CPU-time timer that falls while it runs, or from its start where there
 * is no tick); set by the tick's signal handler, hence volatile. */
typedef struct hx_run {
  long long used;
  int exceeded;
  volatile int armed;
} hx_run;

/* Threads a state keeps for running requests (more may run at once; those
 * beyond are left to the GC when they end). */
#define HX_THREAD_POOL 64

struct hx_state {
  lua_State *L;
  size_t mem_used;
  size_t mem_cap;
  int cap_hit; /* an allocation was refused: the host replaces the state */
  long long budget;
  hx_run *volatile current;    /* the request being run, or NULL */
  lua_State *volatile running; /* the thread running its Lua code now (the
                                  tick hooks it: states_budget.c) */
  int dispatch_ref;
  /* the slots of request tables (request.c): their table in the
   * registry, the request in each, the free ones */
  int request_slots_ref;
  struct request **req_slot;
  int *req_free;
  int req_nslots, req_nfree;
  /* format.JSON_HEADERS: a route's answer with these headers is sent with
   * Content-Type application/json, the table not walked (server.c) */
  const void *json_headers;
  int nthreads; /* threads in the pool, free to run a request */
  struct {
    lua_State *co;
    int ref; /* anchors it in the registry */
  } threads[HX_THREAD_POOL];
  size_t settled; /* mem_used after the last full collection (settle) */
  unsigned generation;
  int inflight;
  int retired;
  hx_state *next; /* the host's list of every state */
};

/* Creates a state with the modules preloaded and package.path set.
 * Returns NULL and a malloc'ed message in *err on failure. */
hx_state *hx_state_new(const hx_states_config *cfg, char **err);

/* Loads the operator scripts of snap (horcrux.app) and keeps the
 * dispatcher. Returns 0, or -1 with a malloc'ed message in *err. */
int hx_state_load_app(hx_state *st, const hx_states_config *cfg,
                      const hx_snapshot *snap, char **err);

/* Pushes {scripts =, lib =, sources = {name = {path =, text =}}}: the
 * options horcrux.app takes. */
void hx_push_app_opts(lua_State *L, const hx_states_config *cfg,
                      const hx_snapshot *snap);

/* After a request ended: a full collection (and the freed memory handed
 * back to the system) when the state holds HX_SETTLE_SLACK more than the
 * last one left, so that an answer of every container leaves no garbage
 * behind in a state that then sits idle. */
#define HX_SETTLE_SLACK (4u << 20)
void hx_state_settle(hx_state *st);

void hx_state_close(hx_state *st);

/* A thread to run one request: one that ran before (reset), else a new
 * one, registered as a request thread (async.h) and anchored by *ref.
 * Raises on a memory error: call it protected. */
lua_State *hx_state_thread(hx_state *st, int *ref);

/* Gives back the thread of hx_state_thread once its run is over: one that
 * returned goes back to the pool (its results dropped) when `reuse` is
 * set; one that failed or was left suspended is reset (its to-be-closed
 * variables closed) and left to the GC, as is one not to reuse. */
void hx_state_thread_done(hx_state *st, lua_State *co, int ref, int reuse);

/* The instruction budget (states_budget.c). hx_state_arm: co is about to
 * be resumed for `run`; it is hooked at once when the run is armed, or
 * when this thread has no tick (then the run is armed now), else the
 * tick arms it later if it runs that long. hx_state_disarm: the resume
 * has returned. */
void hx_state_arm(hx_state *st, lua_State *co, hx_run *run);
void hx_state_disarm(hx_state *st);

/* The tick's signal handler, installed once for the process before the
 * workers start; then each worker thread starts its own tick (a timer of
 * its CPU time). Each returns 0, or -1 (no tick: runs are counted from
 * their first instruction). */
int hx_budget_ticks_install(void);
int hx_budget_ticks_start(void);

/* A lua_CFunction: coroutine.resume, wrap and close as Lua's, recording
 * which thread runs (for the tick). Applied with the sandbox. */
int hx_budget_coroutines(lua_State *L);

/* Pushes the message handler that adds a traceback (for lua_pcall). */
int hx_traceback(lua_State *L);

/* Registers the C modules in package.preload. */
void hx_preload(lua_State *L);

/* A lua_CFunction: makes the state's libraries the server's (sandbox.c):
 * debug holds traceback and getinfo only; os.exit raises (and logs);
 * load, loadfile, dofile and require load text chunks only. Applied by
 * hx_state_new when the config says `sandbox`. */
int hx_sandbox(lua_State *L);

#endif
