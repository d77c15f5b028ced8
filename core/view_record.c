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

static void set_int(lua_State *L, const char *k, int ok, int64_t v) {
  if (ok)
    lua_pushinteger(L, (lua_Integer)v);
  else
    hx_json_push_null(L);
  lua_setfield(L, -2, k);
}

static void set_float(lua_State *L, const char *k, int ok, double v) {
  if (ok)
    lua_pushnumber(L, (lua_Number)v);
  else
    hx_json_push_null(L);
  lua_setfield(L, -2, k);
}

/* Network and block I/O: 0 when not read, null when refused. */
static void set_sum(lua_State *L, checked *c, const view_figs *f, unsigned bit,
                    uint64_t v, int r) {
  int64_t n = 0;
  int ok = counter(c, f, bit, v, r, &n);
  set_int(L, names[r], ok || !(f->have & bit), n);
}

/* record.memory: used, limit and percent of the figures; the working set
 * (the same used), the cgroup's own usage and limit (none at or above the
 * host's memory). */
static void set_memory(lua_State *L, checked *c, const view_figs *f) {
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
  set_int(L, "memory_usage_bytes", has_usage, usage);
  set_int(L, "memory_limit_bytes", has_usage && has_limit, limit);
  set_float(L, "memory_percent", has_pct, pct);
  set_int(L, "memory_working_set_bytes", has_usage, usage);
  set_int(L, "memory_cgroup_usage_bytes", has_usage, raw);
  set_int(L, "memory_cgroup_limit_bytes", own_limit, raw_limit);
}

/* A counter field named names[r]: its value, or null (refused or not
 * read). Returns whether it was set to a value; *out gets it. */
static int set_counter(lua_State *L, checked *c, const view_figs *f,
                       unsigned bit, uint64_t v, int r, int64_t *out) {
  int64_t n = 0;
  int ok = counter(c, f, bit, v, r, &n);
  set_int(L, names[r], ok, n);
  if (out)
    *out = n;
  return ok;
}

/* A limit whose absence is known (bit none): null then, as when unknown.
 * Returns 1 when the value was set, -1 when known to be none, 0 else. */
static int set_limit(lua_State *L, checked *c, const view_figs *f, unsigned bit,
                     unsigned none, uint64_t v, int r, int64_t *out) {
  if (set_counter(L, c, f, bit, v, r, out))
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
static void set_cpu_more(lua_State *L, checked *c, const view_figs *f) {
  int64_t q = 0, period = 0, cpuset = 0, cpus = 0;
  double cores = 0;
  set_counter(L, c, f, VF_SPLIT, f->user_ns, R_USER, NULL);
  set_counter(L, c, f, VF_SPLIT, f->system_ns, R_SYSTEM, NULL);
  set_counter(L, c, f, VF_THROTTLE, f->periods, R_PERIODS, NULL);
  set_counter(L, c, f, VF_THROTTLE, f->throttled, R_THROTTLED, NULL);
  set_counter(L, c, f, VF_THROTTLE, f->throttled_ns, R_THROTTLED_NS, NULL);
  int has_period =
      set_counter(L, c, f, VF_PERIOD, f->period_us, R_PERIOD, &period);
  int has_cpuset =
      set_counter(L, c, f, VF_CPUSET, f->cpuset, R_CPUSET, &cpuset);
  int quota =
      set_limit(L, c, f, VF_QUOTA, VF_NOQUOTA, f->quota_us, R_QUOTA, &q);
  int has_cpus = counter(c, f, VF_CPUS, f->online_cpus, R_CPUS, &cpus);
  int has = cpu_limit(quota, q, has_period, period, has_cpuset, cpuset,
                      has_cpus, cpus, &cores);
  int has_pct = (f->have & VF_PCT) && f->pct >= 0 && f->pct < HUGE_VAL;
  set_float(L, "cpu_limit_cores", has, cores);
  set_float(L, "cpu_limit_percent", has && cores > 0 && has_pct,
            has && cores > 0 ? f->pct / cores : 0);
}

/* Pushes v as a counter of field r: null (and r refused) past INT64_MAX. */
static void push_counter(lua_State *L, checked *c, uint64_t v, int r) {
  if (v > (uint64_t)INT64_MAX) {
    c->refused[r] = 1;
    hx_json_push_null(L);
  } else {
    lua_pushinteger(L, (lua_Integer)v);
  }
}

/* An array of counters (cpu_percpu_ns), null when there is none. */
static void set_percpu(lua_State *L, checked *c, const view_figs *f) {
  if (f->npercpu <= 0) {
    hx_json_push_null(L);
  } else {
    lua_createtable(L, f->npercpu, 0);
    for (int i = 0; i < f->npercpu; i++) {
      push_counter(L, c, f->percpu[i], R_PERCPU);
      lua_rawseti(L, -2, i + 1);
    }
    hx_json_push_array_mt(L);
    lua_setmetatable(L, -2);
  }
  lua_setfield(L, -2, "cpu_percpu_ns");
}

/* networks = {name = {rx_bytes, ...}}, null when not read. */
static void set_networks(lua_State *L, checked *c, const view_figs *f) {
  if (!(f->have & VF_NET)) {
    hx_json_push_null(L);
  } else {
    lua_createtable(L, 0, f->nifs);
    for (int i = 0; i < f->nifs; i++) {
      lua_createtable(L, 0, NI_N);
      for (int j = 0; j < NI_N; j++) {
        push_counter(L, c, f->ifs[i].v[j], R_NETWORKS);
        lua_setfield(L, -2, cgp_iface_names[j]);
      }
      lua_setfield(L, -2, f->ifs[i].name);
    }
  }
  lua_setfield(L, -2, "networks");
}

/* block_devices = {["8:0"] = {read_bytes, write_bytes}}, null when not
 * read. */
static void set_devices(lua_State *L, checked *c, const view_figs *f) {
  if (!(f->have & VF_BLK)) {
    hx_json_push_null(L);
  } else {
    lua_createtable(L, 0, f->ndevs);
    for (int i = 0; i < f->ndevs; i++) {
      lua_pushfstring(L, "%d:%d", (int)f->devs[i].major, (int)f->devs[i].minor);
      lua_createtable(L, 0, 2);
      push_counter(L, c, f->devs[i].read, R_DEVICES);
      lua_setfield(L, -2, "read_bytes");
      push_counter(L, c, f->devs[i].write, R_DEVICES);
      lua_setfield(L, -2, "write_bytes");
      lua_rawset(L, -3);
    }
  }
  lua_setfield(L, -2, "block_devices");
}

static void push_psi_line(lua_State *L, checked *c, const psi_line *l,
                          const char *k) {
  static const char *const avg[3] = {"avg10", "avg60", "avg300"};
  if (!l->ok)
    return;
  lua_createtable(L, 0, 4);
  for (int i = 0; i < 3; i++) {
    lua_pushnumber(L, (lua_Number)l->avg[i]);
    lua_setfield(L, -2, avg[i]);
  }
  push_counter(L, c, l->total, R_PRESSURE);
  lua_setfield(L, -2, "total_us");
  lua_setfield(L, -2, k);
}

/* pressure = {cpu = {some =, full =}, memory =, io =}, null when none. */
static void set_pressure(lua_State *L, checked *c, const view_figs *f) {
  int any = 0;
  for (int i = 0; i < PSI_N; i++)
    any |= (f->have & VF_PSI_BIT(i)) != 0;
  if (!any) {
    hx_json_push_null(L);
  } else {
    lua_createtable(L, 0, PSI_N);
    for (int i = 0; i < PSI_N; i++) {
      if (!(f->have & VF_PSI_BIT(i)))
        continue;
      lua_createtable(L, 0, 2);
      push_psi_line(L, c, &f->psi[i].some, "some");
      push_psi_line(L, c, &f->psi[i].full, "full");
      lua_setfield(L, -2, cg_psi_names[i]);
    }
  }
  lua_setfield(L, -2, "pressure");
}

/* "2026-11-30T08:33:31.123456789Z", as horcrux.time.format writes it. */
static void push_rfc3339(lua_State *L, int64_t ns) {
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
  lua_pushstring(L, buf);
}

/* The figures beside docker's, in record.lua's order of refusal. */
static void set_more(lua_State *L, checked *c, const view_figs *f) {
  set_cpu_more(L, c, f);
  set_counter(L, c, f, VF_RSS, f->rss, R_RSS, NULL);
  set_counter(L, c, f, VF_CACHE, f->cache, R_CACHE, NULL);
  set_counter(L, c, f, VF_OOM, f->oom, R_OOM, NULL);
  set_counter(L, c, f, VF_PROCS, f->procs, R_PROCS, NULL);
  set_limit(L, c, f, VF_PIDSMAX, VF_NOPIDSMAX, f->pids_max, R_PIDS_LIMIT, NULL);
  set_percpu(L, c, f);
  set_pressure(L, c, f);
  set_networks(L, c, f);
  set_devices(L, c, f);
  if (f->have & VF_STARTED)
    push_rfc3339(L, f->started_ns);
  else
    hx_json_push_null(L);
  lua_setfield(L, -2, "started");
}

static void set_refused(lua_State *L, const checked *c) {
  int n = 0;
  for (int r = 0; r < R_N; r++)
    if (c->refused[r]) {
      if (n == 0)
        lua_createtable(L, 2, 0);
      lua_pushstring(L, names[r]);
      lua_rawseti(L, -2, ++n);
    }
  if (n == 0)
    return;
  hx_json_push_array_mt(L);
  lua_setmetatable(L, -2);
  lua_setfield(L, -2, "refused");
}

void view_push_record(lua_State *L, const view_figs *f) {
  checked c = {{0}};
  int64_t v = 0;
  lua_createtable(L, 0, 40);
  set_float(L, "cpu_usage_percent",
            (f->have & VF_PCT) && f->pct >= 0 && f->pct < HUGE_VAL, f->pct);
  set_memory(L, &c, f);
  set_sum(L, &c, f, VF_NET, f->net_rx, R_NET_RX);
  set_sum(L, &c, f, VF_NET, f->net_tx, R_NET_TX);
  set_sum(L, &c, f, VF_BLK, f->blk_read, R_BLK_READ);
  set_sum(L, &c, f, VF_BLK, f->blk_write, R_BLK_WRITE);
  int ok = counter(&c, f, VF_PIDS, f->pids, R_PIDS, &v);
  set_int(L, "pids", ok, v);
  ok = counter(&c, f, VF_CPU, f->cpu_ns, R_CPU_NS, &v);
  set_int(L, "cpu_usage_ns", ok, v);
  ok = counter(&c, f, VF_CPUS, f->online_cpus, R_CPUS, &v);
  set_int(L, "online_cpus", ok, v);
  push_rfc3339(L, f->read_ns);
  lua_setfield(L, -2, "read");
  lua_pushliteral(L, "cgroup");
  lua_setfield(L, -2, "source");
  set_more(L, &c, f);
  set_refused(L, &c);
}
