/*
 * server.c - `horcrux serve`: libmicrohttpd in front of the Lua routes.
 *
 * Threads. MHD runs a pool of epoll threads; each owns its connections and
 * a Lua state of its own (created on its first request), so a state is
 * never used by two threads at once and needs no lock. The main thread only
 * waits for signals. One more thread, the executor, runs the transfers.
 *
 * A request. The access handler's first call only allocates the request;
 * the body arrives in later calls; on the last call the dispatcher runs in
 * a coroutine taken from the state's pool (one that finished a request is
 * reused), with a request table whose fields are made when the route reads
 * them (request.c). When the route waits for the daemon (or
 * sleeps) the coroutine yields the transfer (async.h): the connection is
 * suspended, the executor runs the transfer, and its completion resumes the
 * connection, whose thread then resumes the coroutine with the result. So a
 * request that waits a second for the daemon holds no worker thread.
 *
 * Reload. SIGHUP makes the main thread load the scripts into a state of its
 * own; only when that works is the generation bumped. Each worker then
 * builds a fresh state on its next request; the old one is closed when its
 * last request in flight ends.
 */
#include "server.h"

#include "async.h"
#include "aux.h"
#include "background.h"
#include "cors.h"
#include "deadline.h"
#include "executor.h"
#include "follow.h"
#include "guard.h"
#include "hooks.h"
#include "hub.h"
#include "kinds.h"
#include "logline.h"
#include "request.h"
#include "static.h"
#include "stream.h"
#include "wsproto.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <lauxlib.h>
#include <malloc.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct server {
  struct MHD_Daemon *mhd;
  hx_executor *ex;
  hx_server_config cfg;
  atomic_uint generation; /* bumped by a reload that loaded */
  atomic_int active;      /* requests begun and not completed */
  atomic_ullong next_id;
  unsigned long long id_base;
  pthread_mutex_t states_mu; /* guards `states`, the list of every state */
  hx_state *states;
  pthread_mutex_t snap_mu; /* guards snap and generation changes */
  hx_snapshot snap;        /* the scripts every new state loads */
  int token_everywhere;    /* beyond loopback, or --require-token */
  hx_hosts *hosts;         /* the Host allow-list */
  hx_conns *conns;         /* connections per client address */
  hx_bg collector;         /* horcrux.collector: keeps the live view */
  hx_bg hooks;             /* horcrux.hooks_run: webhooks and alerts */
  int ticks; /* the budget's tick handler is installed (states.h) */
};

/* Each MHD pool thread's own Lua state. Thread-local rather than global:
 * the point is that no other thread ever sees it. */
static _Thread_local hx_state *tls_state;

/* The requests in flight on this MHD pool thread (--max-inflight), waiting
 * ones included. libmicrohttpd calls every callback of a connection,
 * completion and shutdown included, on the thread that owns it, so a
 * thread-local count needs no lock. */
static _Thread_local unsigned tls_inflight;

/* ---- states ---------------------------------------------------------- */

/* Protected: the host's own tables in a new state: registry[
 * HX_ASYNC_THREADS] = setmetatable({}, {__mode = "k"}) (the request
 * threads, async.h) and the slots of request tables (request.c). */
static int host_tables(lua_State *L) {
  hx_state *st = lua_touserdata(L, 1);
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, HX_ASYNC_THREADS);
  hx_request_slots(L, st);
  return 0;
}

static hx_state *state_from(server *srv, const hx_snapshot *snap, char **err) {
  hx_state *st = hx_state_new(&srv->cfg.lua, err);
  if (st == NULL)
    return NULL;
  lua_pushcfunction(st->L, host_tables);
  lua_pushlightuserdata(st->L, st);
  if (lua_pcall(st->L, 1, 0, 0) != LUA_OK) {
    *err = strdup("out of memory");
    hx_state_close(st);
    return NULL;
  }
  if (hx_state_load_app(st, &srv->cfg.lua, snap, err) != 0) {
    hx_state_close(st);
    return NULL;
  }
  st->cap_hit = 0; /* a refusal the load recovered from (a GC) is no cause
                      to replace the state */
  return st;
}

/* A state of the current scripts; *gen says which generation it is. */
static hx_state *loaded_state(server *srv, unsigned *gen, char **err) {
  pthread_mutex_lock(&srv->snap_mu);
  *gen = atomic_load(&srv->generation);
  hx_state *st = state_from(srv, &srv->snap, err);
  pthread_mutex_unlock(&srv->snap_mu);
  return st;
}

static void forget_state(server *srv, hx_state *st) {
  pthread_mutex_lock(&srv->states_mu);
  for (hx_state **pp = &srv->states; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == st) {
      *pp = st->next;
      break;
    }
  }
  pthread_mutex_unlock(&srv->states_mu);
  hx_state_close(st);
  /* glibc keeps what a state freed (most of it in the worker's arena) for
   * the next allocations; a state closed after hitting its cap would leave
   * the process that much larger for good. */
  malloc_trim(0);
}

/* This worker thread has tried to start its budget tick (states.h). */
static _Thread_local int tls_tick_tried;

static hx_state *worker_state(server *srv) {
  if (!tls_tick_tried) {
    tls_tick_tried = 1;
    if (srv->ticks && hx_budget_ticks_start() != 0)
      hx_log("warn", "no CPU-time timer for a worker: its requests are "
                     "counted by the budget from their first instruction");
  }
  unsigned gen = atomic_load(&srv->generation);
  hx_state *st = tls_state;
  if (st != NULL && st->generation == gen && !st->cap_hit)
    return st;
  if (st != NULL && st->cap_hit)
    hx_log("info", "a worker's Lua state hit its memory cap (--memory): "
                   "replaced by a fresh one");
  char *err = NULL;
  hx_state *fresh = loaded_state(srv, &gen, &err);
  if (fresh == NULL) {
    hx_log("error", "cannot load the scripts: %s", err);
    free(err);
    if (st != NULL) {
      st->generation = gen; /* keep serving the old scripts */
      st->cap_hit = 0;
    }
    return st;
  }
  fresh->generation = gen;
  pthread_mutex_lock(&srv->states_mu);
  fresh->next = srv->states;
  srv->states = fresh;
  pthread_mutex_unlock(&srv->states_mu);
  if (st != NULL) {
    st->retired = 1;
    if (st->inflight == 0)
      forget_state(srv, st);
  }
  tls_state = fresh;
  return fresh;
}

/* ---- responses ------------------------------------------------------- */

static enum MHD_Result send_buffer(request *rq, int status, const char *body,
                                   size_t len, const char *ctype) {
  struct MHD_Response *r =
      MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
  if (r == NULL)
    return MHD_NO;
  if (ctype != NULL)
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
  MHD_add_response_header(r, "X-Request-Id", rq->id);
  hx_cors_headers(r, rq->conn);
  rq->status = status;
  enum MHD_Result ret = MHD_queue_response(rq->conn, status, r);
  MHD_destroy_response(r);
  rq->phase = DONE;
  return ret;
}

/* The host's own answers (refusals, and the Lua side failing): the error
 * shape and status of kinds.c, the message JSON-escaped. */
static enum MHD_Result send_error(request *rq, const char *kind,
                                  const char *message) {
  char body[1024];
  size_t n = hx_error_json(body, sizeof body, kind, message, rq->id);
  if (n == 0)
    n = hx_error_json(body, sizeof body, kind, "(message too long)", rq->id);
  return send_buffer(rq, hx_kind_status(kind), body, n, "application/json");
}

static int header_ok(const char *s) {
  for (; *s != '\0'; s++)
    if (*s == '\r' || *s == '\n')
      return 0;
  return 1;
}

/* The route's results on co: status, body (a string), headers (a table). */
static enum MHD_Result send_results(request *rq, lua_State *co, int nres) {
  int base = lua_gettop(co) - nres + 1;
  int isnum;
  lua_Integer status = lua_tointegerx(co, base, &isnum);
  size_t len = 0;
  /* A string only: lua_tolstring would convert a number in place, which
   * allocates, outside any protected call. */
  const char *body = nres < 2 ? ""
                     : lua_type(co, base + 1) == LUA_TSTRING
                         ? lua_tolstring(co, base + 1, &len)
                         : NULL;
  if (!isnum || status < 100 || status > 599 || body == NULL) {
    hx_log("error", "id=%s the dispatcher returned no status and body string",
           rq->id);
    return send_error(rq, "internal", "bad response from the dispatcher");
  }
  /* Not copied: the body stays on the route's thread, which is released
   * when the request has ended (on_completed), after its last byte went. */
  struct MHD_Response *r = MHD_create_response_from_buffer(
      len, (void *)body, MHD_RESPMEM_PERSISTENT);
  if (r == NULL)
    return MHD_NO;
  if (nres >= 3 && lua_topointer(co, base + 2) == rq->st->json_headers &&
      rq->st->json_headers != NULL) {
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                            "application/json");
  } else if (nres >= 3 && lua_istable(co, base + 2)) {
    lua_pushnil(co);
    while (lua_next(co, base + 2) != 0) {
      if (lua_type(co, -2) == LUA_TSTRING && lua_type(co, -1) == LUA_TSTRING) {
        const char *k = lua_tostring(co, -2), *v = lua_tostring(co, -1);
        if (header_ok(k) && header_ok(v))
          MHD_add_response_header(r, k, v);
      }
      lua_pop(co, 1);
    }
  }
  MHD_add_response_header(r, "X-Request-Id", rq->id);
  hx_cors_headers(r, rq->conn);
  rq->status = (int)status;
  enum MHD_Result ret = MHD_queue_response(rq->conn, (unsigned)status, r);
  MHD_destroy_response(r);
  rq->phase = DONE;
  return ret;
}

/* ---- running a route ------------------------------------------------- */

static enum MHD_Result resume(request *rq, int nargs);

static void on_done(CURLcode rc, void *ud) {
  request *rq = ud;
  rq->resume_value = (lua_Integer)rc;
  MHD_resume_connection(rq->conn); /* its thread calls on_access again */
}

/* A batch of transfers: the connection resumes when the last one ends. */
typedef struct batch {
  request *rq;
  CURLcode *rc;
  atomic_int remaining;
} batch;

typedef struct batch_item {
  batch *b;
  int index;
} batch_item;

static void on_batch_done(CURLcode rc, void *ud) {
  batch_item *it = ud;
  batch *b = it->b;
  b->rc[it->index] = rc;
  if (atomic_fetch_sub(&b->remaining, 1) == 1) {
    request *rq = b->rq;
    free(b); /* the items are freed with it: one allocation */
    rq->resume_value = 0;
    MHD_resume_connection(rq->conn);
  }
}

static enum MHD_Result wait_for_batch(request *rq, lua_State *co) {
  CURL **easy = lua_touserdata(co, -3);
  CURLcode *rc = lua_touserdata(co, -2);
  int n = (int)lua_tointeger(co, -1);
  lua_pop(co, 4);
  batch *b = malloc(sizeof *b + (size_t)n * sizeof(batch_item));
  if (b == NULL) {
    for (int i = 0; i < n; i++)
      rc[i] = CURLE_OUT_OF_MEMORY;
    lua_pushinteger(co, 0);
    return resume(rq, 1);
  }
  batch_item *items = (batch_item *)(b + 1);
  b->rq = rq;
  b->rc = rc;
  atomic_init(&b->remaining, n);
  rq->phase = WAITING;
  MHD_suspend_connection(rq->conn);
  for (int i = 0; i < n; i++) {
    items[i].b = b;
    items[i].index = i;
    if (hx_executor_submit(rq->srv->ex, easy[i], on_batch_done, &items[i]) != 0)
      on_batch_done(CURLE_ABORTED_BY_CALLBACK, &items[i]);
  }
  return MHD_YES;
}

static enum MHD_Result wait_for(request *rq, int is_timer, lua_State *co) {
  server *srv = rq->srv;
  int rc;
  rq->phase = WAITING;
  MHD_suspend_connection(rq->conn);
  if (is_timer)
    rc = hx_executor_timer(srv->ex, (long)lua_tointeger(co, -1), on_done, rq);
  else
    rc = hx_executor_submit(srv->ex, lua_touserdata(co, -1), on_done, rq);
  lua_pop(co, 2);
  if (rc != 0) {
    /* Stopping: let the route see an aborted transfer and finish. */
    rq->resume_value = CURLE_ABORTED_BY_CALLBACK;
    MHD_resume_connection(rq->conn);
  }
  return MHD_YES;
}

/* A program run by horcrux.proc (async.h's task): the executor polls its
 * pipes and resumes the connection when it has ended. */
static enum MHD_Result wait_for_task(request *rq, lua_State *co) {
  hx_task *task = lua_touserdata(co, -1);
  lua_pop(co, 2);
  rq->phase = WAITING;
  MHD_suspend_connection(rq->conn);
  if (hx_executor_task(rq->srv->ex, task, on_done, rq) != 0) {
    rq->resume_value = CURLE_ABORTED_BY_CALLBACK; /* stopping */
    MHD_resume_connection(rq->conn);
  }
  return MHD_YES;
}

/* The route's thread goes back to the state's pool (reset when it did not
 * return; dropped when the run exceeded its budget). */
static void release_thread(request *rq) {
  if (rq->co == NULL)
    return;
  hx_state_thread_done(rq->st, rq->co, rq->co_ref, !rq->run.exceeded);
  rq->co = NULL;
}

static void recycle_full(hx_state *st);

/* The request lets go of its Lua state and of its worker's count of
 * requests in flight: it has ended as a route (on_completed) or goes on as
 * a stream, which holds neither. */
static void detach_state(request *rq) {
  if (rq->counted) {
    tls_inflight--;
    rq->counted = 0;
  }
  if (rq->st == NULL)
    return;
  hx_state *st = rq->st;
  release_thread(rq);
  hx_request_forget(st->L, rq, st);
  hx_state_settle(st);
  rq->st = NULL;
  st->inflight--;
  recycle_full(st);
  if (st->retired && st->inflight == 0)
    forget_state(rq->srv, st);
}

/* The route returned a stream object (hub.stream{}): the connection
 * becomes its subscriber, and the request gives its state back now. */
static enum MHD_Result answer_stream(request *rq, lua_State *co, int nres) {
  hx_stream_spec spec = *hx_stream_test(co, -nres);
  detach_state(rq);
  rq->phase = DONE;
  return hx_stream_respond(rq->conn, rq->id, &spec,
                           strcmp(rq->method, "HEAD") == 0, &rq->status);
}

/* Protected (on the state's main thread): logs why the route of request
 * arg 1, running on thread arg 2, failed: C string arg 3, else the error
 * value on top of that thread, with the thread's traceback. */
static int describe_failure(lua_State *L) {
  request *rq = lua_touserdata(L, 1);
  lua_State *co = lua_touserdata(L, 2);
  const char *why = lua_touserdata(L, 3);
  if (why == NULL && lua_gettop(co) > 0) {
    lua_xmove(co, L, 1);
    why = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1)
                                         : luaL_tolstring(L, -1, NULL);
  }
  luaL_traceback(L, co, why != NULL ? why : "(no error value)", 0);
  hx_log("error", "id=%s %s %s: %s", rq->id, rq->method, rq->path,
         lua_tostring(L, -1));
  return 0;
}

/* The route failed (why, or the error value on top of co when why is
 * NULL): logged, its thread dropped, 500. Every Lua call here runs
 * protected: describing the failure may need memory the state has not
 * got. */
static enum MHD_Result route_failed(request *rq, lua_State *co,
                                    const char *why) {
  lua_State *L = rq->st->L;
  int top = lua_gettop(L);
  lua_pushcfunction(L, describe_failure);
  lua_pushlightuserdata(L, rq);
  lua_pushlightuserdata(L, co);
  lua_pushlightuserdata(L, (void *)why);
  if (lua_pcall(L, 3, 0, 0) != LUA_OK)
    hx_log("error", "id=%s %s %s: %s (no memory to say more)", rq->id,
           rq->method, rq->path, why != NULL ? why : "the route failed");
  lua_settop(L, top);
  release_thread(rq); /* resets it: closes its to-be-closed variables */
  return send_error(rq, "internal",
                    "the route failed; see the server log for this request id");
}

/* ---- the request's deadline ------------------------------------------ */

/* Gives the request its deadline (deadline.h): --deadline seconds from its
 * start. Every wait of its route ends by then, and a call made after it
 * fails at once. */
static void set_deadline(request *rq) {
  long ms = (long)rq->srv->cfg.deadline * 1000;
  rq->deadline.ms = ms;
  rq->deadline.note[0] = '\0';
  rq->deadline.at_ns = ms == 0 ? 0
                               : (int64_t)rq->start.tv_sec * 1000000000 +
                                     rq->start.tv_nsec + (int64_t)ms * 1000000;
}

/* Past it, or a wait of the route was cut by it (a wait ends at the
 * deadline to the millisecond: its timer may fire a little before at_ns,
 * and the route must be answered 504 all the same). */
static int past_deadline(const request *rq) {
  return rq->deadline.at_ns != 0 &&
         (hx_mono_ns() >= rq->deadline.at_ns || rq->deadline.note[0] != '\0');
}

/* A route that ended after its deadline, having returned (rc LUA_OK, nres
 * results) or failed: answered 504 whatever it returned, unless it
 * answered 504 itself; the message names what the deadline cut first. */
static enum MHD_Result answer_late(request *rq, lua_State *co, int rc,
                                   int nres) {
  char msg[400];
  if (rc == LUA_OK && nres >= 1 && lua_tointeger(co, -nres) == 504) {
    return send_results(rq, co, nres); /* the thread holds the body */
  }
  if (rc != LUA_OK)
    hx_log("error", "id=%s %s %s: failed after its deadline: %s", rq->id,
           rq->method, rq->path,
           lua_isstring(co, -1) ? lua_tostring(co, -1) : "(no message)");
  release_thread(rq);
  snprintf(msg, sizeof msg,
           "the request did not finish within its deadline "
           "(%u s)%s%s",
           rq->srv->cfg.deadline, rq->deadline.note[0] != '\0' ? ": " : "",
           rq->deadline.note);
  return send_error(rq, "timeout", msg);
}

/* The budget was exceeded and the route went on all the same (it caught
 * the error: pcall, a coroutine): it fails. Else 0. */
static int over_budget(request *rq, int rc, enum MHD_Result *ret) {
  if (!rq->run.exceeded || (rc != LUA_OK && rc != LUA_YIELD))
    return 0;
  *ret = route_failed(rq, rq->co,
                      "instruction budget exceeded (the route caught the "
                      "error; the request fails all the same)");
  return 1;
}

static enum MHD_Result resume(request *rq, int nargs) {
  hx_state *st = rq->st;
  lua_State *co = rq->co;
  int nres = 0;
  hx_state_arm(st, co, &rq->run);
  hx_deadline_enter(&rq->deadline);
  int rc = lua_resume(co, st->L, nargs, &nres);
  hx_deadline_leave();
  hx_state_disarm(st);
  enum MHD_Result ret;
  if (over_budget(rq, rc, &ret))
    return ret;
  if (rc == LUA_YIELD) {
    void *mark = nres >= 2 ? lua_touserdata(co, -nres) : NULL;
    if (nres == 2 && (mark == &hx_async_mark || mark == &hx_sleep_mark))
      return wait_for(rq, mark == &hx_sleep_mark, co);
    if (nres == 4 && mark == &hx_async_many_mark)
      return wait_for_batch(rq, co);
    if (nres == 2 && mark == &hx_task_mark)
      return wait_for_task(rq, co);
    return route_failed(rq, co, "a route yielded outside a transfer");
  }
  if (past_deadline(rq))
    return answer_late(rq, co, rc, nres);
  if (rc != LUA_OK)
    return route_failed(rq, co, NULL);
  if (nres >= 1 && lua_type(co, -nres) == LUA_TUSERDATA &&
      hx_stream_test(co, -nres) != NULL)
    return answer_stream(rq, co, nres);
  /* The thread is released with the request (detach_state): its stack
   * holds the body MHD sends from. */
  return send_results(rq, co, nres);
}

/* Protected: takes a thread from the state's pool and pushes on it the
 * dispatcher, the request table (in a slot of the state's, so that
 * on_completed can cut it off its request) and the number of query
 * arguments (a route that checks its query has nothing to check when 0:
 * no req.args to build), and when the request started (clock.mono_ns's
 * clock: the dispatcher times the request from it). */
static int prepare(lua_State *L) {
  request *rq = lua_touserdata(L, 1);
  hx_state *st = rq->st;
  rq->co = hx_state_thread(st, &rq->co_ref);
  lua_rawgeti(L, LUA_REGISTRYINDEX, st->dispatch_ref);
  hx_request_push(L, rq, st);
  lua_pushinteger(L, MHD_get_connection_values(rq->conn, MHD_GET_ARGUMENT_KIND,
                                               NULL, NULL));
  lua_pushinteger(L, (lua_Integer)rq->start.tv_sec * 1000000000 +
                         rq->start.tv_nsec);
  lua_xmove(L, rq->co, 4); /* dispatcher, request, nargs, t0 */
  return 0;
}

static enum MHD_Result start(request *rq) {
  server *srv = rq->srv;
  hx_state *st = worker_state(srv);
  if (st == NULL)
    return send_error(rq, "internal", "no Lua state could be loaded");
  rq->st = st;
  st->inflight++;
  set_deadline(rq);
  lua_State *L = st->L;
  lua_pushcfunction(L, prepare);
  lua_pushlightuserdata(L, rq);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    hx_log("error", "id=%s cannot start the route: %s", rq->id,
           lua_tostring(L, -1));
    lua_pop(L, 1);
    return send_error(rq, "internal", "cannot start the route");
  }
  return resume(rq, 3);
}

/* ---- the guard --------------------------------------------------------- */

/* The token rule (guard.h): the Authorization header, or for a WebSocket
 * upgrade without one, the token its protocols carry (wsproto.h: a browser's
 * WebSocket can send nothing else). */
static const char *token_check(request *rq, const char **msg) {
  server *srv = rq->srv;
  char from_ws[512];
  const char *auth = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_AUTHORIZATION);
  if (auth == NULL && hx_stream_wants_websocket(rq->conn)) {
    int got =
        hx_ws_bearer(MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND,
                                                 "Sec-WebSocket-Protocol"),
                     from_ws, sizeof from_ws);
    if (got < 0) {
      *msg = "the " HX_WS_BEARER_PREFIX " protocol must hold the token in "
             "base64url without padding";
      return "unauthorized";
    }
    if (got > 0)
      auth = from_ws;
  }
  return hx_token_check(&srv->cfg, srv->token_everywhere, rq->method, auth,
                        &rq->authenticated, msg);
}

/* 0 when the request may go on; else the response is queued. Runs on the
 * access handler's first call: a refused request's body is never read.
 * The Host is checked first: a page that reached the server through DNS
 * rebinding learns nothing, not even whether it needs a token. */
static int guard(request *rq, const char *version, enum MHD_Result *ret) {
  server *srv = rq->srv;
  char why[384];
  const char *msg = why;
  const char *refused =
      hx_hosts_check(srv->hosts, rq->conn, version, why, sizeof why);
  /* A preflight never carries the token; a WebSocket's Origin is checked
   * as CORS does not (cors.h). */
  if (refused == NULL && hx_cors_is_preflight(rq->conn, rq->method)) {
    rq->phase = DONE;
    if (hx_cors_preflight(rq->conn, rq->id, rq->read_only, ret, &rq->status))
      return -1;
    refused = "forbidden";
    msg = "this origin may not use the API from a browser; start horcrux "
          "with --cors ORIGIN to allow it";
  }
  const char *ws = refused == NULL ? hx_cors_ws_refusal(rq->conn) : NULL;
  if (ws != NULL)
    refused = "forbidden", msg = ws;
  /* The dashboard's files need no token (static.h says why). */
  if (refused == NULL && srv->cfg.web_dir != NULL &&
      hx_static_wants(rq->method, rq->path)) {
    rq->web = 1;
    return 0;
  }
  if (refused == NULL)
    refused = token_check(rq, &msg);
  if (refused == NULL)
    return 0;
  *ret = send_error(rq, refused, msg);
  return -1;
}

/* ---- MHD callbacks --------------------------------------------------- */

static request *request_new(server *srv, struct MHD_Connection *conn,
                            const char *url, const char *method) {
  size_t n = strlen(url);
  request *rq = malloc(sizeof *rq + n + 1);
  if (rq == NULL)
    return NULL;
  memset(rq, 0, sizeof *rq);
  memcpy(rq->path, url, n + 1);
  rq->path_len = n;
  rq->srv = srv;
  rq->conn = conn;
  rq->co_ref = LUA_NOREF;
  rq->read_only = srv->cfg.read_only;
  size_t m = strlen(method);
  if (m >= sizeof rq->method)
    m = sizeof rq->method - 1;
  memcpy(rq->method, method, m);
  clock_gettime(CLOCK_MONOTONIC, &rq->start);
  hx_request_id(rq, srv->id_base, atomic_fetch_add(&srv->next_id, 1));
  atomic_fetch_add(&srv->active, 1);
  return rq;
}

static int append_body(request *rq, const char *data, size_t n) {
  if (rq->too_large || rq->len + n > rq->srv->cfg.body_max) {
    rq->too_large = 1;
    return 0;
  }
  if (rq->len + n > rq->cap) {
    size_t cap = rq->cap ? rq->cap : 4096;
    while (cap < rq->len + n)
      cap *= 2;
    char *p = realloc(rq->body, cap);
    if (p == NULL)
      return -1;
    rq->body = p;
    rq->cap = cap;
  }
  memcpy(rq->body + rq->len, data, n);
  rq->len += n;
  return 0;
}

/* Whether Content-Length (cl, or NULL) is over --body-max. */
static int declared_too_large(server *srv, const char *cl) {
  if (cl == NULL)
    return 0;
  errno = 0;
  char *end;
  unsigned long long n = strtoull(cl, &end, 10);
  return errno != 0 || end == cl || n > srv->cfg.body_max;
}

/* Whether the request announces a body (a Content-Length, cl, other than
 * 0, or a chunked one). */
static int has_body(struct MHD_Connection *conn, const char *cl) {
  if (cl != NULL && strspn(cl, "0") != strlen(cl))
    return 1;
  return MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                     MHD_HTTP_HEADER_TRANSFER_ENCODING) != NULL;
}

/* 429 with Retry-After: the worker has --max-inflight requests already. */
static enum MHD_Result send_busy(request *rq) {
  char msg[160], body[512];
  snprintf(msg, sizeof msg,
           "this worker has %u requests in flight (--max-inflight); retry "
           "shortly",
           tls_inflight);
  size_t n = hx_error_json(body, sizeof body, "too_many_requests", msg, rq->id);
  struct MHD_Response *r =
      MHD_create_response_from_buffer(n, body, MHD_RESPMEM_MUST_COPY);
  if (r == NULL)
    return MHD_NO;
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
  MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
  MHD_add_response_header(r, "X-Request-Id", rq->id);
  hx_cors_headers(r, rq->conn);
  rq->status = MHD_HTTP_TOO_MANY_REQUESTS;
  enum MHD_Result ret = MHD_queue_response(rq->conn, rq->status, r);
  MHD_destroy_response(r);
  rq->phase = DONE;
  return ret;
}

/* After the guard, on the access handler's first call: 0 when the request
 * may run; else its refusal is queued in *ret, before a byte of its body is
 * read. A GET or HEAD takes no body (none is kept for a route that never
 * reads one); a body over --body-max is refused; and a worker runs at most
 * --max-inflight requests at once, since every one of them holds memory in
 * the worker's capped Lua state until it ends. */
static int admit(request *rq, enum MHD_Result *ret) {
  server *srv = rq->srv;
  const char *cl = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND,
                                               MHD_HTTP_HEADER_CONTENT_LENGTH);
  if ((strcmp(rq->method, "GET") == 0 || strcmp(rq->method, "HEAD") == 0) &&
      has_body(rq->conn, cl)) {
    *ret = send_error(rq, "bad_request", "a GET or HEAD request takes no body");
    return -1;
  }
  if (declared_too_large(srv, cl)) {
    rq->too_large = 1;
    *ret = send_error(rq, "too_large", "the request body is too large");
    return -1;
  }
  if (tls_inflight >= srv->cfg.max_inflight) {
    *ret = send_busy(rq);
    return -1;
  }
  tls_inflight++;
  rq->counted = 1;
  return 0;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn,
                                 const char *url, const char *method,
                                 const char *version, const char *upload_data,
                                 size_t *upload_size, void **con_cls) {
  server *srv = cls;
  request *rq = *con_cls;
  if (rq == NULL) {
    /* First call: only remember the request. Queuing a response now would
     * make MHD close the connection (no keep-alive). */
    rq = request_new(srv, conn, url, method);
    if (rq == NULL)
      return MHD_NO;
    *con_cls = rq;
    enum MHD_Result refused;
    if (guard(rq, version, &refused) != 0 || admit(rq, &refused) != 0)
      return refused;
    return MHD_YES;
  }
  if (*upload_size > 0 && rq->phase == DONE) {
    *upload_size = 0; /* refused already: the body is dropped */
    return MHD_YES;
  }
  if (*upload_size > 0) {
    if (append_body(rq, upload_data, *upload_size) != 0)
      return MHD_NO;
    *upload_size = 0;
    return MHD_YES;
  }
  switch (rq->phase) {
  case RECEIVING:
    if (rq->too_large)
      return send_error(rq, "too_large", "the request body is too large");
    if (rq->web) {
      rq->phase = DONE;
      return hx_static_send(conn, srv->cfg.web_dir, rq->path, rq->id,
                            &rq->status);
    }
    return start(rq);
  case WAITING:
    lua_pushinteger(rq->co, rq->resume_value);
    rq->phase = RECEIVING;
    return resume(rq, 1);
  case DONE:
    break;
  }
  return MHD_YES;
}

/* A worker's state that hit its memory cap is closed as soon as its last
 * request ends, not at the worker's next request (which may never come):
 * the memory goes back at once, and the next request builds a fresh
 * state. */
static void recycle_full(hx_state *st) {
  if (!st->cap_hit || st->inflight != 0 || st != tls_state)
    return;
  hx_log("info", "a worker's Lua state hit its memory cap (--memory): "
                 "closed; the next request builds a fresh one");
  st->retired = 1;
  tls_state = NULL;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
  (void)conn;
  server *srv = cls;
  request *rq = *con_cls;
  if (rq == NULL)
    return;
  *con_cls = NULL;
  if (srv->cfg.access_log)
    hx_request_log(rq, toe != MHD_REQUEST_TERMINATED_COMPLETED_OK);
  detach_state(rq);
  free(rq->body);
  free(rq);
  atomic_fetch_sub(&srv->active, 1);
}

/* ---- the collector and the hooks thread (background.c) --------------- */

/* The collector (when --interval is not 0) and the hooks thread. */
static void threads_start(server *srv) {
  hx_bg_env env = {&srv->cfg, &srv->snap_mu, &srv->snap, &srv->generation};
  srv->collector = (hx_bg){.name = "collector",
                           .loader = "load_sources",
                           .module = "horcrux.collector",
                           .field = "sources"};
  srv->hooks = (hx_bg){.name = "hooks",
                       .loader = "load_hooks_thread",
                       .module = "horcrux.hooks_run",
                       .field = "hooks"};
  if (srv->cfg.interval > 0)
    hx_bg_start(&srv->collector, &env);
  hx_bg_start(&srv->hooks, &env);
}

/* The collector first, so that the hooks thread queues on disk every
 * event it fed; then the hooks thread, its POSTs cut short (what they
 * carried stays pending on disk). */
static void threads_stop(server *srv) {
  hx_bg_stop(&srv->collector);
  hx_hooks_interrupt(1);
  hx_bg_stop(&srv->hooks);
}

/* ---- start, signals, stop -------------------------------------------- */

static void reload(server *srv) {
  char *err = NULL;
  hx_snapshot snap;
  hx_state *st = NULL;
  if (hx_snapshot_read(&srv->cfg.lua, &snap, &err) == 0) {
    st = state_from(srv, &snap, &err);
    if (st == NULL)
      hx_snapshot_free(&snap);
  }
  if (st == NULL) {
    hx_log("error", "reload failed, the running scripts stay: %s", err);
    free(err);
    return;
  }
  hx_state_close(st);
  pthread_mutex_lock(&srv->snap_mu);
  hx_snapshot_free(&srv->snap);
  srv->snap = snap;
  unsigned gen = atomic_fetch_add(&srv->generation, 1) + 1;
  pthread_mutex_unlock(&srv->snap_mu);
  hx_log("info", "reloaded the scripts (generation %u)", gen);
}

static int wait_idle(server *srv, double seconds) {
  struct timespec ts = {0, 20 * 1000 * 1000};
  for (double waited = 0; waited < seconds; waited += 0.02) {
    if (atomic_load(&srv->active) == 0 && hx_executor_pending(srv->ex) == 0)
      return 1;
    nanosleep(&ts, NULL);
  }
  return atomic_load(&srv->active) == 0;
}

static void drain(server *srv) {
  /* Stop accepting, let the requests in flight finish, then make the ones
   * that still wait on the daemon give up (every suspended connection must
   * be resumed before MHD stops). */
  MHD_socket fd = MHD_quiesce_daemon(srv->mhd);
  if (fd != MHD_INVALID_SOCKET)
    close(fd);
  if (!wait_idle(srv, srv->cfg.grace)) {
    hx_log("warn", "%d requests still running after %us; aborting them",
           atomic_load(&srv->active), srv->cfg.grace);
    hx_executor_abort(srv->ex);
    wait_idle(srv, 2);
  }
}

static void close_states(server *srv) {
  pthread_mutex_lock(&srv->states_mu);
  hx_state *st = srv->states;
  srv->states = NULL;
  pthread_mutex_unlock(&srv->states_mu);
  while (st != NULL) {
    hx_state *next = st->next;
    hx_state_close(st);
    st = next;
  }
}

/* Each connection's memory pool: the request line, headers and read
 * buffer, the copy libmicrohttpd makes of the Cookie header to split it,
 * and the response headers. MHD clears the whole pool before every request
 * of a keep-alive connection (and half of it again), so its size is a
 * per-request cost: MHD's default of 32 KiB was 5 % of the CPU time of a
 * small request. 16 KiB takes request headers of about 15.5 KiB in all,
 * with a Cookie of up to about 7.5 KiB among them (a browser's cookies
 * for one site; 8 KiB took only 3.5 KiB of them). A larger set is answered
 * 431 by MHD, except a Cookie too large for its copy but not for the pool:
 * MHD 0.9.75 then sends its 431's head twice (fixed in later releases).
 * A build may set another size. */
#ifndef CONNECTION_MEMORY
#define CONNECTION_MEMORY (16 * 1024)
#endif

/* MHD_USE_TURBO: MHD reads and writes a socket before asking epoll whether
 * it is ready, and skips a shutdown() before each close. Our connections
 * are short keep-alive exchanges where the read usually succeeds. A build
 * may define MHD_FLAGS_EXTRA=0 to compare. */
#ifndef MHD_FLAGS_EXTRA
#define MHD_FLAGS_EXTRA MHD_USE_TURBO
#endif

/* libmicrohttpd's own messages, as log lines of ours (escaped: some quote
 * what a client sent). */
static void mhd_log(void *cls, const char *fmt, va_list ap) {
  (void)cls;
  hx_logv("warn", fmt, ap);
}

static struct MHD_Daemon *start_mhd(server *srv, struct sockaddr_storage *ss,
                                    int v6) {
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
                   MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC | MHD_USE_ERROR_LOG |
                   MHD_ALLOW_UPGRADE | MHD_FLAGS_EXTRA;
  if (v6)
    flags |= MHD_USE_IPv6;
  /* One worker is MHD's own polling thread: MHD warns about a pool size
   * of 1 (or 0) that it ignores, so the option is given only for more.
   * --max-per-ip is counted by guard.c (MHD's own count would take each
   * 127.x address apart). */
  struct MHD_OptionItem more[3];
  int n = 0;
  if (srv->cfg.workers > 1)
    more[n++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE,
                                        (intptr_t)srv->cfg.workers, NULL};
  if (srv->conns != NULL)
    more[n++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_CONNECTION,
                                        (intptr_t)hx_conns_notify, srv->conns};
  more[n] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
  /* The logger first: MHD logs with its own until it sees this option.
   * No MHD_OPTION_LISTENING_ADDRESS_REUSE: MHD's default on Linux is
   * SO_REUSEADDR (a restart binds through TIME_WAIT), where 1 adds
   * SO_REUSEPORT and lets a second server bind the same port and take
   * half its connections. */
  return MHD_start_daemon(
      flags, 0, srv->conns != NULL ? hx_conns_accept : NULL, srv->conns,
      on_access, srv, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
      MHD_OPTION_SOCK_ADDR, ss, MHD_OPTION_ARRAY, more,
      MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONNECTION_MEMORY,
      MHD_OPTION_CONNECTION_TIMEOUT, srv->cfg.conn_timeout,
      MHD_OPTION_CONNECTION_LIMIT, srv->cfg.max_connections,
      MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
      MHD_OPTION_UNESCAPE_CALLBACK, hx_unescape, NULL, MHD_OPTION_END);
}

static void server_free(server *srv) {
  close_states(srv);
  hx_hosts_free(srv->hosts);
  hx_conns_free(srv->conns);
  hx_snapshot_free(&srv->snap);
  pthread_mutex_destroy(&srv->snap_mu);
  pthread_mutex_destroy(&srv->states_mu);
  free(srv);
}

/* The server with its scripts read and loaded once: a broken script fails
 * at start, before anything listens. */
static server *server_new(const hx_server_config *cfg) {
  server *srv = calloc(1, sizeof *srv);
  if (srv == NULL)
    return NULL;
  srv->cfg = *cfg;
  srv->cfg.started_ns = hx_real_ns(); /* before the port is open */
  pthread_mutex_init(&srv->states_mu, NULL);
  pthread_mutex_init(&srv->snap_mu, NULL);
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  srv->id_base = (unsigned long long)now.tv_sec ^ (unsigned long long)getpid();
  char *err = NULL;
  unsigned gen;
  hx_state *probe = NULL;
  if (hx_snapshot_read(&cfg->lua, &srv->snap, &err) == 0)
    probe = loaded_state(srv, &gen, &err);
  if (probe == NULL) {
    hx_log("error", "cannot load the scripts: %s", err);
    free(err);
    server_free(srv);
    return NULL;
  }
  hx_state_close(probe);
  return srv;
}

/* Waits for signals on the main thread: SIGHUP reloads, SIGTERM/SIGINT
 * return. */
static void wait_signals(server *srv, const sigset_t *set) {
  for (;;) {
    int sig = 0;
    if (sigwait(set, &sig) != 0)
      continue;
    if (sig == SIGHUP) {
      reload(srv);
      continue;
    }
    hx_log("info", "%s: finishing the requests in flight",
           sig == SIGTERM ? "SIGTERM" : "SIGINT");
    return;
  }
}

/* The guard's part of the server: the Host allow-list, whether every
 * route needs the token, the count per address, the descriptors. */
static int guard_start(server *srv, int open) {
  const hx_server_config *cfg = &srv->cfg;
  srv->token_everywhere = open || cfg->require_token;
  hx_cors_configure(cfg->cors, cfg->n_cors);
  srv->hosts = hx_hosts_new(cfg->listen, cfg->allow_hosts, cfg->n_allow_hosts);
  if (cfg->max_per_ip > 0)
    srv->conns = hx_conns_new(cfg->max_per_ip);
  if (srv->hosts == NULL || (cfg->max_per_ip > 0 && srv->conns == NULL)) {
    hx_log("error", "out of memory");
    return -1;
  }
  if (hx_plan_descriptors(&srv->cfg) != 0)
    return -1;
  if (open)
    hx_log("warn",
           "listening beyond loopback on %s: every route needs the "
           "token; put TLS in front of it",
           cfg->listen);
  return 0;
}

int hx_serve(const hx_server_config *cfg) {
  struct sockaddr_storage ss = {0};
  int v6 = 0;
  if (hx_parse_listen(cfg->listen, &ss, &v6) != 0) {
    hx_log("error",
           "--listen %s: expected ADDR:PORT, a numeric address and a "
           "port from 0 to 65535",
           cfg->listen);
    return 2;
  }
  int open = !hx_is_loopback((const struct sockaddr *)&ss);
  if (hx_check_access(cfg, open) != 0)
    return 2;
  server *srv = server_new(cfg);
  if (srv == NULL)
    return 1;
  if (guard_start(srv, open) != 0) {
    server_free(srv);
    return 2;
  }

  /* Signals go to the main thread only: block them before any thread
   * starts (threads inherit the mask) and wait for them below. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);

  /* The budget's tick (states_budget.c): the handler before any worker
   * starts its timer. Without it, each run is counted from its start. */
  srv->ticks = cfg->lua.budget > 0 && hx_budget_ticks_install() == 0;
  srv->ex = hx_executor_start(HX_IDLE_PER_WORKER * (long)cfg->workers);
  if (srv->ex == NULL) {
    hx_log("error", "cannot start the executor thread");
    server_free(srv);
    return 1;
  }
  hx_executor_host = srv->ex; /* for the relays (docker_relay.c) */
  hx_hub_configure(cfg->stream_queue, cfg->stream_bytes, cfg->events_ring);
  hx_hub_count_follows(hx_follow_count);
  if (hx_ws_start() != 0)
    hx_log("warn", "cannot start the WebSocket thread: streams are SSE only");
  srv->mhd = start_mhd(srv, &ss, v6);
  if (srv->mhd == NULL) {
    hx_log("error", "cannot listen on %s: %s", cfg->listen, strerror(errno));
    hx_executor_stop(srv->ex);
    server_free(srv);
    return 1;
  }
  const union MHD_DaemonInfo *di =
      MHD_get_daemon_info(srv->mhd, MHD_DAEMON_INFO_BIND_PORT);
  threads_start(srv);
  hx_log("info", "listening on %.*s:%u with %u workers",
         (int)(strrchr(cfg->listen, ':') - cfg->listen), cfg->listen,
         di != NULL ? di->port : 0, cfg->workers);

  wait_signals(srv, &set);
  /* Streams first: each gets a final `close` message and ends, so that the
   * drain below finds them finished (a suspended connection must not
   * outlive MHD). */
  hx_hub_close_all("shutdown");
  hx_ws_stop(3);
  drain(srv);
  threads_stop(srv);
  MHD_stop_daemon(srv->mhd);
  hx_executor_host = NULL;
  hx_executor_stop(srv->ex);
  server_free(srv);
  hx_log("info", "stopped");
  return 0;
}
