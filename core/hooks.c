/*
 * hooks.c - horcrux.hooks: what the webhook thread of `horcrux serve`
 * needs from C.
 *
 *   hooks.attach() / hooks.detach()   the hooks thread takes the feed
 *   hooks.feed(event)  -> true | false[, why]   a table, JSON-encoded and
 *       queued for the hooks thread (any thread: the collector's); false
 *       when no hooks thread is attached, or it cannot be encoded
 *   hooks.take(wait_s [, max]) -> {json, ...}   waits up to wait_s for the
 *       first event, then takes up to max (default 256)
 *   hooks.feed_stats() -> {queued =, dropped =}
 *   hooks.feed_since(ns) / hooks.feed_since() -> ns | nil   the collector
 *       feeds every container event from ns on (set at its lists)
 *   hooks.interrupt(on)   makes take() and post() return at once (stop)
 *   hooks.open(dir, max_bytes) -> queue | nil, msg, kind, cut bytes
 *       q:append(body) -> id, dropped | nil, msg, kind   (not yet durable)
 *       q:sync() -> true | nil, msg, kind                (now it is)
 *       q:head() -> body, id, seq | nil
 *       q:ack(seq) -> true | nil, msg, kind
 *       q:pending() -> n, bytes, file bytes
 *       q:close()   (also __gc, __close)
 *   hooks.mark_load(dir) -> ns | false | nil, msg, kind   and
 *   hooks.mark_save(dir, ns) -> true | nil, msg, kind: DIR/events.mark, the
 *       time of the newest container event accepted (hooks_queue.h)
 *   hooks.file_save(dir, name, text) -> true | nil, msg, kind: DIR/name
 *       replaced whole and durably, as the mark is (the firing alerts)
 *   hooks.post{{url =, body =, headers = {k = v}, timeout = s}, ...}
 *       -> {{status = n} | {error = msg}, ...}: every POST at once (a curl
 *       multi), no redirect followed, http and https only
 *   hooks.poster() -> p: POSTs that go on across calls, so that a receiver
 *       that hangs holds only its own (the hooks thread's turns, the other
 *       hooks and the alert rules go on meanwhile)
 *       p:start(key, request) -> true   (request as hooks.post's; at most
 *           64 at once)
 *       p:poll([wait_s]) -> {{key =, status = n} | {key =, error = msg,
 *           timeout = bool}, ...}: the POSTs that ended since (waits up to
 *           wait_s, default 0, for one to make progress)
 *       p:running() -> n
 *       p:close()   aborts those still running (also __gc, __close)
 *   hooks.hmac_sha256(key, data) -> lower-case hex
 *   hooks.set_status(text), hooks.status() -> text | nil
 *   hooks.bounded(budget, fn, ...) -> true, fn's results | false, message
 *       fn called with the arguments in a coroutine of its own, stopped
 *       after `budget` Lua instructions (1 to 2^31-1) as a route is: from
 *       then on every instruction of it raises, so a pcall inside cannot
 *       go on; a yield is an error too. For an operator's filter,
 *       transform and alert test on the hooks thread, where a loop that
 *       never ends would hold every delivery.
 *
 * The feed and the status are process-wide: the collector's thread feeds,
 * the hooks thread takes and sets the status, every worker's state reads
 * it (GET /api/hooks). Each is behind a lock, and no Lua call is made while
 * one is held.
 */
#include "hooks.h"

#include "aux.h"
#include "hooks_queue.h"
#include "jsonconv.h"

#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FEED_MAX 10000 /* events waiting for the hooks thread */
#define TAKE_MAX 256
#define POST_MAX 64 /* POSTs at once */
#define QUEUE_MT "horcrux.hooks.queue"
#define POSTS_MT "horcrux.hooks.posts"
#define POSTER_MT "horcrux.hooks.poster"
#define BOX_MT "horcrux.hooks.box"

/* ---- the feed (process-wide) ------------------------------------------ */

/* Events go from the collector's thread to the hooks thread, each with a
 * Lua state of its own: a list of JSON texts under one lock. A ring of
 * FEED_MAX; when it is full the oldest goes (counted): the hooks thread
 * takes every 200 ms, so only a stalled hooks thread fills it. */
static struct {
  pthread_mutex_t mu;
  pthread_cond_t cond;
  char *item[FEED_MAX];
  size_t len[FEED_MAX];
  size_t first, count;
  unsigned long long dropped;
  int attached;
  long long since_ns; /* the collector feeds every event from then on */
} feed = {.mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static atomic_int interrupted;

void hx_hooks_interrupt(int on) {
  atomic_store(&interrupted, on);
  pthread_mutex_lock(&feed.mu);
  pthread_cond_broadcast(&feed.cond);
  pthread_mutex_unlock(&feed.mu);
}

static int l_attach(lua_State *L) {
  (void)L;
  pthread_mutex_lock(&feed.mu);
  feed.attached++;
  pthread_mutex_unlock(&feed.mu);
  return 0;
}

/* What is fed while no thread is attached any more stays for the next
 * one: a reload detaches the old hooks thread before the new attaches. */
static int l_detach(lua_State *L) {
  (void)L;
  pthread_mutex_lock(&feed.mu);
  if (feed.attached > 0)
    feed.attached--;
  pthread_mutex_unlock(&feed.mu);
  return 0;
}

static int l_feed(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  pthread_mutex_lock(&feed.mu);
  int on = feed.attached > 0;
  pthread_mutex_unlock(&feed.mu);
  if (!on) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (!hx_json_encode(L, 1, 0, 0)) { /* the caller's loop goes on */
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
  }
  size_t n;
  const char *s = lua_tolstring(L, -1, &n);
  char *copy = malloc(n + 1);
  if (copy == NULL)
    return luaL_error(L, "hooks.feed: out of memory");
  memcpy(copy, s, n + 1);
  pthread_mutex_lock(&feed.mu);
  if (feed.count == FEED_MAX) {
    free(feed.item[feed.first]);
    feed.first = (feed.first + 1) % FEED_MAX;
    feed.count--;
    feed.dropped++;
  }
  size_t at = (feed.first + feed.count) % FEED_MAX;
  feed.item[at] = copy;
  feed.len[at] = n;
  feed.count++;
  pthread_cond_signal(&feed.cond);
  pthread_mutex_unlock(&feed.mu);
  lua_pushboolean(L, 1);
  return 1;
}

/* hooks.feed_since(ns): the collector follows the engine's events from ns
 * on (its first list's time); hooks.feed_since() -> ns | nil: the hooks
 * thread replays up to where the feed begins (hooks_run.lua). */
static int l_feed_since(lua_State *L) {
  if (!lua_isnoneornil(L, 1)) {
    lua_Integer ns = luaL_checkinteger(L, 1);
    luaL_argcheck(L, ns > 0, 1, "a time in ns (> 0)");
    pthread_mutex_lock(&feed.mu);
    feed.since_ns = (long long)ns;
    pthread_mutex_unlock(&feed.mu);
    return 0;
  }
  pthread_mutex_lock(&feed.mu);
  long long ns = feed.since_ns;
  pthread_mutex_unlock(&feed.mu);
  if (ns == 0)
    lua_pushnil(L);
  else
    lua_pushinteger(L, (lua_Integer)ns);
  return 1;
}

/* The texts take() holds between the lock and Lua: freed by __gc if
 * pushing one raises. */
typedef struct box {
  size_t n;
  char *item[TAKE_MAX];
  size_t len[TAKE_MAX];
} box;

static int box_gc(lua_State *L) {
  box *b = luaL_checkudata(L, 1, BOX_MT);
  for (size_t i = 0; i < b->n; i++) {
    free(b->item[i]);
    b->item[i] = NULL;
  }
  b->n = 0;
  return 0;
}

static void wait_for_feed(double wait_s) {
  struct timespec at;
  clock_gettime(CLOCK_REALTIME, &at);
  long long ns = (long long)(wait_s * 1e9) + at.tv_nsec;
  at.tv_sec += (time_t)(ns / 1000000000);
  at.tv_nsec = (long)(ns % 1000000000);
  while (feed.count == 0 && !atomic_load(&interrupted))
    if (pthread_cond_timedwait(&feed.cond, &feed.mu, &at) == ETIMEDOUT)
      break;
}

static int l_take(lua_State *L) {
  double wait_s = luaL_optnumber(L, 1, 0);
  lua_Integer max = luaL_optinteger(L, 2, TAKE_MAX);
  if (max < 1 || max > TAKE_MAX)
    max = TAKE_MAX;
  box *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->n = 0;
  luaL_setmetatable(L, BOX_MT);
  pthread_mutex_lock(&feed.mu);
  if (wait_s > 0)
    wait_for_feed(wait_s > 3600 ? 3600 : wait_s);
  while (feed.count > 0 && b->n < (size_t)max) {
    b->item[b->n] = feed.item[feed.first];
    b->len[b->n++] = feed.len[feed.first];
    feed.first = (feed.first + 1) % FEED_MAX;
    feed.count--;
  }
  pthread_mutex_unlock(&feed.mu);
  lua_createtable(L, (int)b->n, 0);
  for (size_t i = 0; i < b->n; i++) {
    lua_pushlstring(L, b->item[i], b->len[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  for (size_t i = 0; i < b->n; i++)
    free(b->item[i]);
  b->n = 0;
  return 1;
}

static int l_feed_stats(lua_State *L) {
  pthread_mutex_lock(&feed.mu);
  size_t queued = feed.count;
  unsigned long long dropped = feed.dropped;
  pthread_mutex_unlock(&feed.mu);
  lua_createtable(L, 0, 2);
  lua_pushinteger(L, (lua_Integer)queued);
  lua_setfield(L, -2, "queued");
  lua_pushinteger(L, (lua_Integer)dropped);
  lua_setfield(L, -2, "dropped");
  return 1;
}

static int l_interrupt(lua_State *L) {
  hx_hooks_interrupt(lua_toboolean(L, 1));
  return 0;
}

/* ---- the status (process-wide) ---------------------------------------- */

/* The hooks thread's last word (JSON text) for GET /api/hooks and
 * /api/alerts, read by every worker. */
static struct {
  pthread_mutex_t mu;
  char *text;
  size_t len;
} status = {.mu = PTHREAD_MUTEX_INITIALIZER};

static int l_set_status(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  char *copy = malloc(n + 1);
  if (copy == NULL)
    return luaL_error(L, "hooks.set_status: out of memory");
  memcpy(copy, s, n + 1);
  pthread_mutex_lock(&status.mu);
  char *old = status.text;
  status.text = copy;
  status.len = n;
  pthread_mutex_unlock(&status.mu);
  free(old);
  return 0;
}

static int l_status(lua_State *L) {
  /* No Lua call under the lock: the room is made first, then the text is
   * copied if it still has that length (else again). */
  for (;;) {
    pthread_mutex_lock(&status.mu);
    size_t n = status.len;
    int none = status.text == NULL;
    pthread_mutex_unlock(&status.mu);
    if (none) {
      lua_pushnil(L);
      return 1;
    }
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, n);
    pthread_mutex_lock(&status.mu);
    int same = status.text != NULL && status.len == n;
    if (same)
      memcpy(p, status.text, n);
    pthread_mutex_unlock(&status.mu);
    if (same) {
      luaL_pushresultsize(&b, n);
      return 1;
    }
    lua_settop(L, 0);
  }
}

/* ---- the queue (hooks_queue.c) ---------------------------------------- */

typedef struct lqueue {
  hxq *q;
} lqueue;

static hxq *checkq(lua_State *L) {
  lqueue *u = luaL_checkudata(L, 1, QUEUE_MT);
  if (u->q == NULL)
    luaL_error(L, "hooks queue: closed");
  return u->q;
}

static int l_open(lua_State *L) {
  const char *dir = luaL_checkstring(L, 1);
  lua_Integer max = luaL_checkinteger(L, 2);
  luaL_argcheck(L, max >= HXQ_DATA_HEAD + 1024, 2, "at least 1 KiB");
  lqueue *u = lua_newuserdatauv(L, sizeof *u, 0);
  u->q = NULL;
  luaL_setmetatable(L, QUEUE_MT);
  char err[512];
  size_t cut = 0;
  errno = 0;
  u->q = hxq_open(dir, (uint64_t)max, &cut, err, sizeof err);
  if (u->q == NULL)
    return hx_fail(L, HX_IO, "%s", err);
  lua_pushnil(L);
  lua_pushnil(L);
  lua_pushinteger(L, (lua_Integer)cut);
  return 4;
}

/* hooks.mark_load(dir) -> ns | false (no mark) | nil, msg, kind */
static int l_mark_load(lua_State *L) {
  const char *dir = luaL_checkstring(L, 1);
  int64_t ns = 0;
  int got = hxq_mark_load(dir, &ns);
  if (got < 0)
    return hx_fail_errno(L, HX_IO, "hooks: reading " HXQ_MARK, errno);
  if (got == 0)
    lua_pushboolean(L, 0);
  else
    lua_pushinteger(L, (lua_Integer)ns);
  return 1;
}

/* hooks.file_save(dir, name, text) -> true | nil, msg, kind: DIR/name
 * replaced whole (durable once true) */
static int l_file_save(lua_State *L) {
  const char *dir = luaL_checkstring(L, 1);
  const char *name = luaL_checkstring(L, 2);
  size_t len;
  const char *text = luaL_checklstring(L, 3, &len);
  luaL_argcheck(L, name[0] != '\0' && strchr(name, '/') == NULL, 2,
                "a file name, no '/'");
  if (hxq_file_save(dir, name, text, len) != 0) {
    int err = errno;
    return hx_fail_errno(L, HX_IO, lua_pushfstring(L, "hooks: saving %s", name),
                         err);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* hooks.mark_save(dir, ns) -> true | nil, msg, kind (durable once true) */
static int l_mark_save(lua_State *L) {
  const char *dir = luaL_checkstring(L, 1);
  lua_Integer ns = luaL_checkinteger(L, 2);
  luaL_argcheck(L, ns >= 0, 2, "a time in ns (>= 0)");
  if (hxq_mark_save(dir, (int64_t)ns) != 0)
    return hx_fail_errno(L, HX_IO, "hooks: saving " HXQ_MARK, errno);
  lua_pushboolean(L, 1);
  return 1;
}

static int q_append(lua_State *L) {
  hxq *q = checkq(L);
  size_t n;
  const char *body = luaL_checklstring(L, 2, &n);
  char id[HXQ_ID_LEN + 1];
  unsigned dropped = 0;
  if (hxq_append(q, body, n, id, &dropped) != 0)
    return hx_fail_errno(L, errno == EMSGSIZE ? HX_LIMIT : HX_IO,
                         "hooks queue: append", errno);
  lua_pushstring(L, id);
  lua_pushinteger(L, (lua_Integer)dropped);
  return 2;
}

static int q_sync(lua_State *L) {
  if (hxq_sync(checkq(L)) != 0)
    return hx_fail_errno(L, HX_IO, "hooks queue: fsync", errno);
  lua_pushboolean(L, 1);
  return 1;
}

static int q_head(lua_State *L) {
  hxq *q = checkq(L);
  size_t n;
  char id[HXQ_ID_LEN + 1];
  uint64_t seq;
  if (!hxq_head(q, &n, id, &seq)) {
    lua_pushnil(L);
    return 1;
  }
  luaL_Buffer b;
  char *p = luaL_buffinitsize(L, &b, n);
  if (hxq_read_head(q, p) != 0)
    return hx_fail_errno(L, HX_IO, "hooks queue: read", errno);
  luaL_pushresultsize(&b, n);
  lua_pushstring(L, id);
  lua_pushinteger(L, (lua_Integer)seq);
  return 3;
}

static int q_ack(lua_State *L) {
  hxq *q = checkq(L);
  lua_Integer seq = luaL_checkinteger(L, 2);
  luaL_argcheck(L, seq >= 0, 2, "a seq");
  if (hxq_ack(q, (uint64_t)seq) != 0)
    return hx_fail_errno(L, HX_IO, "hooks queue: ack", errno);
  lua_pushboolean(L, 1);
  return 1;
}

static int q_pending(lua_State *L) {
  hxq *q = checkq(L);
  lua_pushinteger(L, (lua_Integer)hxq_pending(q));
  lua_pushinteger(L, (lua_Integer)hxq_pending_bytes(q));
  lua_pushinteger(L, (lua_Integer)hxq_file_bytes(q));
  return 3;
}

static int q_close(lua_State *L) {
  lqueue *u = luaL_checkudata(L, 1, QUEUE_MT);
  hxq_close(u->q);
  u->q = NULL;
  return 0;
}

/* ---- POST (libcurl) ----------------------------------------------------- */

typedef struct post {
  CURL *e;
  struct curl_slist *headers;
  long status;
  CURLcode rc;
  char err[CURL_ERROR_SIZE];
} post;

typedef struct posts {
  int n;
  CURLM *multi;
  post p[POST_MAX];
} posts;

static int posts_gc(lua_State *L) {
  posts *ps = luaL_checkudata(L, 1, POSTS_MT);
  for (int i = 0; i < ps->n; i++) {
    if (ps->p[i].e != NULL) {
      if (ps->multi != NULL)
        curl_multi_remove_handle(ps->multi, ps->p[i].e);
      curl_easy_cleanup(ps->p[i].e);
    }
    curl_slist_free_all(ps->p[i].headers);
    ps->p[i].e = NULL;
    ps->p[i].headers = NULL;
  }
  if (ps->multi != NULL)
    curl_multi_cleanup(ps->multi);
  ps->multi = NULL;
  ps->n = 0;
  return 0;
}

static size_t discard(char *p, size_t size, size_t n, void *ud) {
  (void)p, (void)ud;
  return size * n; /* the receiver's answer: only its status counts */
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init(void) { curl_global_init(CURL_GLOBAL_ALL); }

/* Builds p from the request table on top of the stack (request i, for
 * messages). Raises on a bad field: p is in a userdata whose __gc frees
 * what was made so far. */
static void post_build(lua_State *L, post *p, int i) {
  int t = lua_gettop(L);
  const char *url = hx_opt_string(L, t, "url", NULL);
  if (url == NULL)
    luaL_error(L, "hooks.post: request %d has no url", i + 1);
  size_t n = 0;
  lua_getfield(L, t, "body");
  const char *body = lua_tolstring(L, -1, &n);
  if (body == NULL)
    luaL_error(L, "hooks.post: request %d has no body string", i + 1);
  double timeout = hx_opt_number(L, t, "timeout", 10);
  p->e = curl_easy_init();
  if (p->e == NULL)
    luaL_error(L, "hooks.post: out of memory");
  lua_getfield(L, t, "headers");
  if (lua_istable(L, -1)) {
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
      if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING) {
        lua_pushfstring(L, "%s: %s", lua_tostring(L, -2), lua_tostring(L, -1));
        struct curl_slist *h =
            curl_slist_append(p->headers, lua_tostring(L, -1));
        if (h == NULL)
          luaL_error(L, "hooks.post: out of memory");
        p->headers = h;
        lua_pop(L, 1);
      }
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  curl_easy_setopt(p->e, CURLOPT_URL, url);
  curl_easy_setopt(p->e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(p->e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(p->e, CURLOPT_POST, 1L);
  curl_easy_setopt(p->e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)n);
  curl_easy_setopt(p->e, CURLOPT_COPYPOSTFIELDS, body);
  curl_easy_setopt(p->e, CURLOPT_HTTPHEADER, p->headers);
  curl_easy_setopt(p->e, CURLOPT_TIMEOUT_MS, (long)(timeout * 1000));
  curl_easy_setopt(p->e, CURLOPT_CONNECTTIMEOUT_MS,
                   (long)(timeout * 1000 < 5000 ? timeout * 1000 : 5000));
  curl_easy_setopt(p->e, CURLOPT_WRITEFUNCTION, discard);
  curl_easy_setopt(p->e, CURLOPT_ERRORBUFFER, p->err);
  curl_easy_setopt(p->e, CURLOPT_USERAGENT, "horcrux-hooks");
  lua_pop(L, 1); /* body */
}

static void posts_run(posts *ps) {
  for (int i = 0; i < ps->n; i++)
    curl_multi_add_handle(ps->multi, ps->p[i].e);
  int running = ps->n;
  while (running > 0 && !atomic_load(&interrupted)) {
    if (curl_multi_perform(ps->multi, &running) != CURLM_OK)
      break;
    if (running > 0)
      curl_multi_poll(ps->multi, NULL, 0, 100, NULL);
  }
  CURLMsg *m;
  int left;
  while ((m = curl_multi_info_read(ps->multi, &left)) != NULL) {
    if (m->msg != CURLMSG_DONE)
      continue;
    for (int i = 0; i < ps->n; i++)
      if (ps->p[i].e == m->easy_handle) {
        ps->p[i].rc = m->data.result;
        curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE,
                          &ps->p[i].status);
      }
  }
}

static int l_post(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  int n = (int)luaL_len(L, 1);
  luaL_argcheck(L, n <= POST_MAX, 1, "too many requests at once");
  pthread_once(&curl_once, curl_init);
  posts *ps = lua_newuserdatauv(L, sizeof *ps, 0);
  memset(ps, 0, sizeof *ps);
  luaL_setmetatable(L, POSTS_MT);
  for (int i = 0; i < n; i++) {
    ps->p[i].rc = CURLE_ABORTED_BY_CALLBACK; /* until it ends */
    lua_rawgeti(L, 1, i + 1);
    luaL_argcheck(L, lua_istable(L, -1), 1, "a list of request tables");
    ps->n = i + 1; /* __gc frees it from here on */
    post_build(L, &ps->p[i], i);
    lua_pop(L, 1);
  }
  ps->multi = curl_multi_init();
  if (ps->multi == NULL)
    return luaL_error(L, "hooks.post: out of memory");
  posts_run(ps);
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    post *p = &ps->p[i];
    lua_createtable(L, 0, 1);
    if (p->rc == CURLE_OK) {
      lua_pushinteger(L, p->status);
      lua_setfield(L, -2, "status");
    } else {
      lua_pushstring(L, p->err[0] != '\0' ? p->err
                        : atomic_load(&interrupted)
                            ? "stopping"
                            : curl_easy_strerror(p->rc));
      lua_setfield(L, -2, "error");
      lua_pushboolean(L, p->rc == CURLE_OPERATION_TIMEDOUT);
      lua_setfield(L, -2, "timeout");
      lua_pushboolean(L, atomic_load(&interrupted));
      lua_setfield(L, -2, "interrupted");
    }
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushcfunction(L, posts_gc); /* the handles go now, not at a GC */
  lua_pushvalue(L, -3);
  lua_call(L, 1, 0);
  return 1;
}

/* ---- the poster: POSTs across calls ------------------------------------ */

/* One multi for the hooks thread's whole life: each turn starts what is
 * due and takes what ended, never waiting for the slowest receiver (one
 * that hangs until its timeout held every hook and the alert rules). */
enum { SLOT_FREE, SLOT_RUNNING, SLOT_ENDED };

typedef struct poster {
  CURLM *multi;
  post p[POST_MAX];
  lua_Integer key[POST_MAX];
  int state[POST_MAX];
} poster;

static void slot_free(poster *pt, int i) {
  post *p = &pt->p[i];
  if (p->e != NULL) {
    if (pt->state[i] == SLOT_RUNNING)
      curl_multi_remove_handle(pt->multi, p->e);
    curl_easy_cleanup(p->e);
  }
  curl_slist_free_all(p->headers);
  memset(p, 0, sizeof *p);
  pt->state[i] = SLOT_FREE;
}

static int poster_close(lua_State *L) {
  poster *pt = luaL_checkudata(L, 1, POSTER_MT);
  if (pt->multi != NULL) {
    for (int i = 0; i < POST_MAX; i++)
      slot_free(pt, i);
    curl_multi_cleanup(pt->multi);
    pt->multi = NULL;
  }
  return 0;
}

static poster *checkposter(lua_State *L) {
  poster *pt = luaL_checkudata(L, 1, POSTER_MT);
  if (pt->multi == NULL)
    luaL_error(L, "hooks poster: closed");
  return pt;
}

static int l_poster(lua_State *L) {
  pthread_once(&curl_once, curl_init);
  poster *pt = lua_newuserdatauv(L, sizeof *pt, 0);
  memset(pt, 0, sizeof *pt);
  luaL_setmetatable(L, POSTER_MT);
  pt->multi = curl_multi_init();
  if (pt->multi == NULL)
    return luaL_error(L, "hooks.poster: out of memory");
  return 1;
}

static int pt_start(lua_State *L) {
  poster *pt = checkposter(L);
  lua_Integer key = luaL_checkinteger(L, 2);
  luaL_checktype(L, 3, LUA_TTABLE);
  int i = 0;
  while (i < POST_MAX && pt->state[i] != SLOT_FREE)
    i++;
  if (i == POST_MAX)
    return luaL_error(L, "hooks poster: %d POSTs at once already", POST_MAX);
  slot_free(pt, i); /* what a start that raised in post_build left */
  lua_settop(L, 3);
  post_build(L, &pt->p[i], 0);
  pt->key[i] = key;
  if (curl_multi_add_handle(pt->multi, pt->p[i].e) != CURLM_OK) {
    slot_free(pt, i);
    return luaL_error(L, "hooks poster: cannot start a POST");
  }
  pt->state[i] = SLOT_RUNNING;
  lua_pushboolean(L, 1);
  return 1;
}

/* Pushes {key =, status =} or {key =, error =, timeout =} for slot i. */
static void push_result(lua_State *L, const poster *pt, int i) {
  const post *p = &pt->p[i];
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, pt->key[i]);
  lua_setfield(L, -2, "key");
  if (p->rc == CURLE_OK) {
    lua_pushinteger(L, p->status);
    lua_setfield(L, -2, "status");
    return;
  }
  lua_pushstring(L, p->err[0] != '\0' ? p->err : curl_easy_strerror(p->rc));
  lua_setfield(L, -2, "error");
  lua_pushboolean(L, p->rc == CURLE_OPERATION_TIMEDOUT);
  lua_setfield(L, -2, "timeout");
}

static void take_ended(poster *pt) {
  CURLMsg *m;
  int left;
  while ((m = curl_multi_info_read(pt->multi, &left)) != NULL) {
    if (m->msg != CURLMSG_DONE)
      continue;
    for (int i = 0; i < POST_MAX; i++)
      if (pt->state[i] == SLOT_RUNNING && pt->p[i].e == m->easy_handle) {
        pt->p[i].rc = m->data.result; /* m is gone once removed */
        curl_easy_getinfo(pt->p[i].e, CURLINFO_RESPONSE_CODE, &pt->p[i].status);
        curl_multi_remove_handle(pt->multi, pt->p[i].e);
        pt->state[i] = SLOT_ENDED;
        break;
      }
  }
}

static int pt_poll(lua_State *L) {
  poster *pt = checkposter(L);
  double wait_s = luaL_optnumber(L, 2, 0);
  int running = 0;
  curl_multi_perform(pt->multi, &running);
  if (running > 0 && wait_s > 0) {
    int ms = wait_s > 1 ? 1000 : (int)(wait_s * 1000);
    curl_multi_poll(pt->multi, NULL, 0, ms, NULL);
    curl_multi_perform(pt->multi, &running);
  }
  take_ended(pt);
  /* the results first, then the slots freed: a push that raises leaves
   * the ended ones to the next poll */
  lua_newtable(L);
  int n = 0;
  for (int i = 0; i < POST_MAX; i++)
    if (pt->state[i] == SLOT_ENDED) {
      push_result(L, pt, i);
      lua_rawseti(L, -2, ++n);
    }
  for (int i = 0; i < POST_MAX; i++)
    if (pt->state[i] == SLOT_ENDED)
      slot_free(pt, i);
  return 1;
}

static int pt_running(lua_State *L) {
  poster *pt = checkposter(L);
  int n = 0;
  for (int i = 0; i < POST_MAX; i++)
    n += pt->state[i] == SLOT_RUNNING;
  lua_pushinteger(L, n);
  return 1;
}

/* ---- HMAC --------------------------------------------------------------- */

static int l_hmac(lua_State *L) {
  size_t kn, dn;
  const char *key = luaL_checklstring(L, 1, &kn);
  const char *data = luaL_checklstring(L, 2, &dn);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdn = 0;
  if (HMAC(EVP_sha256(), key, (int)kn, (const unsigned char *)data, dn, md,
           &mdn) == NULL)
    return luaL_error(L, "hooks.hmac_sha256: failed");
  static const char hex[] = "0123456789abcdef";
  char out[2 * EVP_MAX_MD_SIZE];
  for (unsigned i = 0; i < mdn; i++) {
    out[2 * i] = hex[md[i] >> 4];
    out[2 * i + 1] = hex[md[i] & 15];
  }
  lua_pushlstring(L, out, 2 * (size_t)mdn);
  return 1;
}

/* ---- bounded calls ------------------------------------------------------ */

static void over_budget(lua_State *L, lua_Debug *ar) {
  (void)ar;
  /* every instruction raises from now on: a pcall that catches the first
   * error cannot go on looping */
  lua_sethook(L, over_budget, LUA_MASKCOUNT, 1);
  luaL_error(L, "instruction budget exceeded");
}

static int l_bounded(lua_State *L) {
  lua_Integer budget = luaL_checkinteger(L, 1);
  luaL_argcheck(L, budget > 0 && budget <= INT_MAX, 1,
                "1 to 2^31-1 instructions");
  luaL_checktype(L, 2, LUA_TFUNCTION);
  int nargs = lua_gettop(L) - 2;
  lua_State *co = lua_newthread(L);
  lua_insert(L, 1);            /* the thread below the rest: kept from the GC */
  lua_xmove(L, co, nargs + 1); /* fn and its arguments */
  lua_sethook(co, over_budget, LUA_MASKCOUNT, (int)budget);
  int nres = 0;
  int rc = lua_resume(co, L, nargs, &nres);
  if (rc == LUA_OK) {
    luaL_checkstack(L, nres + 1, "hooks.bounded: too many results");
    lua_pushboolean(L, 1);
    lua_xmove(co, L, nres);
    return nres + 1;
  }
  lua_pushboolean(L, 0);
  if (rc == LUA_YIELD)
    lua_pushliteral(L, "a yield outside a coroutine of its own");
  else if (lua_type(co, -1) == LUA_TSTRING || lua_type(co, -1) == LUA_TNUMBER)
    lua_pushstring(L, lua_tostring(co, -1));
  else
    lua_pushfstring(L, "(error object is a %s value)", luaL_typename(co, -1));
  return 2;
}

static const luaL_Reg queue_methods[] = {
    {"append", q_append}, {"sync", q_sync},       {"head", q_head},
    {"ack", q_ack},       {"pending", q_pending}, {"close", q_close},
    {NULL, NULL}};

static const luaL_Reg poster_methods[] = {{"start", pt_start},
                                          {"poll", pt_poll},
                                          {"running", pt_running},
                                          {"close", poster_close},
                                          {NULL, NULL}};

static const luaL_Reg funcs[] = {
    {"attach", l_attach},       {"detach", l_detach},
    {"feed", l_feed},           {"feed_since", l_feed_since},
    {"take", l_take},           {"feed_stats", l_feed_stats},
    {"interrupt", l_interrupt}, {"set_status", l_set_status},
    {"status", l_status},       {"open", l_open},
    {"mark_load", l_mark_load}, {"mark_save", l_mark_save},
    {"file_save", l_file_save}, {"post", l_post},
    {"poster", l_poster},       {"hmac_sha256", l_hmac},
    {"bounded", l_bounded},     {NULL, NULL}};

HX_EXPORT int luaopen_horcrux_hooks(lua_State *L) {
  if (luaL_newmetatable(L, QUEUE_MT)) {
    luaL_newlib(L, queue_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, q_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, q_close);
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, POSTS_MT)) {
    lua_pushcfunction(L, posts_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, POSTER_MT)) {
    luaL_newlib(L, poster_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, poster_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, poster_close);
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, BOX_MT)) {
    lua_pushcfunction(L, box_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  return 1;
}
