/*
 * view_record.c - the stats record of figures view.sample() stored (a
 * view_figs), built by the rules of lua/horcrux/record.lua so a record
 * reads the same whichever path made it:
 *
 *   * a figure not read is json.null, never a made-up 0 -- except network
 *     and block I/O, 0 when not read (no network, no I/O list);
 *   * a counter that is not a non-negative 64-bit integer (the kernel
 *     prints unsigned 64-bit values; above 2^63-1 is no Lua integer) is
 *     refused: null in the record and its name listed in `refused`;
 *   * memory used = usage - inactive file pages when that is below usage,
 *     the limit capped at host memory (no limit: host memory, as the daemon
 *     reports it), memory % = used / limit * 100;
 *   * cpu_usage_percent is the float the CPU store gave, or null;
 *   * read is the wall clock of the CPU read in RFC 3339 with ns.
 */
#include "jsonconv.h"
#include "view_private.h"

#include <math.h>
#include <stdio.h>
#include <time.h>

/* The record's counter fields, in record.lua's order of refusal. */
enum {
  R_MEM_USAGE,
  R_MEM_LIMIT,
  R_NET_RX,
  R_NET_TX,
  R_BLK_READ,
  R_BLK_WRITE,
  R_PIDS,
  R_CPU_NS,
  R_CPUS,
  R_USER,
  R_SYSTEM,
  R_PERIODS,
  R_THROTTLED,
  R_THROTTLED_NS,
  R_PERIOD,
  R_CPUSET,
  R_RSS,
  R_CACHE,
  R_OOM,
  R_PROCS,
  R_QUOTA,
  R_PIDS_LIMIT,
  R_PERCPU,
  R_PRESSURE,
  R_NETWORKS,
  R_DEVICES,
  R_N
};

static const char *const names[R_N] = {"memory_usage_bytes",
                                       "memory_limit_bytes",
                                       "network_rx_bytes",
                                       "network_tx_bytes",
                                       "block_read_bytes",
                                       "block_write_bytes",
                                       "pids",
                                       "cpu_usage_ns",
                                       "online_cpus",
                                       "cpu_user_ns",
                                       "cpu_system_ns",
                                       "cpu_periods",
                                       "cpu_throttled_periods",
                                       "cpu_throttled_ns",
                                       "cpu_period_us",
                                       "cpuset_cpus",
                                       "memory_rss_bytes",
                                       "memory_cache_bytes",
                                       "memory_oom_events",
                                       "processes",
                                       "cpu_quota_us",
                                       "pids_limit",
                                       "cpu_percpu_ns",
                                       "pressure",
                                       "networks",
                                       "block_devices"};

/* A counter as record.counter takes it: has it, and it fits an int64. */
typedef struct checked {
  int refused[R_N];
} checked;

/* *out = v when the figure was read and fits; refuses field r otherwise. */
static int counter(checked *c, const view_figs *f, unsigned bit, uint64_t v,
                   int r, int64_t *out) {
  if (!(f->have & bit))
    return 0;
  if (v > (uint64_t)INT64_MAX) {
    c->refused[r] = 1;
    return 0;
  }
  *out = (int64_t)v;
  return 1;
}

static void set_int(view_out *o, const char *k, int ok, int64_t v) {
  o->num(o, k, ok ? VO_INT : VO_NULL, v, 0);
}

static void set_float(view_out *o, const char *k, int ok, double v) {
  o->num(o, k, ok ? VO_FLOAT : VO_NULL, 0, v);
}

static void set_null(view_out *o, const char *k) {
  o->num(o, k, VO_NULL, 0, 0);
}

/* Network and block I/O: 0 when not read, null when refused. */
static void set_sum(view_out *o, checked *c, const view_figs *f, unsigned bit,
                    uint64_t v, int r) {
  int64_t n = 0;
  int ok = counter(c, f, bit, v, r, &n);
  set_int(o, names[r], ok || !(f->have & bit), n);
}

/* record.memory: used, limit and percent of the figures; the working set
 * (the same used), the cgroup's own usage and limit (none at or above the
 * host's memory). */
static void set_memory(view_out *o, checked *c, const view_figs *f) {
  int64_t usage = 0, inactive = 0, limit = 0, host = 0;
  int has_usage = counter(c, f, VF_USAGE, f->usage, R_MEM_USAGE, &usage);
  int has_inactive =
      counter(c, f, VF_INACTIVE, f->inactive, R_MEM_USAGE, &inactive);
  int has_limit = counter(c, f, VF_LIMIT, f->limit, R_MEM_LIMIT, &limit);
  int has_host = counter(c, f, VF_HOSTMEM, f->host_memory, R_MEM_LIMIT, &host);
  int has_pct = 0, own_limit = has_usage && has_limit;
  int64_t raw = usage, raw_limit = limit;
  double pct = 0;
  if (own_limit && has_host && limit >= host)
    own_limit = 0;
  if (has_usage) {
    if (has_inactive && inactive < usage)
      usage -= inactive;
    if (has_host && (!has_limit || limit > host)) {
      limit = host;
      has_limit = 1;
    }
    if (has_limit && limit > 0) {
      pct = (double)usage / (double)limit * 100.0;
      has_pct = 1;
    }
  }
  set_int(o, "memory_usage_bytes", has_usage, usage);
  set_int(o, "memory_limit_bytes", has_usage && has_limit, limit);
  set_float(o, "memory_percent", has_pct, pct);
  set_int(o, "memory_working_set_bytes", has_usage, usage);
  set_int(o, "memory_cgroup_usage_bytes", has_usage, raw);
  set_int(o, "memory_cgroup_limit_bytes", own_limit, raw_limit);
}

/* A counter field named names[r]: its value, or null (refused or not
 * read). Returns whether it was set to a value; *out gets it. */
static int set_counter(view_out *o, checked *c, const view_figs *f,
                       unsigned bit, uint64_t v, int r, int64_t *out) {
  int64_t n = 0;
  int ok = counter(c, f, bit, v, r, &n);
  set_int(o, names[r], ok, n);
  if (out)
    *out = n;
  return ok;
}

/* A limit whose absence is known (bit none): null then, as when unknown.
 * Returns 1 when the value was set, -1 when known to be none, 0 else. */
static int set_limit(view_out *o, checked *c, const view_figs *f, unsigned bit,
                     unsigned none, uint64_t v, int r, int64_t *out) {
  if (set_counter(o, c, f, bit, v, r, out))
    return 1;
  return (f->have & none) && !(f->have & bit) ? -1 : 0;
}

/* record.cpu_limit: the least of quota / period, the cpuset's CPUs and
 * the online CPUs, when the quota or the cpuset is known. */
static int cpu_limit(int quota, int64_t q, int has_period, int64_t period,
                     int has_cpuset, int64_t cpuset, int has_cpus, int64_t cpus,
                     double *out) {
  int has = has_cpus;
  double lim = (double)cpus;
  if (quota == 0 && !has_cpuset)
    return 0;
  if (quota > 0 && has_period && period > 0) {
    double v = (double)q / (double)period;
    if (!has || v < lim)
      lim = v, has = 1;
  }
  if (has_cpuset && (!has || (double)cpuset < lim))
    lim = (double)cpuset, has = 1;
  *out = lim;
  return has;
}

/* The CPU figures beside docker's, and the limit. */
static void set_cpu_more(view_out *o, checked *c, const view_figs *f) {
  int64_t q = 0, period = 0, cpuset = 0, cpus = 0;
  double cores = 0;
  set_counter(o, c, f, VF_SPLIT, f->user_ns, R_USER, NULL);
  set_counter(o, c, f, VF_SPLIT, f->system_ns, R_SYSTEM, NULL);
  set_counter(o, c, f, VF_THROTTLE, f->periods, R_PERIODS, NULL);
  set_counter(o, c, f, VF_THROTTLE, f->throttled, R_THROTTLED, NULL);
  set_counter(o, c, f, VF_THROTTLE, f->throttled_ns, R_THROTTLED_NS, NULL);
  int has_period =
      set_counter(o, c, f, VF_PERIOD, f->period_us, R_PERIOD, &period);
  int has_cpuset =
      set_counter(o, c, f, VF_CPUSET, f->cpuset, R_CPUSET, &cpuset);
  int quota =
      set_limit(o, c, f, VF_QUOTA, VF_NOQUOTA, f->quota_us, R_QUOTA, &q);
  int has_cpus = counter(c, f, VF_CPUS, f->online_cpus, R_CPUS, &cpus);
  int has = cpu_limit(quota, q, has_period, period, has_cpuset, cpuset,
                      has_cpus, cpus, &cores);
  int has_pct = (f->have & VF_PCT) && f->pct >= 0 && f->pct < HUGE_VAL;
  set_float(o, "cpu_limit_cores", has, cores);
  set_float(o, "cpu_limit_percent", has && cores > 0 && has_pct,
            has && cores > 0 ? f->pct / cores : 0);
}

/* v as a counter of field r under key k: null (and r refused) past
 * INT64_MAX. */
static void put_counter(view_out *o, const char *k, checked *c, uint64_t v,
                        int r) {
  int ok = v <= (uint64_t)INT64_MAX;
  if (!ok)
    c->refused[r] = 1;
  set_int(o, k, ok, ok ? (int64_t)v : 0);
}

/* An array of counters (cpu_percpu_ns), null when there is none. */
static void set_percpu(view_out *o, checked *c, const view_figs *f) {
  if (f->npercpu <= 0) {
    set_null(o, "cpu_percpu_ns");
    return;
  }
  o->open(o, "cpu_percpu_ns", 1, f->npercpu);
  for (int i = 0; i < f->npercpu; i++)
    put_counter(o, NULL, c, f->percpu[i], R_PERCPU);
  o->close(o, 1);
}

/* networks = {name = {rx_bytes, ...}}, null when not read. */
static void set_networks(view_out *o, checked *c, const view_figs *f) {
  if (!(f->have & VF_NET)) {
    set_null(o, "networks");
    return;
  }
  o->open(o, "networks", 0, f->nifs);
  for (int i = 0; i < f->nifs; i++) {
    o->open(o, f->ifs[i].name, 0, NI_N);
    for (int j = 0; j < NI_N; j++)
      put_counter(o, cgp_iface_names[j], c, f->ifs[i].v[j], R_NETWORKS);
    o->close(o, 0);
  }
  o->close(o, 0);
}

/* block_devices = {["8:0"] = {read_bytes, write_bytes}}, null when not
 * read. */
static void set_devices(view_out *o, checked *c, const view_figs *f) {
  if (!(f->have & VF_BLK)) {
    set_null(o, "block_devices");
    return;
  }
  o->open(o, "block_devices", 0, f->ndevs);
  for (int i = 0; i < f->ndevs; i++) {
    char key[32];
    snprintf(key, sizeof key, "%d:%d", (int)f->devs[i].major,
             (int)f->devs[i].minor);
    o->open(o, key, 0, 2);
    put_counter(o, "read_bytes", c, f->devs[i].read, R_DEVICES);
    put_counter(o, "write_bytes", c, f->devs[i].write, R_DEVICES);
    o->close(o, 0);
  }
  o->close(o, 0);
}

static void put_psi_line(view_out *o, checked *c, const psi_line *l,
                         const char *k) {
  static const char *const avg[3] = {"avg10", "avg60", "avg300"};
  if (!l->ok)
    return;
  o->open(o, k, 0, 4);
  for (int i = 0; i < 3; i++)
    set_float(o, avg[i], 1, l->avg[i]);
  put_counter(o, "total_us", c, l->total, R_PRESSURE);
  o->close(o, 0);
}

/* pressure = {cpu = {some =, full =}, memory =, io =}, null when none. */
static void set_pressure(view_out *o, checked *c, const view_figs *f) {
  int any = 0;
  for (int i = 0; i < PSI_N; i++)
    any |= (f->have & VF_PSI_BIT(i)) != 0;
  if (!any) {
    set_null(o, "pressure");
    return;
  }
  o->open(o, "pressure", 0, PSI_N);
  for (int i = 0; i < PSI_N; i++) {
    if (!(f->have & VF_PSI_BIT(i)))
      continue;
    o->open(o, cg_psi_names[i], 0, 2);
    put_psi_line(o, c, &f->psi[i].some, "some");
    put_psi_line(o, c, &f->psi[i].full, "full");
    o->close(o, 0);
  }
  o->close(o, 0);
}

/* "2026-11-30T08:33:31.123456789Z", as horcrux.time.format writes it. */
static void set_rfc3339(view_out *o, const char *k, int64_t ns) {
  char buf[64];
  struct tm tm;
  time_t secs = (time_t)(ns / 1000000000);
  long frac = (long)(ns % 1000000000);
  if (frac < 0) {
    frac += 1000000000;
    secs--;
  }
  gmtime_r(&secs, &tm);
  size_t n = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf + n, sizeof buf - n, ".%09ldZ", frac);
  o->str(o, k, buf);
}

/* The figures beside docker's, in record.lua's order of refusal. */
static void set_more(view_out *o, checked *c, const view_figs *f) {
  set_cpu_more(o, c, f);
  set_counter(o, c, f, VF_RSS, f->rss, R_RSS, NULL);
  set_counter(o, c, f, VF_CACHE, f->cache, R_CACHE, NULL);
  set_counter(o, c, f, VF_OOM, f->oom, R_OOM, NULL);
  set_counter(o, c, f, VF_PROCS, f->procs, R_PROCS, NULL);
  set_limit(o, c, f, VF_PIDSMAX, VF_NOPIDSMAX, f->pids_max, R_PIDS_LIMIT, NULL);
  set_percpu(o, c, f);
  set_pressure(o, c, f);
  set_networks(o, c, f);
  set_devices(o, c, f);
  if (f->have & VF_STARTED)
    set_rfc3339(o, "started", f->started_ns);
  else
    set_null(o, "started");
}

static void set_refused(view_out *o, const checked *c) {
  int n = 0;
  for (int r = 0; r < R_N; r++)
    if (c->refused[r]) {
      if (n++ == 0)
        o->open(o, "refused", 1, 2);
      o->str(o, NULL, names[r]);
    }
  if (n > 0)
    o->close(o, 1);
}

void view_emit_record(view_out *o, const view_figs *f) {
  checked c = {{0}};
  int64_t v = 0;
  set_float(o, "cpu_usage_percent",
            (f->have & VF_PCT) && f->pct >= 0 && f->pct < HUGE_VAL, f->pct);
  set_memory(o, &c, f);
  set_sum(o, &c, f, VF_NET, f->net_rx, R_NET_RX);
  set_sum(o, &c, f, VF_NET, f->net_tx, R_NET_TX);
  set_sum(o, &c, f, VF_BLK, f->blk_read, R_BLK_READ);
  set_sum(o, &c, f, VF_BLK, f->blk_write, R_BLK_WRITE);
  int ok = counter(&c, f, VF_PIDS, f->pids, R_PIDS, &v);
  set_int(o, "pids", ok, v);
  ok = counter(&c, f, VF_CPU, f->cpu_ns, R_CPU_NS, &v);
  set_int(o, "cpu_usage_ns", ok, v);
  ok = counter(&c, f, VF_CPUS, f->online_cpus, R_CPUS, &v);
  set_int(o, "online_cpus", ok, v);
  set_rfc3339(o, "read", f->read_ns);
  o->str(o, "source", "cgroup");
  set_more(o, &c, f);
  set_refused(o, &c);
}

/* ---- the record as a Lua table */

typedef struct lt_out {
  view_out o;
  lua_State *L;
  int depth;
  lua_Integer n[VIEW_MAX_DEPTH + 1]; /* items of each open array */
} lt_out;

/* The value on top of the stack into the table below it: under k, or as
 * the next item of an array. */
static void lt_set(lt_out *u, const char *k) {
  if (k)
    lua_setfield(u->L, -2, k);
  else
    lua_rawseti(u->L, -2, ++u->n[u->depth]);
}

static void lt_num(view_out *o, const char *k, int kind, int64_t i, double d) {
  lt_out *u = (lt_out *)o;
  if (kind == VO_INT)
    lua_pushinteger(u->L, (lua_Integer)i);
  else if (kind == VO_FLOAT)
    lua_pushnumber(u->L, (lua_Number)d);
  else
    hx_json_push_null(u->L);
  lt_set(u, k);
}

static void lt_str(view_out *o, const char *k, const char *s) {
  lt_out *u = (lt_out *)o;
  lua_pushstring(u->L, s);
  lt_set(u, k);
}

/* A table under k (its key pushed first: k may not outlive the call), or
 * the next item of an array when k is NULL. */
static void lt_open(view_out *o, const char *k, int array, int hint) {
  lt_out *u = (lt_out *)o;
  if (k)
    lua_pushstring(u->L, k);
  else
    lua_pushinteger(u->L, ++u->n[u->depth]);
  lua_createtable(u->L, array ? hint : 0, array ? 0 : hint);
  u->n[++u->depth] = 0;
}

static void lt_close(view_out *o, int array) {
  lt_out *u = (lt_out *)o;
  if (array) {
    hx_json_push_array_mt(u->L);
    lua_setmetatable(u->L, -2);
  }
  u->depth--;
  lua_rawset(u->L, -3);
}

void view_push_record(lua_State *L, const view_figs *f) {
  lt_out u = {{lt_num, lt_str, lt_open, lt_close}, L, 0, {0}};
  luaL_checkstack(L, 2 * VIEW_MAX_DEPTH + 4, "view record");
  lua_createtable(L, 0, 40);
  view_emit_record(&u.o, f);
}
