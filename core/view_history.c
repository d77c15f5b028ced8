/*
 * view_history.c - each container's history in the live view: a ring of
 * points, one a collector round, and the answer of view.history().
 *
 * A point holds the wall clock, CPU %, the working set, pids and the four
 * I/O counters (rates are worked out when asked, from the counters, so a
 * missed round costs no accuracy), in 36 bytes (hslot below). The default
 * 15 minutes at 1 s is 900 points, 32,400 bytes a container.
 *
 * view.history(id, {window =, step =, points =}) buckets the points of the
 * last `window` ns into buckets of `step` ns ending now: a gauge (CPU %,
 * memory, pids) is the mean of its bucket, a counter a rate per second
 * from the last point before the bucket (or its first) to its last. A
 * bucket without a point gives no point. The summary is worked out from
 * the points given: min, mean, max, p90 and p99 (nearest rank), count.
 */
#define _GNU_SOURCE /* gmtime_r */
#include "aux.h"
#include "jsonconv.h"
#include "view_private.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A point as the ring keeps it: 36 bytes, not view_point's 64. The time
 * is milliseconds after the ring's base; the working set is exact (two
 * halves); pids share a word with the HP_* bits; each I/O counter is kept
 * as its change since the point before that had it, and the ring keeps
 * the newest value of each, so the points are rebuilt from the newest
 * back (a float's 24 bits make a change of up to 16 MB a round exact, a
 * larger one exact to 1 part in 16 million: rates, the only use of the
 * counters, are unchanged to that precision). */
typedef struct hslot {
  uint32_t dt_ms; /* after the ring's base */
  float pct;
  uint32_t mem_lo, mem_hi;
  uint32_t pids_have; /* pids << HP_BITS | have */
  float d[4];         /* rx, tx, rd, wr: the change */
} hslot;

#define HP_BITS 5
#define PIDS_MAX ((uint32_t)UINT32_MAX >> HP_BITS)
#define DT_MAX ((int64_t)UINT32_MAX)

struct view_ring {
  size_t cap, n, head; /* head: the slot the next point goes to */
  int64_t base_ms;     /* the wall clock of dt_ms 0 */
  uint64_t last[4];    /* the newest value of each counter (0: never) */
  hslot p[];
};

/* Process-wide like the view: set by the collector, read by every put. */
static atomic_size_t hist_cap = 900;
static atomic_llong hist_gap = 500000000; /* closer points: one replaces */

size_t view_history_cap(void) { return atomic_load(&hist_cap); }

void view_history_set(size_t cap, int64_t gap_ns) {
  atomic_store(&hist_cap, cap);
  if (gap_ns >= 0)
    atomic_store(&hist_gap, (long long)gap_ns);
}

view_ring *view_ring_new(void) {
  size_t cap = view_history_cap();
  view_ring *r;
  if (cap == 0)
    return NULL;
  r = malloc(sizeof *r + cap * sizeof(hslot));
  if (r) {
    memset(r, 0, sizeof *r);
    r->cap = cap;
  }
  return r;
}

int view_ring_fits(const view_ring *r) {
  size_t cap = view_history_cap();
  return cap == 0 || (r != NULL && r->cap == cap);
}

size_t view_ring_bytes(const view_ring *r) {
  return r ? sizeof *r + r->cap * sizeof(hslot) : 0;
}

size_t view_ring_len(const view_ring *r) { return r ? r->n : 0; }

static hslot *nth(const view_ring *r, size_t i) {
  return (hslot *)&r->p[(r->head + r->cap - r->n + i) % r->cap];
}

static const unsigned ctr_bit[4] = {HP_NET, HP_NET, HP_BLK, HP_BLK};

static void counters_of(const view_point *p, uint64_t v[4]) {
  v[0] = p->rx, v[1] = p->tx, v[2] = p->rd, v[3] = p->wr;
}

/* The point of slot s, whose counters' values are cum. */
static void decode(const view_ring *r, const hslot *s, const double cum[4],
                   view_point *out) {
  memset(out, 0, sizeof *out);
  out->t_ns = (r->base_ms + (int64_t)s->dt_ms) * 1000000;
  out->have = s->pids_have & ((1u << HP_BITS) - 1);
  out->pids = s->pids_have >> HP_BITS;
  out->pct = s->pct;
  out->mem = (uint64_t)s->mem_hi << 32 | s->mem_lo;
  uint64_t *v[4] = {&out->rx, &out->tx, &out->rd, &out->wr};
  for (int k = 0; k < 4; k++)
    if ((out->have & ctr_bit[k]) && cum[k] > 0)
      *v[k] = (uint64_t)llround(cum[k]);
}

size_t view_ring_copy(const view_ring *r, view_point *out, size_t max) {
  size_t n = r ? (r->n < max ? r->n : max) : 0;
  double cum[4];
  for (int k = 0; k < 4 && r; k++)
    cum[k] = (double)r->last[k];
  for (size_t i = n; i-- > 0;) { /* newest first: the counters go back */
    const hslot *s = nth(r, r->n - n + i);
    decode(r, s, cum, &out[i]);
    for (int k = 0; k < 4; k++)
      cum[k] -= s->d[k];
  }
  return n;
}

/* Moves the base to the oldest point (a ring that has run for 49 days);
 * points still too far apart are dropped. */
static void rebase(view_ring *r, int64_t t_ms) {
  int64_t shift = r->n > 0 ? (int64_t)nth(r, 0)->dt_ms : 0;
  if (r->n == 0 || t_ms - (r->base_ms + shift) > DT_MAX) {
    r->n = r->head = 0;
    r->base_ms = t_ms;
    return;
  }
  for (size_t i = 0; i < r->n; i++)
    nth(r, i)->dt_ms -= (uint32_t)shift;
  r->base_ms += shift;
}

/* p into slot s; prev: the counters' values before s (the newest values
 * of the points before it). */
static void encode(view_ring *r, hslot *s, const view_point *p,
                   const uint64_t prev[4]) {
  uint64_t v[4];
  counters_of(p, v);
  s->dt_ms = (uint32_t)(p->t_ns / 1000000 - r->base_ms);
  s->pct = p->pct;
  s->mem_lo = (uint32_t)p->mem, s->mem_hi = (uint32_t)(p->mem >> 32);
  uint32_t have = p->have;
  if (p->pids > PIDS_MAX)
    have &= ~(uint32_t)HP_PIDS;
  s->pids_have = (have & HP_PIDS ? p->pids << HP_BITS : 0) | have;
  for (int k = 0; k < 4; k++) {
    int on = (have & ctr_bit[k]) != 0;
    s->d[k] = on ? (float)((double)v[k] - (double)prev[k]) : 0.0f;
    r->last[k] = on ? v[k] : prev[k];
  }
}

/* Raw slots of r (the newest that fit) into fresh: the encoding is
 * relative to the newest point, so the oldest can go. */
static void move_slots(view_ring *fresh, const view_ring *r) {
  size_t n = r->n < fresh->cap ? r->n : fresh->cap;
  for (size_t i = 0; i < n; i++)
    fresh->p[i] = *nth(r, r->n - n + i);
  fresh->n = n;
  fresh->head = n % fresh->cap;
  fresh->base_ms = r->base_ms;
  memcpy(fresh->last, r->last, sizeof r->last);
}

view_ring *view_ring_add(view_ring **ring, view_ring *fresh,
                         const view_point *p) {
  view_ring *r = *ring, *spare = fresh;
  if (view_history_cap() == 0)
    return fresh;
  if ((r == NULL || r->cap != view_history_cap()) && fresh != NULL) {
    if (r)
      move_slots(fresh, r);
    spare = r;
    *ring = r = fresh;
  }
  if (r == NULL)
    return spare;
  int64_t t_ms = p->t_ns / 1000000;
  if (r->n == 0) {
    r->base_ms = t_ms;
  } else {
    hslot *last = nth(r, r->n - 1);
    int64_t last_ns = (r->base_ms + (int64_t)last->dt_ms) * 1000000;
    if (p->t_ns < last_ns)
      return spare; /* older than the newest: the ring stays in order */
    if (p->t_ns - last_ns < (int64_t)atomic_load(&hist_gap)) {
      uint64_t prev[4]; /* the values before the newest, which p replaces */
      for (int k = 0; k < 4; k++)
        prev[k] = r->last[k] - (uint64_t)(int64_t)llround(last->d[k]);
      encode(r, last, p, prev);
      return spare;
    }
  }
  if (t_ms - r->base_ms > DT_MAX)
    rebase(r, t_ms);
  uint64_t prev[4];
  memcpy(prev, r->last, sizeof prev);
  encode(r, &r->p[r->head], p, prev);
  r->head = (r->head + 1) % r->cap;
  if (r->n < r->cap)
    r->n++;
  return spare;
}

/* ---- points from records */

void view_point_of_figs(view_point *p, const view_figs *f, int64_t wall_ns) {
  memset(p, 0, sizeof *p);
  p->t_ns = wall_ns;
  if ((f->have & VF_PCT) && f->pct >= 0 && f->pct < HUGE_VAL)
    p->pct = (float)f->pct, p->have |= HP_CPU;
  if (f->have & VF_USAGE) {
    uint64_t u = f->usage;
    if ((f->have & VF_INACTIVE) && f->inactive < u)
      u -= f->inactive;
    p->mem = u, p->have |= HP_MEM;
  }
  if (f->have & VF_NET)
    p->rx = f->net_rx, p->tx = f->net_tx, p->have |= HP_NET;
  if (f->have & VF_BLK)
    p->rd = f->blk_read, p->wr = f->blk_write, p->have |= HP_BLK;
  if ((f->have & VF_PIDS) && f->pids <= UINT32_MAX)
    p->pids = (uint32_t)f->pids, p->have |= HP_PIDS;
}

/* t[k] as a non-negative integer into *v. */
static int int_field(lua_State *L, int t, const char *k, uint64_t *v) {
  int ok = 0;
  if (lua_getfield(L, t, k) == LUA_TNUMBER && lua_isinteger(L, -1) &&
      lua_tointeger(L, -1) >= 0) {
    *v = (uint64_t)lua_tointeger(L, -1);
    ok = 1;
  }
  lua_pop(L, 1);
  return ok;
}

void view_point_of_table(lua_State *L, int t, view_point *p, int64_t wall_ns) {
  uint64_t a, b;
  memset(p, 0, sizeof *p);
  p->t_ns = wall_ns;
  if (lua_getfield(L, t, "cpu_usage_percent") == LUA_TNUMBER) {
    double d = lua_tonumber(L, -1);
    if (d >= 0 && d < HUGE_VAL)
      p->pct = (float)d, p->have |= HP_CPU;
  }
  lua_pop(L, 1);
  if (int_field(L, t, "memory_usage_bytes", &a))
    p->mem = a, p->have |= HP_MEM;
  if (int_field(L, t, "network_rx_bytes", &a) &&
      int_field(L, t, "network_tx_bytes", &b))
    p->rx = a, p->tx = b, p->have |= HP_NET;
  if (int_field(L, t, "block_read_bytes", &a) &&
      int_field(L, t, "block_write_bytes", &b))
    p->rd = a, p->wr = b, p->have |= HP_BLK;
  if (int_field(L, t, "pids", &a) && a <= UINT32_MAX)
    p->pids = (uint32_t)a, p->have |= HP_PIDS;
}

/* ---- the answer */

enum { F_CPU, F_MEM, F_RX, F_TX, F_RD, F_WR, F_PIDS, F_N };

static const char *const fig_names[F_N] = {"cpu_percent",
                                           "memory_working_set_bytes",
                                           "network_rx_bytes_per_second",
                                           "network_tx_bytes_per_second",
                                           "block_read_bytes_per_second",
                                           "block_write_bytes_per_second",
                                           "pids"};

const char *const *view_history_figures(int *n) {
  *n = F_N;
  return fig_names;
}

/* One bucket's figures; has: bit per figure with a value. */
typedef struct bucket {
  int64_t t_ns;
  unsigned has;
  double v[F_N];
} bucket;

static int counter_of(const view_point *p, int f, uint64_t *v) {
  static const unsigned bit[F_N] = {0, 0, HP_NET, HP_NET, HP_BLK, HP_BLK, 0};
  if (!(p->have & bit[f]))
    return 0;
  *v = f == F_RX ? p->rx : f == F_TX ? p->tx : f == F_RD ? p->rd : p->wr;
  return 1;
}

/* The bucket of points [a, b) (b > a), base: the point before or NULL. */
static void fill_bucket(bucket *k, const view_point *pts, size_t a, size_t b,
                        const view_point *base) {
  double sum[3] = {0, 0, 0};
  int cnt[3] = {0, 0, 0};
  k->has = 0;
  memset(k->v, 0, sizeof k->v);
  for (size_t i = a; i < b; i++) {
    const view_point *p = &pts[i];
    if (p->have & HP_CPU)
      sum[0] += p->pct, cnt[0]++;
    if (p->have & HP_MEM)
      sum[1] += (double)p->mem, cnt[1]++;
    if (p->have & HP_PIDS)
      sum[2] += p->pids, cnt[2]++;
  }
  static const int gauge[3] = {F_CPU, F_MEM, F_PIDS};
  for (int g = 0; g < 3; g++)
    if (cnt[g])
      k->v[gauge[g]] = sum[g] / cnt[g], k->has |= 1u << gauge[g];
  const view_point *from = base ? base : &pts[a], *to = &pts[b - 1];
  double dt = (double)(to->t_ns - from->t_ns) / 1e9;
  for (int f = F_RX; f <= F_WR; f++) {
    uint64_t x, y;
    if (dt > 0 && counter_of(from, f, &x) && counter_of(to, f, &y) && y >= x)
      k->v[f] = (double)(y - x) / dt, k->has |= 1u << f;
  }
}

/* To 3 decimals: a float's noise (CPU % is kept as one) is not a figure. */
static void round_bucket(bucket *k) {
  for (int f = 0; f < F_N; f++)
    k->v[f] = round(k->v[f] * 1000) / 1000;
}

/* Buckets of pts (oldest first) within [now - window, now) into out;
 * returns how many have a point. */
static size_t bucketize(const view_point *pts, size_t n, int64_t now,
                        int64_t window, int64_t step, bucket *out) {
  int64_t start = now - window;
  size_t i = 0, nb = 0;
  const view_point *base = NULL;
  while (i < n && pts[i].t_ns < start)
    base = &pts[i++];
  for (int64_t lo = start; lo < now && i < n; lo += step) {
    int64_t hi = lo + step;
    size_t a = i;
    while (i < n && pts[i].t_ns < hi)
      i++;
    if (i == a)
      continue;
    out[nb].t_ns = hi < now ? hi : now;
    fill_bucket(&out[nb], pts, a, i, base);
    round_bucket(&out[nb]);
    base = &pts[i - 1];
    nb++;
  }
  return nb;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Pushes {min, mean, max, p90, p99, count} of figure f over the buckets
 * (scratch: room for nb values), or json.null when none has it. */
static void push_summary(lua_State *L, const bucket *b, size_t nb, int f,
                         double *scratch) {
  static const char *const keys[4] = {"min", "max", "p90", "p99"};
  size_t n = 0;
  double sum = 0;
  for (size_t i = 0; i < nb; i++)
    if (b[i].has & 1u << f)
      sum += scratch[n++] = b[i].v[f];
  if (n == 0) {
    hx_json_push_null(L);
    return;
  }
  qsort(scratch, n, sizeof *scratch, cmp_double);
  double v[4] = {scratch[0], scratch[n - 1],
                 scratch[(size_t)ceil(0.90 * (double)n) - 1],
                 scratch[(size_t)ceil(0.99 * (double)n) - 1]};
  lua_createtable(L, 0, 6);
  for (int k = 0; k < 4; k++) {
    lua_pushnumber(L, v[k]);
    lua_setfield(L, -2, keys[k]);
  }
  lua_pushnumber(L, sum / (double)n);
  lua_setfield(L, -2, "mean");
  lua_pushinteger(L, (lua_Integer)n);
  lua_setfield(L, -2, "count");
}

/* "2026-11-30T08:33:31.123Z" */
static void push_time(lua_State *L, int64_t ns) {
  char buf[40];
  time_t s = (time_t)(ns / 1000000000);
  struct tm tm;
  gmtime_r(&s, &tm);
  size_t n = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf + n, sizeof buf - n, ".%03dZ", (int)(ns % 1000000000 / 1000000));
  lua_pushstring(L, buf);
}

static void push_points(lua_State *L, const bucket *b, size_t nb) {
  lua_createtable(L, (int)nb, 0);
  for (size_t i = 0; i < nb; i++) {
    lua_createtable(L, 0, F_N + 1);
    push_time(L, b[i].t_ns);
    lua_setfield(L, -2, "t");
    for (int f = 0; f < F_N; f++) {
      if (b[i].has & 1u << f)
        lua_pushnumber(L, b[i].v[f]);
      else
        hx_json_push_null(L);
      lua_setfield(L, -2, fig_names[f]);
    }
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  hx_json_push_array_mt(L);
  lua_setmetatable(L, -2);
}

void view_history_push(lua_State *L, const view_point *pts, size_t n,
                       int64_t now, int64_t window, int64_t step,
                       int with_points) {
  size_t max = (size_t)(window / step) + 1;
  bucket *b = lua_newuserdatauv(L, max * sizeof *b, 0);
  double *scratch = lua_newuserdatauv(L, max * sizeof *scratch, 0);
  size_t nb = bucketize(pts, n, now, window, step, b);
  lua_createtable(L, 0, 2);
  if (with_points) {
    push_points(L, b, nb);
    lua_setfield(L, -2, "points");
  }
  lua_createtable(L, 0, F_N);
  for (int f = 0; f < F_N; f++) {
    push_summary(L, b, nb, f, scratch);
    lua_setfield(L, -2, fig_names[f]);
  }
  lua_setfield(L, -2, "summary");
  lua_replace(L, -3); /* the answer in place of the scratch buffers */
  lua_pop(L, 1);
}
