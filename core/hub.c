/*
 * hub.c - horcrux.hub: process-wide topics, messages encoded once, bounded
 * subscriber queues (hub.h says what they are).
 *
 *   hub.publish(topic, data [, {event = NAME}]) -> id (ring topics) | 0
 *       data: a string (the JSON payload, encoded once by the caller).
 *       Nobody subscribed and no ring: nothing is allocated.
 *   hub.ring(topic, n)            the topic keeps its last n messages, with
 *                                 ids (the server does so for "events")
 *   hub.recent(topic [, after])   -> {{id =, data =}, ...} held in the ring
 *                                    after id `after`, oldest first
 *   hub.last_id(topic)            -> the newest id given (0: none)
 *   hub.topics([prefix])          -> names of the topics with subscribers
 *   hub.subscribers([topic])      -> how many (of the topic, or in all)
 *   hub.stream{topic =, interval = S, last_id = N | "N"}
 *                                 -> a stream object a route returns; the
 *                                    host subscribes when it answers
 *   hub.counts()                  -> {{topic =, transport =, subscribers =,
 *                                    overflows =}, ...}: by topic family
 *                                    and transport (GET /metrics)
 *   hub.keepalive([seconds])      a keep-alive to every subscriber idle
 *                                 that long (default 15)
 *   hub.sse(id, event, data)      -> the SSE frame (specs)
 *
 * Subscribers of a ring topic read the ring itself (a cursor: no memory of
 * their own, so a burst of events never drops a reader that keeps up); one
 * whose next message the ring no longer holds gets `overflow`. Subscribers
 * of other topics have queues of at most --stream-queue messages and
 * --stream-bytes bytes; a full queue takes `overflow` and ends.
 *
 * The lock. Topics, their rings and the subscriber queues are global
 * because publishers and consumers are in different threads and Lua
 * states: the collector's thread publishes, MHD's worker threads (and the
 * WebSocket thread) consume. One mutex guards them all; every section under
 * it is short and never blocks (no I/O, no Lua, no allocation larger than
 * one message), so a publisher is delayed by at most the copy of a payload
 * and a pointer per subscriber. Messages themselves are immutable once
 * published, and their reference counts atomic: a consumer writes one out
 * without the lock.
 */
#include "hub.h"

#include "aux.h"
#include "docker_private.h"

#include <lauxlib.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STREAM_MT "horcrux.hub.stream"
#define MAX_ENDPOINTS 16
#define DEFAULT_QUEUE 64
#define DEFAULT_BYTES ((size_t)4 << 20)
#define DEFAULT_RING 10000
#define MAX_RING 1000000
#define EVENT_MAX 64

typedef struct topic {
  struct topic *next;
  hx_sub *subs;
  unsigned nsubs;
  hx_msg **ring; /* ring_cap slots; ring_n held, oldest at ring_head */
  unsigned ring_cap, ring_n, ring_head;
  long long next_id; /* the id the next message gets (ring topics) */
  char name[];
} topic;

struct hx_sub {
  topic *t;
  hx_sub *next, *prev;
  hx_msg **q; /* cap slots: the queue bound plus one for the final one */
  unsigned cap, head, n;
  size_t bytes;
  long long cursor; /* ring topics: the last id queued */
  int replaying;    /* ring messages after cursor wait in the ring */
  int ended;        /* the final message is queued: nothing more */
  int armed;        /* the consumer waits for wake */
  int closed;       /* its consumer let it go (fed: the producer may not) */
  int refs;         /* the consumer, and a fed one's producer */
  unsigned long long producer; /* fed: the producer's id for `closed` */
  hx_closed_fn on_closed;      /* fed: how its producer is stopped */
  int64_t interval_ns, sent_ns, touched_ns;
  hx_wake_fn wake;
  void *ud;
  struct hub_count *counted; /* its slot of the counts, or NULL */
};

static struct {
  pthread_mutex_t mu;
  topic *topics;
  int closing;
  unsigned queue;
  size_t bytes;
  unsigned events_ring;
  hx_endpoint ep[MAX_ENDPOINTS]; /* log follows' daemons, never freed */
  int nep;
  int (*follows)(void); /* the host's count of follows' transfers */
} H = {.mu = PTHREAD_MUTEX_INITIALIZER,
       .queue = DEFAULT_QUEUE,
       .bytes = DEFAULT_BYTES,
       .events_ring = DEFAULT_RING};

/* ---- counts for GET /metrics ------------------------------------------
 *
 * Subscribers now and subscribers ended by overflow, by topic family (the
 * topic up to its first '/' or '?': "stats", "events") and transport. A
 * slot is made at a subscription and kept, so a family reads 0 once its
 * last subscriber left; past MAX_COUNTS slots, families share "other".
 * Changed under H.mu where a subscriber comes, goes or overflows; nothing
 * per message. */

#define MAX_COUNTS 48
#define FAMILY_MAX 32

typedef struct hub_count {
  char family[FAMILY_MAX];
  int via;
  unsigned subs;
  unsigned long long overflows;
} hub_count;

static hub_count counts[MAX_COUNTS];
static int ncounts;

/* The slot of (topic's family, via), made when new (H.mu held). */
static hub_count *count_of(const char *topic, int via) {
  char fam[FAMILY_MAX] = "other";
  size_t n = strcspn(topic, "/?");
  if (n > 0 && n < FAMILY_MAX)
    memcpy(fam, topic, n), fam[n] = '\0';
  via = via >= HX_VIA_OTHER && via <= HX_VIA_WEBSOCKET ? via : HX_VIA_OTHER;
  for (int pass = 0; pass < 2; pass++) {
    for (int i = 0; i < ncounts; i++)
      if (counts[i].via == via && strcmp(counts[i].family, fam) == 0)
        return &counts[i];
    /* the last four slots are kept for "other" */
    int room = strcmp(fam, "other") == 0 ? MAX_COUNTS : MAX_COUNTS - 4;
    if (ncounts < room) {
      hub_count *c = &counts[ncounts++];
      memcpy(c->family, fam, sizeof fam);
      c->via = via;
      return c;
    }
    memcpy(fam, "other", 6);
  }
  return NULL;
}

/* ---- messages ---------------------------------------------------------- */

size_t hx_sse_frame(char *out, size_t cap, long long id, const char *event,
                    const char *data, size_t len) {
  size_t n = 0;
#define PUT(s, k)                                                              \
  do {                                                                         \
    size_t k_ = (k);                                                           \
    if (n < cap)                                                               \
      memcpy(out + n, (s), n + k_ <= cap ? k_ : cap - n);                      \
    n += k_;                                                                   \
  } while (0)
  char num[32];
  if (id > 0) {
    int k = snprintf(num, sizeof num, "id: %lld\n", id);
    PUT(num, (size_t)k);
  }
  if (event != NULL && event[0] != '\0') {
    PUT("event: ", 7);
    PUT(event, strlen(event));
    PUT("\n", 1);
  }
  /* SSE ends a line at \r, \n or \r\n: each line of data is a data: field */
  size_t i = 0;
  for (;;) {
    size_t j = i;
    while (j < len && data[j] != '\n' && data[j] != '\r')
      j++;
    PUT("data: ", 6);
    PUT(data + i, j - i);
    PUT("\n", 1);
    if (j >= len)
      break;
    if (data[j] == '\r' && j + 1 < len && data[j + 1] == '\n')
      j++;
    i = j + 1;
  }
  PUT("\n", 1);
#undef PUT
  return n;
}

/* A message of kind with payload data[0..len) (for a ring topic with an
 * object payload, `{"event_id":id,` is spliced in front of its members). */
static hx_msg *msg_new(int kind, long long id, const char *event,
                       const char *data, size_t len) {
  char head[48];
  size_t hn = 0;
  if (id > 0 && len >= 2 && data[0] == '{') {
    hn = (size_t)snprintf(head, sizeof head, "{\"event_id\":%lld%s", id,
                          data[1] == '}' ? "" : ",");
    data++, len--;
  }
  size_t plen = hn + len;
  size_t sse_max = plen * 2 + 96 + (event ? strlen(event) : 0);
  hx_msg *m = malloc(sizeof *m + plen + 1 + sse_max);
  if (m == NULL)
    return NULL;
  atomic_init(&m->refs, 1);
  m->kind = kind;
  m->id = id;
  m->data_cap = m->sse_cap = 0; /* never changes */
  char *p = m->buf;
  memcpy(p, head, hn);
  memcpy(p + hn, data, len);
  p[plen] = '\0';
  m->data = p;
  m->len = plen;
  char *s = p + plen + 1;
  m->sse_len = hx_sse_frame(s, sse_max, id, event, p, plen);
  m->sse = s;
  return m;
}

static hx_msg *msg_ref(hx_msg *m) {
  atomic_fetch_add(&m->refs, 1);
  return m;
}

void hx_msg_unref(hx_msg *m) {
  if (m != NULL && atomic_fetch_sub(&m->refs, 1) == 1)
    free(m);
}

/* The keep-alive: one message every subscriber shares, made once (under
 * H.mu) and never freed. */
static hx_msg *keepalive_msg(void) {
  static hx_msg *ka;
  if (ka == NULL) {
    ka = malloc(sizeof *ka + 16);
    if (ka == NULL)
      return NULL;
    atomic_init(&ka->refs, 1); /* never freed */
    ka->kind = HX_MSG_KEEPALIVE;
    ka->data_cap = ka->sse_cap = 0;
    ka->id = 0;
    memcpy(ka->buf, ": keepalive\n\n", 14);
    ka->sse = ka->buf;
    ka->sse_len = 13;
    ka->data = ka->buf + 13; /* "" */
    ka->len = 0;
  }
  return ka;
}

/* ---- topics (callers hold H.mu) ---------------------------------------- */

static topic *find_topic(const char *name) {
  for (topic *t = H.topics; t != NULL; t = t->next)
    if (strcmp(t->name, name) == 0)
      return t;
  return NULL;
}

static topic *get_topic(const char *name) {
  topic *t = find_topic(name);
  if (t != NULL)
    return t;
  size_t n = strlen(name);
  t = calloc(1, sizeof *t + n + 1);
  if (t == NULL)
    return NULL;
  memcpy(t->name, name, n + 1);
  t->next_id = 1;
  t->next = H.topics;
  H.topics = t;
  return t;
}

/* Drops a topic with neither subscribers nor a ring. */
static void maybe_drop(topic *t) {
  if (t->nsubs != 0 || t->ring_cap != 0)
    return;
  for (topic **pp = &H.topics; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == t) {
      *pp = t->next;
      free(t);
      return;
    }
  }
}

static long long ring_oldest(const topic *t) { return t->next_id - t->ring_n; }

static hx_msg *ring_at(const topic *t, long long id) {
  long long off = id - ring_oldest(t);
  if (off < 0 || off >= t->ring_n)
    return NULL;
  return t->ring[(t->ring_head + (unsigned)off) % t->ring_cap];
}

static void ring_put(topic *t, hx_msg *m) {
  if (t->ring_n == t->ring_cap) {
    hx_msg_unref(t->ring[t->ring_head]);
    t->ring_head = (t->ring_head + 1) % t->ring_cap;
    t->ring_n--;
  }
  t->ring[(t->ring_head + t->ring_n) % t->ring_cap] = msg_ref(m);
  t->ring_n++;
}

static int set_ring(topic *t, unsigned n) {
  if (n == t->ring_cap)
    return 0;
  hx_msg **r = calloc(n ? n : 1, sizeof *r);
  if (r == NULL)
    return -1;
  unsigned keep = t->ring_n < n ? t->ring_n : n;
  for (unsigned i = 0; i < t->ring_n; i++) {
    hx_msg *m = t->ring[(t->ring_head + i) % t->ring_cap];
    if (i >= t->ring_n - keep)
      r[i - (t->ring_n - keep)] = m;
    else
      hx_msg_unref(m);
  }
  free(t->ring);
  t->ring = n ? r : NULL;
  if (n == 0)
    free(r);
  t->ring_cap = n;
  t->ring_n = keep;
  t->ring_head = 0;
  return 0;
}

/* ---- subscriber queues (callers hold H.mu) ----------------------------- */

static void wake(hx_sub *s) {
  s->touched_ns = hx_mono_ns();
  if (s->armed) {
    s->armed = 0;
    s->wake(s->ud);
  }
}

static void enqueue(hx_sub *s, hx_msg *m) {
  s->q[(s->head + s->n) % s->cap] = msg_ref(m);
  s->n++;
  s->bytes += m->len;
}

/* The last message of s: nothing is queued after it. */
static void finish(hx_sub *s, hx_msg *m) {
  if (s->ended || m == NULL)
    return;
  enqueue(s, m); /* the queue keeps a slot for it */
  s->ended = 1;
  wake(s);
}

static hx_msg *control(const char *event, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static hx_msg *control(const char *event, const char *fmt, ...) {
  char data[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(data, sizeof data, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sizeof data)
    return NULL;
  return msg_new(HX_MSG_FINAL, 0, event, data, (size_t)n);
}

static void overflow(hx_sub *s) {
  if (!s->ended && s->counted != NULL)
    s->counted->overflows++;
  hx_msg *m = control(
      "overflow",
      "{\"event\":\"overflow\",\"queued\":%u,\"bytes\":%zu,"
      "\"message\":\"the subscriber fell behind (%u messages or %zu bytes "
      "queued); reconnect\"}",
      s->n, s->bytes, H.queue, H.bytes);
  finish(s, m);
  hx_msg_unref(m);
}

/* Hands m to s, or ends s with overflow when its queue is full. */
static void push(hx_sub *s, hx_msg *m, int64_t now) {
  if (s->ended)
    return;
  if (s->interval_ns > 0) {
    /* a tenth of the interval early is on time: rounds jitter */
    if (s->sent_ns != 0 && now - s->sent_ns < s->interval_ns * 9 / 10)
      return;
    s->sent_ns = now;
  }
  if (s->n + 1 >= s->cap || s->bytes + m->len > H.bytes) {
    overflow(s);
    return;
  }
  enqueue(s, m);
  if (m->id > 0)
    s->cursor = m->id;
  wake(s);
}

/* Refills a replaying subscriber's queue from its topic's ring. */
static void refill(hx_sub *s) {
  topic *t = s->t;
  while (s->replaying && s->n + 1 < s->cap) {
    if (s->cursor + 1 >= t->next_id) {
      s->replaying = 0;
      break;
    }
    hx_msg *m = ring_at(t, s->cursor + 1);
    if (m == NULL) { /* overwritten before this subscriber read it */
      overflow(s);
      return;
    }
    if (s->bytes + m->len > H.bytes && s->n > 0)
      break;
    enqueue(s, m);
    s->cursor = m->id;
  }
}

/* ---- the C API ----------------------------------------------------------- */

static int sub_give(hx_sub *s, hx_msg *m, int final);

int hx_parse_event_id(const char *s, size_t n, long long *id) {
  while (n > 0 && (*s == ' ' || *s == '\t'))
    s++, n--;
  while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
    n--;
  if (n == 0 || n > 18)
    return -1;
  long long v = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    v = v * 10 + (s[i] - '0');
  }
  *id = v;
  return 0;
}

/* Positions a new subscriber of a ring topic after last_id: replay from
 * the ring, or a `gap` message first when the ring no longer holds (or
 * never held) the event after it. */
static void position(hx_sub *s, topic *t, long long last_id) {
  long long newest = t->next_id - 1, oldest = ring_oldest(t);
  s->cursor = newest;
  if (last_id < 0 || last_id == newest)
    return;
  if (last_id >= oldest - 1 && last_id < newest) {
    s->cursor = last_id;
    s->replaying = 1;
    return;
  }
  /* older than the ring, or newer than any id (an earlier run's) */
  hx_msg *m = control("gap",
                      "{\"event\":\"gap\",\"after\":%lld,\"resumed_at\":%lld,"
                      "\"message\":\"the events after %lld are no longer "
                      "held; the stream resumes at %lld\"}",
                      last_id, oldest, last_id, oldest);
  if (m != NULL) {
    m->kind = HX_MSG_DATA;
    enqueue(s, m);
    hx_msg_unref(m);
  }
  s->cursor = oldest - 1;
  s->replaying = t->ring_n > 0;
}

static hx_sub *subscribe(const hx_stream_spec *spec, hx_wake_fn wake_fn,
                         void *ud, hx_closed_fn closed) {
  hx_sub *s = calloc(1, sizeof *s);
  if (s == NULL)
    return NULL;
  pthread_mutex_lock(&H.mu);
  s->cap = H.queue + 1;
  s->q = calloc(s->cap, sizeof *s->q);
  topic *t = H.closing || s->q == NULL ? NULL : get_topic(spec->topic);
  if (t == NULL) {
    pthread_mutex_unlock(&H.mu);
    free(s->q);
    free(s);
    return NULL;
  }
  s->t = t;
  s->wake = wake_fn;
  s->ud = ud;
  s->interval_ns = spec->interval_ns;
  s->touched_ns = hx_mono_ns();
  s->refs = closed != NULL ? 2 : 1;
  s->on_closed = closed;
  if (t->ring_cap > 0)
    position(s, t, spec->last_id);
  s->next = t->subs;
  if (t->subs != NULL)
    t->subs->prev = s;
  t->subs = s;
  t->nsubs++;
  s->counted = count_of(spec->topic, spec->via);
  if (s->counted != NULL)
    s->counted->subs++;
  pthread_mutex_unlock(&H.mu);
  return s;
}

hx_sub *hx_hub_subscribe(const hx_stream_spec *spec, hx_wake_fn wake_fn,
                         void *ud) {
  return subscribe(spec, wake_fn, ud, NULL);
}

hx_sub *hx_hub_subscribe_fed(const hx_stream_spec *spec, hx_wake_fn wake,
                             void *ud, hx_closed_fn closed) {
  return closed != NULL ? subscribe(spec, wake, ud, closed) : NULL;
}

void hx_sub_set_producer(hx_sub *s, unsigned long long id) {
  pthread_mutex_lock(&H.mu);
  s->producer = id;
  pthread_mutex_unlock(&H.mu);
}

int hx_sub_next(hx_sub *s, hx_msg **m) {
  pthread_mutex_lock(&H.mu);
  if (s->n == 0 && s->replaying)
    refill(s);
  int r;
  if (s->n > 0) {
    *m = s->q[s->head];
    s->head = (s->head + 1) % s->cap;
    s->n--;
    s->bytes -= (*m)->len;
    r = HX_SUB_MSG;
  } else if (s->ended) {
    r = HX_SUB_END;
  } else {
    s->armed = 1;
    r = HX_SUB_EMPTY;
  }
  pthread_mutex_unlock(&H.mu);
  return r;
}

/* Drops one reference to s (the caller holds H.mu); 1 when s is to be
 * freed (sub_free, after the lock). */
static int sub_unref(hx_sub *s) { return --s->refs == 0; }

static void sub_free(hx_sub *s) {
  for (unsigned i = 0; i < s->n; i++)
    hx_msg_unref(s->q[(s->head + i) % s->cap]);
  free(s->q);
  free(s);
}

void hx_sub_disarm(hx_sub *s) {
  pthread_mutex_lock(&H.mu);
  s->armed = 0;
  pthread_mutex_unlock(&H.mu);
}

void hx_sub_close(hx_sub *s) {
  if (s == NULL)
    return;
  pthread_mutex_lock(&H.mu);
  topic *t = s->t;
  if (s->prev != NULL)
    s->prev->next = s->next;
  else
    t->subs = s->next;
  if (s->next != NULL)
    s->next->prev = s->prev;
  t->nsubs--;
  if (s->counted != NULL)
    s->counted->subs--;
  maybe_drop(t);
  s->t = NULL;
  s->closed = s->ended = 1; /* no wake, no message from now on */
  s->armed = 0;
  hx_closed_fn closed = s->on_closed;
  unsigned long long producer = s->producer;
  int last = sub_unref(s);
  pthread_mutex_unlock(&H.mu);
  if (closed != NULL)
    closed(producer);
  if (last)
    sub_free(s);
}

void hx_sub_release(hx_sub *s) {
  if (s == NULL)
    return;
  pthread_mutex_lock(&H.mu);
  int last = sub_unref(s);
  pthread_mutex_unlock(&H.mu);
  if (last)
    sub_free(s);
}

#define JOIN_MAX ((size_t)256 * 1024) /* a fed message's data, joined */

/* A fed subscriber's message: data and its SSE frame, each in a region of
 * room for more (caps at least the lengths; a NUL after each). */
static hx_msg *msg_framed(const char *data, size_t len, size_t dcap,
                          const char *sse, size_t sse_len, size_t scap) {
  hx_msg *m = malloc(sizeof *m + dcap + 1 + scap + 1);
  if (m == NULL)
    return NULL;
  atomic_init(&m->refs, 1);
  m->kind = HX_MSG_DATA;
  m->id = 0;
  m->data_cap = dcap;
  m->sse_cap = scap;
  memcpy(m->buf, data, len);
  m->buf[len] = '\0';
  m->data = m->buf;
  m->len = len;
  char *f = m->buf + dcap + 1;
  memcpy(f, sse, sse_len);
  f[sse_len] = '\0';
  m->sse = f;
  m->sse_len = sse_len;
  return m;
}

/* Joins an event to the last message of s's queue, which its reader has
 * not taken (only the queue holds it: it may change). The caller holds
 * H.mu. Returns 0, or -1 when it cannot (none, full, out of memory). */
static int join_tail(hx_sub *s, const char *data, size_t len, const char *sse,
                     size_t sse_len) {
  if (s->n == 0)
    return -1;
  unsigned at = (s->head + s->n - 1) % s->cap;
  hx_msg *m = s->q[at];
  if (m->data_cap == 0 || atomic_load(&m->refs) != 1 ||
      m->len + 1 + len > JOIN_MAX)
    return -1;
  size_t dl = m->len + 1 + len, sl = m->sse_len + sse_len;
  if (dl > m->data_cap || sl > m->sse_cap) { /* twice the room */
    hx_msg *g = msg_framed(m->data, m->len, dl * 2, m->sse, m->sse_len, sl * 2);
    if (g == NULL)
      return -1;
    free(m); /* its only reference was the queue's */
    s->q[at] = m = g;
  }
  char *d = (char *)m->data, *f = (char *)m->sse;
  d[m->len] = '\n';
  memcpy(d + m->len + 1, data, len);
  d[dl] = '\0';
  memcpy(f + m->sse_len, sse, sse_len);
  f[sl] = '\0';
  m->len = dl;
  m->sse_len = sl;
  s->bytes += 1 + len;
  return 0;
}

int hx_sub_push(hx_sub *s, const char *event, const char *data, size_t len,
                int final) {
  hx_msg *m = msg_new(final ? HX_MSG_FINAL : HX_MSG_DATA, 0, event, data, len);
  return sub_give(s, m, final);
}

int hx_sub_push_framed(hx_sub *s, const char *data, size_t len, const char *sse,
                       size_t sse_len) {
  pthread_mutex_lock(&H.mu);
  if (!s->ended && s->bytes + 1 + len <= H.bytes &&
      join_tail(s, data, len, sse, sse_len) == 0) {
    wake(s);
    pthread_mutex_unlock(&H.mu);
    return 0;
  }
  pthread_mutex_unlock(&H.mu);
  size_t dcap = len < 512 ? 1024 : 2 * len;
  size_t scap = sse_len < 512 ? 1024 : 2 * sse_len;
  return sub_give(s, msg_framed(data, len, dcap, sse, sse_len, scap), 0);
}

static int sub_give(hx_sub *s, hx_msg *m, int final) {
  pthread_mutex_lock(&H.mu);
  if (m == NULL) /* out of memory: the subscriber ends, told so if it can */
    overflow(s);
  else if (final)
    finish(s, m);
  else
    push(s, m, hx_mono_ns());
  int ended = s->ended;
  pthread_mutex_unlock(&H.mu);
  hx_msg_unref(m);
  return ended && !final ? -1 : 0;
}

void hx_hub_close_all(const char *reason) {
  hx_msg *m =
      control("close", "{\"event\":\"close\",\"reason\":\"%s\"}", reason);
  pthread_mutex_lock(&H.mu);
  H.closing = 1;
  for (topic *t = H.topics; t != NULL; t = t->next)
    for (hx_sub *s = t->subs; s != NULL; s = s->next)
      finish(s, m);
  pthread_mutex_unlock(&H.mu);
  hx_msg_unref(m);
}

void hx_hub_configure(unsigned queue, size_t bytes, unsigned events_ring) {
  pthread_mutex_lock(&H.mu);
  if (queue > 0)
    H.queue = queue;
  if (bytes > 0)
    H.bytes = bytes;
  if (events_ring > 0) {
    H.events_ring = events_ring;
    topic *t = get_topic("events");
    if (t != NULL)
      set_ring(t, events_ring);
  }
  pthread_mutex_unlock(&H.mu);
}

int hx_hub_publish(const char *name, const char *event, const char *data,
                   size_t len, int final) {
  int reached = 0;
  pthread_mutex_lock(&H.mu);
  topic *t = find_topic(name);
  hx_msg *m =
      t == NULL || t->nsubs == 0
          ? NULL
          : msg_new(final ? HX_MSG_FINAL : HX_MSG_DATA, 0, event, data, len);
  int64_t now = hx_mono_ns();
  for (hx_sub *s = m != NULL ? t->subs : NULL; s != NULL; s = s->next) {
    reached += !s->ended;
    if (final)
      finish(s, m);
    else
      push(s, m, now);
  }
  pthread_mutex_unlock(&H.mu);
  hx_msg_unref(m);
  return reached;
}

unsigned hx_hub_subscribers(const char *name) {
  pthread_mutex_lock(&H.mu);
  topic *t = find_topic(name);
  unsigned n = t != NULL ? t->nsubs : 0;
  pthread_mutex_unlock(&H.mu);
  return n;
}

const hx_stream_spec *hx_stream_test(lua_State *L, int idx) {
  return luaL_testudata(L, idx, STREAM_MT);
}

/* ---- Lua --------------------------------------------------------------- */

static const char *check_topic(lua_State *L, int idx) {
  size_t n;
  const char *s = luaL_checklstring(L, idx, &n);
  luaL_argcheck(L, n > 0 && n < HX_TOPIC_MAX && strlen(s) == n, idx,
                "a topic is 1-255 bytes without NUL");
  return s;
}

static int l_publish(lua_State *L) {
  const char *name = check_topic(L, 1);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  const char *event = hx_opt_string(L, 3, "event", NULL);
  if (event != NULL)
    luaL_argcheck(
        L, strlen(event) < EVENT_MAX && strcspn(event, "\r\n") == strlen(event),
        3, "event: a name of at most 63 bytes, one line");
  pthread_mutex_lock(&H.mu);
  topic *t = find_topic(name);
  if (t == NULL || (t->nsubs == 0 && t->ring_cap == 0)) {
    pthread_mutex_unlock(&H.mu);
    lua_pushinteger(L, 0);
    return 1;
  }
  long long id = t->ring_cap > 0 ? t->next_id : 0;
  hx_msg *m = msg_new(HX_MSG_DATA, id, event, data, len);
  if (m == NULL) {
    pthread_mutex_unlock(&H.mu);
    return hx_fail(L, HX_LIMIT, "hub.publish: out of memory");
  }
  if (t->ring_cap > 0) {
    t->next_id++;
    ring_put(t, m);
  }
  int64_t now = hx_mono_ns();
  for (hx_sub *s = t->subs; s != NULL; s = s->next) {
    if (t->ring_cap == 0) {
      push(s, m, now);
    } else if (!s->ended) { /* it reads the ring: only woken */
      s->replaying = 1;
      wake(s);
    }
  }
  pthread_mutex_unlock(&H.mu);
  hx_msg_unref(m);
  lua_pushinteger(L, id);
  return 1;
}

static int l_ring(lua_State *L) {
  const char *name = check_topic(L, 1);
  lua_Integer n = luaL_checkinteger(L, 2);
  luaL_argcheck(L, n >= 0 && n <= MAX_RING, 2, "0..1000000");
  pthread_mutex_lock(&H.mu);
  topic *t = get_topic(name);
  int rc = t == NULL ? -1 : set_ring(t, (unsigned)n);
  if (t != NULL)
    maybe_drop(t);
  pthread_mutex_unlock(&H.mu);
  if (rc != 0)
    return hx_fail(L, HX_LIMIT, "hub.ring: out of memory");
  lua_pushboolean(L, 1);
  return 1;
}

/* Takes references under the lock, then builds the Lua table without it:
 * a memory error raised while building must not leave the lock held. */
static int l_recent(lua_State *L) {
  const char *name = check_topic(L, 1);
  lua_Integer after = luaL_optinteger(L, 2, 0);
  hx_msg **got = NULL;
  unsigned n = 0;
  pthread_mutex_lock(&H.mu);
  topic *t = find_topic(name);
  if (t != NULL && t->ring_n > 0) {
    got = malloc(t->ring_n * sizeof *got);
    if (got != NULL) {
      long long from = after + 1 > ring_oldest(t) ? after + 1 : ring_oldest(t);
      for (long long id = from; id < t->next_id; id++)
        got[n++] = msg_ref(ring_at(t, id));
    }
  }
  pthread_mutex_unlock(&H.mu);
  lua_createtable(L, (int)n, 0);
  for (unsigned i = 0; i < n; i++) {
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, got[i]->id);
    lua_setfield(L, -2, "id");
    lua_pushlstring(L, got[i]->data, got[i]->len);
    lua_setfield(L, -2, "data");
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  for (unsigned i = 0; i < n; i++)
    hx_msg_unref(got[i]);
  free(got);
  return 1;
}

static int l_last_id(lua_State *L) {
  const char *name = check_topic(L, 1);
  pthread_mutex_lock(&H.mu);
  topic *t = find_topic(name);
  long long id = t != NULL && t->ring_cap > 0 ? t->next_id - 1 : 0;
  pthread_mutex_unlock(&H.mu);
  lua_pushinteger(L, id);
  return 1;
}

static int l_topics(lua_State *L) {
  size_t plen = 0;
  const char *prefix = luaL_optlstring(L, 1, "", &plen);
  char names[64][HX_TOPIC_MAX];
  int n = 0;
  pthread_mutex_lock(&H.mu);
  for (topic *t = H.topics; t != NULL && n < 64; t = t->next)
    if (t->nsubs > 0 && strncmp(t->name, prefix, plen) == 0)
      memcpy(names[n++], t->name, strlen(t->name) + 1);
  pthread_mutex_unlock(&H.mu);
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    lua_pushstring(L, names[i]);
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

static int l_subscribers(lua_State *L) {
  const char *name = luaL_optstring(L, 1, NULL);
  lua_Integer n = 0;
  pthread_mutex_lock(&H.mu);
  for (topic *t = H.topics; t != NULL; t = t->next)
    if (name == NULL || strcmp(name, t->name) == 0)
      n += t->nsubs;
  pthread_mutex_unlock(&H.mu);
  lua_pushinteger(L, n);
  return 1;
}

/* The counts (a copy taken under the lock, the table built after it). */
static int l_counts(lua_State *L) {
  static const char *const via[] = {"other", "sse", "ndjson", "websocket"};
  hub_count *got = lua_newuserdatauv(L, sizeof counts, 0);
  pthread_mutex_lock(&H.mu);
  int n = ncounts;
  memcpy(got, counts, (size_t)n * sizeof *got);
  pthread_mutex_unlock(&H.mu);
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    lua_createtable(L, 0, 4);
    lua_pushstring(L, got[i].family);
    lua_setfield(L, -2, "topic");
    lua_pushstring(L, via[got[i].via]);
    lua_setfield(L, -2, "transport");
    lua_pushinteger(L, (lua_Integer)got[i].subs);
    lua_setfield(L, -2, "subscribers");
    lua_pushinteger(L, (lua_Integer)got[i].overflows);
    lua_setfield(L, -2, "overflows");
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

void hx_hub_count_follows(int (*count)(void)) {
  pthread_mutex_lock(&H.mu);
  H.follows = count;
  pthread_mutex_unlock(&H.mu);
}

/* hub.follows(): how many log follows' transfers are under way (each holds
 * a connection to the daemon); 0 without a host (stock lua5.4). */
static int l_follows(lua_State *L) {
  pthread_mutex_lock(&H.mu);
  int (*count)(void) = H.follows;
  pthread_mutex_unlock(&H.mu);
  lua_pushinteger(L, count != NULL ? count() : 0);
  return 1;
}

static int l_keepalive(lua_State *L) {
  lua_Number secs = luaL_optnumber(L, 1, 15);
  int64_t idle = (int64_t)(secs * 1e9), now = hx_mono_ns();
  pthread_mutex_lock(&H.mu);
  hx_msg *ka = keepalive_msg();
  for (topic *t = H.topics; t != NULL && ka != NULL; t = t->next)
    for (hx_sub *s = t->subs; s != NULL; s = s->next)
      if (!s->ended && s->n == 0 && now - s->touched_ns >= idle) {
        enqueue(s, ka);
        wake(s);
      }
  pthread_mutex_unlock(&H.mu);
  return 0;
}

/* The last id from a number or a string (Last-Event-ID); nil: none. */
static long long opt_last_id(lua_State *L, int idx) {
  lua_getfield(L, idx, "last_id");
  long long id = -1;
  if (lua_type(L, -1) == LUA_TNUMBER) {
    lua_Integer v = luaL_checkinteger(L, -1);
    luaL_argcheck(L, v >= 0, idx, "last_id must be >= 0");
    id = v;
  } else if (lua_type(L, -1) == LUA_TSTRING) {
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    if (hx_parse_event_id(s, n, &id) != 0)
      id = -1; /* a malformed Last-Event-ID: live only, as with none */
  } else if (!lua_isnil(L, -1)) {
    luaL_argerror(L, idx, "last_id: a number or a string");
  }
  lua_pop(L, 1);
  return id;
}

/* The exec table's (on top) rows and cols: both 1-65535, or neither. */
static void exec_size(lua_State *L, hx_stream_spec *sp) {
  lua_Integer rows = hx_opt_integer(L, -1, "rows", 0);
  lua_Integer cols = hx_opt_integer(L, -1, "cols", 0);
  luaL_argcheck(L,
                (rows == 0 && cols == 0) ||
                    (rows >= 1 && rows <= 65535 && cols >= 1 && cols <= 65535),
                1, "exec: rows and cols 1-65535, both or neither");
  sp->exec_rows = (unsigned)rows;
  sp->exec_cols = (unsigned)cols;
}

static int l_stream(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  const char *name = hx_opt_string(L, 1, "topic", NULL);
  luaL_argcheck(L,
                name != NULL && name[0] != '\0' && strlen(name) < HX_TOPIC_MAX,
                1, "topic: a name of 1-255 bytes");
  lua_Number interval = hx_opt_number(L, 1, "interval", 0);
  luaL_argcheck(L, interval >= 0 && interval <= 86400, 1,
                "interval: 0..86400 seconds");
  long long last = opt_last_id(L, 1);
  hx_stream_spec *sp = lua_newuserdatauv(L, sizeof *sp, 0);
  memset(sp, 0, sizeof *sp);
  memcpy(sp->topic, name, strlen(name) + 1);
  sp->interval_ns = (int64_t)(interval * 1e9);
  sp->last_id = last;
  if (lua_getfield(L, 1, "exec") == LUA_TTABLE) { /* stream.c's "exec" */
    const char *id = hx_opt_string(L, -1, "id", "");
    const char *sock = hx_opt_string(L, -1, "socket", "");
    const char *api = hx_opt_string(L, -1, "api", "");
    luaL_argcheck(L,
                  strlen(id) == 64 && strspn(id, "0123456789abcdef") == 64 &&
                      sock[0] == '/' && strlen(sock) < sizeof sp->exec_sock &&
                      strlen(api) < sizeof sp->exec_api &&
                      strspn(api, "0123456789.") == strlen(api),
                  1, "exec: {id = 64 hex, socket = /path, api = \"1.41\"}");
    memcpy(sp->exec, id, strlen(id) + 1);
    memcpy(sp->exec_sock, sock, strlen(sock) + 1);
    memcpy(sp->exec_api, api, strlen(api) + 1);
    exec_size(L, sp);
  }
  lua_pop(L, 1);
  luaL_setmetatable(L, STREAM_MT);
  return 1;
}

/* ---- log follow --------------------------------------------------------- */

static int same(const char *a, const char *b) {
  return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static char *dup_opt(const char *s, int *oom) {
  char *d = s != NULL ? strdup(s) : NULL;
  if (s != NULL && d == NULL)
    *oom = 1;
  return d;
}

/* The interned endpoint of client c, or NULL (every slot taken, or out of
 * memory). */
static const hx_endpoint *endpoint_of(const hxd_client *c) {
  const hx_endpoint *found = NULL;
  pthread_mutex_lock(&H.mu);
  for (int i = 0; i < H.nep && found == NULL; i++) {
    const hx_endpoint *e = &H.ep[i];
    if (same(e->sock, c->sock) && same(e->base, c->base) &&
        same(e->ca, c->ca) && same(e->cert, c->cert) && same(e->key, c->key) &&
        e->connect_timeout_ms == c->connect_timeout_ms)
      found = e;
  }
  if (found == NULL && H.nep < MAX_ENDPOINTS) {
    int oom = 0;
    hx_endpoint e = {dup_opt(c->sock, &oom), dup_opt(c->base, &oom),
                     dup_opt(c->ca, &oom),   dup_opt(c->cert, &oom),
                     dup_opt(c->key, &oom),  c->connect_timeout_ms};
    if (oom || e.base == NULL) {
      free((char *)e.sock), free((char *)e.base), free((char *)e.ca);
      free((char *)e.cert), free((char *)e.key);
    } else {
      H.ep[H.nep] = e;
      found = &H.ep[H.nep++];
    }
  }
  pthread_mutex_unlock(&H.mu);
  return found;
}

/* hub.follow{client =, id =, query =, tty =, timestamps =}: the stream of
 * GET /containers/<id>/logs?follow=1&<query> on the client's daemon, in
 * its negotiated API version. id: a full id; query: key=value pairs of
 * [A-Za-z0-9._:%+-], joined by &. */
static int l_follow(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "client");
  const hxd_client *c = luaL_testudata(L, -1, HXD_CLIENT_MT);
  luaL_argcheck(L, c != NULL && !c->closed, 1,
                "client: an open horcrux.docker client");
  const char *id = hx_opt_string(L, 1, "id", "");
  luaL_argcheck(L, strlen(id) == 64 && hx_is_lower_hex(id, 64), 1,
                "id: a container's full id");
  const char *query = hx_opt_string(L, 1, "query", "");
  luaL_argcheck(L,
                strspn(query, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRS"
                              "TUVWXYZ0123456789._:%+-=&") == strlen(query),
                1, "query: key=value pairs joined by &");
  int tty = hx_opt_boolean(L, 1, "tty", 0);
  int ts = hx_opt_boolean(L, 1, "timestamps", 0);
  const hx_endpoint *ep = endpoint_of(c);
  if (ep == NULL)
    return luaL_error(L, "hub.follow: no room for another daemon");
  hx_stream_spec *sp = lua_newuserdatauv(L, sizeof *sp, 0);
  memset(sp, 0, sizeof *sp);
  int n = snprintf(sp->path, sizeof sp->path,
                   "%s%s/containers/%s/logs?follow=1%s%s",
                   c->version[0] != '\0' ? "/v" : "", c->version, id,
                   query[0] != '\0' ? "&" : "", query);
  luaL_argcheck(L, n > 0 && (size_t)n < sizeof sp->path, 1, "query: too long");
  snprintf(sp->topic, sizeof sp->topic, "logs/%s", id);
  sp->last_id = -1;
  sp->ep = ep;
  sp->tty = tty;
  sp->timestamps = ts;
  luaL_setmetatable(L, STREAM_MT);
  return 1;
}

/* hub.demux(chunks, tty, timestamps [, max_line]) -> lines: what a log
 * follow makes of a stream that came in these chunks (specs, fuzz):
 * {stream =, line = [, time =][, truncated = true]}, and true when bytes
 * that are not frames ended it. */
static int l_stream_tostring(lua_State *L) {
  const hx_stream_spec *sp = luaL_checkudata(L, 1, STREAM_MT);
  lua_pushfstring(L, "hub.stream(%s)", sp->topic);
  return 1;
}

static int l_stream_index(lua_State *L) {
  const hx_stream_spec *sp = luaL_checkudata(L, 1, STREAM_MT);
  const char *k = luaL_checkstring(L, 2);
  if (strcmp(k, "topic") == 0)
    lua_pushstring(L, sp->topic);
  else if (strcmp(k, "interval") == 0)
    lua_pushnumber(L, (lua_Number)sp->interval_ns / 1e9);
  else if (strcmp(k, "last_id") == 0 && sp->last_id >= 0)
    lua_pushinteger(L, sp->last_id);
  else
    lua_pushnil(L);
  return 1;
}

static int l_is_stream(lua_State *L) {
  lua_pushboolean(L, hx_stream_test(L, 1) != NULL);
  return 1;
}

static int l_sse(lua_State *L) {
  lua_Integer id = luaL_optinteger(L, 1, 0);
  const char *event = luaL_optstring(L, 2, NULL);
  size_t len;
  const char *data = luaL_checklstring(L, 3, &len);
  luaL_Buffer b;
  size_t need = hx_sse_frame(NULL, 0, id, event, data, len);
  char *p = luaL_buffinitsize(L, &b, need);
  hx_sse_frame(p, need, id, event, data, len);
  luaL_pushresultsize(&b, need);
  return 1;
}

static const luaL_Reg funcs[] = {
    {"publish", l_publish},     {"ring", l_ring},
    {"recent", l_recent},       {"last_id", l_last_id},
    {"topics", l_topics},       {"subscribers", l_subscribers},
    {"keepalive", l_keepalive}, {"stream", l_stream},
    {"is_stream", l_is_stream}, {"sse", l_sse},
    {"follow", l_follow},       {NULL, NULL}};

HX_EXPORT int luaopen_horcrux_hub(lua_State *L) {
  if (luaL_newmetatable(L, STREAM_MT)) {
    lua_pushcfunction(L, l_stream_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushcfunction(L, l_stream_index);
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, "horcrux.hub.stream");
    lua_setfield(L, -2, "__name");
  }
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  hx_hub_demux_open(L);           /* hub.demux (hub_demux.c) */
  lua_pushcfunction(L, l_counts); /* GET /metrics' (telemetry) */
  lua_setfield(L, -2, "counts");
  lua_pushcfunction(L, l_follows); /* GET /metrics' too */
  lua_setfield(L, -2, "follows");
  return 1;
}
