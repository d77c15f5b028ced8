/*
 * cgroup.c - horcrux.cgroup: a container's figures read straight from its
 * cgroup files (v1, v2 or hybrid; cgroupfs or systemd driver), its network
 * counters from /proc/<pid>/net/dev, the host figures the CPU math needs, and
 * every parser on its own so specs can feed it strings. The parsers
 * themselves are in cgroup_parse.c; this file reads the files and is the
 * Lua module.
 *
 * API (opts: root = "/sys/fs/cgroup", proc = "/proc", sys = "/sys"):
 *   detect([opts])   {version = "v1"|"v2"|"hybrid", driver = "cgroupfs"|
 *                    "systemd"|nil, root, hierarchies = {cpuacct=, ...} (v1,
 *                    hybrid), unified = path (v2, hybrid)}
 *   list([opts])     sorted array of the full ids that have a cgroup
 *   open(id[, opts]) handle (h.id, h.version "v1"|"v2", h.driver); a
 *                    hybrid host reads its v1 files
 *   stats(id[, opts]) open + h:stats() + close
 *   h:stats([into])  {cpu_ns, memory_usage, memory_limit, memory_unlimited,
 *                    memory_stat, inactive_file, blkio_read, blkio_write,
 *                    pids, pid, net_rx, net_tx, net_host, time_ns, mono_ns};
 *                    into (a table) is emptied and refilled. No limit
 *                    (v2 "max", v1 >= 2^62): memory_limit is left out and
 *                    memory_unlimited = true. --network host: net_host =
 *                    true and net_rx = net_tx = 0, as docker reports.
 *   h:cpu() h:memory() h:blkio() h:pids() h:net() h:procs() h:paths()
 *   h:close()        also __gc and __close
 *   online_cpus([opts]) host_memory([opts]) system_cpu_ns([opts])
 *   parse.flat_keyed single blkio_v1 io_stat_v2 net_dev proc_stat_cpu
 *         meminfo cpu_list procs
 *
 * Numbers. The kernel prints unsigned 64-bit counters; a Lua integer is
 * signed. A value up to 2^63-1 comes back as an integer; a value above that
 * (up to 2^64-1, e.g. 18446744073709551615) comes back as a float, which
 * keeps its magnitude (math.type() says "float") but not its last digits.
 * A value beyond 2^64-1 is not a number we know how to read: the line is
 * skipped. A negative value (memory.stat of some v1 kernels) stays a negative
 * integer in the parsed tables; a figure that cannot be negative (a usage, a
 * limit, a count) is left out of a reader's result instead. Sums saturate at
 * 2^64-1 and never wrap.
 *
 * Missing figures. A reader leaves out a field it cannot read rather than
 * invent one; a whole reader fails with nil, message, kind. A cgroup that
 * disappears while it is read (ENOENT/ENODEV) gives nil, message, "not_found"
 * and never half a record.
 *
 * Cost. stats() reads about ten small files into one buffer owned by the
 * handle (grown to fit the longest file, never overflowed) and builds one
 * table; it may refill a table the caller passes in.
 */
#include "aux.h"
#include "cgroup_parse.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#if LUA_MAXINTEGER < INT64_MAX
#error "horcrux.cgroup needs 64-bit Lua integers"
#endif

#define HANDLE_MT "horcrux.cgroup.handle"
#define SCRATCH_MT "horcrux.cgroup.scratch"
#define DEFAULT_ROOT "/sys/fs/cgroup"
#define DEFAULT_PROC "/proc"
#define DEFAULT_SYS "/sys"
#define ID_LEN 64
/* No cgroup or proc file we read is near this; a bigger one is not ours. */
#define READ_MAX ((size_t)64 << 20)
/* How deep to look under a container's cgroup for a process (v2 forbids
 * processes in inner nodes, so a container with sub-cgroups has none). */
#define PROCS_DEPTH 3

/* ---------------------------------------------------------------- files */

/* A growable read buffer, owned by a userdata whose __gc frees it, so a Lua
 * error never leaks it. */
typedef struct {
  char *p;
  size_t cap;
} rbuf;

/* Reads the whole file (NUL-terminated) into b; 0 or an errno value.
 * Cgroup and proc files are generated on read: read to EOF, never assume
 * one read() is the whole file. */
static int rbuf_read(rbuf *b, const char *path, size_t *len) {
  size_t n = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return errno;
  for (;;) {
    ssize_t r;
    if (b->cap - n < 2 || b->p == NULL) {
      size_t cap = b->cap ? b->cap * 2 : 4096;
      char *q;
      if (cap > READ_MAX) {
        close(fd);
        return EFBIG;
      }
      q = realloc(b->p, cap);
      if (q == NULL) {
        close(fd);
        return ENOMEM;
      }
      b->p = q;
      b->cap = cap;
    }
    r = read(fd, b->p + n, b->cap - n - 1);
    if (r < 0) {
      int e = errno;
      if (e == EINTR)
        continue;
      close(fd);
      return e;
    }
    if (r == 0)
      break;
    n += (size_t)r;
  }
  close(fd);
  b->p[n] = '\0';
  *len = n;
  return 0;
}

static int join(char *out, size_t cap, const char *a, const char *b) {
  int n = snprintf(out, cap, "%s/%s", a, b);
  return n >= 0 && (size_t)n < cap;
}

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file_at(const char *dir, const char *name) {
  char path[PATH_MAX];
  struct stat st;
  return join(path, sizeof path, dir, name) && stat(path, &st) == 0 &&
         S_ISREG(st.st_mode);
}

static int is_dir_at(const char *dir, const char *name) {
  char path[PATH_MAX];
  return join(path, sizeof path, dir, name) && is_dir(path);
}

static int gone_errno(int e) {
  return e == ENOENT || e == ENODEV || e == ENOTDIR || e == ESRCH;
}

static const char *errno_kind(int e) {
  if (gone_errno(e))
    return HX_NOT_FOUND;
  if (e == EFBIG)
    return HX_LIMIT;
  return HX_IO;
}

/* Scratch space for the module functions: a read buffer freed by __gc. */
static rbuf *push_scratch(lua_State *L) {
  rbuf *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->p = NULL;
  b->cap = 0;
  luaL_setmetatable(L, SCRATCH_MT);
  return b;
}

static int scratch_gc(lua_State *L) {
  rbuf *b = luaL_checkudata(L, 1, SCRATCH_MT);
  free(b->p);
  b->p = NULL;
  b->cap = 0;
  return 0;
}

/* Reads dir/name into b, or pushes nil, "<path>: <why>", kind and returns
 * 0. */
static int read_or_fail(lua_State *L, rbuf *b, const char *dir,
                        const char *name, size_t *len) {
  char path[PATH_MAX];
  int e;
  if (!join(path, sizeof path, dir, name)) {
    hx_fail(L, HX_LIMIT, "%s/%s: path too long", dir, name);
    return 0;
  }
  e = rbuf_read(b, path, len);
  if (e) {
    hx_fail_errno(L, errno_kind(e), path, e);
    return 0;
  }
  return 1;
}

/* ---------------------------------------------------------------- layout */

enum { LV_NONE, LV_V1, LV_V2, LV_HYBRID };
enum { DRV_NONE, DRV_CGROUPFS, DRV_SYSTEMD };
static const char *const version_names[] = {NULL, "v1", "v2", "hybrid"};
static const char *const driver_names[] = {NULL, "cgroupfs", "systemd"};

/* The v1 controllers a handle reads, and the names their hierarchy may have
 * (cpuacct is often co-mounted with cpu). */
enum { K_CPU, K_MEM, K_BLKIO, K_PIDS, K_N };
static const char *const k_names[K_N] = {"cpuacct", "memory", "blkio", "pids"};
static const char *const v1_dirs[K_N][4] = {
    {"cpuacct", "cpu,cpuacct", "cpuacct,cpu", NULL},
    {"memory", NULL},
    {"blkio", NULL},
    {"pids", NULL}};

static int v1_hierarchy(const char *root, int k, char *out, size_t cap) {
  for (int i = 0; v1_dirs[k][i]; i++)
    if (join(out, cap, root, v1_dirs[k][i]) && is_dir(out))
      return 1;
  return 0;
}

/* Read from the tree: v2 has cgroup.controllers at its root; v1 has one
 * directory per controller; hybrid adds a v2 tree at unified/. */
static int detect_version(const char *root) {
  char path[PATH_MAX];
  int v1 = 0;
  if (is_file_at(root, "cgroup.controllers"))
    return LV_V2;
  for (int k = 0; k < K_N && !v1; k++)
    v1 = v1_hierarchy(root, k, path, sizeof path);
  if (!v1)
    return LV_NONE;
  return join(path, sizeof path, root, "unified") &&
                 is_file_at(path, "cgroup.controllers")
             ? LV_HYBRID
             : LV_V1;
}

static int is_hex_id(const char *s, size_t n) {
  return n == ID_LEN && hx_is_lower_hex(s, n);
}

/* A container's directory name under each driver's parent: the id of
 * "<id>" (cgroupfs, under docker/) or "docker-<id>.scope" (systemd, under
 * system.slice/); NULL when the name is neither. */
static const char *id_of_entry(int driver, const char *name) {
  size_t n = strlen(name);
  if (driver == DRV_CGROUPFS)
    return is_hex_id(name, n) ? name : NULL;
  if (n == ID_LEN + 13 && memcmp(name, "docker-", 7) == 0 &&
      memcmp(name + 7 + ID_LEN, ".scope", 6) == 0 &&
      is_hex_id(name + 7, ID_LEN))
    return name + 7;
  return NULL;
}

static const char *driver_parent(int driver) {
  return driver == DRV_CGROUPFS ? "docker" : "system.slice";
}

/* Calls fn(id, arg) for each container cgroup of a driver under base;
 * returns how many, or -1 when the parent directory is missing. */
static int each_container(const char *base, int driver,
                          void (*fn)(const char *, void *), void *arg) {
  char path[PATH_MAX];
  DIR *d;
  struct dirent *e;
  int count = 0;
  if (!join(path, sizeof path, base, driver_parent(driver)) ||
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

/* The directory under which container cgroups live: the root on v2, a
 * controller's hierarchy on v1 (memory first; docker creates them all). */
static int scan_base(const char *root, int version, char *out, size_t cap) {
  if (version == LV_V2) {
    int n = snprintf(out, cap, "%s", root);
    return n >= 0 && (size_t)n < cap;
  }
  for (int k = K_MEM, i = 0; i < K_N; i++, k = (k + 1) % K_N)
    if (v1_hierarchy(root, k, out, cap))
      return 1;
  return 0;
}

/* The driver whose layout holds the containers; with none running, the one
 * whose parent directory exists (docker/ first). */
static int detect_driver(const char *base) {
  int fs = each_container(base, DRV_CGROUPFS, NULL, NULL);
  int sd = each_container(base, DRV_SYSTEMD, NULL, NULL);
  if (fs > 0 && fs >= sd)
    return DRV_CGROUPFS;
  if (sd > 0)
    return DRV_SYSTEMD;
  return fs == 0 ? DRV_CGROUPFS : DRV_NONE;
}

static void opts_paths(lua_State *L, int idx, const char **root,
                       const char **proc) {
  *root = hx_opt_string(L, idx, "root", DEFAULT_ROOT);
  if (proc)
    *proc = hx_opt_string(L, idx, "proc", DEFAULT_PROC);
}

/* cgroup.detect([opts]) -> {version=, driver=, root=, hierarchies={...}} */
static int l_detect(lua_State *L) {
  const char *root;
  char path[PATH_MAX];
  int version, driver = DRV_NONE;
  opts_paths(L, 1, &root, NULL);
  version = detect_version(root);
  if (version == LV_NONE)
    return hx_fail(L, HX_NOT_FOUND, "%s: no cgroup hierarchy", root);
  if (scan_base(root, version, path, sizeof path))
    driver = detect_driver(path);
  lua_createtable(L, 0, 5);
  lua_pushstring(L, version_names[version]);
  lua_setfield(L, -2, "version");
  if (driver != DRV_NONE) {
    lua_pushstring(L, driver_names[driver]);
    lua_setfield(L, -2, "driver");
  }
  lua_pushstring(L, root);
  lua_setfield(L, -2, "root");
  if (version == LV_V2) {
    lua_pushstring(L, root);
    lua_setfield(L, -2, "unified");
  } else {
    lua_createtable(L, 0, K_N);
    for (int k = 0; k < K_N; k++)
      if (v1_hierarchy(root, k, path, sizeof path)) {
        lua_pushstring(L, path);
        lua_setfield(L, -2, k_names[k]);
      }
    lua_setfield(L, -2, "hierarchies");
    if (version == LV_HYBRID && join(path, sizeof path, root, "unified")) {
      lua_pushstring(L, path);
      lua_setfield(L, -2, "unified");
    }
  }
  return 1;
}

/* Collects 64-byte ids into an rbuf (C memory only: no Lua call may raise
 * while a directory is open). */
typedef struct {
  rbuf *b;
  size_t n;
  int oom;
} idlist;

static void collect_id(const char *id, void *arg) {
  idlist *l = arg;
  if (l->oom)
    return;
  if ((l->n + 1) * ID_LEN > l->b->cap) {
    size_t cap = l->b->cap ? l->b->cap * 2 : 64 * ID_LEN;
    char *q = realloc(l->b->p, cap);
    if (q == NULL) {
      l->oom = 1;
      return;
    }
    l->b->p = q;
    l->b->cap = cap;
  }
  memcpy(l->b->p + l->n * ID_LEN, id, ID_LEN);
  l->n++;
}

static int cmp_id(const void *a, const void *b) { return memcmp(a, b, ID_LEN); }

/* cgroup.list([opts]) -> sorted array of the full ids with a cgroup. */
static int l_list(lua_State *L) {
  const char *root;
  char base[PATH_MAX];
  int version;
  idlist l;
  opts_paths(L, 1, &root, NULL);
  version = detect_version(root);
  if (version == LV_NONE)
    return hx_fail(L, HX_NOT_FOUND, "%s: no cgroup hierarchy", root);
  l.b = push_scratch(L);
  l.n = 0;
  l.oom = 0;
  if (scan_base(root, version, base, sizeof base)) {
    each_container(base, DRV_CGROUPFS, collect_id, &l);
    each_container(base, DRV_SYSTEMD, collect_id, &l);
  }
  if (l.oom)
    return luaL_error(L, "not enough memory");
  if (l.n > 1)
    qsort(l.b->p, l.n, ID_LEN, cmp_id);
  lua_createtable(L, (int)l.n, 0);
  for (size_t i = 0, out = 0; i < l.n; i++) {
    const char *id = l.b->p + i * ID_LEN;
    if (i > 0 && memcmp(id, id - ID_LEN, ID_LEN) == 0)
      continue;
    lua_pushlstring(L, id, ID_LEN);
    lua_rawseti(L, -2, (lua_Integer)++out);
  }
  return 1;
}

/* ---------------------------------------------------------------- handle */

typedef struct {
  int closed;
  int v2;
  int driver;
  char id[ID_LEN + 1];
  char sid[13];   /* the short id, for messages (pushfstring has no %.12s) */
  char *dir[K_N]; /* v1: per controller, NULL when absent; v2: dir[0] */
  char *proc;
  rbuf buf;
  /* Whether the last pid used for network shared the host's netns: looked
   * up again only when the pid changes. */
  int net_pid, net_host;
} handle;

static const char *hdir(const handle *h, int k) {
  return h->v2 ? h->dir[0] : h->dir[k];
}

/* The directory whose cgroup.procs names the container's processes. */
static const char *procs_dir(const handle *h) {
  static const int order[] = {K_MEM, K_PIDS, K_CPU, K_BLKIO};
  for (int i = 0; i < K_N; i++)
    if (hdir(h, order[i]))
      return hdir(h, order[i]);
  return NULL;
}

static void handle_free(handle *h) {
  for (int k = 0; k < K_N; k++) {
    free(h->dir[k]);
    h->dir[k] = NULL;
  }
  free(h->proc);
  h->proc = NULL;
  free(h->buf.p);
  h->buf.p = NULL;
  h->buf.cap = 0;
  h->closed = 1;
}

static handle *check_handle(lua_State *L) {
  handle *h = luaL_checkudata(L, 1, HANDLE_MT);
  if (h->closed)
    luaL_error(L, "attempt to use a closed cgroup handle");
  return h;
}

static char *dup_or_raise(lua_State *L, const char *s) {
  char *d = strdup(s);
  if (d == NULL)
    luaL_error(L, "not enough memory");
  return d;
}

/* Finds the container's directory under a hierarchy, trying the driver
 * detected first; stores it in out and returns the driver, or DRV_NONE. */
static int find_dir(const char *base, const char *id, int prefer, char *out,
                    size_t cap) {
  int drivers[2] = {prefer == DRV_SYSTEMD ? DRV_SYSTEMD : DRV_CGROUPFS,
                    prefer == DRV_SYSTEMD ? DRV_CGROUPFS : DRV_SYSTEMD};
  for (int i = 0; i < 2; i++) {
    int n =
        drivers[i] == DRV_CGROUPFS
            ? snprintf(out, cap, "%s/docker/%s", base, id)
            : snprintf(out, cap, "%s/system.slice/docker-%s.scope", base, id);
    if (n >= 0 && (size_t)n < cap && is_dir(out))
      return drivers[i];
  }
  return DRV_NONE;
}

/* cgroup.open(id [, opts]) -> handle | nil, msg, kind */
static int l_open(lua_State *L) {
  size_t idn;
  const char *id = luaL_checklstring(L, 1, &idn), *root, *proc;
  char base[PATH_MAX], path[PATH_MAX];
  int version, prefer = DRV_NONE, found = 0;
  handle *h;
  opts_paths(L, 2, &root, &proc);
  if (!is_hex_id(id, idn))
    return hx_fail(L, HX_BAD_REQUEST,
                   "cgroup.open: a full 64-hex container id expected");
  version = detect_version(root);
  if (version == LV_NONE)
    return hx_fail(L, HX_NOT_FOUND, "%s: no cgroup hierarchy", root);
  if (scan_base(root, version, base, sizeof base))
    prefer = detect_driver(base);
  h = lua_newuserdatauv(L, sizeof *h, 0);
  memset(h, 0, sizeof *h);
  h->closed = 1; /* until every field is set: __gc frees what is there */
  luaL_setmetatable(L, HANDLE_MT);
  memcpy(h->id, id, ID_LEN + 1);
  memcpy(h->sid, id, 12);
  h->v2 = version == LV_V2;
  h->net_pid = -1;
  h->proc = dup_or_raise(L, proc);
  if (h->v2) {
    if ((h->driver = find_dir(root, id, prefer, path, sizeof path)) !=
        DRV_NONE) {
      h->dir[0] = dup_or_raise(L, path);
      found = 1;
    }
  } else {
    for (int k = 0; k < K_N; k++) {
      int drv;
      if (!v1_hierarchy(root, k, base, sizeof base))
        continue;
      drv = find_dir(base, id, prefer, path, sizeof path);
      if (drv == DRV_NONE)
        continue;
      h->dir[k] = dup_or_raise(L, path);
      if (!found)
        h->driver = drv;
      found = 1;
    }
  }
  if (!found) {
    handle_free(h);
    return hx_fail(L, HX_NOT_FOUND, "container %s: no cgroup under %s", h->sid,
                   root);
  }
  h->closed = 0;
  return 1;
}

static int l_close(lua_State *L) {
  /* Idempotent, and frees what a half-built handle holds (open raised). */
  handle_free(luaL_checkudata(L, 1, HANDLE_MT));
  return 0;
}

static int l_tostring(lua_State *L) {
  handle *h = luaL_checkudata(L, 1, HANDLE_MT);
  if (h->closed)
    lua_pushliteral(L, "cgroup handle (closed)");
  else
    lua_pushfstring(L, "cgroup handle (%s %s)", h->v2 ? "v2" : "v1", h->sid);
  return 1;
}

/* h.id, h.version, h.driver, then the methods. */
static int l_index(lua_State *L) {
  handle *h = luaL_checkudata(L, 1, HANDLE_MT);
  const char *k = lua_tostring(L, 2);
  if (lua_getfield(L, lua_upvalueindex(1), k ? k : "") != LUA_TNIL || !k)
    return 1;
  if (strcmp(k, "id") == 0)
    lua_pushstring(L, h->id);
  else if (strcmp(k, "version") == 0)
    lua_pushstring(L, h->v2 ? "v2" : "v1");
  else if (strcmp(k, "driver") == 0)
    lua_pushstring(L, driver_names[h->driver]);
  else
    lua_pushnil(L);
  return 1;
}

/* h:paths() -> {cpuacct=, memory=, blkio=, pids=} (v1) or {unified=} */
static int l_paths(lua_State *L) {
  handle *h = check_handle(L);
  lua_newtable(L);
  if (h->v2) {
    lua_pushstring(L, h->dir[0]);
    lua_setfield(L, -2, "unified");
  } else {
    for (int k = 0; k < K_N; k++)
      if (h->dir[k]) {
        lua_pushstring(L, h->dir[k]);
        lua_setfield(L, -2, k_names[k]);
      }
  }
  return 1;
}

/* Reads a controller file of the handle; 0 or an errno value. A controller
 * the container has no directory in reads as ENOENT. */
static int hread(handle *h, int k, const char *name, size_t *len) {
  char path[PATH_MAX];
  const char *dir = hdir(h, k);
  if (dir == NULL)
    return ENOENT;
  if (!join(path, sizeof path, dir, name))
    return ENAMETOOLONG;
  return rbuf_read(&h->buf, path, len);
}

/* Whether the container's cgroup is still there. */
static int handle_alive(const handle *h) {
  const char *dir = procs_dir(h);
  return dir && is_dir(dir);
}

static int fail_read(lua_State *L, handle *h, int k, const char *name, int e) {
  const char *dir = hdir(h, k);
  if (gone_errno(e) && !handle_alive(h))
    return hx_fail(L, HX_NOT_FOUND, "container %s: cgroup removed", h->sid);
  if (dir == NULL)
    return hx_fail(L, HX_NOT_FOUND, "container %s: no %s cgroup", h->sid,
                   k_names[k]);
  return hx_fail(L, errno_kind(e), "%s/%s: %s", dir, name, strerror(e));
}

/* ---- the readers, each into a C struct first */

typedef struct {
  int ok;
  uint64_t usage_ns;
  int have_split;
  uint64_t user_ns, system_ns;
} cpu_fig;

/* Returns 0 or an errno value (EINVAL: present but unreadable content). */
static int read_cpu(handle *h, cpu_fig *c) {
  size_t len;
  int e;
  memset(c, 0, sizeof *c);
  if (!h->v2) {
    num v;
    if ((e = hread(h, K_CPU, "cpuacct.usage", &len)))
      return e;
    if (cgp_parse_single(h->buf.p, len, &v) != 1 ||
        !cgp_num_unsigned(&v, &c->usage_ns))
      return EINVAL;
    c->ok = 1;
    return 0;
  }
  if ((e = hread(h, K_CPU, "cpu.stat", &len)))
    return e;
  {
    static const char *const keys[3] = {"usage_usec", "user_usec",
                                        "system_usec"};
    num v[3];
    int found[3];
    uint64_t a[3], ns[3];
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
  }
  return 0;
}

/* A one-value file that must hold a size or a count (or "max"). */
typedef struct {
  int ok;  /* 1 read */
  int max; /* "max" */
  uint64_t v;
} single_fig;

static int read_single(handle *h, int k, const char *name, single_fig *f) {
  size_t len;
  num v;
  int e, r;
  memset(f, 0, sizeof *f);
  if ((e = hread(h, k, name, &len)))
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

/* v1's "unlimited" is LONG_MAX rounded down to a page; anything this close
 * to it is no real limit (no machine has 4 EiB). */
#define V1_UNLIMITED ((uint64_t)1 << 62)

static void set_u64(lua_State *L, int t, const char *k, uint64_t v) {
  t = lua_absindex(L, t);
  cgp_push_u64(L, v);
  lua_setfield(L, t, k);
}

/* Reads memory usage, limit and memory.stat; sets the fields of the table at
 * t (absolute), memory.stat into the table at st (absolute; 0: none).
 * Returns 0, or the errno of a vanished cgroup (the caller decides). */
static int read_memory(lua_State *L, handle *h, int t, int st,
                       const char *usage_key, const char *limit_key,
                       const char *unl_key, const char *inact_key, int *stat_ok,
                       int *any) {
  single_fig u, lim;
  size_t len;
  int e;
  *stat_ok = 0;
  e = read_single(h, K_MEM, h->v2 ? "memory.current" : "memory.usage_in_bytes",
                  &u);
  if (gone_errno(e) && !handle_alive(h))
    return e;
  if (!e && !u.max) {
    set_u64(L, t, usage_key, u.v);
    *any = 1;
  }
  e = read_single(h, K_MEM, h->v2 ? "memory.max" : "memory.limit_in_bytes",
                  &lim);
  if (gone_errno(e) && !handle_alive(h))
    return e;
  if (!e) {
    int unlimited = lim.max || lim.v >= V1_UNLIMITED;
    if (!unlimited)
      set_u64(L, t, limit_key, lim.v);
    lua_pushboolean(L, unlimited);
    lua_setfield(L, t, unl_key);
    *any = 1;
  }
  e = hread(h, K_MEM, "memory.stat", &len);
  if (gone_errno(e) && !handle_alive(h))
    return e;
  if (!e) {
    num in;
    int found;
    uint64_t v;
    cgp_fill_flat(st ? L : NULL, st, h->buf.p, len,
                  h->v2 ? "inactive_file" : "total_inactive_file", &in, &found);
    if (found && cgp_num_unsigned(&in, &v))
      set_u64(L, t, inact_key, v);
    *stat_ok = 1;
    *any = 1;
  }
  return 0;
}

/* Block I/O: v2 io.stat; v1 the first of these files with a device line,
 * in the order runc (and so the docker daemon) reads them: the BFQ and CFQ
 * schedulers' counters, then the throttle layer's. */
static const char *const blkio_files[] = {
    "blkio.bfq.io_service_bytes_recursive", "blkio.io_service_bytes_recursive",
    "blkio.throttle.io_service_bytes_recursive", NULL};

/* Returns 0 (sum set, *file the file used) or an errno value. */
static int read_blkio(lua_State *L, handle *h, io_sum *s, const char **file) {
  size_t len;
  int e, last = ENOENT, seen = 0;
  if (h->v2) {
    if ((e = hread(h, K_BLKIO, "io.stat", &len)))
      return e;
    cgp_parse_io_v2(L, h->buf.p, len, s);
    *file = "io.stat";
    return 0;
  }
  for (int i = 0; blkio_files[i]; i++) {
    if ((e = hread(h, K_BLKIO, blkio_files[i], &len))) {
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
  if (join(path, sizeof path, dir, "cgroup.procs") &&
      rbuf_read(b, path, &len) == 0 && (pid = cgp_first_pid(b->p, len)) > 0)
    return pid;
  if (depth <= 0 || (d = opendir(dir)) == NULL)
    return 0;
  while (pid == 0 && (e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.' || !join(path, sizeof path, dir, e->d_name) ||
        (e->d_type != DT_DIR && (e->d_type != DT_UNKNOWN || !is_dir(path))))
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

typedef struct {
  int pid;
  int host;
  net_sum sum;
} net_fig;

/* Returns 0 or an errno value (ESRCH: no process in the cgroup). */
static int read_net(lua_State *L, handle *h, net_fig *n) {
  char path[PATH_MAX];
  const char *dir = procs_dir(h);
  size_t len;
  int e, pid;
  memset(n, 0, sizeof *n);
  if (dir == NULL)
    return ENOENT;
  if ((pid = find_pid(&h->buf, dir, PROCS_DEPTH)) == 0)
    return ESRCH;
  n->pid = pid;
  if (pid != h->net_pid) {
    h->net_host = shares_host_netns(h, pid);
    h->net_pid = pid;
  }
  if ((n->host = h->net_host))
    return 0;
  if (snprintf(path, sizeof path, "%s/%d/net/dev", h->proc, pid) >=
      (int)sizeof path)
    return ENAMETOOLONG;
  if ((e = rbuf_read(&h->buf, path, &len)))
    return e;
  cgp_parse_net_dev(L, h->buf.p, len, &n->sum);
  return 0;
}

/* ---- the readers as methods */

/* h:cpu() -> {usage_ns=[, user_ns=, system_ns=]} */
static int l_cpu(lua_State *L) {
  handle *h = check_handle(L);
  cpu_fig c;
  int e = read_cpu(h, &c);
  if (e == EINVAL)
    return hx_fail(L, HX_PROTOCOL, "container %s: unreadable CPU usage",
                   h->sid);
  if (e)
    return fail_read(L, h, K_CPU, h->v2 ? "cpu.stat" : "cpuacct.usage", e);
  lua_createtable(L, 0, 3);
  set_u64(L, -1, "usage_ns", c.usage_ns);
  if (c.have_split) {
    set_u64(L, -1, "user_ns", c.user_ns);
    set_u64(L, -1, "system_ns", c.system_ns);
  }
  return 1;
}

/* h:memory() -> {usage=, limit=, unlimited=, inactive_file=, stat={...}} */
static int l_memory(lua_State *L) {
  handle *h = check_handle(L);
  int t, st, stat_ok, any = 0, e;
  if (hdir(h, K_MEM) == NULL)
    return fail_read(L, h, K_MEM, "memory.stat", ENOENT);
  lua_createtable(L, 0, 5);
  t = lua_gettop(L);
  lua_createtable(L, 0, 64);
  st = lua_gettop(L);
  e = read_memory(L, h, t, st, "usage", "limit", "unlimited", "inactive_file",
                  &stat_ok, &any);
  if (e)
    return fail_read(L, h, K_MEM, "memory.stat", e);
  if (!any)
    return hx_fail(L, HX_IO, "container %s: no memory figure readable", h->sid);
  if (stat_ok)
    lua_setfield(L, t, "stat");
  else
    lua_pop(L, 1);
  return 1;
}

/* h:blkio() -> {read=, write=, file=, devices={...}} */
static int l_blkio(lua_State *L) {
  handle *h = check_handle(L);
  io_sum s;
  const char *file = NULL;
  int e;
  lua_createtable(L, 0, 4);
  lua_newtable(L);
  e = read_blkio(L, h, &s, &file);
  if (e)
    return fail_read(L, h, K_BLKIO, h->v2 ? "io.stat" : "blkio", e);
  lua_setfield(L, -2, "devices");
  set_u64(L, -1, "read", s.read);
  set_u64(L, -1, "write", s.write);
  if (file) {
    lua_pushstring(L, file);
    lua_setfield(L, -2, "file");
  }
  return 1;
}

/* h:pids() -> {current=[, max=]} (max left out when "max") */
static int l_pids(lua_State *L) {
  handle *h = check_handle(L);
  single_fig cur, max;
  int e = read_single(h, K_PIDS, "pids.current", &cur);
  if (e == EINVAL || (!e && cur.max))
    return hx_fail(L, HX_PROTOCOL, "container %s: unreadable pids.current",
                   h->sid);
  if (e)
    return fail_read(L, h, K_PIDS, "pids.current", e);
  lua_createtable(L, 0, 2);
  set_u64(L, -1, "current", cur.v);
  if (read_single(h, K_PIDS, "pids.max", &max) == 0 && !max.max)
    set_u64(L, -1, "max", max.v);
  return 1;
}

/* h:net() -> {rx=, tx=, pid=, host=, interfaces={name={...}}} */
static int l_net(lua_State *L) {
  handle *h = check_handle(L);
  net_fig n;
  int e;
  lua_createtable(L, 0, 5);
  lua_newtable(L);
  e = read_net(L, h, &n);
  if (e == ESRCH)
    return hx_fail(L, HX_NOT_FOUND, "container %s: no process in cgroup",
                   h->sid);
  if (e) {
    if (gone_errno(e) && !handle_alive(h))
      return hx_fail(L, HX_NOT_FOUND, "container %s: cgroup removed", h->sid);
    return hx_fail(L, errno_kind(e), "%s/%d/net/dev: %s", h->proc, n.pid,
                   strerror(e));
  }
  lua_setfield(L, -2, "interfaces");
  set_u64(L, -1, "rx", n.sum.rx);
  set_u64(L, -1, "tx", n.sum.tx);
  lua_pushinteger(L, n.pid);
  lua_setfield(L, -2, "pid");
  lua_pushboolean(L, n.host);
  lua_setfield(L, -2, "host");
  return 1;
}

/* h:procs() -> array of the pids in the container's own cgroup.procs */
static int l_procs(lua_State *L) {
  handle *h = check_handle(L);
  const char *dir = procs_dir(h), *p, *end, *ls, *le, *f;
  size_t len, fn;
  lua_Integer i = 0;
  if (!dir || !read_or_fail(L, &h->buf, dir, "cgroup.procs", &len)) {
    if (!dir)
      return hx_fail(L, HX_NOT_FOUND, "container %s: no cgroup", h->sid);
    return 3;
  }
  lua_newtable(L);
  p = h->buf.p;
  end = p + len;
  while (cgp_next_line(&p, end, &ls, &le)) {
    uint64_t v;
    if (cgp_next_field(&ls, le, &f, &fn) && cgp_scan_u64(f, fn, &v) && v > 0 &&
        v <= INT_MAX) {
      lua_pushinteger(L, (lua_Integer)v);
      lua_rawseti(L, -2, ++i);
    }
  }
  return 1;
}

/* Empties the table at t (absolute index). */
static void clear_table(lua_State *L, int t) {
  lua_pushnil(L);
  while (lua_next(L, t)) {
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_pushnil(L);
    lua_rawset(L, t);
  }
}

/* Everything the live view needs, in one table (see the file comment). On
 * failure the stack is put back as it was and nil, msg, kind pushed. */
static int handle_stats(lua_State *L, handle *h, int into) {
  int base = lua_gettop(L), t, st, stat_ok = 0, any = 0, e;
  cpu_fig c;
  io_sum io;
  single_fig pids;
  net_fig n;
  const char *file;

  if (into) {
    t = into;
    if (lua_getfield(L, t, "memory_stat") != LUA_TTABLE) {
      lua_pop(L, 1);
      lua_createtable(L, 0, 64);
    }
    st = lua_gettop(L);
    clear_table(L, t);
    clear_table(L, st);
  } else {
    lua_createtable(L, 0, 16);
    t = lua_gettop(L);
    lua_createtable(L, 0, 64);
    st = lua_gettop(L);
  }

  /* The wall clock goes right after the CPU counter: the pair is what the
   * short-window CPU % divides. */
  e = read_cpu(h, &c);
  set_u64(L, t, "time_ns", (uint64_t)hx_real_ns());
  set_u64(L, t, "mono_ns", (uint64_t)hx_mono_ns());
  if (gone_errno(e) && !handle_alive(h))
    goto gone;
  if (c.ok) {
    set_u64(L, t, "cpu_ns", c.usage_ns);
    any = 1;
  }

  if (hdir(h, K_MEM)) {
    if (read_memory(L, h, t, st, "memory_usage", "memory_limit",
                    "memory_unlimited", "inactive_file", &stat_ok, &any))
      goto gone;
  }
  if (stat_ok) {
    lua_pushvalue(L, st);
    lua_setfield(L, t, "memory_stat");
  }

  if (hdir(h, K_BLKIO)) {
    e = read_blkio(NULL, h, &io, &file);
    if (gone_errno(e) && !handle_alive(h))
      goto gone;
    if (!e) {
      set_u64(L, t, "blkio_read", io.read);
      set_u64(L, t, "blkio_write", io.write);
      any = 1;
    }
  }

  e = read_single(h, K_PIDS, "pids.current", &pids);
  if (gone_errno(e) && !handle_alive(h))
    goto gone;
  if (!e && !pids.max) {
    set_u64(L, t, "pids", pids.v);
    any = 1;
  }

  e = read_net(NULL, h, &n);
  if (gone_errno(e) && !handle_alive(h))
    goto gone;
  if (!e) {
    lua_pushinteger(L, n.pid);
    lua_setfield(L, t, "pid");
    if (n.host) {
      lua_pushboolean(L, 1);
      lua_setfield(L, t, "net_host");
    }
    /* A container on the host's network has no counters of its own: 0, as
     * docker reports, flagged by net_host. */
    set_u64(L, t, "net_rx", n.sum.rx);
    set_u64(L, t, "net_tx", n.sum.tx);
    any = 1;
  }

  if (!any) {
    if (!handle_alive(h))
      goto gone;
    lua_settop(L, base);
    return hx_fail(L, HX_IO, "container %s: no cgroup figure readable", h->sid);
  }
  lua_settop(L, t);
  return 1;

gone:
  lua_settop(L, base);
  return hx_fail(L, HX_NOT_FOUND, "container %s: cgroup removed", h->sid);
}

/* h:stats([into]) -> stats table | nil, msg, kind */
static int l_stats(lua_State *L) {
  handle *h = check_handle(L);
  int into = 0;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    into = 2;
  }
  lua_settop(L, 2);
  return handle_stats(L, h, into);
}

/* cgroup.stats(id [, opts]) -> stats table | nil, msg, kind */
static int l_stats_once(lua_State *L) {
  int r;
  luaL_checkstring(L, 1);
  lua_settop(L, 2);
  lua_pushcfunction(L, l_open);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_call(L, 2, 3);
  if (lua_isnil(L, 3))
    return 3;
  lua_settop(L, 3);
  r = handle_stats(L, luaL_checkudata(L, 3, HANDLE_MT), 0);
  handle_free(luaL_checkudata(L, 3, HANDLE_MT));
  return r;
}

/* ---------------------------------------------------------------- host */

/* cgroup.online_cpus([opts]) -> n | nil, msg, kind. opts.sys (default /sys)
 * names the sysfs root; with the default, sysconf answers when the file
 * cannot be read. */
static int l_online_cpus(lua_State *L) {
  const char *sys = hx_opt_string(L, 1, "sys", NULL);
  const char *root = sys ? sys : DEFAULT_SYS;
  char path[PATH_MAX];
  rbuf *b = push_scratch(L);
  size_t len;
  int e;
  uint64_t n;
  if (!join(path, sizeof path, root, "devices/system/cpu/online"))
    return hx_fail(L, HX_LIMIT, "%s: path too long", root);
  e = rbuf_read(b, path, &len);
  if (e == 0 && (n = cgp_parse_cpu_list(b->p, len)) > 0) {
    lua_pushinteger(L, (lua_Integer)n);
    return 1;
  }
  if (sys == NULL) {
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    if (c > 0) {
      lua_pushinteger(L, c);
      return 1;
    }
  }
  if (e)
    return hx_fail_errno(L, errno_kind(e), path, e);
  return hx_fail(L, HX_PROTOCOL, "%s: not a CPU list", path);
}

/* cgroup.host_memory([opts]) -> bytes | nil, msg, kind (MemTotal) */
static int l_host_memory(lua_State *L) {
  const char *proc = hx_opt_string(L, 1, "proc", DEFAULT_PROC);
  rbuf *b = push_scratch(L);
  size_t len;
  uint64_t v;
  if (!read_or_fail(L, b, proc, "meminfo", &len))
    return 3;
  if (!cgp_parse_meminfo(NULL, b->p, len, "MemTotal", &v) || v == 0)
    return hx_fail(L, HX_PROTOCOL, "%s/meminfo: no MemTotal", proc);
  cgp_push_u64(L, v);
  return 1;
}

static lua_Integer opt_clk_tck(lua_State *L, int idx) {
  long def = sysconf(_SC_CLK_TCK);
  lua_Integer hz = hx_opt_integer(L, idx, "clk_tck", def > 0 ? def : 100);
  if (hz <= 0)
    luaL_error(L, "option 'clk_tck': positive integer expected");
  return hz;
}

/* cgroup.system_cpu_ns([opts]) -> ns | nil, msg, kind */
static int l_system_cpu_ns(lua_State *L) {
  const char *proc = hx_opt_string(L, 1, "proc", DEFAULT_PROC);
  lua_Integer hz = opt_clk_tck(L, 1);
  rbuf *b = push_scratch(L);
  size_t len;
  stat_cpu s;
  uint64_t ns;
  if (!read_or_fail(L, b, proc, "stat", &len))
    return 3;
  if (!cgp_parse_stat_cpu(b->p, len, &s) ||
      !cgp_ticks_to_ns(s.ticks, (uint64_t)hz, &ns))
    return hx_fail(L, HX_PROTOCOL, "%s/stat: no valid cpu line", proc);
  cgp_push_u64(L, ns);
  return 1;
}

/* ---------------------------------------------------------------- parse.* */

static int parse_fail(lua_State *L, const char *what) {
  return hx_fail(L, HX_PROTOCOL, "%s: malformed input", what);
}

/* parse.flat_keyed(text) -> {key = number} */
static int lp_flat_keyed(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  lua_newtable(L);
  cgp_fill_flat(L, lua_gettop(L), s, n, NULL, NULL, NULL);
  return 1;
}

/* parse.single(text) -> integer | float (> 2^63-1) | "max" | nil,msg,kind */
static int lp_single(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  num v;
  switch (cgp_parse_single(s, n, &v)) {
  case 1:
    cgp_push_num(L, &v);
    return 1;
  case 2:
    lua_pushliteral(L, "max");
    return 1;
  default:
    return n == 0 ? hx_fail(L, HX_PROTOCOL, "single: empty input")
                  : parse_fail(L, "single");
  }
}

/* {read=, write=, entries=, devices={...}} from a block I/O parser. */
static int push_io(lua_State *L,
                   void (*parse)(lua_State *, const char *, size_t, io_sum *)) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  io_sum io;
  lua_createtable(L, 0, 4);
  lua_newtable(L);
  parse(L, s, n, &io);
  lua_setfield(L, -2, "devices");
  set_u64(L, -1, "read", io.read);
  set_u64(L, -1, "write", io.write);
  lua_pushinteger(L, io.entries);
  lua_setfield(L, -2, "entries");
  return 1;
}

/* parse.blkio_v1(text) -> {read=, write=, entries=, devices={...}} */
static int lp_blkio_v1(lua_State *L) { return push_io(L, cgp_parse_blkio_v1); }

/* parse.io_stat_v2(text) -> {read=, write=, entries=, devices={...}} */
static int lp_io_stat_v2(lua_State *L) { return push_io(L, cgp_parse_io_v2); }

/* parse.net_dev(text) -> {rx=, tx=, interfaces={name={rx_bytes=,...}}} */
static int lp_net_dev(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  net_sum ns;
  lua_createtable(L, 0, 3);
  lua_newtable(L);
  cgp_parse_net_dev(L, s, n, &ns);
  lua_setfield(L, -2, "interfaces");
  set_u64(L, -1, "rx", ns.rx);
  set_u64(L, -1, "tx", ns.tx);
  return 1;
}

/* parse.proc_stat_cpu(text [, clk_tck]) -> {user=, ..., ticks=, ns=} */
static int lp_proc_stat_cpu(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  long def = sysconf(_SC_CLK_TCK);
  lua_Integer hz = luaL_optinteger(L, 2, def > 0 ? def : 100);
  stat_cpu sc;
  uint64_t ns;
  luaL_argcheck(L, hz > 0, 2, "positive clock tick rate expected");
  if (!cgp_parse_stat_cpu(s, n, &sc))
    return parse_fail(L, "proc_stat_cpu");
  lua_createtable(L, 0, 12);
  for (int i = 0; i < sc.n; i++)
    set_u64(L, -1, cgp_stat_names[i], sc.v[i]);
  set_u64(L, -1, "ticks", sc.ticks);
  if (cgp_ticks_to_ns(sc.ticks, (uint64_t)hz, &ns))
    set_u64(L, -1, "ns", ns);
  return 1;
}

/* parse.meminfo(text) -> {MemTotal = bytes, ...} */
static int lp_meminfo(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  lua_newtable(L);
  cgp_parse_meminfo(L, s, n, NULL, NULL);
  return 1;
}

/* parse.cpu_list(text) -> count | nil, msg, kind */
static int lp_cpu_list(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  uint64_t c = cgp_parse_cpu_list(s, n);
  if (c == 0)
    return parse_fail(L, "cpu_list");
  lua_pushinteger(L, (lua_Integer)c);
  return 1;
}

/* parse.procs(text) -> array of pids (malformed lines skipped) */
static int lp_procs(lua_State *L) {
  size_t n, fn;
  const char *s = luaL_checklstring(L, 1, &n), *p = s, *end = s + n, *ls, *le,
             *f;
  lua_Integer i = 0;
  lua_newtable(L);
  while (cgp_next_line(&p, end, &ls, &le)) {
    uint64_t v;
    if (cgp_next_field(&ls, le, &f, &fn) && cgp_scan_u64(f, fn, &v) && v > 0 &&
        v <= INT_MAX) {
      lua_pushinteger(L, (lua_Integer)v);
      lua_rawseti(L, -2, ++i);
    }
  }
  return 1;
}

/* ---------------------------------------------------------------- module */

static const luaL_Reg handle_methods[] = {
    {"cpu", l_cpu},     {"memory", l_memory}, {"blkio", l_blkio},
    {"pids", l_pids},   {"net", l_net},       {"procs", l_procs},
    {"stats", l_stats}, {"paths", l_paths},   {"close", l_close},
    {NULL, NULL}};

static const luaL_Reg handle_meta[] = {{"__gc", l_close},
                                       {"__close", l_close},
                                       {"__tostring", l_tostring},
                                       {NULL, NULL}};

static const luaL_Reg parse_funcs[] = {
    {"flat_keyed", lp_flat_keyed}, {"single", lp_single},
    {"blkio_v1", lp_blkio_v1},     {"io_stat_v2", lp_io_stat_v2},
    {"net_dev", lp_net_dev},       {"proc_stat_cpu", lp_proc_stat_cpu},
    {"meminfo", lp_meminfo},       {"cpu_list", lp_cpu_list},
    {"procs", lp_procs},           {NULL, NULL}};

static const luaL_Reg module_funcs[] = {{"detect", l_detect},
                                        {"open", l_open},
                                        {"list", l_list},
                                        {"stats", l_stats_once},
                                        {"online_cpus", l_online_cpus},
                                        {"host_memory", l_host_memory},
                                        {"system_cpu_ns", l_system_cpu_ns},
                                        {NULL, NULL}};

HX_EXPORT int luaopen_horcrux_cgroup(lua_State *L) {
  if (luaL_newmetatable(L, HANDLE_MT)) {
    luaL_setfuncs(L, handle_meta, 0);
    luaL_newlib(L, handle_methods);
    lua_pushcclosure(L, l_index, 1);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, SCRATCH_MT)) {
    lua_pushcfunction(L, scratch_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  luaL_newlib(L, module_funcs);
  luaL_newlib(L, parse_funcs);
  lua_setfield(L, -2, "parse");
  return 1;
}
