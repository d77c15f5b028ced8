/*
 * async.h - how a C module performs a curl transfer without blocking the
 * host's worker thread.
 *
 * In stock lua5.4 or `horcrux run`, hx_perform() runs the transfer at once
 * on the caller's multi (`sync`, see hx_sync_multi) and calls the
 * continuation. Inside `horcrux serve`, a
 * route handler runs as a coroutine that the host registered as a request
 * thread; there hx_perform() yields the easy handle to the host instead. The
 * host suspends the HTTP connection, runs the transfer on its curl-multi
 * thread (sharing the multi's keep-alive connections), and resumes the
 * coroutine with the CURLcode when it is done, so a request that waits a
 * second for the daemon never holds a worker thread.
 *
 * The contract for a module:
 *   - everything the continuation needs (buffers, the easy handle) lives in
 *     a userdata on the Lua stack or in the client, never on the C stack;
 *   - the easy handle is not touched between hx_perform() and k();
 *   - k() is called with the CURLcode (an integer) on top of the stack and
 *     must pop it.
 * The host guarantees that it resumes every yielded transfer exactly once,
 * so the handle and its buffers are never freed under the multi thread.
 *
 * Every wait a module yields must end by the request's deadline: cap its
 * timeout with hx_deadline_cap() (deadline.h) before yielding, and fail at
 * once with kind "timeout" when the deadline has passed. The host does not
 * cut a yielded wait itself; it answers 504 once the route ends.
 */
#ifndef HORCRUX_ASYNC_H
#define HORCRUX_ASYNC_H

#include <curl/curl.h>
#include <lua.h>

/* Registry field: a weak-keyed table whose keys are the request threads the
 * host will resume. Set by the host only. */
#define HX_ASYNC_THREADS "horcrux.async.threads"

/* The first value a yielding transfer passes to lua_resume's caller; the
 * second is the CURL* as a light userdata. */
extern const char hx_async_mark;

/* Runs or yields `easy`; then returns k(L, LUA_OK or LUA_YIELD, ctx).
 *
 * Run here, it runs on *sync: the caller's multi for its synchronous
 * transfers (one per client, say), made on first use, kept by the caller
 * and cleaned up with curl_multi_cleanup when it is done. Its connections
 * stay in its cache for the next call (at most 32 idle). Not
 * curl_easy_perform, which makes a multi inside each easy handle it runs,
 * each with a wakeup socketpair and a connection cache of its own, kept
 * until the handle's cleanup: a client's free-list of handles collected up
 * to one per handle, three descriptors each (the collector's client in
 * scripts/soak). */
int hx_perform(lua_State *L, CURLM **sync, CURL *easy, lua_KContext ctx,
               lua_KFunction k);

/* Runs `easy` here, on *sync as hx_perform does, and returns its result: a
 * transfer that must not be yielded (a stream whose callback calls Lua). */
CURLcode hx_perform_now(CURLM **sync, CURL *easy);

/* True when a transfer issued on L would be yielded to the host. */
int hx_can_yield(lua_State *L);

/* The first value a yielding batch passes to the host; then a light
 * userdata (CURL **easy), a light userdata (CURLcode *rc) and the count. */
extern const char hx_async_many_mark;

/* Runs the n transfers easy[0..n) concurrently on `sync` (as hx_perform)
 * and stores each result in rc[i]; inside a request coroutine the host runs
 * them on its executor instead. Then returns k() with an integer 0 on top of
 * the stack (to pop). Both arrays must outlive the yield: keep them in a
 * userdata on the Lua stack. */
int hx_perform_many(lua_State *L, CURLM **sync, CURL **easy, CURLcode *rc,
                    int n, lua_KContext ctx, lua_KFunction k);

/* The first value a yielding sleep passes to the host; the second is the
 * delay in milliseconds (an integer). */
extern const char hx_sleep_mark;

/* Sleeps `ms` milliseconds: yields a timer to the host inside a request
 * coroutine, or sleeps the thread otherwise; then returns k() like
 * hx_perform (with an integer 0 on top of the stack, to pop). */
int hx_sleep(lua_State *L, lua_Integer ms, lua_KContext ctx, lua_KFunction k);

/* ---- tasks: work the executor polls beside its transfers --------------
 *
 * A task is non-blocking work on a few descriptors: horcrux.proc's running
 * program (its pipes, its pidfd). Inside a request coroutine,
 * hx_run_task() yields it to the host, whose executor thread polls its
 * descriptors together with the curl transfers (extra_fds of
 * curl_multi_poll) and steps it when one is ready or its time comes; in
 * stock lua5.4, `horcrux run` or the collector's thread, hx_run_task()
 * steps it here, polling its descriptors in between. The same contract as
 * hx_perform: the task lives in a userdata on the Lua stack, nothing else
 * touches it between hx_run_task() and k(), and k() finds an integer on
 * top of the stack (to pop): 0 when the task finished, non-zero when the
 * host is stopping and ended the wait first (the task may then be
 * unfinished: k() cleans up). */

/* What a task may wait on at once: stdout, stderr, stdin, pidfd. */
#define HX_TASK_FDS 4
/* What step returns when the task is finished. */
#define HX_TASK_DONE (-2)

typedef struct hx_task hx_task;
struct hx_task {
  /* Does what can be done now without blocking. Returns HX_TASK_DONE, or
   * the milliseconds after which it must be stepped again even when no
   * descriptor is ready (-1: only when one is). */
  long (*step)(hx_task *t);
  /* Fills w[0..HX_TASK_FDS) with what to wait on (fd, events of
   * CURL_WAIT_POLLIN/POLLOUT); returns how many. */
  int (*fds)(hx_task *t, struct curl_waitfd *w);
};

/* The first value a yielding task passes to the host; the second is the
 * hx_task * as a light userdata. */
extern const char hx_task_mark;

/* Runs or yields t (see above); then returns k(L, LUA_OK or LUA_YIELD,
 * ctx). */
int hx_run_task(lua_State *L, hx_task *t, lua_KContext ctx, lua_KFunction k);

/* ---- descriptors ------------------------------------------------------
 *
 * Children get descriptors 0-2 only: horcrux.proc closes every other one in
 * the child (issue 8 #9), whatever flags they carry, so curl's wakeup
 * socketpairs (without close-on-exec before curl 8.8, curl#13618) need no
 * care. curl's connections are opened close-on-exec all the same, as
 * defence in depth for a program started by other means: */

/* A curl_opensocket_callback: socket(..., type | SOCK_CLOEXEC, ...). */
curl_socket_t hx_open_socket(void *ud, curlsocktype purpose,
                             struct curl_sockaddr *addr);

#endif
