/*
 * view_private.h - what the files of horcrux.view share: view.c (the store
 * and its Lua functions), view_pack.c (the packed format of Lua records and
 * metas), view_record.c (the stats record built from the sampler's
 * figures) and view_sample.c (view.sample, the per-container round in C).
 */
#ifndef HORCRUX_VIEW_PRIVATE_H
#define HORCRUX_VIEW_PRIVATE_H

#include "aux.h"

#include <stddef.h>
#include <stdint.h>

#define VIEW_ID_LEN 64
#define VIEW_MAX_DEPTH 16 /* nesting of tables in a record */

/* ---- view_pack.c */

/* Packs the table at arg into a new buffer userdata (pushed); returns its
 * bytes and sets *n. Raises on a value that cannot be stored. */
const char *view_pack(lua_State *L, int arg, size_t *n);
/* Pushes the table packed in [p, p + n). */
void view_unpack(lua_State *L, const char *p, size_t n);

/* ---- the figures of one sample (view_sample.c reads them into the
 * entry; view_record.c makes the record of them) */

enum {
  VF_CPU = 1 << 0,      /* cpu_ns */
  VF_PCT = 1 << 1,      /* pct */
  VF_USAGE = 1 << 2,    /* usage */
  VF_INACTIVE = 1 << 3, /* inactive */
  VF_LIMIT = 1 << 4,    /* limit (absent: none, or not read) */
  VF_NET = 1 << 5,      /* net_rx, net_tx */
  VF_BLK = 1 << 6,      /* blk_read, blk_write */
  VF_PIDS = 1 << 7,     /* pids */
  VF_HOSTMEM = 1 << 8,  /* host_memory */
  VF_CPUS = 1 << 9      /* online_cpus */
};

typedef struct view_figs {
  unsigned have;   /* VF_* of the fields read */
  int64_t read_ns; /* wall clock when the CPU counter was read */
  uint64_t cpu_ns, usage, inactive, limit, net_rx, net_tx, blk_read, blk_write,
      pids, host_memory, online_cpus;
  double pct;
} view_figs;

/* ---- view_record.c */

/* Pushes the stats record of f by lua/horcrux/record.lua's rules, with
 * source = "cgroup" and without id, name and sample_age_ms. */
void view_push_record(lua_State *L, const view_figs *f);

/* ---- the sampler's hold on the entries (view.c, for view_sample.c) */

typedef struct view_probe view_probe; /* view_sample.c: a cgroup handle */

/* One running container of a round, checked out of the store. */
typedef struct view_job {
  char id[VIEW_ID_LEN];
  uint64_t gen; /* the entry's generation: another entry of the same id
                   (removed and stored again) is not this one */
  view_probe *probe;
  int result;
  int64_t mono; /* when its CPU counter was read */
  view_figs figs;
} view_job;

/* The number of entries held (a hint: it may change at once). */
size_t view_count_hint(void);
/* Under the read lock: every entry whose meta says "running" into jobs
 * (marked busy: its probe is the sampler's until given back), and the
 * probes of the entries that do not run into idle (taken out, to be
 * closed). Returns the number of jobs, or (size_t)-1 without checking out
 * anything when more than cap entries are held. */
size_t view_checkout(view_job *jobs, view_probe **idle, size_t cap,
                     size_t *nidle);
/* Under the write lock: f as j's record, taken at taken_ns (monotonic),
 * and j's probe back in the entry. 0 when the entry is no longer there
 * (the caller closes the probe). */
int view_store(const view_job *j, const view_figs *f, int64_t taken_ns);
/* Under the read lock: p (NULL: none) back in j's entry, not busy. 0 when
 * the entry is no longer there (the caller closes p). */
int view_give_back(const view_job *j, view_probe *p);

/* ---- view_sample.c */

/* Closes what the sampler keeps for a container (no lock held). */
void view_probe_close(view_probe *p);
/* view.sample([opts]) */
int view_sample(lua_State *L);
/* Bytes the sampler holds (its probes and buffer) and descriptors kept. */
size_t view_sampler_bytes(void);
int view_sampler_fds(void);
/* Registers the sampler's metatables (luaopen). */
void view_sample_open(lua_State *L);
/* The descriptor limit of the sampler (-1: half the soft RLIMIT_NOFILE);
 * set >= -1 sets it; returns the previous one. */
int view_max_fds(int set, int change);

#endif
