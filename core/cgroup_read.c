/*
 * cgroup_read.c - a container's figures read from its cgroup into C
 * structs (see cgroup_fs.h), for horcrux.cgroup's methods and its stats()
 * to turn into tables.
 */
#include "aux.h"
#include "cgroup_fs.h"

#include <dirent.h>
#include <errno.h>
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
  return 0;
}

/* v2 cpu.stat: usage_usec, user_usec, system_usec. */
static int read_cpu_v2(handle *h, cpu_fig *c) {
  static const char *const keys[3] = {"usage_usec", "user_usec", "system_usec"};
  size_t len;
  num v[3];
  int found[3];
  uint64_t a[3], ns[3];
  int e = cg_hread(h, K_CPU, "cpu.stat", &len);
  if (e)
    return e;
  cgp_find_flat(h->buf.p, len, keys, 3, v, found);
  for (int i = 0; i < 3; i++)
    found[i] = found[i] && cgp_num_unsigned(&v[i], &a[i]) &&
               !__builtin_mul_overflow(a[i], (uint64_t)1000, &ns[i]);
  if (!found[0])
    return EINVAL;
  c->ok = 1;
  c->usage_ns = ns[0];
  if (found[1] && found[2]) {
    c->have_split = 1;
    c->user_ns = ns[1];
    c->system_ns = ns[2];
  }
  return 0;
}

int cg_read_cpu(handle *h, cpu_fig *c) {
  memset(c, 0, sizeof *c);
  return h->v2 ? read_cpu_v2(h, c) : read_cpu_v1(h, c);
}

int cg_read_single(handle *h, int k, const char *name, single_fig *f) {
  size_t len;
  num v;
  int e, r;
  memset(f, 0, sizeof *f);
  if ((e = cg_hread(h, k, name, &len)))
    return e;
  r = cgp_parse_single(h->buf.p, len, &v);
  if (r == 2)
    f->max = f->ok = 1;
  else if (r == 1 && cgp_num_unsigned(&v, &f->v))
    f->ok = 1;
  else
    return EINVAL;
  return 0;
}

/* Whether errno e of a read means the whole cgroup is gone. */
static int vanished(const handle *h, int e) {
  return cg_gone(e) && !cg_alive(h);
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
  e = cg_read_single(h, K_MEM, h->v2 ? "memory.max" : "memory.limit_in_bytes",
                     &lim);
  if (vanished(h, e))
    return e;
  if (!e) {
    m->limit_ok = 1;
    m->unlimited = lim.max || lim.v >= V1_UNLIMITED;
    m->limit = lim.v;
  }
  e = cg_hread(h, K_MEM, "memory.stat", &len);
  if (vanished(h, e))
    return e;
  if (!e) {
    const char *want = h->v2 ? "inactive_file" : "total_inactive_file";
    num in;
    int found;
    if (L)
      cgp_fill_flat(L, st, h->buf.p, len, want, &in, &found);
    else
      found = cgp_find_key(h->buf.p, len, want, &in);
    m->inactive_ok = found && cgp_num_unsigned(&in, &m->inactive);
    m->stat_ok = 1;
  }
  return 0;
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

/* The first pid in the cgroup, looking into sub-cgroups when the container's
 * own has none; 0 when there is none. */
static int find_pid(rbuf *b, const char *dir, int depth) {
  char path[PATH_MAX];
  size_t len;
  int pid = 0;
  DIR *d;
  struct dirent *e;
  if (cg_join(path, sizeof path, dir, "cgroup.procs") &&
      cg_read_file(b, path, &len) == 0 && (pid = cgp_first_pid(b->p, len)) > 0)
    return pid;
  if (depth <= 0 || (d = opendir(dir)) == NULL)
    return 0;
  while (pid == 0 && (e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.' || !cg_join(path, sizeof path, dir, e->d_name) ||
        (e->d_type != DT_DIR && (e->d_type != DT_UNKNOWN || !cg_is_dir(path))))
      continue;
    pid = find_pid(b, path, depth - 1);
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

/* The first pid of the container's own cgroup.procs (read through the
 * handle, so a kept descriptor serves), else of a sub-cgroup; 0: none. */
static int first_pid(handle *h, int k, const char *dir) {
  char path[PATH_MAX];
  size_t len;
  DIR *d;
  struct dirent *e;
  int pid = 0;
  if (cg_hread(h, k, "cgroup.procs", &len) == 0 &&
      (pid = cgp_first_pid(h->buf.p, len)) > 0)
    return pid;
  if ((d = opendir(dir)) == NULL)
    return 0;
  while (pid == 0 && (e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.' || !cg_join(path, sizeof path, dir, e->d_name) ||
        (e->d_type != DT_DIR && (e->d_type != DT_UNKNOWN || !cg_is_dir(path))))
      continue;
    pid = find_pid(&h->buf, path, PROCS_DEPTH - 1);
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
