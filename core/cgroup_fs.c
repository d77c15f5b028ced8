/*
 * cgroup_fs.c - horcrux.cgroup's files and layout (see cgroup_fs.h): whole
 * files read into a growable buffer, the hierarchies of a cgroup tree and
 * the directories of each container under both drivers.
 */
#include "cgroup_fs.h"
#include "aux.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* No cgroup or proc file we read is near this; a bigger one is not ours. */
#define READ_MAX ((size_t)64 << 20)

/* ---------------------------------------------------------------- files */

/* Makes room for at least 2 more bytes after n; 0 or an errno value. */
static int rbuf_grow(rbuf *b, size_t n) {
  if (b->p != NULL && b->cap - n >= 2)
    return 0;
  size_t cap = b->cap ? b->cap * 2 : 4096;
  if (cap > READ_MAX)
    return EFBIG;
  char *q = realloc(b->p, cap);
  if (q == NULL)
    return ENOMEM;
  b->p = q;
  b->cap = cap;
  return 0;
}

/* Cgroup and proc files are generated on read: read to EOF, never assume
 * one read() is the whole file. */
int cg_read_file(rbuf *b, const char *path, size_t *len) {
  size_t n = 0;
  int e = 0, fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return errno;
  for (;;) {
    if ((e = rbuf_grow(b, n)))
      break;
    ssize_t r = read(fd, b->p + n, b->cap - n - 1);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0)
      e = errno;
    if (r <= 0)
      break;
    n += (size_t)r;
  }
  close(fd);
  if (e)
    return e;
  b->p[n] = '\0';
  *len = n;
  return 0;
}

int cg_join(char *out, size_t cap, const char *a, const char *b) {
  int n = snprintf(out, cap, "%s/%s", a, b);
  return n >= 0 && (size_t)n < cap;
}

int cg_is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file_at(const char *dir, const char *name) {
  char path[PATH_MAX];
  struct stat st;
  return cg_join(path, sizeof path, dir, name) && stat(path, &st) == 0 &&
         S_ISREG(st.st_mode);
}

static int is_dir_at(const char *dir, const char *name) {
  char path[PATH_MAX];
  return cg_join(path, sizeof path, dir, name) && cg_is_dir(path);
}

int cg_gone(int e) {
  return e == ENOENT || e == ENODEV || e == ENOTDIR || e == ESRCH;
}

const char *cg_errno_kind(int e) {
  if (cg_gone(e))
    return HX_NOT_FOUND;
  if (e == EFBIG)
    return HX_LIMIT;
  return HX_IO;
}

/* ---------------------------------------------------------------- layout */

const char *const cg_version_names[4] = {NULL, "v1", "v2", "hybrid"};
const char *const cg_driver_names[3] = {NULL, "cgroupfs", "systemd"};
const char *const cg_k_names[K_N] = {"cpuacct", "memory", "blkio", "pids",
                                     "freezer"};

/* The names a v1 controller's hierarchy may have (cpuacct is often
 * co-mounted with cpu). */
static const char *const v1_dirs[K_N][4] = {
    {"cpuacct", "cpu,cpuacct", "cpuacct,cpu", NULL},
    {"memory", NULL},
    {"blkio", NULL},
    {"pids", NULL},
    {"freezer", NULL}};

int cg_v1_hierarchy(const char *root, int k, char *out, size_t cap) {
  for (int i = 0; v1_dirs[k][i]; i++)
    if (cg_join(out, cap, root, v1_dirs[k][i]) && cg_is_dir(out))
      return 1;
  return 0;
}

/* Read from the tree: v2 has cgroup.controllers at its root; v1 has one
 * directory per controller; hybrid adds a v2 tree at unified/. */
int cg_detect_version(const char *root) {
  char path[PATH_MAX];
  int v1 = 0;
  if (is_file_at(root, "cgroup.controllers"))
    return LV_V2;
  for (int k = 0; k < K_N && !v1; k++)
    v1 = cg_v1_hierarchy(root, k, path, sizeof path);
  if (!v1)
    return LV_NONE;
  return cg_join(path, sizeof path, root, "unified") &&
                 is_file_at(path, "cgroup.controllers")
             ? LV_HYBRID
             : LV_V1;
}

int cg_is_id(const char *s, size_t n) {
  return n == CG_ID_LEN && hx_is_lower_hex(s, n);
}

/* A container's directory name under each driver's parent: the id of
 * "<id>" (cgroupfs, under docker/) or "docker-<id>.scope" (systemd, under
 * system.slice/); NULL when the name is neither. */
static const char *id_of_entry(int driver, const char *name) {
  size_t n = strlen(name);
  if (driver == DRV_CGROUPFS)
    return cg_is_id(name, n) ? name : NULL;
  if (n == CG_ID_LEN + 13 && memcmp(name, "docker-", 7) == 0 &&
      memcmp(name + 7 + CG_ID_LEN, ".scope", 6) == 0 &&
      cg_is_id(name + 7, CG_ID_LEN))
    return name + 7;
  return NULL;
}

static const char *driver_parent(int driver) {
  return driver == DRV_CGROUPFS ? "docker" : "system.slice";
}

int cg_each_container(const char *base, int driver,
                      void (*fn)(const char *, void *), void *arg) {
  char path[PATH_MAX];
  DIR *d;
  struct dirent *e;
  int count = 0;
  if (!cg_join(path, sizeof path, base, driver_parent(driver)) ||
      (d = opendir(path)) == NULL)
    return -1;
  while ((e = readdir(d)) != NULL) {
    const char *id = id_of_entry(driver, e->d_name);
    if (id == NULL)
      continue;
    if (e->d_type != DT_DIR &&
        (e->d_type != DT_UNKNOWN || !is_dir_at(path, e->d_name)))
      continue;
    count++;
    if (fn)
      fn(id, arg);
  }
  closedir(d);
  return count;
}

/* The root on v2, a controller's hierarchy on v1 (memory first; docker
 * creates them all). */
int cg_scan_base(const char *root, int version, char *out, size_t cap) {
  if (version == LV_V2) {
    int n = snprintf(out, cap, "%s", root);
    return n >= 0 && (size_t)n < cap;
  }
  for (int k = K_MEM, i = 0; i < K_N; i++, k = (k + 1) % K_N)
    if (cg_v1_hierarchy(root, k, out, cap))
      return 1;
  return 0;
}

/* With none running, the driver whose parent directory exists (docker/
 * first). */
int cg_detect_driver(const char *base) {
  int fs = cg_each_container(base, DRV_CGROUPFS, NULL, NULL);
  int sd = cg_each_container(base, DRV_SYSTEMD, NULL, NULL);
  if (fs > 0 && fs >= sd)
    return DRV_CGROUPFS;
  if (sd > 0)
    return DRV_SYSTEMD;
  return fs == 0 ? DRV_CGROUPFS : DRV_NONE;
}

int cg_find_dir(const char *base, const char *id, int prefer, char *out,
                size_t cap) {
  int drivers[2] = {prefer == DRV_SYSTEMD ? DRV_SYSTEMD : DRV_CGROUPFS,
                    prefer == DRV_SYSTEMD ? DRV_CGROUPFS : DRV_SYSTEMD};
  for (int i = 0; i < 2; i++) {
    int n =
        drivers[i] == DRV_CGROUPFS
            ? snprintf(out, cap, "%s/docker/%s", base, id)
            : snprintf(out, cap, "%s/system.slice/docker-%s.scope", base, id);
    if (n >= 0 && (size_t)n < cap && cg_is_dir(out))
      return drivers[i];
  }
  return DRV_NONE;
}

/* ---------------------------------------------------------------- handle */

const char *cg_hdir(const handle *h, int k) {
  return h->v2 ? h->dir[0] : h->dir[k];
}

const char *cg_procs_dir(const handle *h) {
  static const int order[K_N] = {K_MEM, K_PIDS, K_CPU, K_BLKIO, K_FREEZER};
  for (int i = 0; i < K_N; i++)
    if (cg_hdir(h, order[i]))
      return cg_hdir(h, order[i]);
  return NULL;
}

int cg_alive(const handle *h) {
  const char *dir = cg_procs_dir(h);
  return dir && cg_is_dir(dir);
}

int cg_hread(handle *h, int k, const char *name, size_t *len) {
  char path[PATH_MAX];
  const char *dir = cg_hdir(h, k);
  if (dir == NULL)
    return ENOENT;
  if (!cg_join(path, sizeof path, dir, name))
    return ENAMETOOLONG;
  return cg_read_file(&h->buf, path, len);
}
