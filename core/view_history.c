/*
 * view_history.c - each container's history in the live view: a ring of
 * points, one a collector round, and the answer of view.history().
 *
 * A point holds the wall clock, CPU %, the working set, pids and the four
 * I/O counters (rates are worked out when asked, from the counters, so a
 * missed round costs no accuracy), as the changes since the point before
 * (below): 8 to 12 bytes for an idle container's, at most 80. The default
 * 15 minutes at 1 s is 900 points: about 10 KB a container idle.
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
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The points of a container, oldest first, in a chain of blocks: each
 * point is its eight fields' changes since the point before it in its
 * block (the first: since zero), each a zigzag varint. An idle container's
 * point is mostly zeros: 8 to 12 bytes, where a fixed slot took 36. The
 * values are exact (the counters too: a float kept their changes before).
 * A block is allocated outside the view's lock (view_ring_new), when the
 * newest cannot take a point of the largest size; the oldest block goes
 * when the blocks after it hold the points kept (history cap) without it.
 * The first block of a chain heads it (its head fields are the chain's).
 */
enum { HF_T, HF_PCT, HF_MEM, HF_PIDS, HF_RX, HF_TX, HF_RD, HF_WR, HF_N };
#define HP_BITS 5
#define PIDS_MAX ((uint32_t)UINT32_MAX >> HP_BITS)
#define POINT_MAX (HF_N * 10) /* the bytes of a point at most */
#define BLOCK_BYTES 1792

struct view_ring {
  view_ring *next;     /* the next newer block, NULL for the newest */
  uint32_t used, npts; /* this block's bytes and points */
  /* the chain's, in its first block: */
  view_ring *last;       /* the newest block */
  size_t n, cap;         /* points held; points answered (the cap then) */
  uint32_t last_at;      /* where the newest point starts in last */
  uint64_t before[HF_N]; /* the values before the newest (in its block) */
  uint64_t cur[HF_N];    /* the newest values */
  unsigned char b[BLOCK_BYTES];
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
  view_ring *r;
  if (view_history_cap() == 0)
    return NULL;
  r = malloc(sizeof *r);
  if (r) /* the points' bytes are left untouched until written */
    memset(r, 0, offsetof(view_ring, b));
  return r;
}

void view_ring_free(view_ring *r) {
  while (r) {
    view_ring *next = r->next;
    free(r);
    r = next;
  }
}

int view_ring_fits(const view_ring *r) {
  return view_history_cap() == 0 ||
         (r != NULL && BLOCK_BYTES - r->last->used >= POINT_MAX);
}

size_t view_ring_bytes(const view_ring *r) {
  size_t n = 0;
  for (; r; r = r->next)
    n += sizeof *r;
  return n;
}

size_t view_ring_len(const view_ring *r) {
  return r ? (r->n < r->cap ? r->n : r->cap) : 0;
}

static const unsigned ctr_bit[4] = {HP_NET, HP_NET, HP_BLK, HP_BLK};

static unsigned char *put_varint(unsigned char *o, uint64_t v) {
  while (v >= 0x80) {
    *o++ = (unsigned char)(v | 0x80);
    v >>= 7;
  }
  *o++ = (unsigned char)v;
  return o;
}

/* A varint of [*at, end) into *v; 0 when it runs past end or over 64 bits
 * (never, for what put_varint wrote). */
static int get_varint(const unsigned char **at, const unsigned char *end,
                      uint64_t *v) {
  uint64_t x = 0;
  for (int shift = 0; *at < end && shift < 64; shift += 7) {
    unsigned char c = *(*at)++;
    x |= (uint64_t)(c & 0x7f) << shift;
    if (!(c & 0x80)) {
      *v = x;
      return 1;
    }
  }
  return 0;
}

static uint64_t zigzag(uint64_t d) {
  return (d << 1) ^ (uint64_t) - (int64_t)(d >> 63);
}

static uint64_t unzigzag(uint64_t z) {
  return (z >> 1) ^ (uint64_t) - (int64_t)(z & 1);
}

/* The fields of p; a counter p does not have keeps the value before
 * (prev), so its change is 0. */
static void fields_of(const view_point *p, const uint64_t prev[HF_N],
                      uint64_t v[HF_N]) {
  uint32_t have = p->have & ((1u << HP_BITS) - 1), pct;
  if (p->pids > PIDS_MAX)
    have &= ~(uint32_t)HP_PIDS;
  memcpy(&pct, &p->pct, sizeof pct);
  v[HF_T] = (uint64_t)(p->t_ns / 1000000);
  v[HF_PCT] = pct;
  v[HF_MEM] = p->mem;
  v[HF_PIDS] = (uint64_t)(have & HP_PIDS ? p->pids << HP_BITS : 0) | have;
  const uint64_t c[4] = {p->rx, p->tx, p->rd, p->wr};
  for (int k = 0; k < 4; k++)
    v[HF_RX + k] = have & ctr_bit[k] ? c[k] : prev[HF_RX + k];
}

/* The point of the values v. */
static void point_of(const uint64_t v[HF_N], view_point *out) {
  uint32_t pct = (uint32_t)v[HF_PCT];
  memset(out, 0, sizeof *out);
  out->t_ns = (int64_t)v[HF_T] * 1000000;
  memcpy(&out->pct, &pct, sizeof pct);
  out->mem = v[HF_MEM];
  out->have = (uint32_t)(v[HF_PIDS] & ((1u << HP_BITS) - 1));
  out->pids = (uint32_t)(v[HF_PIDS] >> HP_BITS);
  uint64_t *c[4] = {&out->rx, &out->tx, &out->rd, &out->wr};
  for (int k = 0; k < 4; k++)
    *c[k] = out->have & ctr_bit[k] ? v[HF_RX + k] : 0;
}

/* Decodes the points of block b from [at, end) after `skip` of them into
 * out; returns how many were written, or -1 on bytes that are not points
 * (a block is only ever written by encode below). */
static long decode_block(const unsigned char *at, const unsigned char *end,
                         size_t npts, size_t skip, view_point *out) {
  uint64_t v[HF_N] = {0};
  long w = 0;
  for (size_t i = 0; i < npts; i++) {
    for (int k = 0; k < HF_N; k++) {
      uint64_t z;
      if (!get_varint(&at, end, &z))
        return -1;
      v[k] += unzigzag(z);
    }
    if (i >= skip)
      point_of(v, &out[w++]);
  }
  return w;
}

size_t view_ring_copy(const view_ring *r, view_point *out, size_t max) {
  size_t len = view_ring_len(r), n = len < max ? len : max, w = 0;
  size_t skip = r ? r->n - n : 0; /* the oldest points held, not given */
  for (const view_ring *x = r; x && w < n; x = x->next) {
    if (skip >= x->npts) {
      skip -= x->npts;
      continue;
    }
    long got = decode_block(x->b, x->b + x->used, x->npts, skip, out + w);
    if (got < 0)
      break;
    w += (size_t)got;
    skip = 0;
  }
  return w;
}

/* p at the end of r's newest block, after the values before. */
static void encode(view_ring *r, const view_point *p) {
  view_ring *l = r->last;
  uint64_t v[HF_N];
  fields_of(p, r->before, v);
  unsigned char *o = l->b + r->last_at;
  for (int k = 0; k < HF_N; k++)
    o = put_varint(o, zigzag(v[k] - r->before[k]));
  l->used = (uint32_t)(o - l->b);
  memcpy(r->cur, v, sizeof v);
}

view_ring *view_ring_add(view_ring **ring, view_ring *fresh,
                         const view_point *p) {
  view_ring *r = *ring, *spare = fresh;
  size_t cap = view_history_cap();
  if (cap == 0)
    return fresh;
  if (r && r->n > 0) {
    int64_t last_ns = (int64_t)r->cur[HF_T] * 1000000;
    if (p->t_ns < last_ns)
      return spare; /* older than the newest: the points stay in order */
    if (p->t_ns - last_ns < (int64_t)atomic_load(&hist_gap)) {
      encode(r, p); /* in the newest's place */
      r->cap = cap;
      return spare;
    }
  }
  if (!view_ring_fits(r)) { /* a new block: fresh, if there is one */
    if (!fresh)
      return NULL; /* no room: the point is not kept */
    spare = NULL;
    fresh->next = NULL;
    fresh->used = fresh->npts = 0;
    if (!r) {
      *ring = r = fresh;
      r->last = r;
      r->n = 0;
    } else {
      r->last->next = fresh;
      r->last = fresh;
    }
    memset(r->before, 0, sizeof r->before);     /* a block starts from zero */
    if (r->next && r->n + 1 - r->npts >= cap) { /* the oldest: not needed */
      view_ring *head = r->next;
      head->last = r->last;
      head->n = r->n - r->npts;
      head->last_at = r->last_at;
      memcpy(head->before, r->before, sizeof r->before);
      memcpy(head->cur, r->cur, sizeof r->cur);
      r->next = NULL;
      spare = r;
      *ring = r = head;
    }
  } else {
    memcpy(r->before, r->cur, sizeof r->cur);
  }
  r->last_at = r->last->used;
  encode(r, p);
  r->last->npts++;
  r->n++;
  r->cap = cap;
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
static double round3(double v) { return round(v * 1000) / 1000; }

static void round_bucket(bucket *k) {
  for (int f = 0; f < F_N; f++)
    k->v[f] = round3(k->v[f]);
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
  lua_pushnumber(L, round3(sum / (double)n)); /* the points are rounded */
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
