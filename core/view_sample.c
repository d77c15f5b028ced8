/*
 * view_sample.c - view.sample(): the per-container round in C. One call
 * reads the cgroup figures of every container the view holds as running
 * (meta.status == "running") straight into the view, with no Lua table per
 * container.
 *
 *   view.sample([opts]) -> {sampled = n, unreadable = {ids}, gone = {ids},
 *                           paused = {ids}, us = n, fds = n}
 *
 * opts: root = "/sys/fs/cgroup", proc = "/proc", sys = "/sys" (fixture
 * trees, as horcrux.cgroup takes them); freezer = false when the caller
 * learns pauses from the engine's events (the collector while it follows
 * them): the freezer is then read only with the seldom-read figures, and a
 * container paused since is sampled (0 % CPU) until its event comes. Per
 * container it reads what the cgroup source reads (horcrux.cgroup's readers,
 * v1, v2 and hybrid, cgroupfs and systemd): the freezer first (a paused
 * container is listed in `paused` and not sampled), then CPU ns, memory usage,
 * inactive file pages and limit, block I/O, pids, and network from
 * /proc/<pid>/net/dev of its first process. The CPU % goes through
 * horcrux.cpu's one store (its C API, cpu.capi, fetched once per call), against
 * the host's CPU time from /proc/stat, read at both ends of the round and
 * interpolated at each container's read (the daemon reads it once per tick,
 * which skews the containers read late in a long tick); host memory and online
 * CPUs are read again every 10 s. What no docker stats column shows (v1 per-CPU
 * time, the CPU split and throttling, OOM kills, processes, pressure) and
 * the limits are read every 30 s; memory.stat when the usage changed, and
 * every 10 s at the least.
 *
 *   sampled     containers whose figures were stored
 *   unreadable  ids with no cgroup found here (another host's engine, a
 *               container that never started) or none of whose figures
 *               could be read: the collector asks the Engine API for them
 *   gone        ids whose cgroup vanished since it was found (stopped or
 *               removed); their last figures stay until the collector
 *               removes them
 *   paused      ids whose cgroup is frozen
 *   us          CPU time of this call, µs (its thread, kernel time included)
 *   fds         descriptors the sampler keeps open after the call
 *
 * It blocks on nothing but local files and never calls the daemon. The
 * files are read without any lock of the view: a round checks the running
 * entries out under the read lock, reads every one, and then takes the
 * write lock once per container, only to store its figures, so readers are
 * never held up by a file read. One round at a time runs (a mutex of its own,
 * never held across a Lua call); a second caller waits for it.
 *
 * Descriptors. What the sampler keeps for a container (a probe: the
 * cgroup handle of horcrux.cgroup) holds its files open between rounds and
 * re-reads them with pread at offset 0 (cgroup_fs.c says what that saves):
 * up to 17 descriptors a container (a v1 host with the unified tree's
 * pressure files: 17 measured; fewer on v2). The probes keep at most
 * max_fds descriptors in all (view.set_limits; default -1: half the soft
 * RLIMIT_NOFILE, read each round, so a limit raised later counts); past it
 * a container's files are opened, read and closed each round. When an open
 * fails for want of descriptors, the probe drops what it keeps and the
 * sampler keeps no more than it holds then, until the soft limit changes.
 * A cgroup removed under a kept file answers ENODEV and the file is opened
 * again by its path: a restarted container (a new cgroup at the same path)
 * is found again, and its samples in horcrux.cpu's store are forgotten
 * (another life: its counters started again, even when they already passed
 * the old ones); a stopped one is gone. A container read without kept
 * files shows a restart only by a counter going backwards, as every source
 * does (the collector's cpu.forget on "die" covers the rest). view.remove and
 * view.clear close what the sampler keeps for the containers they drop, and a
 * round closes the probes of containers whose meta no longer says running.
 */
#define _GNU_SOURCE
#include "cgroup_fs.h"
#include "cpu_capi.h"
#include "jsonconv.h"
#include "netlink.h"
#include "view_private.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_ROOT "/sys/fs/cgroup"
#define DEFAULT_PROC "/proc"
#define DEFAULT_SYS "/sys"
#define HOST_TTL_NS ((int64_t)10 * 1000000000) /* host memory, CPUs */
#define CALL_MT "horcrux.view.sample_call"

/* The limits (quota, cpuset, pids.max) change only by `docker update`:
 * read again after this long, by open/read/close (no descriptor kept). An
 * open by path costs more than the read (the walk down a long kernfs
 * path): at 10 s, these and the seldom-read figures below were a third of
 * a round's time, 1.2 opens a container a round. */
#define LIMITS_TTL_NS ((int64_t)30 * 1000000000)

/* The figures beside docker's that no docker stats column shows and that
 * are counters or slow averages (v1 per-CPU time, user/system split and
 * throttling, OOM kills, processes, pressure), and the memory limit (a limit,
 * changed only by `docker update`, as the others above): read again after this
 * long, by open/read/close. They were 7 of the 17 files a container on a hybrid
 * host; read every round they cost a third of its time, and kept open
 * they left the descriptors of only ~590 containers in the default budget
 * (half of a 20,000 limit), the others opening all of theirs every round.
 * Each container's reads are spread over the interval (by its id), so a
 * round does not read them all at once. v1 memory.stat (the inactive file
 * pages docker subtracts; the kernel formats some 40 lines of it, the
 * dearest file of a round) is read when the usage changed since it was,
 * and after STAT_TTL_NS at the least (handle.stat_reuse). */
#define SLOW_TTL_NS ((int64_t)30 * 1000000000)
#define STAT_TTL_NS ((int64_t)10 * 1000000000) /* memory.stat at the least */
#define VF_SLOW                                                                \
  (VF_THROTTLE | VF_SPLIT | VF_OOM | VF_PROCS | VF_LIMIT | VF_PSI_BIT(0) |     \
   VF_PSI_BIT(1) | VF_PSI_BIT(2))

/* The seldom-read figures as last read. */
typedef struct slow_figs {
  unsigned have; /* VF_SLOW bits */
  uint64_t periods, throttled, throttled_ns, oom, procs, limit;
  uint64_t user_ns, system_ns; /* v1 cpuacct.stat */
  int npercpu;
  psi_fig psi[PSI_N];
  uint64_t percpu[VIEW_MAX_CPUS];
} slow_figs;

struct view_probe {
  handle h;
  unsigned tree;    /* the tree it was found in (S.tree then) */
  limit_fig limits; /* as read at limits_at (monotonic; 0: never) */
  int64_t limits_at;
  int64_t slow_at; /* when slow was read (monotonic, spread); 0: never */
  int64_t stat_at; /* when memory.stat was last read for sure; 0: never */
  slow_figs slow;
  int start_pid;      /* whose start time started_ns is; 0: none */
  int64_t started_ns; /* wall clock; 0: unknown */
  /* Network from the host's end of its veth (netlink.c): that end's
   * index (0: net/dev instead), the namespace id the host gives the
   * container's, the links' generation it was found in, the name of the
   * container's end. */
  int nl_index, nl_nsid;
  unsigned nl_gen;
  int nl_looked; /* an end was looked for since the last seldom read */
  char nl_name[CGP_IFNAME];
};

enum { R_SAMPLED, R_PAUSED, R_GONE, R_UNREADABLE };

/* A host link's counters, and a host link whose peer is elsewhere. */
typedef struct nl_host {
  int index;
  uint64_t v[NI_N];
} nl_host;
typedef struct nl_peer {
  int index, nsid;
} nl_peer;

/*
 * The sampler's state is process-wide, as the view is: any Lua state may
 * call sample(), and the probes it keeps live in the view's entries. The
 * mutex lets one round run at a time and guards everything here but
 * max_fds (set by set_limits from any thread: atomic) and budget.held
 * (atomic: a probe may be closed by view.remove on any thread).
 */
static struct sampler {
  pthread_mutex_t lock;
  rbuf buf;         /* every probe reads into this one, in turn */
  cg_budget budget; /* the descriptors the probes keep */
  int max_fds;      /* the limit set; -1: half the soft RLIMIT_NOFILE */
  int learned;      /* what could be kept when an open failed; -1: none */
  rlim_t learned_at;
  char root[PATH_MAX], proc[PATH_MAX], sys[PATH_MAX];
  unsigned tree; /* bumped when root or proc changes */
  int version, prefer;
  int64_t host_at; /* monotonic; 0: read them again */
  unsigned host_have;
  uint64_t host_memory, online_cpus;
  uint64_t btime; /* boot time, s (/proc/stat); 0: unknown */
  int stat_fd;    /* <proc>/stat kept open, -1: not open */
  int freezer;    /* this call reads the freezer every round */
  struct nl_state {
    int on; /* this call reads network over netlink */
    int fd; /* the host's rtnetlink socket; -1: none */
    int ok; /* hosts holds this round's counters */
    uint32_t seq;
    char *buf;      /* NL_BUF bytes */
    nl_host *hosts; /* this round's counters of the host's links, by index */
    size_t nhosts, hosts_cap;
    uint64_t sig;   /* of the set of indexes in hosts */
    nl_peer *peers; /* host links whose peer is in another namespace */
    size_t npeers, peers_cap;
    uint64_t peers_sig; /* sig when peers were read; 0: never */
    unsigned gen;       /* bumped when the set of links changed */
    int reads;          /* containers read from hosts in this call */
    int fails;          /* dumps failed in a row */
  } nl;
  /* The round's jobs and the probes of entries that stopped, kept from
   * round to round: a view_job holds a whole view_figs (about 2.5 KiB), so
   * a call's own arrays were 2.5 MB of garbage a round at 1,000
   * containers that Lua's collector, seeing only a small userdata, let
   * pile up to 75 MB between its cycles. */
  view_job *jobs;
  view_probe **idle;
  size_t cap;
  size_t probe_bytes; /* malloc'd by the open probes (atomic) */
  size_t buf_bytes;   /* buf.cap and the jobs, for view_sampler_bytes
                         (atomic) */
} S = {.lock = PTHREAD_MUTEX_INITIALIZER,
       .max_fds = -1,
       .learned = -1,
       .stat_fd = -1,
       .nl = {.fd = -1}};

int view_max_fds(int set, int change) {
  if (!change)
    return __atomic_load_n(&S.max_fds, __ATOMIC_RELAXED);
  return __atomic_exchange_n(&S.max_fds, set, __ATOMIC_RELAXED);
}

/* What a probe holds in malloc'd memory. */
static size_t probe_size(const view_probe *p) {
  size_t n = malloc_usable_size((void *)p) + malloc_usable_size(p->h.proc) +
             malloc_usable_size(p->h.keep);
  for (int k = 0; k < K_N; k++)
    n += malloc_usable_size(p->h.dir[k]);
  return n;
}

static void probe_free(view_probe *p) {
  cg_handle_release(&p->h);
  free(p);
}

void view_probe_close(view_probe *p) {
  if (!p)
    return;
  __atomic_sub_fetch(&S.probe_bytes, probe_size(p), __ATOMIC_RELAXED);
  probe_free(p);
}

size_t view_sampler_bytes(void) {
  return __atomic_load_n(&S.buf_bytes, __ATOMIC_RELAXED) +
         __atomic_load_n(&S.probe_bytes, __ATOMIC_RELAXED);
}

int view_sampler_fds(void) {
  return __atomic_load_n(&S.budget.held, __ATOMIC_RELAXED);
}

/* ---- the tree, the host, the budget (sampler lock held) ---- */

static int same(const char *a, const char *b) { return strcmp(a, b) == 0; }

static int copy(char *dst, const char *src) {
  size_t n = strlen(src);
  if (n >= PATH_MAX)
    return 0;
  memcpy(dst, src, n + 1);
  return 1;
}

/* Takes the tree of this call; another root or proc makes every probe be
 * found again. Returns 0 when no cgroup hierarchy is there. */
static int use_tree(const char *root, const char *proc, const char *sys) {
  if (!same(root, S.root) || !same(proc, S.proc) || !same(sys, S.sys) ||
      S.version == LV_NONE) {
    if (!copy(S.root, root) || !copy(S.proc, proc) || !copy(S.sys, sys)) {
      S.root[0] = '\0';
      S.version = LV_NONE;
      return 0;
    }
    S.tree++;
    if (S.stat_fd >= 0)
      close(S.stat_fd);
    S.stat_fd = -1;
    S.version = cg_detect_version(root);
    S.prefer = DRV_NONE;
    S.host_at = 0;
  }
  return S.version != LV_NONE;
}

static int read_at(const char *dir, const char *name, size_t *len) {
  char path[PATH_MAX];
  if (!cg_join(path, sizeof path, dir, name))
    return ENAMETOOLONG;
  return cg_read_file(&S.buf, path, len);
}

/* Host memory and online CPUs, read again after HOST_TTL_NS. */
static void host_figures(int64_t now) {
  size_t len;
  uint64_t v;
  if (S.host_at && now - S.host_at < HOST_TTL_NS)
    return;
  S.host_at = now;
  S.host_have = 0;
  if (read_at(S.proc, "meminfo", &len) == 0 &&
      cgp_parse_meminfo(NULL, S.buf.p, len, "MemTotal", &v) && v > 0) {
    S.host_memory = v;
    S.host_have |= VF_HOSTMEM;
  }
  v = 0;
  if (read_at(S.sys, "devices/system/cpu/online", &len) == 0)
    v = cgp_parse_cpu_list(S.buf.p, len);
  if (v == 0 && same(S.sys, DEFAULT_SYS)) {
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    v = c > 0 ? (uint64_t)c : 0;
  }
  if (v > 0) {
    S.online_cpus = v;
    S.host_have |= VF_CPUS;
  }
  if (cg_read_btime(&S.buf, S.proc, &S.btime))
    S.btime = 0;
}

/* <proc>/stat, kept open: it is read every round. */
static int read_stat(size_t *len) {
  char path[PATH_MAX];
  if (S.stat_fd >= 0 && cg_pread_file(&S.buf, S.stat_fd, len) == 0)
    return 0;
  if (S.stat_fd >= 0)
    close(S.stat_fd);
  if (!cg_join(path, sizeof path, S.proc, "stat") ||
      (S.stat_fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
    return read_at(S.proc, "stat", len);
  return cg_pread_file(&S.buf, S.stat_fd, len);
}

/* The host's CPU time, ns, as cgroup.system_cpu_ns; -1 when unknown. */
static int64_t system_cpu_ns(void) {
  size_t len;
  stat_cpu sc;
  uint64_t ns;
  long hz = sysconf(_SC_CLK_TCK);
  if (read_stat(&len) || !cgp_parse_stat_cpu(S.buf.p, len, &sc) ||
      !cgp_ticks_to_ns(sc.ticks, hz > 0 ? (uint64_t)hz : 100, &ns) ||
      ns > (uint64_t)INT64_MAX)
    return -1;
  return (int64_t)ns;
}

/* The budget of this round; returns the soft descriptor limit. */
static rlim_t set_budget(void) {
  struct rlimit rl;
  rlim_t soft = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? rl.rlim_cur : 1024;
  int max = view_max_fds(0, 0);
  if (max < 0)
    max =
        soft == RLIM_INFINITY || soft / 2 > INT_MAX ? INT_MAX : (int)(soft / 2);
  if (S.learned >= 0 && S.learned_at == soft && S.learned < max)
    max = S.learned;
  else if (S.learned_at != soft)
    S.learned = -1;
  S.budget.max = max;
  return soft;
}

/* ---- the host's links over netlink (sampler lock held) ---- */

static int by_index(const void *a, const void *b) {
  int x = *(const int *)a, y = *(const int *)b; /* index comes first */
  return (x > y) - (x < y);
}

/* One more item of size `size` in *arr (n used of *cap); NULL: no memory. */
static void *push(void **arr, size_t *n, size_t *cap, size_t size) {
  if (*n == *cap) {
    size_t c = *cap ? 2 * *cap : 256;
    void *q = realloc(*arr, c * size);
    if (!q)
      return NULL;
    *arr = q, *cap = c;
  }
  return (char *)*arr + (*n)++ * size;
}

static void take_host(void *arg, const nl_item *it) {
  nl_host *h;
  if (!it->v || it->index <= 0)
    return;
  if (!(h = push((void **)&S.nl.hosts, &S.nl.nhosts, &S.nl.hosts_cap,
                 sizeof *h))) {
    *(int *)arg = ENOMEM;
    return;
  }
  h->index = it->index;
  memcpy(h->v, it->v, sizeof h->v);
}

static void nl_drop(void) {
  if (S.nl.fd >= 0)
    close(S.nl.fd);
  S.nl.fd = -1; /* a new socket next time: nothing of this one left over */
  S.nl.ok = 0;
  S.nl.peers_sig = 0;
}

/* This round's counters of every host link: one dump. After 3 failures
 * in a row (an old kernel, no permission) the sampler stays on net/dev. */
static void nl_round(void) {
  int oom = 0, e;
  S.nl.ok = 0;
  S.nl.nhosts = 0;
  if (!S.nl.on || (!S.nl.buf && !(S.nl.buf = malloc(NL_BUF))))
    return;
  if (S.nl.fd < 0 && (S.nl.fd = nl_open()) < 0) {
    S.nl.fd = -1;
    S.nl.fails++;
    return;
  }
  if ((e = nl_stats(S.nl.fd, &S.nl.seq, S.nl.buf, take_host, &oom)) || oom) {
    nl_drop();
    S.nl.fails += !oom;
    return;
  }
  S.nl.fails = 0;
  qsort(S.nl.hosts, S.nl.nhosts, sizeof *S.nl.hosts, by_index);
  uint64_t sig = S.nl.nhosts;
  for (size_t i = 0; i < S.nl.nhosts; i++)
    sig = sig * 1000003 + (uint64_t)S.nl.hosts[i].index;
  if (sig != S.nl.sig)
    S.nl.sig = sig, S.nl.gen++;
  S.nl.ok = 1;
}

static const nl_host *host_find(int index) {
  return bsearch(&index, S.nl.hosts, S.nl.nhosts, sizeof *S.nl.hosts, by_index);
}

static void take_peer(void *arg, const nl_item *it) {
  nl_peer *p;
  if (!it->veth || !it->has_link || !it->has_nsid || it->nsid < 0)
    return;
  if (!(p = push((void **)&S.nl.peers, &S.nl.npeers, &S.nl.peers_cap,
                 sizeof *p))) {
    *(int *)arg = ENOMEM;
    return;
  }
  p->index = it->index, p->nsid = it->nsid;
}

/* The host's veths whose peer is in another namespace, read again when the
 * set of links changed since; 0 or -1. */
static int nl_peers(void) {
  int oom = 0;
  if (S.nl.peers_sig && S.nl.peers_sig == S.nl.sig)
    return 0;
  S.nl.npeers = 0;
  if (nl_links(S.nl.fd, &S.nl.seq, S.nl.buf, take_peer, &oom) || oom) {
    nl_drop();
    return -1;
  }
  S.nl.peers_sig = S.nl.sig;
  return 0;
}

/* The host's end of the one veth into namespace nsid; 0 when there is
 * none, or more than one. */
static int peer_of(int nsid) {
  int index = 0;
  for (size_t i = 0; i < S.nl.npeers; i++)
    if (S.nl.peers[i].nsid == nsid) {
      if (index)
        return 0;
      index = S.nl.peers[i].index;
    }
  return index && host_find(index) ? index : 0;
}

/* ---- one container (sampler lock held, no view lock) ---- */

static view_probe *probe_open(const char *job_id) {
  char id[VIEW_ID_LEN + 1];
  view_probe *p = calloc(1, sizeof *p);
  if (!p)
    return NULL;
  memcpy(id, job_id, VIEW_ID_LEN);
  id[VIEW_ID_LEN] = '\0';
  if (cg_handle_open(&p->h, S.root, S.version, S.prefer, id, S.proc)) {
    probe_free(p);
    return NULL;
  }
  cg_keep_start(&p->h, &S.budget); /* ENOMEM: it reads without keeping */
  __atomic_add_fetch(&S.probe_bytes, probe_size(p), __ATOMIC_RELAXED);
  S.prefer = p->h.driver;
  p->h.closed = 0;
  p->tree = S.tree;
  return p;
}

/* Whether error e of a read of controller k means the cgroup is gone. */
static int vanished(const handle *h, int k, int e) {
  return e && cg_hdir(h, k) && cg_gone(e) && !cg_alive(h);
}

/* Sets f's field and its bit when ok. */
#define TAKE(ok, field, v, bit)                                                \
  do {                                                                         \
    if (ok)                                                                    \
      (field) = (v), f->have |= (bit);                                         \
  } while (0)

static int read_memory(handle *h, view_figs *f) {
  mem_fig m;
  if (!cg_hdir(h, K_MEM))
    return 0;
  if (cg_read_memory(NULL, 0, h, &m))
    return -1;
  TAKE(m.usage_ok, f->usage, m.usage, VF_USAGE);
  TAKE(m.inactive_ok, f->inactive, m.inactive, VF_INACTIVE);
  TAKE(m.limit_ok && !m.unlimited, f->limit, m.limit, VF_LIMIT);
  TAKE(m.rss_ok, f->rss, m.rss, VF_RSS);
  TAKE(m.cache_ok, f->cache, m.cache, VF_CACHE);
  TAKE(m.oom_ok, f->oom, m.oom, VF_OOM);
  return m.usage_ok || m.limit_ok || m.stat_ok;
}

/* After a read of net/dev that found one interface but lo: the host's end
 * of its veth, when there is exactly one into the container's namespace
 * (the kept net/dev is then closed). */
static void nl_find(view_probe *p, const net_fig *n) {
  char path[64];
  int nsid, index;
  handle *h = &p->h;
  /* a container with none (no veth, two interfaces) is asked again at its
   * seldom read, after a restart, or when the host's links changed */
  if (!S.nl.ok || (p->nl_looked && p->nl_gen == S.nl.gen &&
                   h->slow != CG_SLOW_ONCE && !(h->keep && h->keep->renewed)))
    return;
  p->nl_looked = 1, p->nl_gen = S.nl.gen;
  if (n->host || n->pid <= 0 || n->sum.interfaces != 1 || n->sum.nifs != 1 ||
      nl_peers())
    return;
  snprintf(path, sizeof path, "%s/%d/ns/net", DEFAULT_PROC, n->pid);
  if (nl_nsid(S.nl.fd, &S.nl.seq, S.nl.buf, path, &nsid) || nsid < 0 ||
      !(index = peer_of(nsid)))
    return;
  p->nl_index = index, p->nl_nsid = nsid, p->nl_gen = S.nl.gen;
  memcpy(p->nl_name, n->sum.ifs[0].name, sizeof p->nl_name);
  cg_keep_close_net(&p->h);
}

/* The network from the host's end of p's veth into f: 1, or 0 when it is
 * to be read from net/dev (no end known, or found again: at the seldom
 * read, so that an interface added beside it shows within 30 s; after a
 * restart; when the links changed and it is not the one any more). */
static int nl_take(view_probe *p, view_figs *f) {
  handle *h = &p->h;
  const nl_host *x;
  if (!p->nl_index)
    return 0;
  if (!S.nl.ok || h->slow == CG_SLOW_ONCE || (h->keep && h->keep->renewed) ||
      (p->nl_gen != S.nl.gen &&
       (nl_peers() || peer_of(p->nl_nsid) != p->nl_index)) ||
      !(x = host_find(p->nl_index))) {
    p->nl_index = 0;
    p->nl_looked = 0; /* looked for again after this read of net/dev */
    return 0;
  }
  p->nl_gen = S.nl.gen;
  /* what the host's end sent, the container's received */
  net_iface *i = &f->ifs[0];
  memcpy(i->name, p->nl_name, sizeof i->name);
  i->v[NI_RX_BYTES] = x->v[NI_TX_BYTES], i->v[NI_TX_BYTES] = x->v[NI_RX_BYTES];
  i->v[NI_RX_PACKETS] = x->v[NI_TX_PACKETS];
  i->v[NI_TX_PACKETS] = x->v[NI_RX_PACKETS];
  i->v[NI_RX_ERRORS] = x->v[NI_TX_ERRORS];
  i->v[NI_TX_ERRORS] = x->v[NI_RX_ERRORS];
  i->v[NI_RX_DROPPED] = x->v[NI_TX_DROPPED];
  i->v[NI_TX_DROPPED] = x->v[NI_RX_DROPPED];
  f->net_rx = i->v[NI_RX_BYTES], f->net_tx = i->v[NI_TX_BYTES];
  f->nifs = 1, f->have |= VF_NET;
  S.nl.reads++;
  return 1;
}

/* Network, per interface too: 1 read, 0 not, -1 gone. */
static int read_net(view_probe *p, view_figs *f) {
  handle *h = &p->h;
  net_fig n;
  if (nl_take(p, f))
    return 1;
  int e = cg_read_net(NULL, h, &n);
  if (e && cg_gone(e) && !cg_alive(h))
    return -1;
  if (e)
    return 0;
  f->net_rx = n.sum.rx, f->net_tx = n.sum.tx, f->have |= VF_NET;
  f->nifs = n.host ? 0 : n.sum.nifs;
  memcpy(f->ifs, n.sum.ifs, sizeof f->ifs);
  nl_find(p, &n);
  return 1;
}

/* Block I/O, pids, processes and network: 1 when one was read, -1 when
 * gone. */
static int read_counters(view_probe *p, view_figs *f) {
  handle *h = &p->h;
  io_sum io;
  single_fig pids;
  const char *file;
  uint64_t procs = 0;
  int e;
  if (cg_hdir(h, K_BLKIO)) {
    if (vanished(h, K_BLKIO, e = cg_read_blkio(NULL, h, &io, &file)))
      return -1;
    if (!e) {
      f->blk_read = io.read, f->blk_write = io.write, f->have |= VF_BLK;
      f->ndevs = io.ndevs;
      memcpy(f->devs, io.devs, sizeof f->devs);
    }
  }
  if (vanished(h, K_PIDS, e = cg_read_single(h, K_PIDS, "pids.current", &pids)))
    return -1;
  TAKE(!e && !pids.max, f->pids, pids.v, VF_PIDS);
  if (h->slow == CG_SLOW_SKIP)
    return read_net(p, f) < 0 ? -1
                              : (f->have & (VF_BLK | VF_PIDS | VF_NET)) != 0;
  e = cg_read_procs(h, &procs);
  if (e && cg_gone(e) && !cg_alive(h))
    return -1;
  /* none in its own cgroup while it has tasks: they are in sub-cgroups */
  TAKE(!e && (procs > 0 || !(f->have & VF_PIDS) || f->pids == 0), f->procs,
       procs, VF_PROCS);
  if (read_net(p, f) < 0)
    return -1;
  return (f->have & (VF_BLK | VF_PIDS | VF_NET)) != 0;
}

/* The CPU figures beside the usage. */
static void take_cpu(const cpu_fig *c, view_figs *f) {
  TAKE(c->ok, f->cpu_ns, c->usage_ns, VF_CPU);
  if (c->have_split)
    f->user_ns = c->user_ns, f->system_ns = c->system_ns, f->have |= VF_SPLIT;
  if (c->throttle_ok) {
    f->periods = c->periods, f->throttled = c->throttled;
    f->throttled_ns = c->throttled_ns, f->have |= VF_THROTTLE;
  }
  f->npercpu = c->npercpu;
  memcpy(f->percpu, c->percpu, sizeof f->percpu);
}

/* The limits, read again after LIMITS_TTL_NS; -1 when the cgroup is gone. */
static int read_limits(view_probe *p, view_figs *f, int64_t now) {
  limit_fig *l = &p->limits;
  if (!p->limits_at || now - p->limits_at >= LIMITS_TTL_NS) {
    if (cg_read_limits(&p->h, l))
      return -1;
    p->limits_at = now;
  }
  TAKE(l->quota_ok && !l->no_quota, f->quota_us, l->quota_us, VF_QUOTA);
  f->have |= l->quota_ok && l->no_quota ? VF_NOQUOTA : 0;
  TAKE(l->period_ok, f->period_us, l->period_us, VF_PERIOD);
  TAKE(l->cpuset > 0, f->cpuset, l->cpuset, VF_CPUSET);
  TAKE(l->pids_ok && !l->pids_unlimited, f->pids_max, l->pids_max, VF_PIDSMAX);
  f->have |= l->pids_ok && l->pids_unlimited ? VF_NOPIDSMAX : 0;
  return 0;
}

/* When the container's first process started (its net pid's
 * /proc/<pid>/stat), read once per pid. */
static void read_start(view_probe *p, view_figs *f) {
  int pid = p->h.net_pid;
  if (pid > 0 && pid != p->start_pid && S.btime > 0) {
    p->start_pid = pid;
    if (cg_pid_start_ns(&p->h, pid, S.btime, &p->started_ns))
      p->started_ns = 0;
  }
  TAKE(p->started_ns > 0 && pid == p->start_pid, f->started_ns, p->started_ns,
       VF_STARTED);
}

/* PSI on v2 (a hybrid host's unified tree): -1 when the cgroup is gone. */
static int read_pressure(handle *h, view_figs *f) {
  int have = 0, e = cg_read_pressure(NULL, h, f->psi, &have);
  if (e && cg_gone(e) && !cg_alive(h))
    return -1;
  for (int i = 0; i < PSI_N; i++)
    f->have |= have & (1 << i) ? VF_PSI_BIT(i) : 0;
  return 0;
}

/* A part of ttl fixed by p's id: a container's reads of files read every
 * ttl fall at its own moment of it, not all in one round. */
static int64_t id_spread(const view_probe *p, int64_t ttl) {
  uint64_t spread = 0;
  for (int i = 0; i < 8; i++)
    spread = spread * 31 + (unsigned char)p->h.id[i];
  return (int64_t)(spread % (uint64_t)ttl);
}

/* Keeps the seldom-read figures f has; the next read after SLOW_TTL_NS,
 * less a part of it fixed by the id the first time (the spread). */
static void slow_keep(view_probe *p, const view_figs *f, int64_t now) {
  slow_figs *s = &p->slow;
  s->have = f->have & VF_SLOW;
  s->periods = f->periods, s->throttled = f->throttled;
  s->throttled_ns = f->throttled_ns, s->oom = f->oom, s->procs = f->procs;
  s->limit = f->limit;
  s->user_ns = f->user_ns, s->system_ns = f->system_ns;
  s->npercpu = f->npercpu;
  memcpy(s->percpu, f->percpu, sizeof s->percpu);
  memcpy(s->psi, f->psi, sizeof s->psi);
  if (!p->slow_at)
    now -= id_spread(p, SLOW_TTL_NS);
  p->slow_at = now;
}

/* Puts the seldom-read figures as last read into f; v2's throttling and
 * CPU split come with the usage (cpu.stat) every round. */
static void slow_give(const view_probe *p, view_figs *f) {
  const slow_figs *s = &p->slow;
  unsigned mask =
      p->h.v2 ? VF_SLOW & ~(unsigned)(VF_THROTTLE | VF_SPLIT) : VF_SLOW;
  f->have = (f->have & ~mask) | (s->have & mask);
  if (!p->h.v2) {
    f->periods = s->periods, f->throttled = s->throttled;
    f->throttled_ns = s->throttled_ns;
    f->user_ns = s->user_ns, f->system_ns = s->system_ns;
  }
  f->oom = s->oom, f->procs = s->procs, f->limit = s->limit;
  f->npercpu = s->npercpu;
  memcpy(f->percpu, s->percpu, sizeof f->percpu);
  memcpy(f->psi, s->psi, sizeof f->psi);
}

/* Reads p's figures into f; *mono: when the CPU counter was read. */
static int probe_read(view_probe *p, view_figs *f, int64_t *mono) {
  handle *h = &p->h;
  cpu_fig c;
  int frozen = 0, e, mem, counters;
  memset(f, 0, sizeof *f);
  int64_t now = hx_mono_ns();
  int due = !p->slow_at || now - p->slow_at >= SLOW_TTL_NS;
  if (S.freezer || due) {
    if (vanished(h, K_FREEZER, e = cg_read_frozen(h, &frozen)))
      return R_GONE;
    if (!e && frozen)
      return R_PAUSED;
  }
  h->slow = due ? CG_SLOW_ONCE : CG_SLOW_SKIP;
  h->stat_reuse = p->stat_at && now - p->stat_at < STAT_TTL_NS;
  if (!h->stat_reuse)
    p->stat_at = p->stat_at ? now : now - id_spread(p, STAT_TTL_NS);
  e = cg_read_cpu(h, &c);
  f->read_ns = hx_real_ns();
  *mono = hx_mono_ns();
  if (vanished(h, K_CPU, e))
    return R_GONE;
  take_cpu(&c, f);
  if ((mem = read_memory(h, f)) < 0 || (counters = read_counters(p, f)) < 0 ||
      read_limits(p, f, *mono) < 0 || (due && read_pressure(h, f) < 0))
    return R_GONE;
  if (due)
    slow_keep(p, f, now);
  else
    slow_give(p, f);
  read_start(p, f);
  if (c.ok || mem || counters)
    return R_SAMPLED;
  return cg_alive(h) ? R_UNREADABLE : R_GONE;
}

/* The host's CPU time at `at`, between two reads of it around the round
 * (s0 at m0, s1 at m1): the system counter a container's CPU counter is
 * divided by must be read when that container's is, or a round that takes
 * longer than the last (the first, which opens every file) skews the CPU %
 * of the containers read late in it. The daemon reads it once per tick. */
typedef struct host_cpu {
  int64_t s0, m0, s1, m1;
} host_cpu;

static int64_t system_at(const host_cpu *hc, int64_t at) {
  if (hc->s0 < 0 || hc->s1 < hc->s0 || hc->m1 <= hc->m0 || at <= hc->m0)
    return hc->s0;
  if (at >= hc->m1)
    return hc->s1;
  return hc->s0 +
         (int64_t)((double)(hc->s1 - hc->s0) *
                   ((double)(at - hc->m0) / (double)(hc->m1 - hc->m0)));
}

/* The CPU % of f through horcrux.cpu's store, and the host's figures. */
static void observe(const hx_cpu_capi *cpu, const char *id, view_figs *f,
                    int64_t sys_ns) {
  double pct = 0, age = 0;
  f->have |= S.host_have;
  f->host_memory = S.host_memory;
  f->online_cpus = S.online_cpus;
  if (!(f->have & VF_CPU) || f->cpu_ns > (uint64_t)INT64_MAX || f->read_ns < 0)
    return;
  hx_cpu_sample s = {(int64_t)f->cpu_ns, sys_ns, f->read_ns,
                     (S.host_have & VF_CPUS) ? (int64_t)S.online_cpus : 0};
  if (cpu->observe(id, VIEW_ID_LEN, &s, -1, &pct, &age) == NULL) {
    f->pct = pct;
    f->have |= VF_PCT;
  }
}

/* Reads j's figures into the job; no lock of the view held. */
static void read_one(view_job *j, const hx_cpu_capi *cpu) {
  view_probe *p = j->probe;
  if (p && p->tree != S.tree) {
    view_probe_close(p);
    p = NULL;
  }
  if (!p && (S.version == LV_NONE || !(p = probe_open(j->id)))) {
    j->probe = NULL;
    j->result = R_UNREADABLE;
    return;
  }
  if (__atomic_load_n(&S.budget.held, __ATOMIC_RELAXED) > S.budget.max)
    cg_keep_close(&p->h); /* max_fds lowered: over it, keep none */
  p->h.buf = S.buf;
  j->result = probe_read(p, &j->figs, &j->mono);
  S.buf = p->h.buf;
  memset(&p->h.buf, 0, sizeof p->h.buf);
  j->probe = p;
  if (p->h.keep && p->h.keep->renewed) {
    /* a new cgroup: the samples of the old one are another life's */
    cpu->forget(j->id, VIEW_ID_LEN);
    p->h.keep->renewed = 0;
    p->slow_at = 0; /* its seldom-read figures too, next round */
    p->stat_at = 0;
  }
}

/* Stores j's figures, or gives its entry its probe back; closes the probe
 * of a container gone, or whose entry is. */
static void store_one(view_job *j, const hx_cpu_capi *cpu, const host_cpu *hc) {
  view_probe *p = j->probe;
  if (j->result == R_SAMPLED) {
    observe(cpu, j->id, &j->figs, system_at(hc, j->mono));
    if (view_store(j, &j->figs, j->mono))
      return;
  } else if (j->result == R_GONE || !p) {
    view_give_back(j, NULL); /* found again if it comes back */
  } else if (view_give_back(j, p)) {
    return;
  }
  view_probe_close(p);
}

/* ---- the call ---- */

/* A job that was not sampled: what the call tells Lua of it. */
typedef struct odd_job {
  char id[VIEW_ID_LEN];
  int result;
} odd_job;

/* What a call owns, in a userdata whose __gc frees it: the jobs not
 * sampled (copied out of S.jobs before the lock goes; few in a round). */
typedef struct call {
  size_t n, sampled;
  odd_job *odd;
  size_t nodd;
  int netlink; /* containers whose network came over netlink */
} call;

static int call_gc(lua_State *L) {
  call *c = luaL_checkudata(L, 1, CALL_MT);
  free(c->odd);
  c->odd = NULL;
  return 0;
}

/* Checks out the running entries into S.jobs (c->n of them); ENOMEM or
 * 0. Under S.lock. */
static int checkout(call *c) {
  size_t nidle;
  for (;;) {
    size_t cap = view_count_hint() + 16;
    if (cap > S.cap || S.cap > 2 * cap) { /* grown, or most entries gone */
      free(S.jobs);
      free(S.idle);
      S.jobs = malloc(cap * sizeof *S.jobs);
      S.idle = malloc(cap * sizeof *S.idle);
      S.cap = S.jobs && S.idle ? cap : 0;
      if (!S.cap)
        return ENOMEM;
    }
    if ((c->n = view_checkout(S.jobs, S.idle, S.cap, &nidle)) != (size_t)-1)
      break;
  }
  for (size_t i = 0; i < nidle; i++)
    view_probe_close(S.idle[i]);
  return 0;
}

/* The jobs of the round not sampled into c->odd; ENOMEM or 0. Under
 * S.lock. */
static int keep_odd(call *c) {
  c->sampled = 0;
  for (size_t i = 0; i < c->n; i++)
    c->sampled += S.jobs[i].result == R_SAMPLED;
  size_t want = c->n - c->sampled;
  if (want == 0)
    return 0;
  if (!(c->odd = malloc(want * sizeof *c->odd)))
    return ENOMEM;
  for (size_t i = 0; i < c->n; i++)
    if (S.jobs[i].result != R_SAMPLED) {
      memcpy(c->odd[c->nodd].id, S.jobs[i].id, VIEW_ID_LEN);
      c->odd[c->nodd++].result = S.jobs[i].result;
    }
  return 0;
}

/* The round, under the sampler's lock and with no Lua call. */
static int run(call *c, const hx_cpu_capi *cpu, const char *root,
               const char *proc, const char *sys, int netlink, int freezer) {
  pthread_mutex_lock(&S.lock);
  int e = checkout(c);
  if (!e) {
    S.freezer = freezer;
    /* a fixture tree's pids are no processes of this host */
    S.nl.on = netlink && same(proc, DEFAULT_PROC) && S.nl.fails < 3;
    S.nl.reads = 0;
    S.nl.ok = 0;
    rlim_t soft = set_budget();
    int max = S.budget.max;
    host_cpu hc = {-1, 0, -1, 0};
    int tree = c->n > 0 && use_tree(root, proc, sys);
    if (tree) {
      host_figures(hx_mono_ns());
      hc.s0 = system_cpu_ns();
      hc.m0 = hx_mono_ns();
      nl_round();
    }
    for (size_t i = 0; i < c->n; i++)
      read_one(&S.jobs[i], cpu);
    if (tree) {
      hc.s1 = system_cpu_ns();
      hc.m1 = hx_mono_ns();
    }
    for (size_t i = 0; i < c->n; i++)
      store_one(&S.jobs[i], cpu, &hc);
    __atomic_store_n(&S.buf_bytes,
                     S.buf.cap + S.cap * (sizeof *S.jobs + sizeof *S.idle),
                     __ATOMIC_RELAXED);
    c->netlink = S.nl.reads;
    if (S.budget.max < max) { /* out of descriptors: remember */
      S.learned = S.budget.max;
      S.learned_at = soft;
    }
    e = keep_odd(c);
  }
  pthread_mutex_unlock(&S.lock);
  return e;
}

/* horcrux.cpu's C API, through require (see cpu_capi.h). */
static const hx_cpu_capi *cpu_api(lua_State *L) {
  int top = lua_gettop(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, "horcrux.cpu") != LUA_TTABLE) {
    lua_getglobal(L, "require");
    lua_pushliteral(L, "horcrux.cpu");
    lua_call(L, 1, 1);
  }
  const hx_cpu_capi *api = NULL;
  if (lua_type(L, -1) == LUA_TTABLE &&
      lua_getfield(L, -1, "capi") == LUA_TLIGHTUSERDATA)
    api = lua_touserdata(L, -1);
  if (!api || api->version != HX_CPU_CAPI_VERSION)
    luaL_error(L, "horcrux.view: horcrux.cpu has no C API of version %d",
               HX_CPU_CAPI_VERSION);
  lua_settop(L, top);
  return api;
}

static int64_t thread_cpu_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* Sets summary[k] to the array of the ids whose result is r. */
static void set_ids(lua_State *L, const call *c, int r, const char *k) {
  lua_Integer n = 0;
  lua_newtable(L);
  for (size_t i = 0; i < c->nodd; i++)
    if (c->odd[i].result == r) {
      lua_pushlstring(L, c->odd[i].id, VIEW_ID_LEN);
      lua_rawseti(L, -2, ++n);
    }
  hx_json_push_array_mt(L);
  lua_setmetatable(L, -2);
  lua_setfield(L, -2, k);
}

int view_sample(lua_State *L) {
  int64_t t0 = thread_cpu_ns();
  const char *root = hx_opt_string(L, 1, "root", DEFAULT_ROOT);
  const char *proc = hx_opt_string(L, 1, "proc", DEFAULT_PROC);
  const char *sys = hx_opt_string(L, 1, "sys", DEFAULT_SYS);
  int netlink = hx_opt_boolean(L, 1, "netlink", 1);
  int freezer = hx_opt_boolean(L, 1, "freezer", 1);
  const hx_cpu_capi *cpu = cpu_api(L);
  call *c = lua_newuserdatauv(L, sizeof *c, 0);
  memset(c, 0, sizeof *c);
  luaL_setmetatable(L, CALL_MT);
  if (run(c, cpu, root, proc, sys, netlink, freezer))
    return luaL_error(L, "horcrux.view: not enough memory");
  lua_createtable(L, 0, 6);
  lua_pushinteger(L, (lua_Integer)c->sampled);
  lua_setfield(L, -2, "sampled");
  set_ids(L, c, R_UNREADABLE, "unreadable");
  set_ids(L, c, R_GONE, "gone");
  set_ids(L, c, R_PAUSED, "paused");
  lua_pushinteger(L, __atomic_load_n(&S.budget.held, __ATOMIC_RELAXED));
  lua_setfield(L, -2, "fds");
  lua_pushinteger(L, c->netlink);
  lua_setfield(L, -2, "netlink");
  lua_pushinteger(L, (thread_cpu_ns() - t0) / 1000);
  lua_setfield(L, -2, "us");
  return 1;
}

void view_sample_open(lua_State *L) {
  if (luaL_newmetatable(L, CALL_MT)) {
    lua_pushcfunction(L, call_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
}

/* The probes go with the view's entries (view.c's destructor); the shared
 * buffer goes with the code. */
__attribute__((destructor)) static void free_sampler(void) {
  if (S.stat_fd >= 0)
    close(S.stat_fd);
  S.stat_fd = -1;
  free(S.buf.p);
  free(S.jobs);
  free(S.idle);
  S.jobs = NULL, S.idle = NULL, S.cap = 0;
  nl_drop();
  free(S.nl.buf);
  free(S.nl.hosts);
  free(S.nl.peers);
  S.nl.buf = NULL, S.nl.hosts = NULL, S.nl.peers = NULL;
  S.buf.p = NULL;
  S.buf.cap = 0;
}
