/*
 * docker_breaker.c - horcrux.docker, the circuit breaker: what the process
 * remembers of each daemon (by DOCKER_HOST), so that a daemon that does not
 * answer is not asked again and again by every call of every Lua state.
 *
 * States, per host:
 *
 *   closed    calls go through. A call that gets no HTTP answer (kind
 *             unavailable or timeout, the request's deadline included)
 *             counts a failure; any answer, even a 5xx, resets the count.
 *             BREAK_AFTER failures in a row open it -- and so does one
 *             stall: a timeout after STALL_MS or more during which no call
 *             to that daemon got an answer (a daemon that answers nothing
 *             to anyone for that long is stopped, not slow).
 *   open      calls fail at once, kind "unavailable", with a message that
 *             says why and when the next probe is. When the back-off has
 *             passed, the next call becomes the probe.
 *   probing   one call sends GET /_ping (HXD_PROBE_MS at most) before its
 *             own request; the others still fail at once. An answer closes
 *             the breaker; no answer opens it again with the back-off
 *             doubled (BACKOFF_MS up to BACKOFF_MAX_MS) -- unless the probe
 *             failed at once (refused, no socket), which cost its caller
 *             nothing: then the back-off stays at BACKOFF_MS. A probe whose
 *             caller vanished (its request dropped) is given up after
 *             PROBE_LOST_MS and the next call probes.
 *
 * A success of any call closes it (a call sent before it opened may end
 * with an answer after). Hosts are the client's host string as configured
 * ("unix:///var/run/docker.sock"). A process keeps HXD_BREAKERS of them: a
 * slot that no client uses and whose breaker is closed remembers nothing
 * worth keeping and is taken for another host; with every slot in use, a
 * client of a further host has no breaker.
 */
#include "aux.h"
#include "docker_private.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define BREAK_AFTER 3
#define STALL_MS 1500
#define BACKOFF_MS 1000
#define BACKOFF_MAX_MS 2000
#define FAST_MS 100
#define PROBE_LOST_MS (HXD_PROBE_MS + 2000)

enum { CLOSED, OPEN, PROBING };
static const char *const state_names[] = {"closed", "open", "probing"};

struct hxd_breaker {
  char host[256];      /* "": a free slot */
  int users;           /* clients holding it */
  int state;           /* CLOSED, OPEN, PROBING */
  int failures;        /* in a row */
  long backoff_ms;     /* the last back-off */
  long long opened;    /* times it opened */
  int64_t last_ok;     /* monotonic ns: the last answer */
  int64_t probe_at;    /* monotonic ns: OPEN: the next probe; PROBING: when
                          the probe in flight is given up */
  int64_t probe_real;  /* wall-clock ns of the next probe, for messages */
  int64_t opened_real; /* wall-clock ns of the last opening */
  double last_waited;  /* seconds the last failure waited */
  char last_kind[16];
  char last_error[256];
};

/* Every breaker of the process, and their lock. Process-wide on purpose:
 * every Lua state (a worker's, the collector's) and every client must see
 * the same daemon as failing. Slots are never freed, so a client may keep a
 * pointer to its own. */
static hxd_breaker breakers[HXD_BREAKERS];
static pthread_mutex_t breakers_mu = PTHREAD_MUTEX_INITIALIZER;

/* The slot of host, or NULL; with the lock held. */
static hxd_breaker *find(const char *host) {
  for (int i = 0; i < HXD_BREAKERS; i++)
    if (strcmp(breakers[i].host, host) == 0)
      return &breakers[i];
  return NULL;
}

/* A slot for a new host: a free one, else one nobody uses whose breaker is
 * closed; or NULL. With the lock held. */
static hxd_breaker *take_slot(const char *host) {
  hxd_breaker *b = NULL;
  for (int i = 0; i < HXD_BREAKERS && b == NULL; i++)
    if (breakers[i].host[0] == '\0')
      b = &breakers[i];
  for (int i = 0; i < HXD_BREAKERS && b == NULL; i++)
    if (breakers[i].users == 0 && breakers[i].state == CLOSED)
      b = &breakers[i];
  if (b != NULL) {
    memset(b, 0, sizeof *b);
    snprintf(b->host, sizeof b->host, "%s", host);
  }
  return b;
}

hxd_breaker *hxd_breaker_for(const char *host) {
  if (strlen(host) >= sizeof breakers[0].host)
    return NULL;
  pthread_mutex_lock(&breakers_mu);
  hxd_breaker *b = find(host);
  if (b == NULL)
    b = take_slot(host);
  if (b != NULL)
    b->users++;
  pthread_mutex_unlock(&breakers_mu);
  return b;
}

void hxd_breaker_release(hxd_breaker *b) {
  if (b == NULL)
    return;
  pthread_mutex_lock(&breakers_mu);
  b->users--;
  pthread_mutex_unlock(&breakers_mu);
}

/* "12:00:03 UTC" of a wall-clock time in ns. */
static void clock_time(char *out, size_t n, int64_t real_ns) {
  time_t t = (time_t)(real_ns / 1000000000);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(out, n, "%H:%M:%S UTC", &tm);
}

static const char *times_word(int n, char *buf, size_t size) {
  if (n == 1)
    return "once";
  if (n == 2)
    return "twice";
  snprintf(buf, size, "%d times", n);
  return buf;
}

/* The refusal's message, with the lock held. */
static void refusal(const hxd_breaker *b, char *why, size_t n) {
  char when[32], times[24], last[300];
  if (strcmp(b->last_kind, HX_TIMEOUT) == 0)
    snprintf(last, sizeof last, "timeout after %.1f s", b->last_waited);
  else
    snprintf(last, sizeof last, "%s", b->last_error);
  if (b->state == PROBING) {
    snprintf(why, n,
             "docker: the daemon at %s did not answer %s (last: %s); a "
             "probe is under way",
             b->host, times_word(b->failures, times, sizeof times), last);
    return;
  }
  clock_time(when, sizeof when, b->probe_real);
  snprintf(why, n,
           "docker: the daemon at %s did not answer %s (last: %s); not asked "
           "again before %s",
           b->host, times_word(b->failures, times, sizeof times), last, when);
}

int hxd_breaker_gate(hxd_breaker *b, char *why, size_t n) {
  int gate = HXD_GO;
  if (b == NULL)
    return HXD_GO;
  int64_t now = hx_mono_ns();
  pthread_mutex_lock(&breakers_mu);
  if (b->state != CLOSED && now >= b->probe_at) {
    b->state = PROBING;
    b->probe_at = now + (int64_t)PROBE_LOST_MS * 1000000;
    gate = HXD_PROBE;
  } else if (b->state != CLOSED) {
    refusal(b, why, n);
    gate = HXD_REFUSED;
  }
  pthread_mutex_unlock(&breakers_mu);
  return gate;
}

int hxd_breaker_admits(hxd_breaker *b, char *why, size_t n) {
  int yes = 1;
  if (b == NULL)
    return 1;
  pthread_mutex_lock(&breakers_mu);
  if (b->state != CLOSED) {
    refusal(b, why, n);
    yes = 0;
  }
  pthread_mutex_unlock(&breakers_mu);
  return yes;
}

void hxd_breaker_ok(hxd_breaker *b) {
  if (b == NULL)
    return;
  pthread_mutex_lock(&breakers_mu);
  b->last_ok = hx_mono_ns();
  b->failures = 0;
  b->state = CLOSED;
  pthread_mutex_unlock(&breakers_mu);
}

/* Opens b (again) for `backoff_ms`, with the lock held. */
static void open_for(hxd_breaker *b, int64_t now, long backoff_ms) {
  if (b->state == CLOSED) {
    b->opened++;
    b->opened_real = hx_real_ns();
  }
  b->state = OPEN;
  b->backoff_ms = backoff_ms;
  b->probe_at = now + (int64_t)backoff_ms * 1000000;
  b->probe_real = hx_real_ns() + (int64_t)backoff_ms * 1000000;
}

void hxd_breaker_fail(hxd_breaker *b, int probe, const char *kind,
                      const char *msg, int64_t started) {
  if (b == NULL)
    return;
  int64_t now = hx_mono_ns();
  int64_t waited_ms = (now - started) / 1000000;
  if (strncmp(msg, "docker: ", 8) == 0)
    msg += 8;
  pthread_mutex_lock(&breakers_mu);
  int stall = strcmp(kind, HX_TIMEOUT) == 0 && waited_ms >= STALL_MS &&
              b->last_ok < started;
  b->failures++;
  b->last_waited = (double)(now - started) / 1e9;
  snprintf(b->last_kind, sizeof b->last_kind, "%s", kind);
  snprintf(b->last_error, sizeof b->last_error, "%s", msg);
  if (probe && b->state == PROBING) {
    long next = b->backoff_ms * 2;
    if (waited_ms < FAST_MS)
      next = BACKOFF_MS;
    open_for(b, now, next < BACKOFF_MAX_MS ? next : BACKOFF_MAX_MS);
  } else if (b->state == CLOSED && (b->failures >= BREAK_AFTER || stall)) {
    open_for(b, now, BACKOFF_MS);
  }
  pthread_mutex_unlock(&breakers_mu);
}

/* Pushes an RFC 3339 time (UTC, ms) of wall-clock ns. */
static void push_time(lua_State *L, int64_t real_ns) {
  char s[40];
  time_t t = (time_t)(real_ns / 1000000000);
  struct tm tm;
  gmtime_r(&t, &tm);
  size_t n = strftime(s, sizeof s, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(s + n, sizeof s - n, ".%03dZ", (int)(real_ns / 1000000 % 1000));
  lua_pushstring(L, s);
}

/* Fields of a copy c of a breaker not closed into the table on top. */
static void set_open_fields(lua_State *L, const hxd_breaker *c) {
  char why[600];
  refusal(c, why, sizeof why);
  lua_pushstring(L, why);
  lua_setfield(L, -2, "message");
  push_time(L, c->opened_real);
  lua_setfield(L, -2, "opened");
  if (c->state == OPEN) {
    push_time(L, c->probe_real);
    lua_setfield(L, -2, "next_probe");
    int64_t left = c->probe_at - hx_mono_ns();
    lua_pushnumber(L, left > 0 ? (lua_Number)left / 1e9 : 0);
    lua_setfield(L, -2, "next_probe_in");
  }
}

/* Pushes the state of a copy c. */
static void push_copy(lua_State *L, const hxd_breaker *b) {
  hxd_breaker c = *b;
  lua_createtable(L, 0, 10);
  lua_pushstring(L, c.host);
  lua_setfield(L, -2, "host");
  lua_pushstring(L, state_names[c.state]);
  lua_setfield(L, -2, "state");
  lua_pushinteger(L, c.failures);
  lua_setfield(L, -2, "failures");
  lua_pushinteger(L, (lua_Integer)c.opened);
  lua_setfield(L, -2, "opened_count");
  if (c.last_kind[0] != '\0') {
    lua_pushstring(L, c.last_error);
    lua_setfield(L, -2, "last_error");
    lua_pushstring(L, c.last_kind);
    lua_setfield(L, -2, "last_kind");
  }
  if (c.state != CLOSED)
    set_open_fields(L, &c);
}

void hxd_breaker_push(lua_State *L, hxd_breaker *b) {
  hxd_breaker c;
  pthread_mutex_lock(&breakers_mu);
  c = *b;
  pthread_mutex_unlock(&breakers_mu);
  push_copy(L, &c);
}

void hxd_breaker_push_host(lua_State *L, const char *host) {
  hxd_breaker c;
  memset(&c, 0, sizeof c);
  pthread_mutex_lock(&breakers_mu);
  hxd_breaker *b = find(host);
  if (b != NULL)
    c = *b;
  pthread_mutex_unlock(&breakers_mu);
  snprintf(c.host, sizeof c.host, "%s", host);
  push_copy(L, &c);
}

int hxd_breaker_refusal(lua_State *L, hxd_breaker *b) {
  char why[600];
  pthread_mutex_lock(&breakers_mu);
  refusal(b, why, sizeof why);
  pthread_mutex_unlock(&breakers_mu);
  return hx_fail(L, HX_UNAVAILABLE, "%s", why);
}
