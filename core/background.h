/*
 * background.h - the threads of `horcrux serve` that run for as long as the
 * server does, each a Lua module's run{} in a Lua state of its own (no
 * instruction budget): the collector (horcrux.collector, keeps the live
 * view) and the hooks thread (horcrux.hooks_run, webhooks and alerts).
 *
 * A thread loads its operator script through horcrux.app (t->loader, under
 * the snapshot's lock), then calls require(t->module).run{interval,
 * [t->field] = what the loader returned, state_dir, stopping}. stopping()
 * turns true at shutdown and after a reload (the generation moved): run{}
 * returns, and the thread starts again on the new scripts. An error is
 * logged and the thread restarts after 1 s.
 */
#ifndef HORCRUX_BACKGROUND_H
#define HORCRUX_BACKGROUND_H

#include "server.h"
#include "states.h"

#include <pthread.h>
#include <stdatomic.h>

/* What a thread reads of the server; owned by the server. */
typedef struct hx_bg_env {
  const hx_server_config *cfg;
  pthread_mutex_t *snap_mu; /* guards snap */
  hx_snapshot *snap;        /* the scripts */
  atomic_uint *generation;  /* bumped by a reload that loaded */
} hx_bg_env;

typedef struct hx_bg {
  const char *name;   /* for the log */
  const char *loader; /* horcrux.app's function that loads its script */
  const char *module; /* whose run{} it runs */
  const char *field;  /* run{}'s field for what the loader returned */
  hx_bg_env env;
  pthread_t thread;
  int started;
  atomic_int stop;
} hx_bg;

/* Starts t (its name, loader, module and field set); logs a failure. */
void hx_bg_start(hx_bg *t, const hx_bg_env *env);

/* Stops t and waits for it; nothing when it was not started. */
void hx_bg_stop(hx_bg *t);

#endif
