/*
 * cgroup.c - horcrux.cgroup: a container's figures read straight from its
 * cgroup files (v1, v2 or hybrid; cgroupfs or systemd driver), its network
 * counters from /proc/<pid>/net/dev, whether it is paused, the host figures
 * the CPU math needs, and every parser on its own so specs can feed it
 * strings. This file is the Lua module; the files and the layout are in
 * cgroup_fs.c, the readers into C structs in cgroup_read.c, the formats in
 * cgroup_parse.c.
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
 *                    pids, pid, net_rx, net_tx, net_host, frozen, time_ns,
 *                    mono_ns, cpu_user_ns, cpu_system_ns, cpu_percpu_ns,
 *                    cpu_periods, cpu_throttled_periods, cpu_throttled_ns,
 *                    cpu_quota_us, cpu_period_us, cpuset_cpus, pids_limit,
 *                    memory_rss, memory_cache, memory_oom_events, processes,
 *                    pressure, networks, block_devices, started_ns (when
 *                    the first process started)}; into (a table) is
 *                    emptied and refilled. No limit (v2 "max", v1 >= 2^62):
 *                    memory_limit is left out and memory_unlimited = true;
 *                    no CPU quota or pids limit: -1. --network host:
 *                    net_host = true and net_rx = net_tx = 0, as docker
 *                    reports. frozen: as h:frozen(), left out when it cannot
 *                    be told. A figure a file did not give is left out.
 *   h:frozen()       true when the container is paused (its cgroup frozen:
 *                    v1 and hybrid freezer.state FROZEN or FREEZING, v2
 *                    cgroup.freeze 1), false when not; nil, msg, "not_found"
 *                    when there is no freezer to ask
 *   h:cpu() h:memory() h:blkio() h:pids() h:net() h:procs() h:paths()
 *   h:close()        also __gc and __close
 *   online_cpus([opts]) host_memory([opts]) system_cpu_ns([opts])
 *   parse.flat_keyed single blkio_v1 io_stat_v2 net_dev proc_stat_cpu
 *         meminfo cpu_list procs pressure cpu_max u64_list
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
#include "cgroup_fs.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if LUA_MAXINTEGER < INT64_MAX
#error "horcrux.cgroup needs 64-bit Lua integers"
#endif

#define HANDLE_MT "horcrux.cgroup.handle"
#define SCRATCH_MT "horcrux.cgroup.scratch"
#define DEFAULT_ROOT "/sys/fs/cgroup"
#define DEFAULT_PROC "/proc"
#define DEFAULT_SYS "/sys"

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
  if (!cg_join(path, sizeof path, dir, name)) {
    hx_fail(L, HX_LIMIT, "%s/%s: path too long", dir, name);
    return 0;
  }
  e = cg_read_file(b, path, len);
  if (e) {
    hx_fail_errno(L, cg_errno_kind(e), path, e);
    return 0;
  }
  return 1;
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
  version = cg_detect_version(root);
  if (version == LV_NONE)
    return hx_fail(L, HX_NOT_FOUND, "%s: no cgroup hierarchy", root);
  if (cg_scan_base(root, version, path, sizeof path))
    driver = cg_detect_driver(path);
  lua_createtable(L, 0, 5);
  lua_pushstring(L, cg_version_names[version]);
  lua_setfield(L, -2, "version");
  if (driver != DRV_NONE) {
    lua_pushstring(L, cg_driver_names[driver]);
    lua_setfield(L, -2, "driver");
  }
  lua_pushstring(L, root);
  lua_setfield(L, -2, "root");
  if (version == LV_V2) {
    lua_pushstring(L, root);
    lua_setfield(L, -2, "unified");
  } else {
    lua_createtable(L, 0, K_V1_N);
    for (int k = 0; k < K_V1_N; k++)
      if (cg_v1_hierarchy(root, k, path, sizeof path)) {
        lua_pushstring(L, path);
        lua_setfield(L, -2, cg_k_names[k]);
      }
    lua_setfield(L, -2, "hierarchies");
    if (version == LV_HYBRID && cg_join(path, sizeof path, root, "unified")) {
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
  if ((l->n + 1) * CG_ID_LEN > l->b->cap) {
    size_t cap = l->b->cap ? l->b->cap * 2 : 64 * CG_ID_LEN;
    char *q = realloc(l->b->p, cap);
    if (q == NULL) {
      l->oom = 1;
      return;
    }
    l->b->p = q;
    l->b->cap = cap;
  }
  memcpy(l->b->p + l->n * CG_ID_LEN, id, CG_ID_LEN);
  l->n++;
}

static int cmp_id(const void *a, const void *b) {
  return memcmp(a, b, CG_ID_LEN);
}

/* cgroup.list([opts]) -> sorted array of the full ids with a cgroup. */
static int l_list(lua_State *L) {
  const char *root;
  char base[PATH_MAX];
  int version;
  idlist l;
  opts_paths(L, 1, &root, NULL);
  version = cg_detect_version(root);
  if (version == LV_NONE)
    return hx_fail(L, HX_NOT_FOUND, "%s: no cgroup hierarchy", root);
  l.b = push_scratch(L);
  l.n = 0;
  l.oom = 0;
  if (cg_scan_base(root, version, base, sizeof base)) {
    cg_each_container(base, DRV_CGROUPFS, collect_id, &l);
    cg_each_container(base, DRV_SYSTEMD, collect_id, &l);
  }
  if (l.oom)
    return luaL_error(L, "not enough memory");
  if (l.n > 1)
    qsort(l.b->p, l.n, CG_ID_LEN, cmp_id);
  lua_createtable(L, (int)l.n, 0);
  for (size_t i = 0, out = 0; i < l.n; i++) {
    const char *id = l.b->p + i * CG_ID_LEN;
    if (i > 0 && memcmp(id, id - CG_ID_LEN, CG_ID_LEN) == 0)
      continue;
    lua_pushlstring(L, id, CG_ID_LEN);
    lua_rawseti(L, -2, (lua_Integer)++out);
  }
  return 1;
}

/* ---------------------------------------------------------------- handle */

static void handle_free(handle *h) { cg_handle_release(h); }

static handle *check_handle(lua_State *L) {
  handle *h = luaL_checkudata(L, 1, HANDLE_MT);
  if (h->closed)
    luaL_error(L, "attempt to use a closed cgroup handle");
  return h;
}

/* cgroup.open(id [, opts]) -> handle | nil, msg, kind */
static int l_open(lua_State *L) {
  size_t idn;
  const char *id = luaL_checklstring(L, 1, &idn), *root, *proc;
  char base[PATH_MAX];
  int version, prefer = DRV_NONE, e;
  handle *h;
  opts_paths(L, 2, &root, &proc);
  if (!cg_is_id(id, idn))
    return hx_fail(L, HX_BAD_REQUEST,
                   "cgroup.open: a full 64-hex container id expected");
  version = cg_detect_version(root);
  if (version == LV_NONE)
    return hx_fail(L, HX_NOT_FOUND, "%s: no cgroup hierarchy", root);
  if (cg_scan_base(root, version, base, sizeof base))
    prefer = cg_detect_driver(base);
  h = lua_newuserdatauv(L, sizeof *h, 0);
  memset(h, 0, sizeof *h);
  h->closed = 1; /* until every field is set: __gc frees what is there */
  luaL_setmetatable(L, HANDLE_MT);
  e = cg_handle_open(h, root, version, prefer, id, proc);
  if (e == ENOMEM)
    return luaL_error(L, "not enough memory");
  if (e) {
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
    lua_pushstring(L, cg_driver_names[h->driver]);
  else
    lua_pushnil(L);
  return 1;
}

/* h:paths() -> {cpuacct=, memory=, blkio=, pids=, freezer=, cpu=, cpuset=
 * [, unified= (a hybrid host)]} (v1, hybrid) or {unified=} (v2) */
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
        lua_setfield(L, -2, cg_k_names[k]);
      }
  }
  return 1;
}

static int fail_read(lua_State *L, handle *h, int k, const char *name, int e) {
  const char *dir = cg_hdir(h, k);
  if (cg_gone(e) && !cg_alive(h))
    return hx_fail(L, HX_NOT_FOUND, "container %s: cgroup removed", h->sid);
  if (dir == NULL)
    return hx_fail(L, HX_NOT_FOUND, "container %s: no %s cgroup", h->sid,
                   cg_k_names[k]);
  return hx_fail(L, cg_errno_kind(e), "%s/%s: %s", dir, name, strerror(e));
}

static void set_u64(lua_State *L, int t, const char *k, uint64_t v) {
  t = lua_absindex(L, t);
  cgp_push_u64(L, v);
  lua_setfield(L, t, k);
}

/* ---- the readers as methods */

/* Moves the table on top (a parser's detail) into the table below it as
 * `sub`, and sets the two sums there. */
static void set_sums(lua_State *L, const char *sub, const char *ka, uint64_t a,
                     const char *kb, uint64_t b) {
  lua_setfield(L, -2, sub);
  set_u64(L, -1, ka, a);
  set_u64(L, -1, kb, b);
}

/* Pushes an array of n unsigned values (a per-CPU list). */
static void push_u64_array(lua_State *L, const uint64_t *v, int n) {
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    cgp_push_u64(L, v[i]);
    lua_rawseti(L, -2, i + 1);
  }
}

static void set_u64_array(lua_State *L, int t, const char *k, const uint64_t *v,
                          int n) {
  push_u64_array(L, v, n);
  lua_setfield(L, t, k);
}

/* The names h:cpu() and h:stats() give c's figures beside the usage. */
typedef const char *const cpu_names[6];
static cpu_names cpu_keys = {"user_ns", "system_ns",         "percpu_ns",
                             "periods", "throttled_periods", "throttled_ns"};
static cpu_names stats_cpu_keys = {"cpu_user_ns",           "cpu_system_ns",
                                   "cpu_percpu_ns",         "cpu_periods",
                                   "cpu_throttled_periods", "cpu_throttled_ns"};

/* Sets what c has beside the usage in the table at t, under the names k. */
static void set_cpu_more(lua_State *L, int t, const cpu_fig *c, cpu_names k) {
  if (c->have_split) {
    set_u64(L, t, k[0], c->user_ns);
    set_u64(L, t, k[1], c->system_ns);
  }
  if (c->npercpu > 0)
    set_u64_array(L, t, k[2], c->percpu, c->npercpu);
  if (c->throttle_ok) {
    set_u64(L, t, k[3], c->periods);
    set_u64(L, t, k[4], c->throttled);
    set_u64(L, t, k[5], c->throttled_ns);
  }
}

/* h:cpu() -> {usage_ns=[, user_ns=, system_ns=][, percpu_ns={...}]
 *            [, periods=, throttled_periods=, throttled_ns=]} */
static int l_cpu(lua_State *L) {
  handle *h = check_handle(L);
  cpu_fig c;
  int e = cg_read_cpu(h, &c);
  if (e == EINVAL)
    return hx_fail(L, HX_PROTOCOL, "container %s: unreadable CPU usage",
                   h->sid);
  if (e)
    return fail_read(L, h, K_CPU, h->v2 ? "cpu.stat" : "cpuacct.usage", e);
  lua_createtable(L, 0, 3);
  set_u64(L, -1, "usage_ns", c.usage_ns);
  set_cpu_more(L, lua_gettop(L), &c, cpu_keys);
  return 1;
}

/* Sets the memory figures of m in the table at t under the names in k:
 * usage, limit, unlimited, inactive_file, rss, cache, oom_events. */
static void set_memory(lua_State *L, int t, const mem_fig *m,
                       const char *const k[7]) {
  if (m->usage_ok)
    set_u64(L, t, k[0], m->usage);
  if (m->limit_ok && !m->unlimited)
    set_u64(L, t, k[1], m->limit);
  if (m->limit_ok) {
    lua_pushboolean(L, m->unlimited);
    lua_setfield(L, t, k[2]);
  }
  if (m->inactive_ok)
    set_u64(L, t, k[3], m->inactive);
  if (m->rss_ok)
    set_u64(L, t, k[4], m->rss);
  if (m->cache_ok)
    set_u64(L, t, k[5], m->cache);
  if (m->oom_ok)
    set_u64(L, t, k[6], m->oom);
}

/* h:memory() -> {usage=, limit=, unlimited=, inactive_file=, rss=, cache=,
 * oom_events=, stat={...}} */
static int l_memory(lua_State *L) {
  static const char *const names[7] = {"usage",         "limit", "unlimited",
                                       "inactive_file", "rss",   "cache",
                                       "oom_events"};
  handle *h = check_handle(L);
  mem_fig m;
  if (cg_hdir(h, K_MEM) == NULL)
    return fail_read(L, h, K_MEM, "memory.stat", ENOENT);
  lua_createtable(L, 0, 5);
  lua_createtable(L, 0, 64);
  int e = cg_read_memory(L, lua_gettop(L), h, &m);
  if (e)
    return fail_read(L, h, K_MEM, "memory.stat", e);
  if (!m.usage_ok && !m.limit_ok && !m.stat_ok)
    return hx_fail(L, HX_IO, "container %s: no memory figure readable", h->sid);
  if (m.stat_ok)
    lua_setfield(L, -2, "stat");
  else
    lua_pop(L, 1);
  set_memory(L, lua_gettop(L), &m, names);
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
  e = cg_read_blkio(L, h, &s, &file);
  if (e)
    return fail_read(L, h, K_BLKIO, h->v2 ? "io.stat" : "blkio", e);
  set_sums(L, "devices", "read", s.read, "write", s.write);
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
  int e = cg_read_single(h, K_PIDS, "pids.current", &cur);
  if (e == EINVAL || (!e && cur.max))
    return hx_fail(L, HX_PROTOCOL, "container %s: unreadable pids.current",
                   h->sid);
  if (e)
    return fail_read(L, h, K_PIDS, "pids.current", e);
  lua_createtable(L, 0, 2);
  set_u64(L, -1, "current", cur.v);
  if (cg_read_single(h, K_PIDS, "pids.max", &max) == 0 && !max.max)
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
  e = cg_read_net(L, h, &n);
  if (e == ESRCH)
    return hx_fail(L, HX_NOT_FOUND, "container %s: no process in cgroup",
                   h->sid);
  if (e) {
    if (cg_gone(e) && !cg_alive(h))
      return hx_fail(L, HX_NOT_FOUND, "container %s: cgroup removed", h->sid);
    return hx_fail(L, cg_errno_kind(e), "%s/%d/net/dev: %s", h->proc, n.pid,
                   strerror(e));
  }
  set_sums(L, "interfaces", "rx", n.sum.rx, "tx", n.sum.tx);
  lua_pushinteger(L, n.pid);
  lua_setfield(L, -2, "pid");
  lua_pushboolean(L, n.host);
  lua_setfield(L, -2, "host");
  return 1;
}

/* Pushes an array of the pids in a cgroup.procs text (malformed lines
 * skipped). */
static void push_pids(lua_State *L, const char *s, size_t n) {
  const char *p = s, *end = s + n, *ls, *le, *f;
  size_t fn;
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
}

/* h:procs() -> array of the pids in the container's own cgroup.procs */
static int l_procs(lua_State *L) {
  handle *h = check_handle(L);
  const char *dir = cg_procs_dir(h);
  size_t len;
  if (!dir)
    return hx_fail(L, HX_NOT_FOUND, "container %s: no cgroup", h->sid);
  if (!read_or_fail(L, &h->buf, dir, "cgroup.procs", &len))
    return 3;
  push_pids(L, h->buf.p, len);
  return 1;
}

/* h:frozen() -> true | false | nil, msg, kind: whether the container is
 * paused (its cgroup frozen); not_found when there is no freezer to ask. */
static int l_frozen(lua_State *L) {
  handle *h = check_handle(L);
  int frozen = 0;
  int e = cg_read_frozen(h, &frozen);
  if (e == EINVAL)
    return hx_fail(L, HX_PROTOCOL, "container %s: unreadable freezer state",
                   h->sid);
  if (e)
    return fail_read(L, h, K_FREEZER, h->v2 ? "cgroup.freeze" : "freezer.state",
                     e);
  lua_pushboolean(L, frozen);
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

/* The parts of stats(): each sets its fields of the table at t (memory.stat
 * into the table at st) and returns 1 when it read a figure, 0 when it read
 * none, -1 when the cgroup is gone. */
typedef int (*stats_part)(lua_State *L, handle *h, int t, int st);

/* The wall clock goes right after the CPU counter: the pair is what the
 * short-window CPU % divides. */
static int stats_cpu(lua_State *L, handle *h, int t, int st) {
  cpu_fig c;
  int e = cg_read_cpu(h, &c);
  (void)st;
  set_u64(L, t, "time_ns", (uint64_t)hx_real_ns());
  set_u64(L, t, "mono_ns", (uint64_t)hx_mono_ns());
  if (cg_gone(e) && !cg_alive(h))
    return -1;
  if (c.ok) {
    set_u64(L, t, "cpu_ns", c.usage_ns);
    set_cpu_more(L, t, &c, stats_cpu_keys);
  }
  return c.ok;
}

static int stats_memory(lua_State *L, handle *h, int t, int st) {
  static const char *const names[7] = {
      "memory_usage", "memory_limit", "memory_unlimited", "inactive_file",
      "memory_rss",   "memory_cache", "memory_oom_events"};
  mem_fig m;
  if (!cg_hdir(h, K_MEM))
    return 0;
  if (cg_read_memory(L, st, h, &m))
    return -1;
  set_memory(L, t, &m, names);
  if (m.stat_ok) {
    lua_pushvalue(L, st);
    lua_setfield(L, t, "memory_stat");
  }
  return m.usage_ok || m.limit_ok || m.stat_ok;
}

static int stats_blkio(lua_State *L, handle *h, int t, int st) {
  io_sum io;
  const char *file;
  (void)st;
  if (!cg_hdir(h, K_BLKIO))
    return 0;
  int e = cg_read_blkio(NULL, h, &io, &file);
  if (cg_gone(e) && !cg_alive(h))
    return -1;
  if (e)
    return 0;
  set_u64(L, t, "blkio_read", io.read);
  set_u64(L, t, "blkio_write", io.write);
  lua_createtable(L, 0, io.ndevs);
  for (int i = 0; i < io.ndevs; i++) {
    lua_pushfstring(L, "%d:%d", (int)io.devs[i].major, (int)io.devs[i].minor);
    lua_createtable(L, 0, 2);
    set_u64(L, -1, "read_bytes", io.devs[i].read);
    set_u64(L, -1, "write_bytes", io.devs[i].write);
    lua_rawset(L, -3);
  }
  lua_setfield(L, t, "block_devices");
  return 1;
}

static int stats_pids(lua_State *L, handle *h, int t, int st) {
  single_fig pids;
  int e = cg_read_single(h, K_PIDS, "pids.current", &pids);
  (void)st;
  if (cg_gone(e) && !cg_alive(h))
    return -1;
  if (e || pids.max)
    return 0;
  set_u64(L, t, "pids", pids.v);
  return 1;
}

/* A container on the host's network has no counters of its own: 0, as
 * docker reports, flagged by net_host. */
static int stats_net(lua_State *L, handle *h, int t, int st) {
  net_fig n;
  uint64_t btime;
  int64_t started;
  int e = cg_read_net(NULL, h, &n);
  (void)st;
  if (cg_gone(e) && !cg_alive(h))
    return -1;
  if (e)
    return 0;
  lua_pushinteger(L, n.pid);
  lua_setfield(L, t, "pid");
  if (n.pid > 0 && cg_read_btime(&h->buf, h->proc, &btime) == 0 &&
      cg_pid_start_ns(h, n.pid, btime, &started) == 0) {
    lua_pushinteger(L, started);
    lua_setfield(L, t, "started_ns");
  }
  if (n.host) {
    lua_pushboolean(L, 1);
    lua_setfield(L, t, "net_host");
  }
  set_u64(L, t, "net_rx", n.sum.rx);
  set_u64(L, t, "net_tx", n.sum.tx);
  lua_createtable(L, 0, n.sum.nifs);
  for (int i = 0; i < n.sum.nifs; i++) {
    lua_createtable(L, 0, NI_N);
    for (int j = 0; j < NI_N; j++)
      set_u64(L, -1, cgp_iface_names[j], n.sum.ifs[i].v[j]);
    lua_setfield(L, -2, n.sum.ifs[i].name);
  }
  lua_setfield(L, t, "networks");
  return 1;
}

/* The limits: cpu_quota_us (-1: none), cpu_period_us, cpuset_cpus,
 * pids_limit (-1: none). A state, not a figure (returns 0). */
static int stats_limits(lua_State *L, handle *h, int t, int st) {
  limit_fig l;
  (void)st;
  if (cg_read_limits(h, &l))
    return -1;
  if (l.quota_ok) {
    lua_pushinteger(
        L, l.no_quota || l.quota_us > INT64_MAX ? -1 : (lua_Integer)l.quota_us);
    lua_setfield(L, t, "cpu_quota_us");
  }
  if (l.period_ok)
    set_u64(L, t, "cpu_period_us", l.period_us);
  if (l.cpuset)
    set_u64(L, t, "cpuset_cpus", l.cpuset);
  if (l.pids_ok) {
    lua_pushinteger(L, l.pids_unlimited || l.pids_max > INT64_MAX
                           ? -1
                           : (lua_Integer)l.pids_max);
    lua_setfield(L, t, "pids_limit");
  }
  return 0;
}

/* pressure = {cpu = {some=, full=}, ...} on v2 (hybrid: the unified tree);
 * processes, from the container's own cgroup.procs (after stats_pids). */
static int stats_pressure(lua_State *L, handle *h, int t, int st) {
  psi_fig p[PSI_N];
  uint64_t procs;
  int have, e;
  (void)st;
  lua_newtable(L);
  e = cg_read_pressure(L, h, p, &have);
  if (e && cg_gone(e) && !cg_alive(h))
    return -1;
  if (!e && have)
    lua_setfield(L, t, "pressure");
  else
    lua_pop(L, 1);
  e = cg_read_procs(h, &procs);
  if (e && cg_gone(e) && !cg_alive(h))
    return -1;
  /* none in its own cgroup while it has tasks: they are in sub-cgroups */
  lua_getfield(L, t, "pids");
  if (!e && (procs > 0 || !(lua_tointeger(L, -1) > 0)))
    set_u64(L, t, "processes", procs);
  lua_pop(L, 1);
  return 0;
}

/* Whether the container is paused: a state, not a figure (returns 0). */
static int stats_frozen(lua_State *L, handle *h, int t, int st) {
  int frozen = 0, e = cg_read_frozen(h, &frozen);
  (void)st;
  if (cg_gone(e) && !cg_alive(h))
    return -1;
  if (!e) {
    lua_pushboolean(L, frozen);
    lua_setfield(L, t, "frozen");
  }
  return 0;
}

/* Pushes the result table and its memory_stat table (their indexes in *t
 * and *st): the caller's `into` and its memory_stat emptied, or new ones. */
static void stats_tables(lua_State *L, int into, int *t, int *st) {
  if (!into) {
    lua_createtable(L, 0, 17);
    *t = lua_gettop(L);
    lua_createtable(L, 0, 64);
    *st = lua_gettop(L);
    return;
  }
  *t = into;
  if (lua_getfield(L, into, "memory_stat") != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 64);
  }
  *st = lua_gettop(L);
  clear_table(L, into);
  clear_table(L, *st);
}

/* Everything the live view needs, in one table (see the file comment). On
 * failure the stack is put back as it was and nil, msg, kind pushed. */
static int handle_stats(lua_State *L, handle *h, int into) {
  static const stats_part parts[] = {stats_cpu,    stats_memory,  stats_blkio,
                                     stats_pids,   stats_net,     stats_frozen,
                                     stats_limits, stats_pressure};
  int base = lua_gettop(L), t, st, any = 0;
  stats_tables(L, into, &t, &st);
  for (size_t i = 0; i < sizeof parts / sizeof *parts; i++) {
    int r = parts[i](L, h, t, st);
    if (r < 0) {
      any = -1; /* gone */
      break;
    }
    any |= r;
  }
  if (any > 0) {
    lua_settop(L, t);
    return 1;
  }
  lua_settop(L, base);
  if (any == 0 && cg_alive(h))
    return hx_fail(L, HX_IO, "container %s: no cgroup figure readable", h->sid);
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
  if (!cg_join(path, sizeof path, root, "devices/system/cpu/online"))
    return hx_fail(L, HX_LIMIT, "%s: path too long", root);
  e = cg_read_file(b, path, &len);
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
    return hx_fail_errno(L, cg_errno_kind(e), path, e);
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

/* The text argument of a parser whose result has a detail table: pushes
 * the result and the (empty) detail table for the parser to fill. */
static const char *text_and_tables(lua_State *L, size_t *n) {
  const char *s = luaL_checklstring(L, 1, n);
  lua_createtable(L, 0, 4);
  lua_newtable(L);
  return s;
}

/* {read=, write=, entries=, devices={...}} from a block I/O parser. */
static int push_io(lua_State *L,
                   void (*parse)(lua_State *, const char *, size_t, io_sum *)) {
  size_t n;
  io_sum io;
  const char *s = text_and_tables(L, &n);
  parse(L, s, n, &io);
  set_sums(L, "devices", "read", io.read, "write", io.write);
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
  net_sum ns;
  const char *s = text_and_tables(L, &n);
  cgp_parse_net_dev(L, s, n, &ns);
  set_sums(L, "interfaces", "rx", ns.rx, "tx", ns.tx);
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
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  push_pids(L, s, n);
  return 1;
}

/* parse.pressure(text) -> {some = {avg10=, avg60=, avg300=, total=},
 * full = {...}} | nil, msg, kind */
static int lp_pressure(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  psi_fig p;
  lua_newtable(L);
  if (!cgp_parse_pressure(L, s, n, &p))
    return parse_fail(L, "pressure");
  return 1;
}

/* parse.cpu_max(text) -> quota_us | "max", period_us | nil, msg, kind */
static int lp_cpu_max(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  uint64_t quota, period;
  int unlimited;
  if (!cgp_parse_cpu_max(s, n, &unlimited, &quota, &period))
    return parse_fail(L, "cpu_max");
  if (unlimited)
    lua_pushliteral(L, "max");
  else
    cgp_push_u64(L, quota);
  cgp_push_u64(L, period);
  return 2;
}

/* parse.u64_list(text) -> array (cpuacct.usage_percpu) | nil, msg, kind */
static int lp_u64_list(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  uint64_t v[CGP_MAX_CPUS];
  int count = cgp_parse_u64_list(s, n, v, CGP_MAX_CPUS);
  if (count < 0)
    return parse_fail(L, "u64_list");
  push_u64_array(L, v, count);
  return 1;
}

/* ---------------------------------------------------------------- module */

static const luaL_Reg handle_methods[] = {
    {"cpu", l_cpu},     {"memory", l_memory}, {"blkio", l_blkio},
    {"pids", l_pids},   {"net", l_net},       {"procs", l_procs},
    {"stats", l_stats}, {"paths", l_paths},   {"frozen", l_frozen},
    {"close", l_close}, {NULL, NULL}};

static const luaL_Reg handle_meta[] = {{"__gc", l_close},
                                       {"__close", l_close},
                                       {"__tostring", l_tostring},
                                       {NULL, NULL}};

static const luaL_Reg parse_funcs[] = {{"flat_keyed", lp_flat_keyed},
                                       {"single", lp_single},
                                       {"blkio_v1", lp_blkio_v1},
                                       {"io_stat_v2", lp_io_stat_v2},
                                       {"net_dev", lp_net_dev},
                                       {"proc_stat_cpu", lp_proc_stat_cpu},
                                       {"meminfo", lp_meminfo},
                                       {"cpu_list", lp_cpu_list},
                                       {"procs", lp_procs},
                                       {"pressure", lp_pressure},
                                       {"cpu_max", lp_cpu_max},
                                       {"u64_list", lp_u64_list},
                                       {NULL, NULL}};

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
