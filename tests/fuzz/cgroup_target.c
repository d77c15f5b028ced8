/*
 * cgroup_target.c - libFuzzer target "cgroup": the parsers of
 * core/cgroup_parse.c on any bytes.
 *
 * The input is handed over as libFuzzer gives it (a buffer of exactly its
 * size, no NUL after it), so ASan sees a read past the end. Every parser
 * runs once with a Lua state (its table form) and once without, and the two
 * runs must agree. Plus differential checks of the number scanners against
 * libc and of the tick conversion against 128-bit arithmetic; the PSI,
 * cpu.max, per-CPU list, cgroup.procs, btime and pid start parsers (first
 * byte 7, 8, 9) for their bounds and agreement. A failed
 * check prints what differs and aborts, so libFuzzer keeps the input.
 */
#include "cgroup_parse.h"

#include <errno.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static lua_State *L;

#define CHECK(cond, ...)                                                       \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "\nfuzz cgroup: invariant: " __VA_ARGS__);               \
      fprintf(stderr, "\n");                                                   \
      abort();                                                                 \
    }                                                                          \
  } while (0)

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  L = luaL_newstate();
  if (L == NULL)
    abort();
  return 0;
}

/* strtoull on a copy: what a strict decimal scan must agree with. */
static void check_scan(const char *s, size_t n) {
  uint64_t v = 0;
  int ok = cgp_scan_u64(s, n, &v), digits = n > 0;
  char buf[32];
  for (size_t i = 0; i < n; i++)
    digits = digits && s[i] >= '0' && s[i] <= '9';
  if (!digits || n >= sizeof buf) {
    CHECK(!ok || digits, "scan_u64 took a non-digit");
    return;
  }
  memcpy(buf, s, n);
  buf[n] = '\0';
  errno = 0;
  unsigned long long ref = strtoull(buf, NULL, 10);
  CHECK(ok == (errno != ERANGE), "scan_u64 ok=%d on \"%s\"", ok, buf);
  CHECK(!ok || v == ref, "scan_u64 \"%s\" = %llu, strtoull %llu", buf,
        (unsigned long long)v, ref);
  num m;
  CHECK(cgp_scan_num(s, n, &m) == ok, "scan_num and scan_u64 disagree");
  if (ok)
    CHECK(m.big ? m.u == v : (uint64_t)m.i == v, "scan_num value");
}

static void check_ticks(const uint8_t *d, size_t n) {
  uint64_t ticks = 0, hz = 0, ns;
  if (n < 10)
    return;
  memcpy(&ticks, d, 8);
  hz = (uint64_t)d[8] << 8 | d[9];
  if (hz == 0)
    return;
  unsigned __int128 ref = (unsigned __int128)ticks * 1000000000u / hz;
  int ok = cgp_ticks_to_ns(ticks, hz, &ns);
  CHECK(ok == (ref <= UINT64_MAX), "ticks_to_ns ok=%d", ok);
  CHECK(!ok || ns == (uint64_t)ref, "ticks_to_ns %llu/%llu = %llu",
        (unsigned long long)ticks, (unsigned long long)hz,
        (unsigned long long)ns);
}

static void check_flat(const char *s, size_t n) {
  static const char *const keys[] = {"usage_usec", "cache", "rss", "total_rss",
                                     "nr_throttled"};
  num vals[5], got = {0};
  int found[5], found_want = 0;
  lua_newtable(L);
  int count = cgp_fill_flat(L, lua_gettop(L), s, n, "rss", &got, &found_want);
  CHECK(count == cgp_fill_flat(NULL, 0, s, n, NULL, NULL, NULL),
        "fill_flat counts differ with and without a table");
  cgp_find_flat(s, n, keys, 5, vals, found);
  CHECK(found[2] == found_want, "find_flat and fill_flat disagree on rss");
  num one = {0};
  CHECK(cgp_find_key(s, n, "rss", &one) == found_want,
        "find_key and fill_flat disagree on rss");
  CHECK(!found_want || (one.big == got.big && one.i == got.i && one.u == got.u),
        "find_key and fill_flat found other values of rss");
  for (int i = 0; i < 5; i++) {
    int t = lua_getfield(L, -1, keys[i]);
    CHECK((t != LUA_TNIL) == (found[i] != 0), "%s: table %d, find_flat %d",
          keys[i], t, found[i]);
    if (found[i] && !vals[i].big)
      CHECK(lua_isinteger(L, -1) && lua_tointeger(L, -1) == vals[i].i,
            "%s: the table and find_flat differ", keys[i]);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

static void check_io(const char *s, size_t n) {
  io_sum a, b;
  lua_newtable(L);
  cgp_parse_blkio_v1(L, s, n, &a);
  cgp_parse_blkio_v1(NULL, s, n, &b);
  CHECK(memcmp(&a, &b, sizeof a) == 0, "blkio_v1 differs with a table");
  cgp_parse_io_v2(L, s, n, &a);
  cgp_parse_io_v2(NULL, s, n, &b);
  CHECK(memcmp(&a, &b, sizeof a) == 0, "io_v2 differs with a table");
  lua_pop(L, 1);
}

static void check_net(const char *s, size_t n) {
  net_sum a, b;
  lua_newtable(L);
  cgp_parse_net_dev(L, s, n, &a);
  cgp_parse_net_dev(NULL, s, n, &b);
  CHECK(memcmp(&a, &b, sizeof a) == 0, "net_dev differs with a table");
  lua_pop(L, 1);
}

static void check_meminfo(const char *s, size_t n) {
  uint64_t a = 0, b = 0;
  lua_newtable(L);
  int fa = cgp_parse_meminfo(L, s, n, "MemTotal", &a);
  int fb = cgp_parse_meminfo(NULL, s, n, "MemTotal", &b);
  CHECK(fa == fb && (!fa || a == b), "meminfo differs with a table");
  int t = lua_getfield(L, -1, "MemTotal");
  CHECK((t != LUA_TNIL) == (fa != 0), "meminfo: table and want disagree");
  lua_pop(L, 2);
}

static void check_misc(const char *s, size_t n) {
  num v;
  int r = cgp_parse_single(s, n, &v);
  CHECK(r >= 0 && r <= 2, "parse_single returned %d", r);
  stat_cpu st;
  if (cgp_parse_stat_cpu(s, n, &st)) {
    uint64_t sum = 0;
    CHECK(st.n >= 7 && st.n <= 10, "stat_cpu n=%d", st.n);
    for (int i = 0; i < 7; i++)
      sum += st.v[i];
    CHECK(sum == st.ticks, "stat_cpu ticks");
  }
  uint64_t cpus = cgp_parse_cpu_list(s, n);
  CHECK(cpus < (uint64_t)1 << 24, "cpu_list %llu", (unsigned long long)cpus);
  CHECK(cgp_first_pid(s, n) >= 0, "first_pid negative");
  CHECK(cgp_pid_at(s, n, 0) == cgp_first_pid(s, n), "pid_at 0 != first_pid");
  int count = cgp_count_pids(s, n);
  CHECK(cgp_pid_at(s, n, count) == 0, "pid_at past the count");
  CHECK(count == 0 || cgp_pid_at(s, n, count - 1) > 0, "pid_at the last");
  int init = cgp_status_ns_init(s, n);
  CHECK(init == 0 || init == 1, "status_ns_init returned %d", init);
}

/* A *.pressure file: the table form and the C form agree, and a line
 * said to be well formed has its four figures, none negative. */
static void check_pressure(const char *s, size_t n) {
  psi_fig a, b;
  lua_newtable(L);
  int ra = cgp_parse_pressure(L, s, n, &a);
  int rb = cgp_parse_pressure(NULL, s, n, &b);
  CHECK(ra == rb && memcmp(&a, &b, sizeof a) == 0,
        "pressure differs with a table");
  CHECK(ra == (a.some.ok || a.full.ok), "pressure result");
  const psi_line *l[2] = {&a.some, &a.full};
  static const char *const k[2] = {"some", "full"};
  for (int i = 0; i < 2; i++) {
    int t = lua_getfield(L, -1, k[i]);
    CHECK((t == LUA_TTABLE) == (ra && l[i]->ok), "pressure: %s table", k[i]);
    for (int j = 0; l[i]->ok && j < 3; j++)
      CHECK(l[i]->avg[j] >= 0, "pressure: a negative average");
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* cpu.max and the per-CPU list: a result within its bounds, a list of
 * numbers agreeing with the blank-separated fields. */
static void check_limits(const char *s, size_t n) {
  int unlimited = -1;
  uint64_t quota = 1, period = 0, v[8];
  if (cgp_parse_cpu_max(s, n, &unlimited, &quota, &period))
    CHECK(period > 0 && (unlimited == 1 || unlimited == 0) &&
              (!unlimited || quota == 0),
          "cpu_max: period %llu", (unsigned long long)period);
  int count = cgp_parse_u64_list(s, n, v, 8);
  CHECK(count >= -1 && count <= 8, "u64_list count %d", count);
  int words = 0; /* the fields, as the parser separates them */
  for (size_t i = 0; i < n; i++) {
    int sep = cgp_is_blank(s[i]) || s[i] == '\n';
    int prev = i == 0 || cgp_is_blank(s[i - 1]) || s[i - 1] == '\n';
    words += !sep && prev;
  }
  CHECK(count < 0 || count == words, "u64_list %d of %d words", count, words);
}

/* cgroup.procs, /proc/stat's btime, /proc/<pid>/stat's start time. */
static void check_proc(const char *s, size_t n) {
  uint64_t t = 0;
  int lines = 1;
  for (size_t i = 0; i < n; i++)
    lines += s[i] == '\n';
  int c = cgp_count_pids(s, n);
  CHECK(c >= 0 && c <= lines, "count_pids %d of %d lines", c, lines);
  (void)cgp_parse_btime(s, n, &t);
  (void)cgp_parse_pid_start(s, n, &t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0)
    return 0;
  /* The first byte picks the parser, so the corpus keeps inputs per format;
   * the rest is the file, exactly sized. */
  const char *s = (const char *)data + 1;
  size_t n = size - 1;
  switch (data[0] % 10) {
  case 0:
    check_scan(s, n);
    break;
  case 1:
    check_ticks(data + 1, n);
    break;
  case 2:
    check_flat(s, n);
    break;
  case 3:
    check_io(s, n);
    break;
  case 4:
    check_net(s, n);
    break;
  case 5:
    check_meminfo(s, n);
    break;
  case 7:
    check_pressure(s, n);
    break;
  case 8:
    check_limits(s, n);
    break;
  case 9:
    check_proc(s, n);
    break;
  default:
    check_misc(s, n);
    break;
  }
  lua_settop(L, 0);
  return 0;
}
