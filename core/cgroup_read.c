/*
 * cgroup_read.c - a container's figures read from its cgroup into C
 * structs (see cgroup_fs.h), for horcrux.cgroup's methods and its stats()
 * to turn into tables.
 */
#include "aux.h"
#include "cgroup_fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* How deep to look under a container's cgroup for a process (v2 forbids
 * processes in inner nodes, so a container with sub-cgroups has none). */
#define PROCS_DEPTH 3

/* v1's "unlimited" is LONG_MAX rounded down to a page; anything this close
 * to it is no real limit (no machine has 4 EiB). */
#define V1_UNLIMITED ((uint64_t)1 << 62)

/* Looks up keys in the "key value" text in h->buf; into[i] gets the value
 * of keys[i] times mul[i] (mul 0: 1). Returns a bit per key found, a
 * non-negative number whose product fits. */
static unsigned find_u64s(const handle *h, size_t len, const char *const *keys,
                          const uint64_t *mul, int n, uint64_t *into) {
  num v[8];
  int found[8];
  unsigned got = 0;
  cgp_find_flat(h->buf.p, len, keys, n, v, found);
  for (int i = 0; i < n; i++) {
    uint64_t a, m = mul && mul[i] ? mul[i] : 1;
    if (found[i] && cgp_num_unsigned(&v[i], &a) &&
        !__builtin_mul_overflow(a, m, &into[i]))
      got |= 1u << i;
  }
  return got;
}

/* A file of the figures read seldom (handle.slow): EAGAIN when skipped. */
static int slow_hread(handle *h, int k, const char *name, size_t *len) {
  if (h->slow == CG_SLOW_SKIP)
    return EAGAIN;
  if (h->slow == CG_SLOW_ONCE)
    return cg_hread_once(h, k, name, len);
  return cg_hread(h, k, name, len);
}

/* The kernel's USER_HZ, what cpuacct.stat counts in. */
static uint64_t clk_tck(void) {
  long hz = sysconf(_SC_CLK_TCK);
  return hz > 0 ? (uint64_t)hz : 100;
}

/* v1's other CPU files, each optional: cpuacct.stat (user and system, in
 * ticks, as the daemon and cAdvisor read them), cpuacct.usage_percpu and
 * the cpu controller's cpu.stat (throttling, time in ns). */
static void read_cpu_v1_more(handle *h, cpu_fig *c) {
  static const char *const split[2] = {"user", "system"};
  static const char *const thr[3] = {"nr_periods", "nr_throttled",
                                     "throttled_time"};
  size_t len;
  uint64_t v[3];
  if (slow_hread(h, K_CPU, "cpuacct.stat", &len) == 0 &&
      find_u64s(h, len, split, NULL, 2, v) == 3 &&
      cgp_ticks_to_ns(v[0], clk_tck(), &c->user_ns) &&
      cgp_ticks_to_ns(v[1], clk_tck(), &c->system_ns))
    c->have_split = 1;
  if (slow_hread(h, K_CPU, "cpuacct.usage_percpu", &len) == 0) {
    int n = cgp_parse_u64_list(h->buf.p, len, c->percpu, CGP_MAX_CPUS);
    c->npercpu = n > 0 ? n : 0;
  }
  if (slow_hread(h, K_CPUCTL, "cpu.stat", &len) == 0 &&
      find_u64s(h, len, thr, NULL, 3, v) == 7) {
    c->throttle_ok = 1;
    c->periods = v[0], c->throttled = v[1], c->throttled_ns = v[2];
  }
}

/* v1 cpuacct.usage: ns. */
static int read_cpu_v1(handle *h, cpu_fig *c) {
  size_t len;
  num v;
  int e = cg_hread(h, K_CPU, "cpuacct.usage", &len);
  if (e)
    return e;
  if (cgp_parse_single(h->buf.p, len, &v) != 1 ||
      !cgp_num_unsigned(&v, &c->usage_ns))
    return EINVAL;
  c->ok = 1;
  read_cpu_v1_more(h, c);
  return 0;
}

/* v2 cpu.stat: usage_usec, user_usec, system_usec, and the throttling:
 * nr_periods, nr_throttled, throttled_usec. */
static int read_cpu_v2(handle *h, cpu_fig *c) {
  static const char *const keys[6] = {"usage_usec",   "user_usec",
                                      "system_usec",  "nr_periods",
                                      "nr_throttled", "throttled_usec"};
  static const uint64_t mul[6] = {1000, 1000, 1000, 1, 1, 1000};
  size_t len;
  uint64_t v[6];
  int e = cg_hread(h, K_CPU, "cpu.stat", &len);
  if (e)
    return e;
  unsigned got = find_u64s(h, len, keys, mul, 6, v);
  if (!(got & 1))
    return EINVAL;
  c->ok = 1;
  c->usage_ns = v[0];
  if ((got & 6) == 6) {
    c->have_split = 1;
    c->user_ns = v[1];
    c->system_ns = v[2];
  }
  if ((got & 56) == 56) {
    c->throttle_ok = 1;
    c->periods = v[3], c->throttled = v[4], c->throttled_ns = v[5];
  }
  return 0;
}

int cg_read_cpu(handle *h, cpu_fig *c) {
  memset(c, 0, sizeof *c);
  return h->v2 ? read_cpu_v2(h, c) : read_cpu_v1(h, c);
}

/* The one value in h->buf: a number or "max"; 0 or EINVAL. */
static int single_of(const handle *h, size_t len, single_fig *f) {
  num v;
  int r = cgp_parse_single(h->buf.p, len, &v);
  if (r == 2)
    f->max = f->ok = 1;
  else if (r == 1 && cgp_num_unsigned(&v, &f->v))
    f->ok = 1;
  else
    return EINVAL;
  return 0;
}

/* A one-value file; slow: one of the seldom-read figures' (handle.slow). */
static int read_single(handle *h, int k, const char *name, single_fig *f,
                       int slow) {
  size_t len;
  int e;
  memset(f, 0, sizeof *f);
  if ((e = slow ? slow_hread(h, k, name, &len) : cg_hread(h, k, name, &len)))
    return e;
  return single_of(h, len, f);
}

int cg_read_single(handle *h, int k, const char *name, single_fig *f) {
  return read_single(h, k, name, f, 0);
}

/* Whether errno e of a read means the whole cgroup is gone. */
static int vanished(const handle *h, int e) {
  return cg_gone(e) && !cg_alive(h);
}

/* The figures of memory.stat into m: a bit of got per value of v. */
static void stat_figs(mem_fig *m, unsigned got, const uint64_t v[3]) {
  m->inactive_ok = got & 1, m->inactive = v[0];
  m->rss_ok = (got & 2) != 0, m->rss = v[1];
  m->cache_ok = (got & 4) != 0, m->cache = v[2];
  m->stat_ok = 1;
}

/* memory.stat: inactive file pages (what docker and cAdvisor subtract from
 * the usage), RSS and cache as cAdvisor reads them (v1 total_rss and
 * total_cache, v2 anon and file); kept in h for handle.stat_reuse. */
static void memory_stat(lua_State *L, int st, handle *h, size_t len,
                        mem_fig *m) {
  static const char *const v1[3] = {"total_inactive_file", "total_rss",
                                    "total_cache"};
  static const char *const v2[3] = {"inactive_file", "anon", "file"};
  uint64_t v[3] = {0, 0, 0};
  if (L)
    cgp_fill_flat(L, st, h->buf.p, len, NULL, NULL, NULL);
  unsigned got = find_u64s(h, len, h->v2 ? v2 : v1, NULL, 3, v);
  stat_figs(m, got, v);
  h->stat_got = got | 8; /* 8: read */
  h->stat_usage = m->usage;
  memcpy(h->stat_v, v, sizeof v);
}

/* Whether memory.stat's figures as last read may stand for this read: the
 * holder asked for it (the live view, between its seldom reads) and the
 * usage is the one they were read with. The kernel moves pages between its
 * lists as they age, so the inactive figure may change while the usage
 * does not (a page read again goes active): the live view reads it again
 * after 10 s at most (view_sample.c's STAT_TTL_NS). */
static int stat_reused(handle *h, mem_fig *m) {
  if (!h->stat_reuse || !(h->stat_got & 8) || !m->usage_ok ||
      m->usage != h->stat_usage)
    return 0;
  stat_figs(m, h->stat_got & 7, h->stat_v);
  return 1;
}

/* OOM kills: v2 memory.events oom_kill, v1 memory.oom_control oom_kill
 * (kernels from 4.13 print it). */
static int memory_oom(handle *h, mem_fig *m) {
  static const char *const key[1] = {"oom_kill"};
  size_t len;
  int e = slow_hread(h, K_MEM, h->v2 ? "memory.events" : "memory.oom_control",
                     &len);
  if (vanished(h, e))
    return e;
  if (!e)
    m->oom_ok = find_u64s(h, len, key, NULL, 1, &m->oom) == 1;
  return 0;
}

int cg_read_memory(lua_State *L, int st, handle *h, mem_fig *m) {
  single_fig u, lim;
  size_t len;
  int e;
  memset(m, 0, sizeof *m);
  e = cg_read_single(h, K_MEM,
                     h->v2 ? "memory.current" : "memory.usage_in_bytes", &u);
  if (vanished(h, e))
    return e;
  if (!e && !u.max) {
    m->usage_ok = 1;
    m->usage = u.v;
  }
  /* the limit changes only by `docker update`: read seldom */
  e = read_single(h, K_MEM, h->v2 ? "memory.max" : "memory.limit_in_bytes",
                  &lim, 1);
  if (vanished(h, e))
    return e;
  if (!e) {
    m->limit_ok = 1;
    m->unlimited = lim.max || lim.v >= V1_UNLIMITED;
    m->limit = lim.v;
  }
  if (L || !stat_reused(h, m)) {
    h->stat_got = 0;
    e = cg_hread(h, K_MEM, "memory.stat", &len);
    if (vanished(h, e))
      return e;
    if (!e)
      memory_stat(L, st, h, len, m);
  }
  return memory_oom(h, m);
}

/* Block I/O: v2 io.stat; v1 the first of these files with a device line,
 * in the order runc (and so the docker daemon) reads them: the BFQ and CFQ
 * schedulers' counters, then the throttle layer's. */
static const char *const blkio_files[] = {
    "blkio.bfq.io_service_bytes_recursive", "blkio.io_service_bytes_recursive",
    "blkio.throttle.io_service_bytes_recursive", NULL};

int cg_read_blkio(lua_State *L, handle *h, io_sum *s, const char **file) {
  size_t len;
  int e, last = ENOENT, seen = 0;
  if (h->v2) {
    if ((e = cg_hread(h, K_BLKIO, "io.stat", &len)))
      return e;
    cgp_parse_io_v2(L, h->buf.p, len, s);
    *file = "io.stat";
    return 0;
  }
  for (int i = 0; blkio_files[i]; i++) {
    if ((e = cg_hread(h, K_BLKIO, blkio_files[i], &len))) {
      last = e;
      continue;
    }
    seen = 1;
    cgp_parse_blkio_v1(NULL, h->buf.p, len, s);
    if (s->entries > 0 || blkio_files[i + 1] == NULL) {
      if (L)
        cgp_parse_blkio_v1(L, h->buf.p, len, s);
      *file = blkio_files[i];
      return 0;
    }
  }
  if (seen) { /* every file present and empty: no I/O yet */
    memset(s, 0, sizeof *s);
    *file = NULL;
    return 0;
  }
  return last;
}

/* At most this many of a cgroup's pids are looked at for its init. */
#define INIT_SCAN 16

/* Whether pid is its pid namespace's init: the container's process 1,
 * whose network namespace is the container's. Another process of its
 * cgroup need not be in it: one that `docker exec` is still setting up
 * (in the cgroup before it joins the namespaces), or one that left. */
static int is_ns_init(const handle *h, int pid) {
  char path[PATH_MAX], text[4096];
  snprintf(path, sizeof path, "%s/%d/status", h->proc, pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return 0;
  ssize_t n = read(fd, text, sizeof text);
  close(fd);
  return n > 0 && cgp_status_ns_init(text, (size_t)n);
}

/* The pid of a cgroup.procs text that the network is read through: its
 * pid namespace's init among the first INIT_SCAN (the first pid is not
 * it after the pids wrapped, nor when an exec came first), else the
 * first; 0 when it lists none. */
static int pick_pid(const handle *h, const char *s, size_t len) {
  int first = cgp_pid_at(s, len, 0);
  int pid = first;
  for (int i = 1; pid > 0 && i <= INIT_SCAN; pid = cgp_pid_at(s, len, i++))
    if (is_ns_init(h, pid))
      return pid;
  return first;
}

/* The pid of the cgroup (pick_pid), looking into sub-cgroups when the
 * container's own has none; 0 when there is none. */
static int find_pid(const handle *h, rbuf *b, const char *dir, int depth) {
  char path[PATH_MAX];
  size_t len;
  int pid = 0;
  DIR *d;
  struct dirent *e;
  if (cg_join(path, sizeof path, dir, "cgroup.procs") &&
      cg_read_file(b, path, &len) == 0 && (pid = pick_pid(h, b->p, len)) > 0)
    return pid;
  if (depth <= 0 || (d = opendir(dir)) == NULL)
    return 0;
  while (pid == 0 && (e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.' || !cg_join(path, sizeof path, dir, e->d_name) ||
        (e->d_type != DT_DIR && (e->d_type != DT_UNKNOWN || !cg_is_dir(path))))
      continue;
    pid = find_pid(h, b, path, depth - 1);
  }
  closedir(d);
  return pid;
}

/* Whether pid's network namespace is the host's (--network host): its
 * counters would be the host's, and docker reports none. Unknown (no
 * permission, a fixture tree) counts as not shared. */
static int shares_host_netns(const handle *h, int pid) {
  char path[PATH_MAX], a[128], b[128];
  ssize_t na, nb;
  snprintf(path, sizeof path, "%s/%d/ns/net", h->proc, pid);
  if ((na = readlink(path, a, sizeof a)) <= 0)
    return 0;
  snprintf(path, sizeof path, "%s/1/ns/net", h->proc);
  if ((nb = readlink(path, b, sizeof b)) <= 0) {
    snprintf(path, sizeof path, "%s/self/ns/net", h->proc);
    if ((nb = readlink(path, b, sizeof b)) <= 0)
      return 0;
  }
  return na == nb && memcmp(a, b, (size_t)na) == 0;
}

/* The pid of the container's own cgroup.procs (pick_pid; read through the
 * handle, so a kept descriptor serves), else of a sub-cgroup; 0: none. */
static int first_pid(handle *h, int k, const char *dir) {
  char path[PATH_MAX];
  size_t len;
  DIR *d;
  struct dirent *e;
  int pid = 0;
  if (cg_hread(h, k, "cgroup.procs", &len) == 0 &&
      (pid = pick_pid(h, h->buf.p, len)) > 0)
    return pid;
  if ((d = opendir(dir)) == NULL)
    return 0;
  while (pid == 0 && (e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.' || !cg_join(path, sizeof path, dir, e->d_name) ||
        (e->d_type != DT_DIR && (e->d_type != DT_UNKNOWN || !cg_is_dir(path))))
      continue;
    pid = find_pid(h, &h->buf, path, PROCS_DEPTH - 1);
  }
  closedir(d);
  return pid;
}

int cg_read_net(lua_State *L, handle *h, net_fig *n) {
  int k = cg_procs_k(h);
  size_t len;
  int e, pid;
  memset(n, 0, sizeof *n);
  if (k < 0)
    return ENOENT;
  if ((pid = cg_keep_net_pid(h)) == 0 &&
      (pid = first_pid(h, k, cg_hdir(h, k))) == 0)
    return ESRCH;
  n->pid = pid;
  if (pid != h->net_pid) {
    h->net_host = shares_host_netns(h, pid);
    h->net_pid = pid;
  }
  if ((n->host = h->net_host))
    return 0;
  if ((e = cg_read_net_dev(h, pid, &len)))
    return e;
  cgp_parse_net_dev(L, h->buf.p, len, &n->sum);
  return 0;
}

/* The first line of s[0..len) is the word lit. */
static int state_is(const char *s, size_t len, const char *lit) {
  const char *p = s, *ls, *le, *f;
  size_t n;
  return cgp_next_line(&p, s + len, &ls, &le) &&
         cgp_next_field(&ls, le, &f, &n) && cgp_field_is(f, n, lit) &&
         !cgp_next_field(&ls, le, &f, &n);
}

/* v1: freezer.state is THAWED, FREEZING or FROZEN, and says FROZEN too when
 * an ancestor is frozen. v2: cgroup.freeze is what was asked of this
 * cgroup (docker pause writes 1), as FREEZING counts on v1; it does not
 * show an ancestor's freeze. Missing on kernels before 5.2: ENOENT. */
int cg_read_frozen(handle *h, int *frozen) {
  size_t len;
  int e;
  if (h->v2) {
    num v;
    if ((e = cg_hread(h, K_FREEZER, "cgroup.freeze", &len)))
      return e;
    if (cgp_parse_single(h->buf.p, len, &v) != 1 || v.big || v.i < 0 || v.i > 1)
      return EINVAL;
    *frozen = v.i == 1;
    return 0;
  }
  if ((e = cg_hread(h, K_FREEZER, "freezer.state", &len)))
    return e;
  if (state_is(h->buf.p, len, "FROZEN") || state_is(h->buf.p, len, "FREEZING"))
    *frozen = 1;
  else if (state_is(h->buf.p, len, "THAWED"))
    *frozen = 0;
  else
    return EINVAL;
  return 0;
}

/* v2: cpu.max; v1: cpu.cfs_quota_us (-1: none) and cpu.cfs_period_us. */
static int read_quota(handle *h, limit_fig *l) {
  size_t len;
  num v;
  int e;
  if (h->v2) {
    if ((e = cg_hread_once(h, K_CPUCTL, "cpu.max", &len)))
      return e;
    l->quota_ok = l->period_ok = cgp_parse_cpu_max(h->buf.p, len, &l->no_quota,
                                                   &l->quota_us, &l->period_us);
    return 0;
  }
  if ((e = cg_hread_once(h, K_CPUCTL, "cpu.cfs_quota_us", &len)))
    return e;
  if (cgp_parse_single(h->buf.p, len, &v) == 1) {
    l->quota_ok = 1;
    l->no_quota = !cgp_num_unsigned(&v, &l->quota_us) || l->quota_us == 0;
  }
  if ((e = cg_hread_once(h, K_CPUCTL, "cpu.cfs_period_us", &len)))
    return e;
  l->period_ok = cgp_parse_single(h->buf.p, len, &v) == 1 &&
                 cgp_num_unsigned(&v, &l->period_us) && l->period_us > 0;
  return 0;
}

/* The effective CPUs of the cpuset (v1 names it cpuset.effective_cpus;
 * older kernels have only cpuset.cpus). */
static int read_cpuset(handle *h, limit_fig *l) {
  size_t len;
  int e = cg_hread_once(
      h, K_CPUSET, h->v2 ? "cpuset.cpus.effective" : "cpuset.effective_cpus",
      &len);
  if (e == ENOENT && !h->v2 && cg_alive(h))
    e = cg_hread_once(h, K_CPUSET, "cpuset.cpus", &len);
  if (e)
    return e;
  l->cpuset = cgp_parse_cpu_list(h->buf.p, len);
  return 0;
}

int cg_read_limits(handle *h, limit_fig *l) {
  single_fig pm;
  size_t len;
  int e;
  memset(l, 0, sizeof *l);
  if (vanished(h, e = read_quota(h, l)) || vanished(h, e = read_cpuset(h, l)))
    return e;
  memset(&pm, 0, sizeof pm);
  e = cg_hread_once(h, K_PIDS, "pids.max", &len);
  if (vanished(h, e))
    return e;
  if (!e)
    e = single_of(h, len, &pm);
  if (!e) {
    l->pids_ok = 1;
    l->pids_unlimited = pm.max;
    l->pids_max = pm.v;
  }
  return 0;
}

const char *const cg_psi_names[PSI_N] = {"cpu", "memory", "io"};

int cg_read_pressure(lua_State *L, handle *h, psi_fig p[PSI_N], int *have) {
  static const char *const files[PSI_N] = {"cpu.pressure", "memory.pressure",
                                           "io.pressure"};
  int k = h->v2 ? K_CPU : K_UNIFIED;
  size_t len;
  *have = 0;
  if (!cg_hdir(h, k))
    return ENOENT;
  for (int i = 0; i < PSI_N; i++) {
    int e = slow_hread(h, k, files[i], &len);
    if (vanished(h, e))
      return e;
    if (L)
      lua_newtable(L);
    if (!e && cgp_parse_pressure(L, h->buf.p, len, &p[i]))
      *have |= 1 << i;
    if (L && (*have & 1 << i))
      lua_setfield(L, -2, cg_psi_names[i]);
    else if (L)
      lua_pop(L, 1);
  }
  return 0;
}

int cg_read_procs(handle *h, uint64_t *n) {
  int k = cg_procs_k(h);
  size_t len;
  int e;
  if (k < 0)
    return ENOENT;
  if ((e = cg_hread(h, k, "cgroup.procs", &len)))
    return e;
  *n = (uint64_t)cgp_count_pids(h->buf.p, len);
  return 0;
}

int cg_pid_start_ns(handle *h, int pid, uint64_t btime, int64_t *ns) {
  char path[PATH_MAX];
  size_t len;
  uint64_t ticks, hz = clk_tck();
  int n = snprintf(path, sizeof path, "%s/%d/stat", h->proc, pid), e;
  if (n < 0 || (size_t)n >= sizeof path)
    return ENAMETOOLONG;
  if ((e = cg_read_file(&h->buf, path, &len)))
    return e;
  if (!cgp_parse_pid_start(h->buf.p, len, &ticks) ||
      ticks / hz > (uint64_t)INT32_MAX || btime > (uint64_t)INT32_MAX)
    return EINVAL;
  *ns = ((int64_t)btime + (int64_t)(ticks / hz)) * 1000000000 +
        (int64_t)(ticks % hz) * (int64_t)(1000000000 / hz);
  return 0;
}

int cg_read_btime(rbuf *b, const char *proc, uint64_t *btime) {
  char path[PATH_MAX];
  size_t len;
  int e;
  if (!cg_join(path, sizeof path, proc, "stat"))
    return ENAMETOOLONG;
  if ((e = cg_read_file(b, path, &len)))
    return e;
  return cgp_parse_btime(b->p, len, btime) ? 0 : EINVAL;
}
