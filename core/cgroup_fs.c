/*
 * cgroup_fs.c - horcrux.cgroup's files and layout (see cgroup_fs.h): whole
 * files read into a growable buffer, the hierarchies of a cgroup tree, the
 * directories of each container under both drivers, and the descriptors a
 * handle may keep between reads.
 *
 * Keeping descriptors. Opening a cgroup file costs 6-9 us of CPU (kernfs
 * allocates an open file and a seq_file each time); re-reading an open one
 * with pread at offset 0 costs about 1 us, and the seq_file generates the
 * text afresh (measured here: the ten files of a v1 container, 96 us by
 * open/read/close, 20 us by pread). A kept descriptor costs the process a
 * descriptor and the kernel about a page (the seq_file's buffer, allocated
 * on the first read and kept while the file is open). A cgroup removed
 * under an open descriptor answers ENODEV; the file is then opened again by
 * its path, which finds the new cgroup of a restarted container or says
 * ENOENT when it is gone.
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

/* A short read below half a page is the end: a regular file, or a cgroup
 * file (one record, its buffer grown to fit), ends there; a seq_file of
 * many records (net/dev, cgroup.procs) stops short only when its page-sized
 * buffer cannot take the next record, so such a read is close to a page.
 * This saves the read that would return 0. */
#define SHORT_IS_EOF 2048

/* Reads the whole file open at fd from offset 0 into b, NUL-terminated. */
int cg_pread_file(rbuf *b, int fd, size_t *len) {
  size_t n = 0;
  for (;;) {
    int e = rbuf_grow(b, n);
    if (e)
      return e;
    size_t want = b->cap - n - 1;
    ssize_t r = pread(fd, b->p + n, want, (off_t)n);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0)
      return errno;
    n += (size_t)r;
    if (r == 0 || ((size_t)r < want && (size_t)r < SHORT_IS_EOF))
      break;
  }
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
const char *const cg_k_names[K_N] = {"cpuacct", "memory", "blkio",  "pids",
                                     "freezer", "cpu",    "cpuset", "unified"};

/* The names a v1 controller's hierarchy may have (cpuacct is often
 * co-mounted with cpu). */
static const char *const v1_dirs[K_N][4] = {
    {"cpuacct", "cpu,cpuacct", "cpuacct,cpu", NULL},
    {"memory", NULL},
    {"blkio", NULL},
    {"pids", NULL},
    {"freezer", NULL},
    {"cpu", "cpu,cpuacct", "cpuacct,cpu", NULL},
    {"cpuset", NULL},
    {"unified", NULL}};

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
  for (int k = 0; k < K_V1_N && !v1; k++)
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
  for (int k = K_MEM, i = 0; i < K_V1_N; i++, k = (k + 1) % K_V1_N)
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

static char *dup_path(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d)
    memcpy(d, s, n);
  return d;
}

/* v2: the one directory; v1 and hybrid: each controller's (the v1 files),
 * and on hybrid the unified tree's (its pressure files), which alone does
 * not make a container found. */
int cg_handle_open(handle *h, const char *root, int version, int prefer,
                   const char *id, const char *proc) {
  char base[PATH_MAX], path[PATH_MAX];
  int found = 0;
  memcpy(h->id, id, CG_ID_LEN);
  h->id[CG_ID_LEN] = '\0';
  memcpy(h->sid, id, 12);
  h->sid[12] = '\0';
  h->v2 = version == LV_V2;
  h->net_pid = -1;
  if (!(h->proc = dup_path(proc)))
    return ENOMEM;
  for (int k = 0; k < (h->v2 ? 1 : K_N); k++) {
    int drv;
    if (h->v2)
      snprintf(base, sizeof base, "%s", root);
    else if ((k == K_UNIFIED && version != LV_HYBRID) ||
             !cg_v1_hierarchy(root, k, base, sizeof base))
      continue;
    drv = cg_find_dir(base, id, prefer, path, sizeof path);
    if (drv == DRV_NONE)
      continue;
    if (!(h->dir[k] = dup_path(path)))
      return ENOMEM;
    if (!found && k != K_UNIFIED)
      h->driver = drv;
    found |= k != K_UNIFIED;
  }
  return found ? 0 : ENOENT;
}

void cg_handle_release(handle *h) {
  for (int k = 0; k < K_N; k++) {
    free(h->dir[k]);
    h->dir[k] = NULL;
  }
  free(h->proc);
  h->proc = NULL;
  free(h->buf.p);
  h->buf.p = NULL;
  h->buf.cap = 0;
  if (h->keep) {
    cg_keep_close(h);
    free(h->keep);
    h->keep = NULL;
  }
  h->closed = 1;
}

const char *cg_hdir(const handle *h, int k) {
  return h->v2 ? h->dir[0] : h->dir[k];
}

int cg_procs_k(const handle *h) {
  static const int order[K_V1_N] = {K_MEM,     K_PIDS,   K_CPU,   K_BLKIO,
                                    K_FREEZER, K_CPUCTL, K_CPUSET};
  for (int i = 0; i < K_V1_N; i++)
    if (cg_hdir(h, order[i]))
      return order[i];
  return -1;
}

const char *cg_procs_dir(const handle *h) {
  int k = cg_procs_k(h);
  return k < 0 ? NULL : cg_hdir(h, k);
}

int cg_alive(const handle *h) {
  const char *dir = cg_procs_dir(h);
  return dir && cg_is_dir(dir);
}

/* ---------------------------------------------------------------- keep */

int cg_keep_start(handle *h, cg_budget *b) {
  if (h->keep)
    return 0;
  if (!(h->keep = calloc(1, sizeof *h->keep)))
    return ENOMEM;
  h->keep->budget = b;
  return 0;
}

static void kept_close(cg_keep *kp, cg_kept *s) {
  if (s->fd >= 0) {
    close(s->fd);
    __atomic_sub_fetch(&kp->budget->held, 1, __ATOMIC_RELAXED);
  }
  s->fd = CG_FD_NONE;
}

void cg_keep_close(handle *h) {
  if (h->keep)
    for (int i = 0; i < h->keep->n; i++)
      kept_close(h->keep, &h->keep->f[i]);
}

int cg_keep_count(const handle *h) {
  int n = 0;
  if (h->keep)
    for (int i = 0; i < h->keep->n; i++)
      n += h->keep->f[i].fd >= 0;
  return n;
}

/* The net/dev descriptor pins the network namespace it was opened in,
 * which is the container's for as long as its cgroup lives: while the
 * cgroup was not renewed, the pid need not be looked up again. */
int cg_keep_net_pid(const handle *h) {
  if (!h->keep || h->keep->renewed || h->keep->pid <= 0)
    return 0;
  for (int i = 0; i < h->keep->n; i++)
    if (h->keep->f[i].k == CG_K_PROC)
      return h->keep->f[i].fd >= 0 ? h->keep->pid : 0;
  return 0;
}

void cg_keep_close_net(handle *h) {
  if (h->keep)
    for (int i = 0; i < h->keep->n; i++)
      if (h->keep->f[i].k == CG_K_PROC)
        kept_close(h->keep, &h->keep->f[i]);
}

/* The slot of (k, name), made if new; NULL when every slot is taken. */
static cg_kept *kept_slot(cg_keep *kp, int k, const char *name) {
  for (int i = 0; i < kp->n; i++)
    if (kp->f[i].k == k &&
        (kp->f[i].name == name || strcmp(kp->f[i].name, name) == 0))
      return &kp->f[i];
  if (kp->n == CG_KEEP_MAX)
    return NULL;
  cg_kept *s = &kp->f[kp->n++];
  s->name = name;
  s->k = k;
  s->fd = CG_FD_NONE;
  return s;
}

/* One more descriptor kept, if the budget has room. */
static int budget_take(cg_budget *b) {
  if (__atomic_add_fetch(&b->held, 1, __ATOMIC_RELAXED) <= b->max)
    return 1;
  __atomic_sub_fetch(&b->held, 1, __ATOMIC_RELAXED);
  return 0;
}

/* Opens path; out of descriptors, closes what h keeps, keeps nothing more
 * for the budget's holder (max lowered to what is held) and tries again:
 * the reads go on by open/read/close. */
static int open_file(handle *h, const char *path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0 && (errno == EMFILE || errno == ENFILE)) {
    cg_budget *b = h->keep->budget;
    cg_keep_close(h);
    b->max = __atomic_load_n(&b->held, __ATOMIC_RELAXED);
    fd = open(path, O_RDONLY | O_CLOEXEC);
  }
  return fd;
}

/* The path of a kept file: dir/name, or <proc>/<pid>/net/dev. */
static int kept_path(char *path, size_t cap, const handle *h, const char *dir,
                     const char *name, int pid) {
  int n = pid > 0 ? snprintf(path, cap, "%s/%d/net/dev", h->proc, pid)
                  : snprintf(path, cap, "%s/%s", dir, name);
  return n >= 0 && (size_t)n < cap;
}

/* Reads the file into h->buf, keeping its descriptor in slot s (may be
 * NULL) when the budget allows. ENOENT in a live cgroup directory is
 * remembered: the file does not exist in this kernel. */
static int open_and_read(handle *h, cg_kept *s, const char *dir,
                         const char *name, int pid, size_t *len) {
  char path[PATH_MAX];
  int fd, e;
  if (!kept_path(path, sizeof path, h, dir, name, pid))
    return ENAMETOOLONG;
  if ((fd = open_file(h, path)) < 0) {
    e = errno;
    if (e == ENOENT && s && pid == 0 && cg_is_dir(dir))
      s->fd = CG_FD_ABSENT;
    return e;
  }
  e = cg_pread_file(&h->buf, fd, len);
  if (!e && s && budget_take(h->keep->budget))
    s->fd = fd;
  else
    close(fd);
  return e;
}

/* A kept file: pread, no path built; on an error it is closed and opened
 * again by path. ENODEV says its cgroup was removed: found again at the
 * same path, the cgroup is a new one (a restart). */
static int keep_read(handle *h, cg_kept *s, const char *dir, const char *name,
                     int pid, size_t *len) {
  int e;
  if (s && s->fd >= 0) {
    int pe = cg_pread_file(&h->buf, s->fd, len);
    if (pe == 0)
      return 0;
    kept_close(h->keep, s);
    e = open_and_read(h, s, dir, name, pid, len);
    if (e == 0 && pe == ENODEV && pid == 0)
      h->keep->renewed = 1;
    return e;
  }
  if (s && s->fd == CG_FD_ABSENT)
    return ENOENT;
  return open_and_read(h, s, dir, name, pid, len);
}

int cg_hread(handle *h, int k, const char *name, size_t *len) {
  char path[PATH_MAX];
  const char *dir = cg_hdir(h, k);
  if (dir == NULL)
    return ENOENT;
  if (h->keep)
    return keep_read(h, kept_slot(h->keep, k, name), dir, name, 0, len);
  if (!cg_join(path, sizeof path, dir, name))
    return ENAMETOOLONG;
  return cg_read_file(&h->buf, path, len);
}

int cg_hread_once(handle *h, int k, const char *name, size_t *len) {
  char path[PATH_MAX];
  const char *dir = cg_hdir(h, k);
  if (dir == NULL)
    return ENOENT;
  if (!cg_join(path, sizeof path, dir, name))
    return ENAMETOOLONG;
  return cg_read_file(&h->buf, path, len);
}

/* The kept net/dev belongs to one pid: another pid (a restart, or the first
 * process gone) opens its own. */
int cg_read_net_dev(handle *h, int pid, size_t *len) {
  char path[PATH_MAX];
  cg_kept *s;
  if (h->keep) {
    if ((s = kept_slot(h->keep, CG_K_PROC, "net/dev")) && h->keep->pid != pid) {
      kept_close(h->keep, s);
      h->keep->pid = pid;
    }
    return keep_read(h, s, h->proc, "net/dev", pid, len);
  }
  if (!kept_path(path, sizeof path, h, h->proc, "net/dev", pid))
    return ENAMETOOLONG;
  return cg_read_file(&h->buf, path, len);
}
