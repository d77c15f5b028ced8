/*
 * executor.h - the host's curl-multi thread.
 *
 * Route handlers yield their transfers (async.h); the server hands each one
 * to this thread, which runs them all concurrently on one curl multi handle
 * (sharing its keep-alive connections), and calls `done` from this thread
 * when a transfer ends. Timers (a handler's sleep) run here too, and tasks
 * (async.h: a program horcrux.proc runs), whose descriptors are polled
 * with the multi's sockets (curl_multi_poll's extra_fds): one thread
 * serves them all, and no worker thread waits for any.
 */
#ifndef HORCRUX_EXECUTOR_H
#define HORCRUX_EXECUTOR_H

#include <curl/curl.h>

typedef struct hx_executor hx_executor;
typedef struct hx_task hx_task; /* async.h */

/* Called on the executor thread; `rc` is the transfer's result, or
 * CURLE_OK for a timer. Must not block. */
typedef void (*hx_exec_done)(CURLcode rc, void *ud);

/* Idle connections the multi keeps for reuse, per worker thread. Without
 * a bound curl keeps as many as the peak of concurrent transfers (4 per
 * handle ever added), for up to 118 s each: 470 idle sockets to the daemon
 * after a burst of 512 requests. A few per worker cover the steady state
 * (each worker's requests in flight); past them, a burst's connections are
 * closed as their transfers end, and a new one to the daemon's socket costs
 * tens of microseconds. */
#define HX_IDLE_PER_WORKER 4

/* Starts the thread; its multi keeps at most max_idle idle connections
 * (CURLMOPT_MAXCONNECTS). */
hx_executor *hx_executor_start(long max_idle);

/* Queues a transfer; returns 0, or -1 when the executor is stopping (then
 * `done` is not called). Thread-safe. */
int hx_executor_submit(hx_executor *ex, CURL *easy, hx_exec_done done,
                       void *ud);

/* As hx_executor_submit; *id (set before the transfer can start) names the
 * transfer for hx_executor_cancel: ids are never reused, so a cancel that
 * comes after the transfer ended is harmless. */
int hx_executor_submit_id(hx_executor *ex, CURL *easy, hx_exec_done done,
                          void *ud, unsigned long long *id);

/* Ends transfer id, if it has not ended yet: its `done` is called (on the
 * executor thread, never from this call) with CURLE_ABORTED_BY_CALLBACK.
 * Thread-safe; a no-op for an id that ended or is unknown. */
void hx_executor_cancel(hx_executor *ex, unsigned long long id);

/* Steps a task until it is done, then calls `done` with CURLE_OK; returns
 * 0, or -1 when the executor is stopping (then `done` is not called). On
 * hx_executor_abort, `done` gets CURLE_ABORTED_BY_CALLBACK with the task
 * unfinished. Thread-safe. */
int hx_executor_task(hx_executor *ex, hx_task *task, hx_exec_done done,
                     void *ud);

/* Calls `done` after `ms` milliseconds. Thread-safe. */
int hx_executor_timer(hx_executor *ex, long ms, hx_exec_done done, void *ud);

/* Transfers and tasks under way or queued, and timers pending. */
int hx_executor_pending(hx_executor *ex);

/* Ends every transfer, task and timer at once, calling each `done` with
 * CURLE_ABORTED_BY_CALLBACK; later submissions fail. */
void hx_executor_abort(hx_executor *ex);

/* Stops the thread (after hx_executor_abort if work is pending) and frees. */
void hx_executor_stop(hx_executor *ex);

/* The executor of `horcrux serve` while it runs (set and cleared by the
 * host), else NULL: for work a module starts and leaves running after its
 * route returned (horcrux.docker's relay, docker_relay.c), which reaches
 * it through a weak reference, so the module's .so loads in stock lua5.4
 * too. */
extern hx_executor *hx_executor_host;

#endif
