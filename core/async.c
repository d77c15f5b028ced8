/* async.c - run or yield a curl transfer (see async.h). */
#include "async.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

const char hx_async_mark = 0;
const char hx_sleep_mark = 0;
const char hx_async_many_mark = 0;
const char hx_task_mark = 0;

int hx_can_yield(lua_State *L) {
  if (!lua_isyieldable(L))
    return 0;
  if (lua_getfield(L, LUA_REGISTRYINDEX, HX_ASYNC_THREADS) != LUA_TTABLE) {
    lua_pop(L, 1);
    return 0;
  }
  /* Only the host's own request coroutine: a coroutine that a script made
   * for itself would receive the mark instead of the host. */
  lua_pushthread(L);
  int yes = lua_rawget(L, -2) != LUA_TNIL;
  lua_pop(L, 2);
  return yes;
}

/* Runs easy[0..n) concurrently on multi; rc[i] gets each result. */
static void perform_now(CURLM *multi, CURL **easy, CURLcode *rc, int n) {
  for (int i = 0; i < n; i++)
    rc[i] = CURLE_FAILED_INIT;
  for (int i = 0; i < n; i++)
    if (curl_multi_add_handle(multi, easy[i]) != CURLM_OK)
      rc[i] = CURLE_OUT_OF_MEMORY;
  int running = 1;
  while (running > 0) {
    if (curl_multi_perform(multi, &running) != CURLM_OK)
      break;
    if (running > 0 && curl_multi_poll(multi, NULL, 0, 1000, NULL) != CURLM_OK)
      break;
  }
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(multi, &left)) != NULL) {
    if (msg->msg != CURLMSG_DONE)
      continue;
    for (int i = 0; i < n; i++)
      if (easy[i] == msg->easy_handle)
        rc[i] = msg->data.result;
  }
  for (int i = 0; i < n; i++)
    curl_multi_remove_handle(multi, easy[i]);
}

/* Idle connections a synchronous multi keeps (see hx_perform): as many as
 * a docker client keeps idle handles (HXD_FREE_MAX). The collector samples
 * every running container at once each round, on one client: with fewer,
 * all but those few reconnected every second (the soak's descriptor count
 * swung by 15 with 20 containers running); these are reused. */
#define SYNC_IDLE 32

/* *sync, made on first use; NULL when curl cannot make one. */
static CURLM *sync_multi(CURLM **sync) {
  if (*sync == NULL && (*sync = curl_multi_init()) != NULL)
    curl_multi_setopt(*sync, CURLMOPT_MAXCONNECTS, (long)SYNC_IDLE);
  return *sync;
}

CURLcode hx_perform_now(CURLM **sync, CURL *easy) {
  CURLM *multi = sync_multi(sync);
  if (multi == NULL)
    return curl_easy_perform(easy);
  /* Taken out while it runs: a transfer that one of this transfer's
   * callbacks makes with the same *sync gets a multi of its own (curl
   * refuses a multi's calls from its own callbacks); the one left over is
   * cleaned up after. */
  *sync = NULL;
  CURLcode rc;
  perform_now(multi, &easy, &rc, 1);
  if (*sync != NULL)
    curl_multi_cleanup(*sync);
  *sync = multi;
  return rc;
}

int hx_perform(lua_State *L, CURLM **sync, CURL *easy, lua_KContext ctx,
               lua_KFunction k) {
  if (hx_can_yield(L)) {
    lua_pushlightuserdata(L, (void *)&hx_async_mark);
    lua_pushlightuserdata(L, easy);
    return lua_yieldk(L, 2, ctx, k);
  }
  lua_pushinteger(L, (lua_Integer)hx_perform_now(sync, easy));
  return k(L, LUA_OK, ctx);
}

int hx_sleep(lua_State *L, lua_Integer ms, lua_KContext ctx, lua_KFunction k) {
  if (ms < 0)
    ms = 0;
  if (hx_can_yield(L)) {
    lua_pushlightuserdata(L, (void *)&hx_sleep_mark);
    lua_pushinteger(L, ms);
    return lua_yieldk(L, 2, ctx, k);
  }
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
  lua_pushinteger(L, 0);
  return k(L, LUA_OK, ctx);
}

int hx_perform_many(lua_State *L, CURLM **sync, CURL **easy, CURLcode *rc,
                    int n, lua_KContext ctx, lua_KFunction k) {
  if (n > 0 && hx_can_yield(L)) {
    lua_pushlightuserdata(L, (void *)&hx_async_many_mark);
    lua_pushlightuserdata(L, easy);
    lua_pushlightuserdata(L, rc);
    lua_pushinteger(L, n);
    return lua_yieldk(L, 4, ctx, k);
  }
  CURLM *multi = n > 0 ? sync_multi(sync) : NULL;
  for (int i = 0; i < n && multi == NULL; i++)
    rc[i] = CURLE_FAILED_INIT;
  if (multi != NULL) {
    *sync = NULL; /* as in hx_perform_now */
    perform_now(multi, easy, rc, n);
    if (*sync != NULL)
      curl_multi_cleanup(*sync);
    *sync = multi;
  }
  lua_pushinteger(L, 0);
  return k(L, LUA_OK, ctx);
}

/* ---- tasks (see async.h) ----------------------------------------------- */

/* The synchronous run: step, then wait for a descriptor or the time step
 * asked for. */
static void run_task_now(hx_task *t) {
  long ms;
  while ((ms = t->step(t)) != HX_TASK_DONE) {
    struct curl_waitfd w[HX_TASK_FDS];
    struct pollfd pf[HX_TASK_FDS];
    int n = t->fds(t, w);
    for (int i = 0; i < n; i++) {
      short ev = 0;
      if (w[i].events & CURL_WAIT_POLLIN)
        ev |= POLLIN;
      if (w[i].events & CURL_WAIT_POLLOUT)
        ev |= POLLOUT;
      pf[i] = (struct pollfd){w[i].fd, ev, 0};
    }
    if (n == 0 && ms < 0)
      ms = 1; /* nothing to wait on: a task that forgot its timer */
    if (poll(pf, (nfds_t)n, ms > INT_MAX ? INT_MAX : (int)ms) == -1 &&
        errno != EINTR)
      poll(NULL, 0, 1); /* cannot wait on them: do not spin */
  }
}

int hx_run_task(lua_State *L, hx_task *t, lua_KContext ctx, lua_KFunction k) {
  if (hx_can_yield(L)) {
    lua_pushlightuserdata(L, (void *)&hx_task_mark);
    lua_pushlightuserdata(L, t);
    return lua_yieldk(L, 2, ctx, k);
  }
  run_task_now(t);
  lua_pushinteger(L, 0);
  return k(L, LUA_OK, ctx);
}

/* ---- descriptors (see async.h) ----------------------------------------- */

curl_socket_t hx_open_socket(void *ud, curlsocktype purpose,
                             struct curl_sockaddr *addr) {
  (void)ud, (void)purpose;
  return socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
}
