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
                                       "online_cpus"};

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

/* record.memory: used, limit and percent of the figures. */
static void set_memory(lua_State *L, checked *c, const view_figs *f) {
  int64_t usage = 0, inactive = 0, limit = 0, host = 0;
  int has_usage = counter(c, f, VF_USAGE, f->usage, R_MEM_USAGE, &usage);
  int has_inactive =
      counter(c, f, VF_INACTIVE, f->inactive, R_MEM_USAGE, &inactive);
  int has_limit = counter(c, f, VF_LIMIT, f->limit, R_MEM_LIMIT, &limit);
  int has_host = counter(c, f, VF_HOSTMEM, f->host_memory, R_MEM_LIMIT, &host);
  int has_pct = 0;
  double pct = 0;
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
  lua_createtable(L, 0, 18);
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
  set_refused(L, &c);
}
