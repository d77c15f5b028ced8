/*
 * view_prom.c - view.prometheus([opts]): the live view in the Prometheus
 * text format, under cAdvisor's names, types, units and labels
 * (google/cadvisor metrics/prometheus.go), so its dashboards and alert
 * rules work unchanged.
 *
 *   opts.openmetrics  true: OpenMetrics 1.0 (a counter's family is named
 *                     without _total; the caller ends the text with # EOF)
 *   opts.now          wall clock seconds for container_last_seen (default
 *                     now)
 *
 * Labels, as cAdvisor's DefaultContainerLabels: id ("/docker/<full id>"),
 * name, image, and container_label_<key> for each of the container's
 * labels, the key sanitized as cAdvisor does (every byte outside
 * [a-zA-Z0-9_] becomes "_"; of two keys that sanitize alike, the first in
 * byte order is kept). cAdvisor gives every series the union of all
 * containers' label names, empty where a container has none; an empty
 * label is no label to Prometheus, so this gives each container its own.
 *
 * Every figure comes from the record the view holds (view_record.c or a
 * source's record.lua) and its meta; one a record does not have (null) is
 * left out, never 0. cAdvisor's conditions are kept: the CFS figures and
 * container_spec_cpu_quota only for a container with a quota;
 * container_spec_memory_limit_bytes is 0 without a limit.
 *
 * Cost: the records are built once (as view.all() does), their figures
 * copied into C rows, and the text written family by family into one
 * buffer: no Lua string per line.
 */
#define _GNU_SOURCE /* timegm */
#include "aux.h"
#include "jsonconv.h"
#include "view_private.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- a growable buffer, freed by __gc (a Lua error never leaks it) */

typedef struct sbuf {
  char *p;
  size_t n, cap;
  int oom;
} sbuf;

static int sbuf_gc(lua_State *L) {
  sbuf *b = lua_touserdata(L, 1);
  free(b->p);
  b->p = NULL;
  return 0;
}

static sbuf *sbuf_new(lua_State *L) {
  sbuf *b = lua_newuserdatauv(L, sizeof *b, 0);
  memset(b, 0, sizeof *b);
  if (luaL_newmetatable(L, "horcrux.view.sbuf")) {
    lua_pushcfunction(L, sbuf_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  return b;
}

static void put(sbuf *b, const char *s, size_t n) {
  if (b->oom)
    return;
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->n + n + 1)
      cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL) {
      b->oom = 1;
      return;
    }
    b->p = p, b->cap = cap;
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
}

static void puts_(sbuf *b, const char *s) { put(b, s, strlen(s)); }

/* A label value: \, " and newline escaped. */
static void put_escaped(sbuf *b, const char *s, size_t n) {
  size_t from = 0;
  for (size_t i = 0; i < n; i++) {
    const char *esc = s[i] == '\\'   ? "\\\\"
                      : s[i] == '"'  ? "\\\""
                      : s[i] == '\n' ? "\\n"
                                     : NULL;
    if (esc) {
      put(b, s + from, i - from);
      puts_(b, esc);
      from = i + 1;
    }
  }
  put(b, s + from, n - from);
}

/* A value as Prometheus reads it: integers exactly, else the shortest. */
static void put_value(sbuf *b, double v) {
  char num[40];
  int n;
  if (v == floor(v) && fabs(v) < 9007199254740992.0)
    n = snprintf(num, sizeof num, "%.0f", v);
  else
    n = hx_shortest(num, sizeof num, v);
  put(b, num, (size_t)n);
}

/* ---- the figures of a container */

enum {
  V_CPU,
  V_USER,
  V_SYSTEM,
  V_PERIODS,
  V_THROTTLED,
  V_THROTTLED_S,
  V_MEM_USAGE,
  V_WORKING_SET,
  V_RSS,
  V_CACHE,
  V_MEM_LIMIT,
  V_QUOTA,
  V_PERIOD,
  V_PROCESSES,
  V_THREADS,
  V_OOM,
  V_START,
  V_PSI, /* cpu some, cpu full, memory some, ... io full: 6 */
  V_N = V_PSI + 6
};

#define MAX_ITEMS 8 /* interfaces, devices */
enum { IT_NET, IT_DEV };

typedef struct row {
  size_t labels, labels_n; /* in the label pool */
  unsigned long long have;
  double v[V_N];
  int nitems[2];
  char item[2][MAX_ITEMS][24]; /* interface names, "major:minor" */
  double itemv[2][MAX_ITEMS][8];
} row;

/* t[k] as a number; 0 when it is not one (null, absent). */
static int num_at(lua_State *L, int t, const char *k, double *out) {
  int ok = lua_getfield(L, t, k) == LUA_TNUMBER;
  if (ok)
    *out = lua_tonumber(L, -1);
  lua_pop(L, 1);
  return ok;
}

/* t[k] / div as figure i (ns / 1e9 is exact where ns * 1e-9 is not). */
static void take(lua_State *L, int t, row *r, const char *k, int i,
                 double div) {
  double v;
  if (num_at(L, t, k, &v) && v >= 0) {
    r->v[i] = v / div;
    r->have |= 1ull << i;
  }
}

/* "2026-11-30T08:33:31.123Z" (any fraction) -> seconds; 0 when not one. */
static int parse_time(const char *s, double *out) {
  struct tm tm;
  double frac = 0;
  memset(&tm, 0, sizeof tm);
  const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
  if (p == NULL)
    return 0;
  if (*p == '.') {
    double scale = 0.1;
    for (p++; *p >= '0' && *p <= '9'; p++, scale /= 10)
      frac += (*p - '0') * scale;
  }
  if (*p != 'Z')
    return 0;
  time_t t = timegm(&tm);
  if (t <= 0)
    return 0;
  *out = (double)t + frac;
  return 1;
}

/* t[k], RFC 3339 or seconds since the epoch (the list's Created), as the
 * start time unless one is known already. */
static void take_time(lua_State *L, int t, row *r, const char *k) {
  double v = 0;
  int type;
  if (r->have & 1ull << V_START)
    return;
  type = lua_getfield(L, t, k);
  if ((type == LUA_TSTRING && parse_time(lua_tostring(L, -1), &v)) ||
      (type == LUA_TNUMBER && (v = lua_tonumber(L, -1)) > 0))
    r->v[V_START] = v, r->have |= 1ull << V_START;
  lua_pop(L, 1);
}

/* pressure.<res>.<line>.total_us of the record at t. */
static void take_psi(lua_State *L, int t, row *r) {
  static const char *const res[3] = {"cpu", "memory", "io"};
  static const char *const line[2] = {"some", "full"};
  if (lua_getfield(L, t, "pressure") == LUA_TTABLE)
    for (int i = 0; i < 3; i++) {
      if (lua_getfield(L, -1, res[i]) == LUA_TTABLE)
        for (int j = 0; j < 2; j++) {
          if (lua_getfield(L, -1, line[j]) == LUA_TTABLE)
            take(L, lua_gettop(L), r, "total_us", V_PSI + i * 2 + j, 1e6);
          lua_pop(L, 1);
        }
      lua_pop(L, 1);
    }
  lua_pop(L, 1);
}

/* The items of a {name = {k = counter}} table (networks, block_devices). */
static int take_items(lua_State *L, int t, const char *field,
                      const char *const *keys, int nkeys, char (*names)[24],
                      double (*v)[8]) {
  int n = 0;
  if (lua_getfield(L, t, field) == LUA_TTABLE) {
    lua_pushnil(L);
    while (n < MAX_ITEMS && lua_next(L, -2)) {
      size_t len;
      const char *name =
          lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &len) : NULL;
      if (name && len < sizeof names[0] && lua_istable(L, -1)) {
        memcpy(names[n], name, len + 1);
        for (int k = 0; k < nkeys; k++)
          if (!num_at(L, lua_gettop(L), keys[k], &v[n][k]))
            v[n][k] = -1;
        n++;
      }
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  return n;
}

static const char *const if_keys[8] = {"rx_bytes",   "rx_packets", "rx_errors",
                                       "rx_dropped", "tx_bytes",   "tx_packets",
                                       "tx_errors",  "tx_dropped"};
static const char *const dev_keys[2] = {"read_bytes", "write_bytes"};

/* The row of the record at t (its meta at m, or nil). */
static void fill_row(lua_State *L, int t, int m, row *r) {
  memset(r, 0, offsetof(row, item));
  take(L, t, r, "cpu_usage_ns", V_CPU, 1e9);
  take(L, t, r, "cpu_user_ns", V_USER, 1e9);
  take(L, t, r, "cpu_system_ns", V_SYSTEM, 1e9);
  take(L, t, r, "cpu_periods", V_PERIODS, 1);
  take(L, t, r, "cpu_throttled_periods", V_THROTTLED, 1);
  take(L, t, r, "cpu_throttled_ns", V_THROTTLED_S, 1e9);
  take(L, t, r, "memory_cgroup_usage_bytes", V_MEM_USAGE, 1);
  take(L, t, r, "memory_working_set_bytes", V_WORKING_SET, 1);
  take(L, t, r, "memory_rss_bytes", V_RSS, 1);
  take(L, t, r, "memory_cache_bytes", V_CACHE, 1);
  take(L, t, r, "cpu_quota_us", V_QUOTA, 1);
  take(L, t, r, "cpu_period_us", V_PERIOD, 1);
  take(L, t, r, "processes", V_PROCESSES, 1);
  take(L, t, r, "pids", V_THREADS, 1);
  take(L, t, r, "memory_oom_events", V_OOM, 1);
  take_psi(L, t, r);
  /* cAdvisor: 0 when there is none */
  r->have |= 1ull << V_MEM_LIMIT;
  take(L, t, r, "memory_cgroup_limit_bytes", V_MEM_LIMIT, 1);
  if (lua_istable(L, m))
    take_time(L, m, r, "created");
  take_time(L, t, r, "started");
  r->nitems[IT_NET] = take_items(L, t, "networks", if_keys, 8, r->item[IT_NET],
                                 r->itemv[IT_NET]);
  r->nitems[IT_DEV] = take_items(L, t, "block_devices", dev_keys, 2,
                                 r->item[IT_DEV], r->itemv[IT_DEV]);
}

/* ---- labels */

static int label_byte(int c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '_';
}

static int cmp_sanitized(const void *a, const void *b) {
  const char *x = *(const char *const *)a, *y = *(const char *const *)b;
  for (;; x++, y++) {
    int cx = *x && !label_byte((unsigned char)*x) ? '_' : *x;
    int cy = *y && !label_byte((unsigned char)*y) ? '_' : *y;
    if (cx != cy || cx == 0)
      return cx != cy
                 ? cx - cy
                 : strcmp(*(const char *const *)a, *(const char *const *)b);
  }
}

static int same_sanitized(const char *x, const char *y) {
  for (; *x && *y; x++, y++)
    if ((label_byte((unsigned char)*x) ? *x : '_') !=
        (label_byte((unsigned char)*y) ? *y : '_'))
      return 0;
  return *x == *y;
}

static void put_label(sbuf *b, const char *k, const char *v, size_t vn) {
  if (b->n > 0 && b->p[b->n - 1] != '{')
    puts_(b, ",");
  puts_(b, k);
  puts_(b, "=\"");
  put_escaped(b, v, vn);
  puts_(b, "\"");
}

/* container_label_<key>="value" for each of meta.labels (at m), in the
 * order of their sanitized keys. */
static void put_container_labels(lua_State *L, int m, sbuf *b) {
  size_t n = 0, cap = 0;
  if (lua_getfield(L, m, "labels") != LUA_TTABLE) {
    lua_pop(L, 1);
    return;
  }
  int lt = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, lt)) {
    cap += lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING;
    lua_pop(L, 1);
  }
  const char **keys = lua_newuserdatauv(L, (cap ? cap : 1) * sizeof *keys, 0);
  lua_pushnil(L);
  while (lua_next(L, lt)) { /* to the end: lua_next leaves nothing then */
    if (n < cap && lua_type(L, -2) == LUA_TSTRING &&
        lua_type(L, -1) == LUA_TSTRING)
      keys[n++] = lua_tostring(L, -2); /* anchored by the table */
    lua_pop(L, 1);
  }
  qsort(keys, n, sizeof *keys, cmp_sanitized);
  for (size_t i = 0; i < n; i++) {
    if (i > 0 && same_sanitized(keys[i], keys[i - 1]))
      continue;
    size_t vn;
    lua_getfield(L, lt, keys[i]);
    const char *v = lua_tolstring(L, -1, &vn);
    puts_(b, ",container_label_");
    for (const char *k = keys[i]; *k; k++)
      put(b, label_byte((unsigned char)*k) ? k : "_", 1);
    puts_(b, "=\"");
    put_escaped(b, v, vn);
    puts_(b, "\"");
    lua_pop(L, 1);
  }
  lua_pop(L, 2);
}

/* The labels of the record at t and meta at m into the pool. */
static void row_labels(lua_State *L, int t, int m, row *r, sbuf *pool) {
  size_t n;
  const char *s;
  r->labels = pool->n;
  puts_(pool, "{");
  if (lua_getfield(L, t, "id") == LUA_TSTRING) {
    s = lua_tolstring(L, -1, &n);
    puts_(pool, "id=\"/docker/");
    put_escaped(pool, s, n);
    puts_(pool, "\"");
  }
  lua_pop(L, 1);
  if (lua_getfield(L, t, "name") == LUA_TSTRING) {
    s = lua_tolstring(L, -1, &n);
    put_label(pool, "name", s, n);
  }
  lua_pop(L, 1);
  if (lua_istable(L, m)) {
    if (lua_getfield(L, m, "image") == LUA_TSTRING) {
      s = lua_tolstring(L, -1, &n);
      put_label(pool, "image", s, n);
    }
    lua_pop(L, 1);
    put_container_labels(L, m, pool);
  }
  r->labels_n = pool->n - r->labels;
}

/* ---- the families */

typedef struct family {
  const char *name, *help;
  int counter, v;
  int quota_only; /* cAdvisor's condition: a container with a quota */
} family;

static const family families[] = {
    {"container_cpu_user_seconds_total",
     "Cumulative user cpu time consumed in seconds.", 1, V_USER, 0},
    {"container_cpu_system_seconds_total",
     "Cumulative system cpu time consumed in seconds.", 1, V_SYSTEM, 0},
    {"container_cpu_usage_seconds_total",
     "Cumulative cpu time consumed in seconds.", 1, V_CPU, 0},
    {"container_cpu_cfs_periods_total",
     "Number of elapsed enforcement period intervals.", 1, V_PERIODS, 1},
    {"container_cpu_cfs_throttled_periods_total",
     "Number of throttled period intervals.", 1, V_THROTTLED, 1},
    {"container_cpu_cfs_throttled_seconds_total",
     "Total time duration the container has been throttled.", 1, V_THROTTLED_S,
     1},
    {"container_memory_cache", "Number of bytes of page cache memory.", 0,
     V_CACHE, 0},
    {"container_memory_rss", "Size of RSS in bytes.", 0, V_RSS, 0},
    {"container_memory_usage_bytes",
     "Current memory usage in bytes, including all memory regardless of "
     "when it was accessed",
     0, V_MEM_USAGE, 0},
    {"container_memory_working_set_bytes", "Current working set in bytes.", 0,
     V_WORKING_SET, 0},
    {"container_processes", "Number of processes running inside the container.",
     0, V_PROCESSES, 0},
    {"container_threads", "Number of threads running inside the container", 0,
     V_THREADS, 0},
    {"container_oom_events_total",
     "Count of out of memory events observed for the container", 1, V_OOM, 0},
    {"container_pressure_cpu_waiting_seconds_total",
     "Total time duration tasks in the container have waited due to CPU "
     "congestion.",
     1, V_PSI + 0, 0},
    {"container_pressure_cpu_stalled_seconds_total",
     "Total time duration no tasks in the container could make progress "
     "due to CPU congestion.",
     1, V_PSI + 1, 0},
    {"container_pressure_memory_waiting_seconds_total",
     "Total time duration tasks in the container have waited due to memory "
     "congestion.",
     1, V_PSI + 2, 0},
    {"container_pressure_memory_stalled_seconds_total",
     "Total time duration no tasks in the container could make progress "
     "due to memory congestion.",
     1, V_PSI + 3, 0},
    {"container_pressure_io_waiting_seconds_total",
     "Total time duration tasks in the container have waited due to IO "
     "congestion.",
     1, V_PSI + 4, 0},
    {"container_pressure_io_stalled_seconds_total",
     "Total time duration no tasks in the container could make progress "
     "due to IO congestion.",
     1, V_PSI + 5, 0},
    {"container_start_time_seconds",
     "Start time of the container since unix epoch in seconds.", 0, V_START, 0},
    {"container_spec_cpu_period", "CPU period of the container.", 0, V_PERIOD,
     0},
    {"container_spec_cpu_quota", "CPU quota of the container.", 0, V_QUOTA, 1},
    {"container_spec_memory_limit_bytes", "Memory limit for the container.", 0,
     V_MEM_LIMIT, 0},
};

typedef struct item_family {
  const char *name, *help;
  int kind, k; /* IT_*, the counter's index */
} item_family;

static const item_family item_families[] = {
    {"container_network_receive_bytes_total",
     "Cumulative count of bytes received", IT_NET, 0},
    {"container_network_receive_packets_total",
     "Cumulative count of packets received", IT_NET, 1},
    {"container_network_receive_errors_total",
     "Cumulative count of errors encountered while receiving", IT_NET, 2},
    {"container_network_receive_packets_dropped_total",
     "Cumulative count of packets dropped while receiving", IT_NET, 3},
    {"container_network_transmit_bytes_total",
     "Cumulative count of bytes transmitted", IT_NET, 4},
    {"container_network_transmit_packets_total",
     "Cumulative count of packets transmitted", IT_NET, 5},
    {"container_network_transmit_errors_total",
     "Cumulative count of errors encountered while transmitting", IT_NET, 6},
    {"container_network_transmit_packets_dropped_total",
     "Cumulative count of packets dropped while transmitting", IT_NET, 7},
    {"container_fs_reads_bytes_total", "Cumulative count of bytes read", IT_DEV,
     0},
    {"container_fs_writes_bytes_total", "Cumulative count of bytes written",
     IT_DEV, 1},
};

/* # HELP and # TYPE; OpenMetrics names a counter's family without _total. */
static void put_head(sbuf *b, const char *name, const char *help, int counter,
                     int om) {
  size_t n = strlen(name);
  if (om && counter && n > 6 && strcmp(name + n - 6, "_total") == 0)
    n -= 6;
  puts_(b, "# HELP ");
  put(b, name, n);
  puts_(b, " ");
  puts_(b, help);
  puts_(b, "\n# TYPE ");
  put(b, name, n);
  puts_(b, counter ? " counter\n" : " gauge\n");
}

/* name{labels[,extra]} value */
static void put_sample(sbuf *b, const sbuf *pool, const row *r,
                       const char *name, const char *extra, double v) {
  puts_(b, name);
  put(b, pool->p + r->labels, r->labels_n);
  if (extra) {
    if (r->labels_n > 1)
      puts_(b, ",");
    puts_(b, extra);
  }
  puts_(b, "} ");
  put_value(b, v);
  puts_(b, "\n");
}

static int has_quota(const row *r) {
  return (r->have & 1ull << V_QUOTA) && r->v[V_QUOTA] > 0;
}

static void put_families(sbuf *b, const sbuf *pool, const row *rows, size_t n,
                         int om) {
  for (size_t f = 0; f < sizeof families / sizeof *families; f++) {
    const family *fa = &families[f];
    int head = 0;
    for (size_t i = 0; i < n; i++) {
      const row *r = &rows[i];
      if (!(r->have & 1ull << fa->v) || (fa->quota_only && !has_quota(r)))
        continue;
      if (!head++)
        put_head(b, fa->name, fa->help, fa->counter, om);
      put_sample(b, pool, r, fa->name, fa->v == V_CPU ? "cpu=\"total\"" : NULL,
                 r->v[fa->v]);
    }
  }
}

static void put_item_families(sbuf *b, const sbuf *pool, const row *rows,
                              size_t n, int om) {
  char extra[64];
  for (size_t f = 0; f < sizeof item_families / sizeof *item_families; f++) {
    const item_family *fa = &item_families[f];
    int head = 0;
    for (size_t i = 0; i < n; i++)
      for (int j = 0; j < rows[i].nitems[fa->kind]; j++) {
        double v = rows[i].itemv[fa->kind][j][fa->k];
        if (v < 0)
          continue;
        if (!head++)
          put_head(b, fa->name, fa->help, 1, om);
        snprintf(extra, sizeof extra, "%s=\"%s\"",
                 fa->kind == IT_NET ? "interface" : "device",
                 rows[i].item[fa->kind][j]);
        put_sample(b, pool, &rows[i], fa->name, extra, v);
      }
  }
}

static void put_last_seen(sbuf *b, const sbuf *pool, const row *rows, size_t n,
                          double now, int om) {
  if (n == 0)
    return;
  put_head(b, "container_last_seen",
           "Last time a container was seen by the exporter", 0, om);
  for (size_t i = 0; i < n; i++)
    put_sample(b, pool, &rows[i], "container_last_seen", NULL, floor(now));
}

/* Called by view_each for each record (at -2) and meta (at -1). */
typedef struct rows_of {
  lua_State *L;
  row *rows;
  size_t n, cap;
  sbuf *pool;
  int anchor; /* a table on the stack holding the rows' userdata */
} rows_of;

static void add_row(lua_State *L, void *arg) {
  rows_of *ro = arg;
  int top = lua_gettop(L);
  luaL_checkstack(L, 12, "view.prometheus");
  if (ro->n == ro->cap) {
    size_t cap = ro->cap ? ro->cap * 2 : 64;
    row *grown = lua_newuserdatauv(L, cap * sizeof *grown, 0);
    if (ro->n)
      memcpy(grown, ro->rows, ro->n * sizeof *grown);
    lua_rawseti(L, ro->anchor, 1); /* keeps it alive */
    ro->rows = grown, ro->cap = cap;
  }
  int t = lua_gettop(L) - 1, m = t + 1;
  fill_row(L, t, m, &ro->rows[ro->n]);
  row_labels(L, t, m, &ro->rows[ro->n], ro->pool);
  ro->n++;
  lua_settop(L, top);
}

int view_prometheus(lua_State *L) {
  int om = 0;
  double now = (double)hx_real_ns() / 1e9;
  if (lua_istable(L, 1)) {
    om = (lua_getfield(L, 1, "openmetrics"), lua_toboolean(L, -1));
    if (lua_getfield(L, 1, "now") == LUA_TNUMBER)
      now = lua_tonumber(L, -1);
  }
  lua_settop(L, 0);
  sbuf *pool = sbuf_new(L), *out = sbuf_new(L);
  rows_of ro = {L, NULL, 0, 0, pool, 0};
  lua_newtable(L);
  ro.anchor = lua_gettop(L);
  view_each(L, add_row, &ro);
  put_families(out, pool, ro.rows, ro.n, om);
  put_item_families(out, pool, ro.rows, ro.n, om);
  put_last_seen(out, pool, ro.rows, ro.n, now, om);
  if (out->oom || pool->oom)
    return luaL_error(L, "view.prometheus: not enough memory");
  lua_pushlstring(L, out->p ? out->p : "", out->n);
  /* Freed now, not at the state's next collection: at 1,000 containers
   * the two are megabytes that Lua's collector does not see. */
  free(out->p), free(pool->p);
  out->p = NULL, pool->p = NULL;
  lua_pushinteger(L, (lua_Integer)ro.n);
  return 2;
}
