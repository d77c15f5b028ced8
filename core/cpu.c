/*
 * cpu.c - horcrux.cpu: CPU-delta arithmetic and the sample store.
 *
 * A sample is a table {cpu_ns = int, system_ns = int|nil, online_cpus =
 * int|nil, time_ns = int}: the container's cumulative CPU time, the host's
 * cumulative CPU time (all CPUs), the CPUs online, and when the sample was
 * taken (ns since the epoch, the source's own timestamp).
 *
 *   cpu.percent(prev, cur)         -> pct | nil, reason
 *   cpu.observe(id, s [, min_ms])  -> pct, base_age_ms | nil, reason
 *   cpu.latest(id)                 -> newest stored sample | nil
 *   cpu.forget(id)                 -> true if id was stored
 *   cpu.clear()                    -> number of containers dropped
 *   cpu.count()                    -> number of containers stored
 *   cpu.window()                   -> observe's default window (ms)
 *   cpu.set_window(ms)             -> previous window (ms)
 *   cpu.set_limits{max_containers=, idle_ttl_ms=} -> previous limits
 *   cpu.capi                       light userdata: the C API below
 *
 * The C API. Other C modules reach this store through cpu.capi, a light
 * userdata pointing to a static const hx_cpu_capi (core/cpu_capi.h):
 * {version, observe, latest, forget}, the same operations as the Lua
 * functions on C structs, taking the lock themselves and never calling Lua.
 * A module fetches it with require("horcrux.cpu") -- package.preload in the
 * horcrux binary, cpu.so in stock Lua -- so the one loaded copy of this
 * file, and its one store, serves every source; linking cpu.c into another
 * module would give that module a private second store. horcrux.view's
 * sample() fetches it once per call. Check version == HX_CPU_CAPI_VERSION
 * before use; observe returns NULL or a reason word, "memory" when a new
 * id could not be stored and "id" for an id outside 1..128 bytes.
 *
 * Reasons (fixed words): "reset" (a counter went backwards: the container
 * restarted), "clock" (the samples' times do not advance), "range" (the
 * result exceeds what the CPUs can give: the samples are inconsistent),
 * "no_base" (observe: no stored sample is old enough yet).
 *
 * Percent: 100 is one full core. A window of at least SHORT_WINDOW_NS uses
 * docker's formula, Δcpu / Δsystem × online CPUs × 100, so horcrux agrees
 * with `docker stats`. The system counter comes from /proc/stat in clock
 * ticks (10 ms per CPU), so over a window W its error is up to 10 ms / W
 * relative: 1 % at 1 s, 20 % at 50 ms. A shorter window therefore uses the
 * samples' own timestamps, Δcpu / Δtime × 100 -- the same quantity, with
 * the error of the timestamps (µs) instead of a tick. Long windows keep the
 * system counter because it is immune to wall-clock steps (NTP), which the
 * timestamps are not.
 *
 * The store keeps the newest RING samples of each container (by time_ns;
 * a sample not newer than the newest is not stored again) and answers
 * observe() against the newest one at least the window (default 500 ms)
 * older. It holds at most max_containers ids (default 10000, the view's
 * bound: a round that samples more ids than the store holds would evict
 * each one's samples before the next round needs them; the least
 * recently used goes first) and drops an id nobody observed or read for
 * idle_ttl (default 10 min), lazily, on the next access. Ids are 1..128
 * bytes. A restart shows as a counter going backwards; a restarted
 * container that already used more CPU than before cannot be told from
 * the counters, so whoever follows the engine's events calls forget(id)
 * on "die". One store per copy of this code: the horcrux binary must load
 * horcrux.cpu from package.preload, never this file's .so as well.
 *
 * Clamping: a container cannot use more than online_cpus × 100 %; a result
 * up to RANGE_TOLERANCE above that is measurement noise (ticks, read
 * jitter) and is clamped to the limit; beyond it the samples disagree with
 * each other (wall clock stepped, wrong CPU count, samples of two different
 * containers) and the answer is nil, "range" rather than a made-up number.
 * Without a known CPU count there is no bound to clamp to.
 */
#define _GNU_SOURCE /* the store's writer-preferring lock */
#include "aux.h"
#include "cpu_capi.h"
#include "store.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ID_MAX 128                   /* longest id, bytes */
#define RING 8                       /* samples kept per container */
#define NBUCKET 8192                 /* hash buckets (power of two) */
#define SHORT_WINDOW_NS 1000000000   /* below: use timestamps, not ticks */
#define RANGE_TOLERANCE 0.10         /* relative, above online_cpus × 100 */
#define DEFAULT_WINDOW_MS 500        /* observe's minimum base age */
#define DEFAULT_MAX_CONTAINERS 10000 /* least recently used evicted above */
#define DEFAULT_IDLE_TTL_MS (10 * 60 * 1000) /* unused entries evicted */
#define MAX_WINDOW_MS (3600 * 1000)
#define MAX_CONTAINERS (1 << 20)

/* system_ns < 0: unknown; online_cpus 0: unknown (cpu_capi.h). */
typedef hx_cpu_sample sample;

typedef struct entry {
  hx_node node;    /* in the store, whose order is the LRU list */
  int64_t used_ns; /* monotonic time of the last use */
  unsigned n;      /* samples in the ring */
  unsigned head;   /* index of the newest sample */
  sample ring[RING];
  char id[ID_MAX];
} entry;

/*
 * The store is process-wide on purpose: `horcrux serve` runs one lua_State
 * per worker thread, and a request on any worker must see the samples that
 * the collector or another worker took, or every worker would need its own
 * second sample. Everything in it is guarded by the store's lock, taken for
 * writing (every use moves an entry in the LRU order); no Lua API call is
 * made while it is held (a Lua error would longjmp over the unlock), nor
 * malloc or free (see capi_observe). The order of the bounded store is the LRU
 * list: first the least recently used.
 */
static void free_node(hx_node *n);
static void expire(hx_store *s, int64_t now, hx_node **dead);
static hx_link *buckets[NBUCKET];
static hx_store store =
    HX_STORE_INIT(buckets, DEFAULT_MAX_CONTAINERS, 0, free_node, expire, NULL);
static int64_t idle_ttl_ns = (int64_t)DEFAULT_IDLE_TTL_MS * 1000000;
static int64_t window_ns = (int64_t)DEFAULT_WINDOW_MS * 1000000;

/* ---- arithmetic (pure) ---- */

/* True when a counter of c is behind p's: the container restarted (or, for
 * the system counter, the host rebooted); the samples cannot be compared. */
static int went_back(const sample *p, const sample *c) {
  return c->cpu_ns < p->cpu_ns || (p->system_ns >= 0 && c->system_ns >= 0 &&
                                   c->system_ns < p->system_ns);
}

/* Sets *out to the percent from p to c; returns NULL or a reason word. */
static const char *compute(const sample *p, const sample *c, double *out) {
  int64_t dt = c->time_ns - p->time_ns; /* both >= 0: cannot overflow */
  if (dt <= 0)
    return "clock";
  if (went_back(p, c))
    return "reset";
  int have_sys = p->system_ns >= 0 && c->system_ns >= 0;
  int64_t cpus = c->online_cpus ? c->online_cpus : p->online_cpus;
  double dcpu = (double)(c->cpu_ns - p->cpu_ns);
  int64_t dsys = have_sys ? c->system_ns - p->system_ns : 0;
  double pct;
  if (dt >= SHORT_WINDOW_NS && cpus > 0 && dsys > 0)
    pct = dcpu / (double)dsys * (double)cpus * 100.0;
  else
    pct = dcpu / (double)dt * 100.0;
  if (cpus > 0) {
    double limit = (double)cpus * 100.0;
    if (pct > limit * (1.0 + RANGE_TOLERANCE))
      return "range";
    if (pct > limit)
      pct = limit;
  }
  *out = pct;
  return NULL;
}

/* ---- reading arguments (may raise: call without the lock) ---- */

static int64_t field_int(lua_State *L, int idx, const char *k, int required,
                         int64_t min) {
  int ok;
  int t = lua_getfield(L, idx, k);
  if (t == LUA_TNIL && !required) {
    lua_pop(L, 1);
    return -1;
  }
  lua_Integer v = lua_tointegerx(L, -1, &ok);
  if (!ok || t != LUA_TNUMBER)
    luaL_error(L, "sample field '%s': integer expected, got %s", k,
               t == LUA_TNUMBER ? "non-integral number" : lua_typename(L, t));
  if (v < min)
    luaL_error(L, "sample field '%s': %I below %I", k, v, (lua_Integer)min);
  lua_pop(L, 1);
  return (int64_t)v;
}

static void check_sample(lua_State *L, int arg, sample *s) {
  arg = lua_absindex(L, arg);
  luaL_checktype(L, arg, LUA_TTABLE);
  s->cpu_ns = field_int(L, arg, "cpu_ns", 1, 0);
  s->time_ns = field_int(L, arg, "time_ns", 1, 0);
  s->system_ns = field_int(L, arg, "system_ns", 0, 0);
  s->online_cpus = field_int(L, arg, "online_cpus", 0, 0);
  if (s->online_cpus < 0)
    s->online_cpus = 0; /* absent; 0 from old daemons means unknown too */
}

static const char *check_id(lua_State *L, int arg, size_t *len) {
  luaL_checktype(L, arg, LUA_TSTRING); /* not a number made into a string */
  const char *id = lua_tolstring(L, arg, len);
  luaL_argcheck(L, *len > 0 && *len <= ID_MAX, arg, "id must be 1..128 bytes");
  return id;
}

static void push_sample(lua_State *L, const sample *s) {
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, s->cpu_ns);
  lua_setfield(L, -2, "cpu_ns");
  if (s->system_ns >= 0) {
    lua_pushinteger(L, s->system_ns);
    lua_setfield(L, -2, "system_ns");
  }
  if (s->online_cpus > 0) {
    lua_pushinteger(L, s->online_cpus);
    lua_setfield(L, -2, "online_cpus");
  }
  lua_pushinteger(L, s->time_ns);
  lua_setfield(L, -2, "time_ns");
}

/* ---- the store's own behaviour: LRU and idle TTL (lock held) ---- */

static entry *entry_of(hx_node *n) {
  return n ? HX_ENTRY_OF(n, entry, node) : NULL;
}

static void free_node(hx_node *n) { free(entry_of(n)); }

/* Lazily evicts the entries nobody used for idle_ttl: the LRU end is the
 * oldest use, so this stops at the first fresh entry. */
static void expire(hx_store *s, int64_t now, hx_node **dead) {
  while (s->first && now - entry_of(s->first)->used_ns > idle_ttl_ns)
    hx_store_drop(s, s->first, dead);
}

/* Evicts the least recently used entries until `room` more fit. */
static void shrink(size_t room, hx_node **dead) {
  while (store.first && store.count + room > store.max_count)
    hx_store_drop(&store, store.first, dead);
}

static entry *lookup(const char *id, size_t len, int64_t now, hx_node **dead) {
  expire(&store, now, dead);
  entry *e = entry_of(hx_store_find(&store, id, len));
  if (e) {
    e->used_ns = now;
    hx_store_touch(&store, &e->node);
  }
  return e;
}

/* Files e (zeroed, allocated before the lock) under id, most recently
 * used. */
static entry *add(entry *e, const char *id, size_t len, int64_t now,
                  hx_node **dead) {
  shrink(1, dead);
  memcpy(e->id, id, len);
  e->node.link.key = e->id;
  e->node.link.klen = len;
  e->used_ns = now;
  hx_store_add(&store, &e->node);
  return e;
}

static const sample *newest(const entry *e) { return &e->ring[e->head]; }

static void push(entry *e, const sample *s) {
  if (e->n > 0)
    e->head = (e->head + 1) % RING;
  e->ring[e->head] = *s;
  if (e->n < RING)
    e->n++;
}

/* The newest stored sample at least window_ns older than s, or NULL. */
static const sample *base_for(const entry *e, const sample *s,
                              int64_t window_ns) {
  for (unsigned i = 0; i < e->n; i++) {
    const sample *b = &e->ring[(e->head + RING - i) % RING];
    if (b->time_ns < s->time_ns && s->time_ns - b->time_ns >= window_ns)
      return b;
  }
  return NULL;
}

/* Stores s for e and computes the percent against the newest sample at
 * least window_ns older; returns NULL or a reason word. */
static const char *observe_locked(entry *e, const sample *s, int64_t window_ns,
                                  double *pct, double *age_ms) {
  int newer = e->n == 0 || s->time_ns > newest(e)->time_ns;
  if (e->n > 0 && newer && went_back(newest(e), s)) {
    e->n = 0; /* restarted: the older samples belong to another life */
    push(e, s);
    return "reset";
  }
  /* The base is copied before s is stored: storing may overwrite the
   * oldest sample of a full ring. */
  const sample *b = base_for(e, s, window_ns);
  sample base = b ? *b : *s;
  /* A sample not newer than the stored ones (the daemon answering twice
   * from one collector tick) is not stored again, but still gets a figure. */
  if (newer)
    push(e, s);
  if (!b)
    return "no_base";
  *age_ms = (double)(s->time_ns - base.time_ns) / 1e6;
  return compute(&base, s, pct);
}

/* ---- Lua functions ---- */

/* Pushes nil, reason and returns 2; or pushes pct and returns 1. */
static int push_result(lua_State *L, const char *reason, double pct) {
  if (reason) {
    lua_pushnil(L);
    lua_pushstring(L, reason);
    return 2;
  }
  lua_pushnumber(L, pct);
  return 1;
}

static int l_percent(lua_State *L) {
  sample p, c;
  double pct = 0;
  check_sample(L, 1, &p);
  check_sample(L, 2, &c);
  const char *reason = compute(&p, &c, &pct);
  return push_result(L, reason, pct);
}

/* ---- the C API (cpu_capi.h): no Lua, the lock taken here ---- */

static const char *capi_observe(const char *id, size_t len, const sample *s,
                                int64_t win_ns, double *pct, double *age_ms) {
  const char *reason = NULL;
  entry *e = NULL, *fresh = NULL;
  hx_node *dead = NULL;
  if (len == 0 || len > ID_MAX)
    return "id";
  while (!e) {
    int64_t now = hx_mono_ns();
    hx_store_wrlock(&store);
    if (!(e = lookup(id, len, now, &dead)) && fresh) {
      e = add(fresh, id, len, now, &dead);
      fresh = NULL;
    }
    if (e)
      reason =
          observe_locked(e, s, win_ns < 0 ? window_ns : win_ns, pct, age_ms);
    hx_store_unlock(&store);
    /* A new id: its entry is allocated without the lock, then the id looked
     * up again (another worker may have added it meanwhile). */
    if (!e && !(fresh = calloc(1, sizeof *fresh)))
      break;
  }
  free(fresh);
  hx_store_free_list(&store, dead);
  return e ? reason : "memory";
}

static int capi_latest(const char *id, size_t len, sample *out) {
  int64_t now = hx_mono_ns();
  int found = 0;
  hx_node *dead = NULL;
  if (len == 0 || len > ID_MAX)
    return 0;
  hx_store_wrlock(&store);
  entry *e = lookup(id, len, now, &dead);
  if (e && e->n > 0) {
    *out = *newest(e);
    found = 1;
  }
  hx_store_unlock(&store);
  hx_store_free_list(&store, dead);
  return found;
}

static int capi_forget(const char *id, size_t len) {
  hx_node *dead = NULL;
  hx_store_wrlock(&store);
  hx_node *n = hx_store_find(&store, id, len);
  if (n)
    hx_store_drop(&store, n, &dead);
  hx_store_unlock(&store);
  hx_store_free_list(&store, dead);
  return n != NULL;
}

static const hx_cpu_capi capi = {HX_CPU_CAPI_VERSION, capi_observe, capi_latest,
                                 capi_forget};

static int l_observe(lua_State *L) {
  size_t len;
  const char *id = check_id(L, 1, &len);
  sample s;
  check_sample(L, 2, &s);
  lua_Integer win_ms = -1; /* the store's window */
  if (!lua_isnoneornil(L, 3)) {
    win_ms = luaL_checkinteger(L, 3);
    luaL_argcheck(L, win_ms >= 0 && win_ms <= MAX_WINDOW_MS, 3,
                  "window out of range 0..3600000 ms");
  }
  double pct = 0, age_ms = 0;
  const char *reason = capi_observe(
      id, len, &s, win_ms < 0 ? -1 : win_ms * 1000000, &pct, &age_ms);
  if (reason && strcmp(reason, "memory") == 0)
    return luaL_error(L, "horcrux.cpu: not enough memory");
  if (push_result(L, reason, pct) == 2)
    return 2;
  lua_pushnumber(L, age_ms);
  return 2;
}

static int l_latest(lua_State *L) {
  size_t len;
  const char *id = check_id(L, 1, &len);
  sample s;
  if (!capi_latest(id, len, &s))
    lua_pushnil(L);
  else
    push_sample(L, &s);
  return 1;
}

static int l_forget(lua_State *L) {
  size_t len;
  const char *id = check_id(L, 1, &len);
  lua_pushboolean(L, capi_forget(id, len));
  return 1;
}

/* The store outlives every lua_State; it goes when the code does (exit, or
 * dlclose of this module by the last lua_close), so nothing is leaked. */
__attribute__((destructor)) static void free_store(void) {
  hx_store_clear(&store);
}

static int l_window(lua_State *L) {
  hx_store_rdlock(&store);
  int64_t ns = window_ns;
  hx_store_unlock(&store);
  lua_pushinteger(L, ns / 1000000);
  return 1;
}

static int l_set_window(lua_State *L) {
  lua_Integer ms = luaL_checkinteger(L, 1);
  luaL_argcheck(L, ms >= 0 && ms <= MAX_WINDOW_MS, 1,
                "window out of range 0..3600000 ms");
  hx_store_wrlock(&store);
  int64_t old = window_ns;
  window_ns = ms * 1000000;
  hx_store_unlock(&store);
  lua_pushinteger(L, old / 1000000);
  return 1;
}

/* set_limits{max_containers=, idle_ttl_ms=}: either may be left out;
 * returns the previous limits in the same shape. Lowering max_containers
 * evicts the least recently used at once. */
static int l_set_limits(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer max =
      hx_store_opt_limit(L, 1, "max_containers", 1, MAX_CONTAINERS);
  lua_Integer ttl =
      hx_store_opt_limit(L, 1, "idle_ttl_ms", 1, INT64_MAX / 1000000);
  hx_node *dead = NULL;
  hx_store_wrlock(&store);
  size_t old_max = store.max_count;
  int64_t old_ttl = idle_ttl_ns;
  if (max != -1) {
    store.max_count = (size_t)max;
    shrink(0, &dead);
  }
  if (ttl != -1)
    idle_ttl_ns = ttl * 1000000;
  hx_store_unlock(&store);
  hx_store_free_list(&store, dead);
  lua_createtable(L, 0, 2);
  lua_pushinteger(L, (lua_Integer)old_max);
  lua_setfield(L, -2, "max_containers");
  lua_pushinteger(L, old_ttl / 1000000);
  lua_setfield(L, -2, "idle_ttl_ms");
  return 1;
}

static const luaL_Reg funcs[] = {
    {"percent", l_percent},       {"observe", l_observe},
    {"latest", l_latest},         {"forget", l_forget},
    {"window", l_window},         {"set_window", l_set_window},
    {"set_limits", l_set_limits}, {NULL, NULL}};

static const hx_const consts[] = {
    {"RING", RING},
    {"ID_MAX", ID_MAX},
    {"SHORT_WINDOW_MS", SHORT_WINDOW_NS / 1000000},
    {"DEFAULT_WINDOW_MS", DEFAULT_WINDOW_MS},
    {"DEFAULT_MAX_CONTAINERS", DEFAULT_MAX_CONTAINERS},
    {"DEFAULT_IDLE_TTL_MS", DEFAULT_IDLE_TTL_MS},
    {NULL, 0}};

HX_EXPORT int luaopen_horcrux_cpu(lua_State *L) {
  luaL_newlib(L, funcs);
  lua_pushlightuserdata(L, (void *)&capi);
  lua_setfield(L, -2, "capi");
  hx_store_setfuncs(L, &store); /* clear, count */
  hx_set_consts(L, consts);
  return 1;
}
