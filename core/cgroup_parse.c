/* cgroup_parse.c - the parsers behind horcrux.cgroup (see cgroup_parse.h). */
#include "cgroup_parse.h"

#include <limits.h>
#include <string.h>
#include <strings.h>

/* ---------------------------------------------------------------- numbers */

/* Strict decimal: digits only, no sign, no blanks, no overflow. */
int cgp_scan_u64(const char *s, size_t n, uint64_t *out) {
  uint64_t v = 0;
  if (n == 0)
    return 0;
  for (size_t k = 0; k < n; k++) {
    unsigned d = (unsigned)((unsigned char)s[k] - '0');
    if (d > 9 || v > (UINT64_MAX - d) / 10)
      return 0;
    v = v * 10 + d;
  }
  *out = v;
  return 1;
}

int cgp_scan_num(const char *s, size_t n, num *out) {
  uint64_t m;
  if (n > 0 && s[0] == '-') {
    if (!cgp_scan_u64(s + 1, n - 1, &m) || m > (uint64_t)INT64_MAX + 1)
      return 0;
    out->big = 0;
    out->i = m == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)m;
    out->u = 0;
    return 1;
  }
  if (!cgp_scan_u64(s, n, &m))
    return 0;
  out->big = m > (uint64_t)INT64_MAX;
  out->i = out->big ? 0 : (int64_t)m;
  out->u = m;
  return 1;
}

void cgp_push_u64(lua_State *L, uint64_t v) {
  if (v <= (uint64_t)LUA_MAXINTEGER)
    lua_pushinteger(L, (lua_Integer)v);
  else
    lua_pushnumber(L, (lua_Number)v);
}

void cgp_push_num(lua_State *L, const num *v) {
  if (v->big)
    lua_pushnumber(L, (lua_Number)v->u);
  else
    lua_pushinteger(L, (lua_Integer)v->i);
}

/* Whether a value can stand for a size or a count (not negative). */
int cgp_num_unsigned(const num *v, uint64_t *out) {
  if (!v->big && v->i < 0)
    return 0;
  *out = v->big ? v->u : (uint64_t)v->i;
  return 1;
}

void cgp_add_sat(uint64_t *acc, uint64_t v) {
  if (__builtin_add_overflow(*acc, v, acc))
    *acc = UINT64_MAX;
}

/* floor(ticks * 1e9 / hz) without overflowing; 0 when it does not fit. */
int cgp_ticks_to_ns(uint64_t ticks, uint64_t hz, uint64_t *ns) {
  const uint64_t G = 1000000000u;
  uint64_t q = ticks / hz, r = ticks % hz, hi, lo;
  if (__builtin_mul_overflow(q, G, &hi))
    return 0;
  /* r < hz, and hz is a tick rate (100, 250, 1000...), so r * G fits. */
  if (hz > UINT64_MAX / G)
    return 0;
  lo = r * G / hz;
  return !__builtin_add_overflow(hi, lo, ns);
}

/* ---------------------------------------------------------------- tokens */

int cgp_is_blank(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* Next line of [*p, end): [*ls, *le) without its '\n'. */
int cgp_next_line(const char **p, const char *end, const char **ls,
                  const char **le) {
  const char *nl;
  if (*p >= end)
    return 0;
  nl = memchr(*p, '\n', (size_t)(end - *p));
  *ls = *p;
  *le = nl ? nl : end;
  *p = nl ? nl + 1 : end;
  return 1;
}

/* Next blank-separated field of [*p, end). */
int cgp_next_field(const char **p, const char *end, const char **f, size_t *n) {
  const char *s = *p, *e;
  while (s < end && cgp_is_blank(*s))
    s++;
  if (s == end) {
    *p = s;
    return 0;
  }
  for (e = s; e < end && !cgp_is_blank(*e); e++)
    ;
  *f = s;
  *n = (size_t)(e - s);
  *p = e;
  return 1;
}

int cgp_field_is(const char *f, size_t n, const char *lit) {
  return strlen(lit) == n && memcmp(f, lit, n) == 0;
}

int cgp_field_is_ci(const char *f, size_t n, const char *lit) {
  return strlen(lit) == n && strncasecmp(f, lit, n) == 0;
}

/* "major:minor", both decimal. */
int cgp_is_device(const char *f, size_t n) {
  const char *c = memchr(f, ':', n);
  uint64_t a, b;
  return c && cgp_scan_u64(f, (size_t)(c - f), &a) &&
         cgp_scan_u64(c + 1, n - (size_t)(c - f) - 1, &b);
}

/* The entry of device "major:minor" (checked by cgp_is_device) in out's
 * list, added when new; NULL when the list is full or the numbers do not
 * fit 32 bits (out->devs_more says a device was left out). */
static io_dev *dev_slot(io_sum *out, const char *f, size_t n) {
  const char *c = memchr(f, ':', n);
  uint64_t a = 0, b = 0;
  cgp_scan_u64(f, (size_t)(c - f), &a);
  cgp_scan_u64(c + 1, n - (size_t)(c - f) - 1, &b);
  for (int i = 0; i < out->ndevs; i++)
    if (out->devs[i].major == a && out->devs[i].minor == b)
      return &out->devs[i];
  if (out->ndevs == CGP_MAX_DEVS || a > UINT32_MAX || b > UINT32_MAX) {
    out->devs_more = 1;
    return NULL;
  }
  io_dev *d = &out->devs[out->ndevs++];
  d->major = (uint32_t)a;
  d->minor = (uint32_t)b;
  return d;
}

/* ---------------------------------------------------------------- parsers
 * Each works on a buffer and a length (no NUL needed) and either fills a
 * Lua table or a C struct; stats() uses the C side, parse.* the Lua side. */

/* The next well-formed "key value" line of [*p, end) (the value a
 * number); lines of another shape are skipped. 0 at the end. */
static int next_pair(const char **p, const char *end, const char **k,
                     size_t *kn, num *val) {
  const char *ls, *le, *v, *x;
  size_t vn, xn;
  while (cgp_next_line(p, end, &ls, &le))
    if (cgp_next_field(&ls, le, k, kn) && cgp_next_field(&ls, le, &v, &vn) &&
        !cgp_next_field(&ls, le, &x, &xn) && cgp_scan_num(v, vn, val))
      return 1;
  return 0;
}

/* "key value" lines (memory.stat, cpu.stat) into the table at t (absolute
 * index). Lines with another shape or a value that is not a number are
 * skipped. When want is set, its value is also stored in *got. Returns the
 * number of keys set; *found says whether want was seen. */
int cgp_fill_flat(lua_State *L, int t, const char *s, size_t n,
                  const char *want, num *got, int *found) {
  const char *p = s, *end = s + n, *k;
  size_t kn;
  num val;
  int count = 0;
  if (found)
    *found = 0;
  while (next_pair(&p, end, &k, &kn, &val)) {
    if (L) {
      lua_pushlstring(L, k, kn);
      cgp_push_num(L, &val);
      lua_rawset(L, t);
    }
    if (want && cgp_field_is(k, kn, want)) {
      *got = val;
      *found = 1;
    }
    count++;
  }
  return count;
}

/* The value of key in "key value" lines as cgp_fill_flat's `want` finds it
 * (the last well-formed line with that key), parsing only the lines that
 * start with it: the readers without a table need one key of memory.stat's
 * thirty-odd. Returns whether it was found. */
int cgp_find_key(const char *s, size_t n, const char *key, num *out) {
  const char *p = s, *end = s + n, *ls, *le, *k;
  size_t kn = strlen(key), got;
  num v;
  int found = 0;
  while (cgp_next_line(&p, end, &ls, &le)) {
    const char *q = ls;
    while (q < le && cgp_is_blank(*q))
      q++;
    if ((size_t)(le - q) <= kn || memcmp(q, key, kn) != 0 ||
        !cgp_is_blank(q[kn]))
      continue;
    if (next_pair(&ls, le, &k, &got, &v) && got == kn) {
      *out = v;
      found = 1;
    }
  }
  return found;
}

/* Looks up several keys of "key value" lines in one pass; found[i] says
 * whether keys[i] was seen (with a number). */
void cgp_find_flat(const char *s, size_t n, const char *const keys[], int nkeys,
                   num vals[], int found[]) {
  const char *p = s, *end = s + n, *k;
  size_t kn;
  num val;
  for (int i = 0; i < nkeys; i++)
    found[i] = 0;
  while (next_pair(&p, end, &k, &kn, &val))
    for (int i = 0; i < nkeys; i++)
      if (cgp_field_is(k, kn, keys[i])) {
        vals[i] = val;
        found[i] = 1;
      }
}

/* v1 blkio.*io_service_bytes*: sums Read and Write over devices; skips the
 * per-device Total, the closing "Total N" line and anything malformed. When
 * L is set, the table on top gets devices["8:0"] = {Read=, Write=, ...}. */
void cgp_parse_blkio_v1(lua_State *L, const char *s, size_t n, io_sum *out) {
  const char *p = s, *end = s + n, *ls, *le;
  memset(out, 0, sizeof *out);
  while (cgp_next_line(&p, end, &ls, &le)) {
    const char *dev, *op, *v, *x;
    size_t devn, opn, vn, xn;
    uint64_t val;
    if (!cgp_next_field(&ls, le, &dev, &devn) || !cgp_is_device(dev, devn) ||
        !cgp_next_field(&ls, le, &op, &opn) ||
        !cgp_next_field(&ls, le, &v, &vn) || cgp_next_field(&ls, le, &x, &xn) ||
        !cgp_scan_u64(v, vn, &val))
      continue;
    out->entries++;
    if (cgp_field_is_ci(op, opn, "read") || cgp_field_is_ci(op, opn, "write")) {
      int rd = cgp_field_is_ci(op, opn, "read");
      io_dev *d = dev_slot(out, dev, devn);
      cgp_add_sat(rd ? &out->read : &out->write, val);
      if (d)
        cgp_add_sat(rd ? &d->read : &d->write, val);
    }
    if (L) {
      lua_pushlstring(L, dev, devn);
      if (lua_rawget(L, -2) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushlstring(L, dev, devn);
        lua_pushvalue(L, -2);
        lua_rawset(L, -4);
      }
      lua_pushlstring(L, op, opn);
      cgp_push_u64(L, val);
      lua_rawset(L, -3);
      lua_pop(L, 1);
    }
  }
}

/* v2 io.stat: "8:0 rbytes=1 wbytes=2 rios=3 ..."; sums rbytes and wbytes.
 * Unknown keys are kept in the detail table, malformed pairs skipped. */
void cgp_parse_io_v2(lua_State *L, const char *s, size_t n, io_sum *out) {
  const char *p = s, *end = s + n, *ls, *le;
  memset(out, 0, sizeof *out);
  while (cgp_next_line(&p, end, &ls, &le)) {
    const char *dev, *f;
    size_t devn, fn;
    int any = 0;
    io_dev *d = NULL;
    if (!cgp_next_field(&ls, le, &dev, &devn) || !cgp_is_device(dev, devn))
      continue;
    if (L) {
      lua_newtable(L);
      lua_pushlstring(L, dev, devn);
      lua_pushvalue(L, -2);
      lua_rawset(L, -4);
    }
    while (cgp_next_field(&ls, le, &f, &fn)) {
      const char *eq = memchr(f, '=', fn);
      uint64_t val;
      size_t kn;
      if (!eq || eq == f ||
          !cgp_scan_u64(eq + 1, fn - (size_t)(eq - f) - 1, &val))
        continue;
      kn = (size_t)(eq - f);
      any = 1;
      if (cgp_field_is(f, kn, "rbytes") || cgp_field_is(f, kn, "wbytes")) {
        int rd = cgp_field_is(f, kn, "rbytes");
        if (d == NULL)
          d = dev_slot(out, dev, devn);
        cgp_add_sat(rd ? &out->read : &out->write, val);
        if (d)
          cgp_add_sat(rd ? &d->read : &d->write, val);
      }
      if (L) {
        lua_pushlstring(L, f, kn);
        cgp_push_u64(L, val);
        lua_rawset(L, -3);
      }
    }
    out->entries += any;
    if (L)
      lua_pop(L, 1);
  }
}

const char *const cgp_iface_names[NI_N] = {
    "rx_bytes", "rx_packets", "rx_errors", "rx_dropped",
    "tx_bytes", "tx_packets", "tx_errors", "tx_dropped"};

/* Where net/dev's 16 columns put the Engine API's eight counters. */
static const int iface_cols[NI_N] = {0, 1, 2, 3, 8, 9, 10, 11};

/* Keeps an interface's counters in out's list (lo is left to the caller). */
static void keep_iface(net_sum *out, const char *name, size_t namen,
                       const uint64_t v[16]) {
  if (out->nifs == CGP_MAX_IFACES || namen >= CGP_IFNAME) {
    out->ifs_more = 1;
    return;
  }
  net_iface *f = &out->ifs[out->nifs++];
  memcpy(f->name, name, namen);
  for (int i = 0; i < NI_N; i++)
    f->v[i] = v[iface_cols[i]];
}

/* /proc/<pid>/net/dev: the 16 counters of each interface. */
static const char *const netdev_names[16] = {
    "rx_bytes", "rx_packets", "rx_errs",       "rx_drop",
    "rx_fifo",  "rx_frame",   "rx_compressed", "rx_multicast",
    "tx_bytes", "tx_packets", "tx_errs",       "tx_drop",
    "tx_fifo",  "tx_colls",   "tx_carrier",    "tx_compressed"};

/* Sums rx/tx bytes over interfaces except lo. A line without "name:" (the
 * two headers), with fewer than 9 counters or with a counter that is not an
 * unsigned number is skipped. When L is set, the table on top gets
 * interfaces[name] = {rx_bytes=, ...} (lo included, marked by name). */
void cgp_parse_net_dev(lua_State *L, const char *s, size_t n, net_sum *out) {
  const char *p = s, *end = s + n, *ls, *le;
  memset(out, 0, sizeof *out);
  while (cgp_next_line(&p, end, &ls, &le)) {
    const char *colon = memchr(ls, ':', (size_t)(le - ls)), *name, *f;
    size_t namen, fn;
    uint64_t v[16];
    int k = 0, bad = 0;
    if (!colon)
      continue;
    {
      const char *c = ls, *x;
      size_t xn;
      /* One name before the colon: "  eth0:" (a blank inside is garbage). */
      if (!cgp_next_field(&c, colon, &name, &namen) ||
          cgp_next_field(&c, colon, &x, &xn))
        continue;
    }
    ls = colon + 1;
    while (cgp_next_field(&ls, le, &f, &fn)) {
      if (k == 16)
        break;
      if (!cgp_scan_u64(f, fn, &v[k])) {
        bad = 1;
        break;
      }
      k++;
    }
    if (bad || k < 9)
      continue;
    for (int i = k; i < 16; i++)
      v[i] = 0;
    if (!cgp_field_is(name, namen, "lo")) {
      cgp_add_sat(&out->rx, v[0]);
      cgp_add_sat(&out->tx, v[8]);
      out->interfaces++;
      keep_iface(out, name, namen, v);
    }
    if (L) {
      lua_pushlstring(L, name, namen);
      lua_createtable(L, 0, k);
      for (int i = 0; i < k; i++) {
        cgp_push_u64(L, v[i]);
        lua_setfield(L, -2, netdev_names[i]);
      }
      lua_rawset(L, -3);
    }
  }
}

/* A file holding one value: a number or "max", blanks and newlines around
 * it. Returns 1 (number), 2 (max) or 0 (empty, garbage, two values). */
int cgp_parse_single(const char *s, size_t n, num *out) {
  const char *b = s, *e = s + n;
  while (b < e && (cgp_is_blank(*b) || *b == '\n'))
    b++;
  while (e > b && (cgp_is_blank(e[-1]) || e[-1] == '\n'))
    e--;
  if (b == e)
    return 0;
  for (const char *q = b; q < e; q++)
    if (cgp_is_blank(*q) || *q == '\n')
      return 0;
  if (cgp_field_is(b, (size_t)(e - b), "max"))
    return 2;
  return cgp_scan_num(b, (size_t)(e - b), out) ? 1 : 0;
}

/* The fields of the "cpu " line of /proc/stat, in order. */
const char *const cgp_stat_names[10] = {
    "user", "nice",    "system", "idle",  "iowait",
    "irq",  "softirq", "steal",  "guest", "guest_nice"};

/* As the docker daemon does (getSystemCPUUsage): the first seven fields of
 * the aggregate "cpu" line; fewer than seven or a bad one is an error. */
int cgp_parse_stat_cpu(const char *s, size_t len, stat_cpu *out) {
  const char *p = s, *end = s + len, *ls, *le, *f;
  size_t fn;
  while (cgp_next_line(&p, end, &ls, &le)) {
    if (!cgp_next_field(&ls, le, &f, &fn) || !cgp_field_is(f, fn, "cpu"))
      continue;
    out->n = 0;
    out->ticks = 0;
    while (out->n < 10 && cgp_next_field(&ls, le, &f, &fn)) {
      if (!cgp_scan_u64(f, fn, &out->v[out->n]))
        break;
      out->n++;
    }
    if (out->n < 7)
      return 0;
    for (int i = 0; i < 7; i++)
      if (__builtin_add_overflow(out->ticks, out->v[i], &out->ticks))
        return 0;
    return 1;
  }
  return 0;
}

/* /proc/meminfo: "Key:   123 kB" lines; values in bytes. When want is set,
 * stores that key's value in *got and returns whether it was found. */
int cgp_parse_meminfo(lua_State *L, const char *s, size_t len, const char *want,
                      uint64_t *got) {
  const char *p = s, *end = s + len, *ls, *le, *v, *u, *x;
  size_t vn, un, xn;
  int found = 0;
  while (cgp_next_line(&p, end, &ls, &le)) {
    const char *colon = memchr(ls, ':', (size_t)(le - ls)), *k;
    size_t kn;
    uint64_t val;
    if (!colon)
      continue;
    {
      const char *c = ls;
      if (!cgp_next_field(&c, colon, &k, &kn) || k + kn != colon)
        continue;
    }
    ls = colon + 1;
    if (!cgp_next_field(&ls, le, &v, &vn) || !cgp_scan_u64(v, vn, &val))
      continue;
    if (cgp_next_field(&ls, le, &u, &un)) {
      if (!cgp_field_is(u, un, "kB") || cgp_next_field(&ls, le, &x, &xn) ||
          __builtin_mul_overflow(val, (uint64_t)1024, &val))
        continue;
    }
    if (L) {
      lua_pushlstring(L, k, kn);
      cgp_push_u64(L, val);
      lua_rawset(L, -3);
    }
    if (want && cgp_field_is(k, kn, want)) {
      *got = val;
      found = 1;
    }
  }
  return found;
}

/* A CPU list ("0-3,6,8-9\n"): how many CPUs; 0 when malformed. */
uint64_t cgp_parse_cpu_list(const char *s, size_t len) {
  const char *p = s, *end = s + len;
  uint64_t count = 0;
  while (p < end && cgp_is_blank(*p))
    p++;
  while (end > p && (cgp_is_blank(end[-1]) || end[-1] == '\n'))
    end--;
  if (p == end)
    return 0;
  while (p < end) {
    const char *comma = memchr(p, ',', (size_t)(end - p)), *e, *dash;
    uint64_t a, b;
    e = comma ? comma : end;
    dash = memchr(p, '-', (size_t)(e - p));
    if (dash) {
      if (!cgp_scan_u64(p, (size_t)(dash - p), &a) ||
          !cgp_scan_u64(dash + 1, (size_t)(e - dash - 1), &b) || b < a ||
          b - a >= (uint64_t)1 << 24)
        return 0;
      count += b - a + 1;
    } else {
      if (!cgp_scan_u64(p, (size_t)(e - p), &a))
        return 0;
      count++;
    }
    if (count >= (uint64_t)1 << 24)
      return 0;
    p = comma ? comma + 1 : end;
  }
  return count;
}

/* cgroup.procs: the first pid, or 0. */
int cgp_first_pid(const char *s, size_t len) {
  const char *p = s, *end = s + len, *ls, *le, *f;
  size_t fn;
  uint64_t v;
  while (cgp_next_line(&p, end, &ls, &le))
    if (cgp_next_field(&ls, le, &f, &fn) && cgp_scan_u64(f, fn, &v) && v > 0 &&
        v <= INT_MAX)
      return (int)v;
  return 0;
}

/* cgroup.procs: the pid of its i-th line that is one (from 0), or 0. */
int cgp_pid_at(const char *s, size_t len, int i) {
  const char *p = s, *end = s + len, *ls, *le, *f;
  size_t fn;
  uint64_t v;
  while (cgp_next_line(&p, end, &ls, &le))
    if (cgp_next_field(&ls, le, &f, &fn) && cgp_scan_u64(f, fn, &v) && v > 0 &&
        v <= INT_MAX && i-- == 0)
      return (int)v;
  return 0;
}

/* /proc/<pid>/status: 1 when its NSpid line ends with 1 (the process is
 * its pid namespace's init), else 0. */
int cgp_status_ns_init(const char *s, size_t len) {
  const char *p = s, *end = s + len, *ls, *le, *f, *last = NULL;
  size_t fn, lastn = 0;
  while (cgp_next_line(&p, end, &ls, &le)) {
    if (!cgp_next_field(&ls, le, &f, &fn) || !cgp_field_is(f, fn, "NSpid:"))
      continue;
    while (cgp_next_field(&ls, le, &f, &fn))
      last = f, lastn = fn;
    return last != NULL && cgp_field_is(last, lastn, "1");
  }
  return 0;
}

/* cgroup.procs: how many pids it lists (lines that are not one, skipped). */
int cgp_count_pids(const char *s, size_t len) {
  const char *p = s, *end = s + len, *ls, *le, *f;
  size_t fn;
  uint64_t v;
  int count = 0;
  while (cgp_next_line(&p, end, &ls, &le))
    if (cgp_next_field(&ls, le, &f, &fn) && cgp_scan_u64(f, fn, &v) && v > 0 &&
        v <= INT_MAX)
      count++;
  return count;
}

/* Next field of [*p, end) separated by blanks or newlines. */
static int next_word(const char **p, const char *end, const char **f,
                     size_t *n) {
  const char *s = *p, *e;
  while (s < end && (cgp_is_blank(*s) || *s == '\n'))
    s++;
  if (s == end) {
    *p = s;
    return 0;
  }
  for (e = s; e < end && !cgp_is_blank(*e) && *e != '\n'; e++)
    ;
  *f = s;
  *n = (size_t)(e - s);
  *p = e;
  return 1;
}

/* Unsigned numbers separated by blanks (cpuacct.usage_percpu: one per
 * possible CPU) into out[0..max). Returns how many, or -1 when a field is
 * not a number or there are more than max. */
int cgp_parse_u64_list(const char *s, size_t len, uint64_t *out, int max) {
  const char *p = s, *end = s + len, *f;
  size_t fn;
  int n = 0;
  while (next_word(&p, end, &f, &fn)) {
    if (n == max || !cgp_scan_u64(f, fn, &out[n]))
      return -1;
    n++;
  }
  return n;
}

/* v2 cpu.max: "<quota> <period>", the quota "max" for none; us. Returns 1,
 * or 0 for anything else (a period of 0 included). */
int cgp_parse_cpu_max(const char *s, size_t len, int *unlimited,
                      uint64_t *quota, uint64_t *period) {
  const char *p = s, *end = s + len, *a, *b, *x;
  size_t an, bn, xn;
  if (!next_word(&p, end, &a, &an) || !next_word(&p, end, &b, &bn) ||
      next_word(&p, end, &x, &xn) || !cgp_scan_u64(b, bn, period) ||
      *period == 0)
    return 0;
  *unlimited = cgp_field_is(a, an, "max");
  *quota = 0;
  return *unlimited || cgp_scan_u64(a, an, quota);
}

/* "12.34": digits, optionally a point and digits; the kernel prints the
 * averages of PSI so (%lu.%02lu). */
static int scan_decimal(const char *s, size_t n, double *out) {
  const char *dot = memchr(s, '.', n);
  size_t in = dot ? (size_t)(dot - s) : n, fn = dot ? n - in - 1 : 0;
  uint64_t ip, fp = 0;
  double scale = 1;
  if (!cgp_scan_u64(s, in, &ip) || (dot && !cgp_scan_u64(dot + 1, fn, &fp)) ||
      fn > 18)
    return 0;
  for (size_t i = 0; i < fn; i++)
    scale *= 10;
  *out = (double)ip + (double)fp / scale;
  return 1;
}

static const char *const psi_keys[4] = {"avg10", "avg60", "avg300", "total"};

/* One line's "avg10=0.14 avg60=0.03 avg300=0.00 total=20513" after its
 * first word; ok only when all four are there and well formed. */
static void parse_psi_line(const char *ls, const char *le, psi_line *out) {
  const char *f;
  size_t fn;
  int seen = 0;
  memset(out, 0, sizeof *out);
  while (cgp_next_field(&ls, le, &f, &fn)) {
    const char *eq = memchr(f, '=', fn);
    size_t kn = eq ? (size_t)(eq - f) : fn, vn = eq ? fn - kn - 1 : 0;
    int k = 0;
    while (k < 4 && !(eq && cgp_field_is(f, kn, psi_keys[k])))
      k++;
    if (k == 4 || (seen & 1 << k))
      return;
    if (k == 3 ? !cgp_scan_u64(eq + 1, vn, &out->total)
               : !scan_decimal(eq + 1, vn, &out->avg[k]))
      return;
    seen |= 1 << k;
  }
  out->ok = seen == 15;
}

static void push_psi_line(lua_State *L, const psi_line *l, const char *k) {
  lua_createtable(L, 0, 4);
  for (int i = 0; i < 3; i++) {
    lua_pushnumber(L, (lua_Number)l->avg[i]);
    lua_setfield(L, -2, psi_keys[i]);
  }
  cgp_push_u64(L, l->total);
  lua_setfield(L, -2, psi_keys[3]);
  lua_setfield(L, -2, k);
}

/* A *.pressure file: a "some" line and (cpu before 5.13 excepted) a "full"
 * one. Returns whether a line was well formed; when L is set, the table on
 * top gets some = {avg10=, avg60=, avg300=, total=} and full = {...}. */
int cgp_parse_pressure(lua_State *L, const char *s, size_t len, psi_fig *out) {
  const char *p = s, *end = s + len, *ls, *le, *f;
  size_t fn;
  memset(out, 0, sizeof *out);
  while (cgp_next_line(&p, end, &ls, &le)) {
    psi_line *l;
    if (!cgp_next_field(&ls, le, &f, &fn))
      continue;
    if (cgp_field_is(f, fn, "some"))
      l = &out->some;
    else if (cgp_field_is(f, fn, "full"))
      l = &out->full;
    else
      continue;
    parse_psi_line(ls, le, l);
  }
  if (L && out->some.ok)
    push_psi_line(L, &out->some, "some");
  if (L && out->full.ok)
    push_psi_line(L, &out->full, "full");
  return out->some.ok || out->full.ok;
}

/* /proc/stat's "btime <seconds>": the boot time. Returns whether found. */
int cgp_parse_btime(const char *s, size_t len, uint64_t *out) {
  const char *p = s, *end = s + len, *ls, *le, *f, *x;
  size_t fn, xn;
  while (cgp_next_line(&p, end, &ls, &le))
    if (cgp_next_field(&ls, le, &f, &fn) && cgp_field_is(f, fn, "btime"))
      return cgp_next_field(&ls, le, &f, &fn) && cgp_scan_u64(f, fn, out) &&
             !cgp_next_field(&ls, le, &x, &xn);
  return 0;
}

/* /proc/<pid>/stat: "pid (comm) state ppid ..."; the 22nd field, the start
 * time in ticks after boot. The command may hold blanks and parentheses:
 * the fields start after the last ')'. Returns whether it was read. */
int cgp_parse_pid_start(const char *s, size_t len, uint64_t *ticks) {
  const char *close = NULL, *p, *end = s + len, *f;
  size_t fn;
  for (const char *q = s; q < end; q++)
    if (*q == ')')
      close = q;
  if (close == NULL)
    return 0;
  p = close + 1;
  for (int field = 3; next_word(&p, end, &f, &fn); field++)
    if (field == 22)
      return cgp_scan_u64(f, fn, ticks);
  return 0;
}
