/*
 * history_target.c - libFuzzer target "history": a container's history
 * (core/view_history.c), its points kept as varint changes in blocks, on
 * any sequence of points.
 *
 * Input: a cap (1 byte: 1..64 points answered), a gap (1 byte: ms under
 * which a point replaces the newest), then points of 50 bytes each: a time
 * step (1 byte, signed: ms after the newest point given, negative ones go
 * back in time), the HP_* bits (1), CPU % (4: any float's bits), the
 * working set (8), pids (4) and the four I/O counters (8 each). Each point
 * is added as view.c adds one (a new block allocated first when the newest
 * cannot take it); after each, the points the history gives must be those
 * of a plain array kept by the same rules: a point older than the newest
 * is not kept, one closer than the gap replaces the newest, the newest cap
 * are given, the time to the millisecond, a figure the point does not have
 * as 0. A broken invariant prints what differs and aborts; ASan sees a
 * block read past its bytes or one never freed.
 */
#include "view_private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond, ...)                                                       \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "\nfuzz history: invariant: " __VA_ARGS__);              \
      fprintf(stderr, "\n");                                                   \
      abort();                                                                 \
    }                                                                          \
  } while (0)

#define POINT_BYTES 50
#define MAX_POINTS 4096
#define PIDS_MAX ((uint32_t)UINT32_MAX >> 5)

static uint64_t take(const uint8_t **p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; i++)
    v = v << 8 | *(*p)++;
  return v;
}

/* p as the history gives it back. */
static view_point kept(const view_point *p) {
  view_point k = *p;
  k.t_ns = p->t_ns / 1000000 * 1000000;
  k.have &= 31;
  if (k.pids > PIDS_MAX)
    k.have &= ~(uint32_t)HP_PIDS;
  if (!(k.have & HP_PIDS))
    k.pids = 0;
  if (!(k.have & HP_NET))
    k.rx = k.tx = 0;
  if (!(k.have & HP_BLK))
    k.rd = k.wr = 0;
  k.pad = 0;
  return k;
}

static int same(const view_point *a, const view_point *b) {
  return a->t_ns == b->t_ns && memcmp(&a->pct, &b->pct, sizeof a->pct) == 0 &&
         a->mem == b->mem && a->rx == b->rx && a->tx == b->tx &&
         a->rd == b->rd && a->wr == b->wr && a->pids == b->pids &&
         a->have == b->have;
}

static view_point model[MAX_POINTS], got[MAX_POINTS];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2)
    return 0;
  size_t cap = 1 + data[0] % 64, n = 0;
  int64_t gap = (int64_t)data[1] * 1000000, t = 1700000000000000000;
  view_history_set(cap, gap);
  view_ring *ring = NULL;
  const uint8_t *at = data + 2, *end = data + size;
  while (end - at >= POINT_BYTES && n < MAX_POINTS) {
    view_point p;
    memset(&p, 0, sizeof p);
    t += (int64_t)(int8_t)*at++ * 1000000 + 123456;
    p.t_ns = t;
    p.have = (uint32_t)*at++;
    uint32_t pct = (uint32_t)take(&at, 4);
    memcpy(&p.pct, &pct, sizeof pct);
    p.mem = take(&at, 8);
    p.pids = (uint32_t)take(&at, 4);
    p.rx = take(&at, 8), p.tx = take(&at, 8);
    p.rd = take(&at, 8), p.wr = take(&at, 8);
    /* view.c's way: the block first, outside the lock */
    view_ring *fresh = view_ring_fits(ring) ? NULL : view_ring_new();
    free(view_ring_add(&ring, fresh, &p));
    /* the model's */
    view_point k = kept(&p);
    if (n == 0 || p.t_ns - model[n - 1].t_ns >= gap)
      model[n++] = k;
    else if (p.t_ns >= model[n - 1].t_ns)
      model[n - 1] = k; /* closer than the gap: in the newest's place */
    size_t want = n < cap ? n : cap, len = view_ring_len(ring);
    CHECK(len == want, "%zu points given, %zu expected", len, want);
    CHECK(view_ring_copy(ring, got, MAX_POINTS) == want, "copy: %zu", want);
    for (size_t i = 0; i < want; i++)
      CHECK(same(&got[i], &model[n - want + i]),
            "point %zu of %zu differs (t %lld vs %lld, mem %llu vs %llu)", i,
            want, (long long)got[i].t_ns, (long long)model[n - want + i].t_ns,
            (unsigned long long)got[i].mem,
            (unsigned long long)model[n - want + i].mem);
    CHECK(view_ring_bytes(ring) <= (want + 256) * 96 + 4096,
          "%zu bytes for %zu points", view_ring_bytes(ring), want);
  }
  view_ring_free(ring);
  return 0;
}
