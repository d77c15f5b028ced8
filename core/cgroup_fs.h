/*
 * cgroup_fs.h - the files behind horcrux.cgroup: reading them whole
 * (cgroup_fs.c), where the hierarchies and a container's directories are
 * (v1, v2 or hybrid; cgroupfs or systemd driver; cgroup_fs.c), and a
 * container's figures read into C structs (cgroup_read.c). cgroup.c is the
 * Lua module on top; cgroup_parse.c has the formats. Nothing here raises:
 * a function returns 0 or an errno value (EINVAL: the file is there but
 * its content is not what it should be).
 */
#ifndef HORCRUX_CGROUP_FS_H
#define HORCRUX_CGROUP_FS_H

#include "cgroup_parse.h"

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

#define CG_ID_LEN 64

/* ---- files */

/* A growable read buffer. The Lua module keeps it in a userdata whose __gc
 * frees it, so a Lua error never leaks it. */
typedef struct {
  char *p;
  size_t cap;
} rbuf;

/* Reads the whole file at path into b, NUL-terminated; 0 or an errno. */
int cg_read_file(rbuf *b, const char *path, size_t *len);
/* The same from a descriptor kept open, from offset 0 (see cgroup_fs.c). */
int cg_pread_file(rbuf *b, int fd, size_t *len);
/* out = a/b; 0 when it does not fit. */
int cg_join(char *out, size_t cap, const char *a, const char *b);
int cg_is_dir(const char *path);
/* Whether errno e says the file or process went away. */
int cg_gone(int e);
/* The error kind for errno e: not_found, limit or io. */
const char *cg_errno_kind(int e);

/* ---- layout */

enum { LV_NONE, LV_V1, LV_V2, LV_HYBRID };
enum { DRV_NONE, DRV_CGROUPFS, DRV_SYSTEMD };
extern const char *const cg_version_names[4]; /* NULL, "v1", "v2", "hybrid" */
extern const char *const cg_driver_names[3];  /* NULL, "cgroupfs", ... */

/* The controllers a handle reads (a v1 hierarchy each; one dir on v2).
 * K_CPU is cpuacct (the usage), K_CPUCTL the cpu controller (quota,
 * throttling), co-mounted with it or not. K_UNIFIED is the v2 tree beside
 * the v1 ones on a hybrid host (its pressure files); the v1 controllers are
 * those before it. */
enum {
  K_CPU,
  K_MEM,
  K_BLKIO,
  K_PIDS,
  K_FREEZER,
  K_CPUCTL,
  K_CPUSET,
  K_UNIFIED,
  K_N
};
#define K_V1_N K_UNIFIED
extern const char *const cg_k_names[K_N]; /* "cpuacct", "memory", ... */

/* The directory of v1 controller k under root, into out; 0 when absent. */
int cg_v1_hierarchy(const char *root, int k, char *out, size_t cap);
/* LV_V1, LV_V2, LV_HYBRID or LV_NONE, from the tree at root. */
int cg_detect_version(const char *root);
/* Whether s[0..n) is a full container id (64 lowercase hex digits). */
int cg_is_id(const char *s, size_t n);
/* The directory under which container cgroups live, into out. */
int cg_scan_base(const char *root, int version, char *out, size_t cap);
/* The driver whose layout holds the containers under base, or DRV_NONE. */
int cg_detect_driver(const char *base);
/* Calls fn(id, arg) for each container cgroup of a driver under base;
 * returns how many, or -1 when the parent directory is missing. */
int cg_each_container(const char *base, int driver,
                      void (*fn)(const char *, void *), void *arg);
/* The container's directory under base (the driver `prefer` tried first)
 * into out; returns its driver, or DRV_NONE. */
int cg_find_dir(const char *base, const char *id, int prefer, char *out,
                size_t cap);

/* ---- descriptors kept between reads */

/* How many descriptors the handles sharing a budget may keep open. The
 * owner sets max; held counts the kept ones across threads (a handle may
 * be closed on any thread), changed only with __atomic builtins. */
typedef struct cg_budget {
  int max;
  int held;
} cg_budget;

/* The files a handle reads and may keep: 21 on hybrid, 16 on v2 (the
 * limits are read without keeping: cg_read_limits). */
#define CG_KEEP_MAX 24
#define CG_FD_NONE (-1)
#define CG_FD_ABSENT (-2) /* the file does not exist in a live cgroup */
#define CG_K_PROC (-1)    /* /proc/<pid>/net/dev, valid for keep.pid */

typedef struct cg_kept {
  const char *name; /* the reader's literal */
  int k;            /* controller, or CG_K_PROC */
  int fd;           /* >= 0 open; CG_FD_NONE; CG_FD_ABSENT */
} cg_kept;

typedef struct cg_keep {
  cg_budget *budget;
  int n;   /* slots used */
  int pid; /* whose net/dev the CG_K_PROC slot holds */
  /* Set when a kept cgroup file failed and its path opened again: the
   * cgroup was made anew (a restart); the holder clears it. */
  int renewed;
  cg_kept f[CG_KEEP_MAX];
} cg_keep;

/* ---- a container's cgroup */

typedef struct {
  int closed;
  int v2;
  int driver;
  char id[CG_ID_LEN + 1];
  char sid[13];   /* the short id, for messages (pushfstring has no %.12s) */
  char *dir[K_N]; /* v1: per controller, NULL when absent; v2: dir[0] */
  char *proc;
  rbuf buf;
  /* Whether the last pid used for network shared the host's netns: looked
   * up again only when the pid changes. */
  int net_pid, net_host;
  /* NULL: every read opens, reads and closes the file. Else each file is
   * opened once and re-read with pread at offset 0 while the budget lets
   * it be kept (cg_keep_start). */
  cg_keep *keep;
  /* CG_SLOW_*: how the readers read the files of the figures that the
   * live view reads seldom (v1 per-CPU and cpu.stat, the OOM count, the
   * pressure files, the memory limit). 0, what a zeroed handle has: as
   * every other file. */
  int slow;
  /* memory.stat's figures as last read (stat_got: a bit per figure of
   * mem_fig's inactive, rss, cache, and 8 once read; stat_usage: the usage
   * read with them). While the holder sets stat_reuse, a read whose usage
   * is the same takes them again instead of reading memory.stat. */
  int stat_reuse;
  unsigned stat_got;
  uint64_t stat_usage, stat_v[3];
} handle;

enum {
  CG_SLOW_READ, /* read and kept as the other files */
  CG_SLOW_SKIP, /* not read: their figures are left unset */
  CG_SLOW_ONCE  /* read without keeping their descriptors */
};

/* Fills h (zeroed by the caller) for container id under the tree at root
 * of the given version, the driver `prefer` tried first: its directories,
 * proc (copied), v2, driver, id and sid; h->closed stays as it was. Returns
 * 0, ENOENT when the container has no cgroup there, or ENOMEM; on failure
 * what was allocated stays in h for cg_handle_release. */
int cg_handle_open(handle *h, const char *root, int version, int prefer,
                   const char *id, const char *proc);
/* Frees what h holds and closes what it keeps; sets h->closed. */
void cg_handle_release(handle *h);

/* Makes h keep its descriptors within budget b; 0 or ENOMEM. */
int cg_keep_start(handle *h, cg_budget *b);
/* Closes the descriptors h keeps (it may keep others later). */
void cg_keep_close(handle *h);
/* How many descriptors h keeps open. */
int cg_keep_count(const handle *h);
/* The pid whose net/dev h keeps open, when its cgroup is the one it was
 * opened in (not renewed); else 0. */
int cg_keep_net_pid(const handle *h);
/* Closes the net/dev h keeps (the live view reads the network otherwise). */
void cg_keep_close_net(handle *h);

const char *cg_hdir(const handle *h, int k);
/* The controller whose directory's cgroup.procs names the container's
 * processes (-1: none), and that directory. */
int cg_procs_k(const handle *h);
const char *cg_procs_dir(const handle *h);
/* Whether the container's cgroup is still there. */
int cg_alive(const handle *h);
/* Reads a file of controller k into h->buf; ENOENT without that dir. */
int cg_hread(handle *h, int k, const char *name, size_t *len);
/* The same, never keeping the descriptor (files read seldom). */
int cg_hread_once(handle *h, int k, const char *name, size_t *len);
/* Reads /proc/<pid>/net/dev (h->proc) into h->buf. */
int cg_read_net_dev(handle *h, int pid, size_t *len);

/* ---- the readers, each into a C struct */

typedef struct {
  int ok;
  uint64_t usage_ns;
  int have_split; /* user_ns, system_ns */
  uint64_t user_ns, system_ns;
  int throttle_ok; /* periods, throttled, throttled_ns */
  uint64_t periods, throttled, throttled_ns;
  int npercpu; /* 0: none (v2 has no per-CPU counters) */
  uint64_t percpu[CGP_MAX_CPUS];
} cpu_fig;

/* What the container may use: its CPU quota per period (v2 cpu.max, v1
 * cpu.cfs_quota_us and cpu.cfs_period_us), the CPUs of its cpuset and its
 * pids.max. Files that change only when the container is updated. */
typedef struct {
  int quota_ok;  /* the quota was read: quota_us, or none */
  int no_quota;  /* "max", -1 */
  int period_ok; /* period_us */
  uint64_t quota_us, period_us;
  uint64_t cpuset; /* CPUs in the cpuset; 0: not read */
  int pids_ok, pids_unlimited;
  uint64_t pids_max;
} limit_fig;

/* A one-value file that must hold a size or a count (or "max"). */
typedef struct {
  int ok;  /* 1 read */
  int max; /* "max" */
  uint64_t v;
} single_fig;

typedef struct {
  int usage_ok, limit_ok, inactive_ok, stat_ok;
  int unlimited; /* limit_ok: no limit (v2 "max", v1 >= 2^62) */
  uint64_t usage, limit, inactive;
  int rss_ok, cache_ok, oom_ok;
  uint64_t rss, cache, oom; /* oom: OOM kills in the cgroup */
} mem_fig;

/* PSI of the container's v2 cgroup (a hybrid host's unified tree too). */
enum { PSI_CPU, PSI_MEMORY, PSI_IO, PSI_N };
extern const char *const cg_psi_names[PSI_N]; /* "cpu", "memory", "io" */

typedef struct {
  int pid;
  int host; /* the host's network namespace: no counters of its own */
  net_sum sum;
} net_fig;

/* The usage (and on v2 the split and the throttling from the same file),
 * then what other files say: v1 cpuacct.stat, cpuacct.usage_percpu and the
 * cpu controller's cpu.stat. Only the usage decides the result. */
int cg_read_cpu(handle *h, cpu_fig *c);
/* The limits (limit_fig), each file opened, read and closed: 0, or the
 * errno of a cgroup that vanished. */
int cg_read_limits(handle *h, limit_fig *l);
/* cpu.pressure, memory.pressure, io.pressure into p[]; *have gets bit
 * 1 << PSI_x for each read. ENOENT: no v2 cgroup (a v1 host). The tables
 * go into the table on top (cpu = {some=, full=}, ...) when L is not NULL. */
int cg_read_pressure(lua_State *L, handle *h, psi_fig p[PSI_N], int *have);
/* How many processes the container's own cgroup.procs lists. */
int cg_read_procs(handle *h, uint64_t *n);
/* When process pid started (wall clock ns), from <proc>/<pid>/stat and
 * the boot time btime (s): what the container's first process tells of
 * the container's start. */
int cg_pid_start_ns(handle *h, int pid, uint64_t btime, int64_t *ns);
/* The boot time (s) from <proc>/stat's btime line, read into b. */
int cg_read_btime(rbuf *b, const char *proc, uint64_t *btime);
int cg_read_single(handle *h, int k, const char *name, single_fig *f);
/* memory.stat's pairs go into the table at st when L is not NULL. Returns
 * 0, or the errno of a cgroup that vanished (a missing file is left out). */
int cg_read_memory(lua_State *L, int st, handle *h, mem_fig *m);
/* *file: the file used, NULL when every v1 file was empty. The devices go
 * into the table on top when L is not NULL. */
int cg_read_blkio(lua_State *L, handle *h, io_sum *s, const char **file);
/* ESRCH: no process in the cgroup. The interfaces go into the table on top
 * when L is not NULL. */
int cg_read_net(lua_State *L, handle *h, net_fig *n);
/* Whether the cgroup is frozen (docker pause): v1's freezer.state FROZEN or
 * FREEZING, v2's cgroup.freeze 1. ENOENT: no freezer to ask. */
int cg_read_frozen(handle *h, int *frozen);

#endif
