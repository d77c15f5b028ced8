/*
 * view_private.h - what the files of horcrux.view share: view.c (the store
 * and its Lua functions), view_pack.c (the packed format of Lua records and
 * metas), view_record.c (the stats record built from the sampler's
 * figures) and view_sample.c (view.sample, the per-container round in C).
 */
#ifndef HORCRUX_VIEW_PRIVATE_H
#define HORCRUX_VIEW_PRIVATE_H

#include "aux.h"
#include "cgroup_fs.h"

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
  VF_CPU = 1 << 0,       /* cpu_ns */
  VF_PCT = 1 << 1,       /* pct */
  VF_USAGE = 1 << 2,     /* usage */
  VF_INACTIVE = 1 << 3,  /* inactive */
  VF_LIMIT = 1 << 4,     /* limit (absent: none, or not read) */
  VF_NET = 1 << 5,       /* net_rx, net_tx, ifs */
  VF_BLK = 1 << 6,       /* blk_read, blk_write, devs */
  VF_PIDS = 1 << 7,      /* pids */
  VF_HOSTMEM = 1 << 8,   /* host_memory */
  VF_CPUS = 1 << 9,      /* online_cpus */
  VF_SPLIT = 1 << 10,    /* user_ns, system_ns */
  VF_THROTTLE = 1 << 11, /* periods, throttled, throttled_ns */
  VF_QUOTA = 1 << 12,    /* quota_us (absent with VF_NOQUOTA: none) */
  VF_NOQUOTA = 1 << 13,  /* the quota was read: none */
  VF_PERIOD = 1 << 14,   /* period_us */
  VF_CPUSET = 1 << 15,   /* cpuset */
  VF_RSS = 1 << 16,      /* rss */
  VF_CACHE = 1 << 17,    /* cache */
  VF_OOM = 1 << 18,      /* oom */
  VF_PROCS = 1 << 19,    /* procs */
  VF_PIDSMAX = 1 << 20,  /* pids_max (absent with VF_NOPIDSMAX: none) */
  VF_NOPIDSMAX = 1 << 21,
  VF_STARTED = 1 << 22, /* started_ns */
  VF_PSI = 1 << 23      /* PSI_CPU's bit; the next two: memory, io */
};
#define VF_PSI_BIT(i) ((unsigned)VF_PSI << (i))

#define VIEW_MAX_CPUS CGP_MAX_CPUS
#define VIEW_MAX_IFACES CGP_MAX_IFACES
#define VIEW_MAX_DEVS CGP_MAX_DEVS

typedef struct view_figs {
  unsigned have;      /* VF_* of the fields read */
  int64_t read_ns;    /* wall clock when the CPU counter was read */
  int64_t started_ns; /* wall clock when its first process started */
  uint64_t cpu_ns, usage, inactive, limit, net_rx, net_tx, blk_read, blk_write,
      pids, host_memory, online_cpus;
  double pct;
  uint64_t user_ns, system_ns, periods, throttled, throttled_ns;
  uint64_t quota_us, period_us, cpuset, pids_max;
  uint64_t rss, cache, oom, procs;
  int npercpu, nifs, ndevs; /* 0 when none */
  psi_fig psi[PSI_N];
  uint64_t percpu[VIEW_MAX_CPUS];
  net_iface ifs[VIEW_MAX_IFACES];
  io_dev devs[VIEW_MAX_DEVS];
} view_figs;

/* ---- view_record.c */

/* Where the members of a record go: a Lua table (view_push_record) or
 * JSON text (view_json.c). k is the member's key in an object, NULL for an
 * item of an array; a key need not outlive the call. open/close bracket a
 * nested object (array = 0) or array (array = 1); hint: members expected. */
enum { VO_NULL, VO_INT, VO_FLOAT };
typedef struct view_out view_out;
struct view_out {
  void (*num)(view_out *o, const char *k, int kind, int64_t i, double d);
  void (*str)(view_out *o, const char *k, const char *s);
  void (*open)(view_out *o, const char *k, int array, int hint);
  void (*close)(view_out *o, int array);
};

/* The members of the stats record of f by lua/horcrux/record.lua's rules,
 * with source = "cgroup" and without id, name and sample_age_ms, into o
 * (its object already open). */
void view_emit_record(view_out *o, const view_figs *f);
/* Pushes that record as a table. */
void view_push_record(lua_State *L, const view_figs *f);

/* ---- view_json.c: records as JSON text */

/* A growable buffer, a userdata whose __gc frees it. oom: a write found
 * no memory; bad: a record's shape past the writer's bounds. */
typedef struct view_jbuf {
  char *p;
  size_t n, cap;
  int oom, bad;
} view_jbuf;
view_jbuf *view_jbuf_new(lua_State *L); /* pushed */
int view_jbuf_put(view_jbuf *b, const char *s, size_t n);
/* Room for n more bytes (0: none, b->oom set); frees b's bytes. */
int view_jbuf_room(view_jbuf *b, size_t n);
void view_jbuf_free(view_jbuf *b);

/* A writer of records (a userdata, pushed, holding its buffers). */
typedef struct view_json view_json;
view_json *view_json_new(lua_State *L);
view_jbuf *view_json_buf(view_json *j);

/* view.stats_json([want]) (view_json.c). Each record's text is kept in
 * its entry once written (its age left out: it is written at read time),
 * until the entry's figures or name change; a record from figures is
 * written once a round however often it is asked. */
int view_stats_json(lua_State *L);

/* ---- view.c, for view.stats_json */

/* One entry as view_copy_json copies it, followed by its id (VIEW_ID_LEN
 * bytes), its name (nn) and rn bytes: the cached text (VJ_TEXT; the age
 * goes at byte `age`), a view_figs (VJ_FIGS) or a packed record (VJ_PUT). */
enum { VJ_TEXT, VJ_FIGS, VJ_PUT };
typedef struct view_jcopy {
  int64_t taken_ns;
  uint64_t gen, ver; /* the entry's, when copied */
  uint32_t nn, rn, age;
  int kind;
} view_jcopy;
/* Every entry with a record (of the ids only, when ids: nids full ids
 * sorted by memcmp) into out (under the read lock); how many, or
 * (size_t)-1 when out could not grow. */
size_t view_copy_json(const char *ids, size_t nids, view_jbuf *out);
/* Pushes the VJ_PUT record at id (its copy's id) as view.all() gives it. */
void view_push_put(lua_State *L, const view_jcopy *c, const char *id,
                   int64_t now);
/* A record's text written for the entry of id as it was at (gen, ver):
 * p (malloc'd, n bytes, the age to go at byte age). */
typedef struct view_frag {
  const char *id;
  uint64_t gen, ver;
  char *p;
  uint32_t n, age;
  size_t from, age_at, age_end, to; /* view_json.c's, while writing */
} view_frag;
/* Under the write lock: each p into its entry when the entry is still at
 * (gen, ver) and holds no text; frees the p not kept (sets them NULL). */
void view_frags_install(view_frag *f, size_t n);

/* ---- the sampler's hold on the entries (view.c, for view_sample.c) */

typedef struct view_probe view_probe; /* view_sample.c: a cgroup handle */

/* One running container of a round, checked out of the store. */
typedef struct view_job {
  char id[VIEW_ID_LEN];
  uint64_t gen; /* the entry's generation: another entry of the same id
                   (removed and stored again) is not this one */
  view_probe *probe;
  int result;
  int64_t mono;  /* when its CPU counter was read */
  int ring_fits; /* its entry's ring is of the current size */
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

/* ---- view.c, for view_prom.c */

/* For each entry with a record: pushes the record (as all() gives it) and
 * the meta (nil when none), calls fn, pops both. */
void view_each(lua_State *L, void (*fn)(lua_State *L, void *arg), void *arg);

/* ---- view_prom.c: view.prometheus([opts]) -> text, containers */
int view_prometheus(lua_State *L);

/* ---- view_history.c: each container's ring of points */

enum { HP_CPU = 1, HP_MEM = 2, HP_NET = 4, HP_BLK = 8, HP_PIDS = 16 };

/* One round's figures of a container: 64 bytes (the history keeps fewer,
 * view_history.c). */
typedef struct view_point {
  int64_t t_ns;                 /* wall clock */
  uint64_t mem, rx, tx, rd, wr; /* working set; the I/O counters */
  float pct;                    /* CPU %, 100 = one core */
  uint32_t pids;
  uint32_t have; /* HP_* */
  uint32_t pad;
} view_point;

/* A container's history: a chain of blocks of points. */
typedef struct view_ring view_ring;

/* Points a history answers (0: none kept) and the least gap between two (a
 * closer one replaces the last): view.set_limits{history=, history_gap_ms=}. */
size_t view_history_cap(void);
void view_history_set(size_t cap, int64_t gap_ns);
/* A block for a history (malloc'd; NULL when none is kept or out of
 * memory). */
view_ring *view_ring_new(void);
/* Frees a history, every block of it. */
void view_ring_free(view_ring *r);
/* Whether r takes a point without a new block. */
int view_ring_fits(const view_ring *r);
size_t view_ring_bytes(const view_ring *r);
/* How many points r answers (0 for NULL). */
size_t view_ring_len(const view_ring *r);
/* Adds p to *ring, first appending fresh as a new block when the newest
 * cannot take it (*ring NULL: fresh becomes it; no fresh then: p is not
 * kept). No allocation: runs under the view's write lock. Returns the
 * block to free (fresh when unused, or the oldest block when no longer
 * needed; one block, its next NULL). */
view_ring *view_ring_add(view_ring **ring, view_ring *fresh,
                         const view_point *p);
/* The newest min(n, max) points into out, oldest first; how many. */
size_t view_ring_copy(const view_ring *r, view_point *out, size_t max);
void view_point_of_figs(view_point *p, const view_figs *f, int64_t wall_ns);
/* The point of the record table at idx (its docker figures). */
void view_point_of_table(lua_State *L, int idx, view_point *p, int64_t wall_ns);
/* Pushes {points = [...] (when with_points), summary = {...}} of pts
 * (oldest first) over [now - window, now) in buckets of step ns. */
void view_history_push(lua_State *L, const view_point *pts, size_t n,
                       int64_t now, int64_t window, int64_t step,
                       int with_points);
/* The figures of a point, in the answer's order. */
const char *const *view_history_figures(int *n);

#endif
