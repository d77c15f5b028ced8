/*
 * telemetry.c - horcrux.telemetry: horcrux's own metrics, one registry for
 * the whole process (every worker's Lua state, the collector's thread, and
 * whatever another part of horcrux adds), rendered beside the containers'
 * at GET /metrics.
 *
 *   telemetry.counter(name, help)       declares a family (idempotent; the
 *   telemetry.gauge(name, help)         same name with another type
 *   telemetry.histogram(name, help, {upper bounds...})      raises)
 *   telemetry.inc(name [, labels [, n]])  a counter or gauge += n (1)
 *   telemetry.set(name, labels, v)        a gauge = v; a counter kept
 *                                         elsewhere (the hub's), read at
 *                                         scrape: raised to v, never lowered
 *   telemetry.observe(name, labels, v)    a histogram
 *   telemetry.series(name, labels)      -> a handle of that series (made
 *                                          when new), or nil when the family
 *                                          has no room for another series
 *   telemetry.bump(h, v [, h2, v2 ...]) -> true: each handle's series gets
 *                                          v as inc (a counter, a gauge) or
 *                                          observe (a histogram) would give
 *                                          it, under one lock; false (and
 *                                          nothing bumped) when a handle is
 *                                          stale (a reset since): the hot
 *                                          path of a caller that keeps the
 *                                          handles of its series
 *   telemetry.render([openmetrics])     -> text (families in declaration
 *                                          order, series in first-use order)
 *   telemetry.reset()                   -> forgets every family (specs)
 *   telemetry.gzip(text [, level])      -> the gzip file of text (zlib)
 *
 * labels: a table {key = value}, written in key order; nil for none. A
 * name or a label key must be [a-zA-Z_][a-zA-Z0-9_]*; a value is escaped.
 * Bounded: 64 families, 512 series each (a series past it is counted
 * under the family's "overflow" warning in the log, not kept): a label
 * with unbounded values (a path, an id) is a mistake this does not let
 * grow without end.
 *
 * Process-wide on purpose, behind one mutex: the states are many, the
 * registry one. No Lua call is made while it is held.
 */
#include "aux.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define MAX_FAMILIES 64
#define MAX_SERIES 512
#define MAX_BUCKETS 16
#define MAX_LABELS 512 /* bytes of a series' label text */

enum { T_COUNTER, T_GAUGE, T_HISTOGRAM };

typedef struct series {
  char labels[MAX_LABELS]; /* k="v",k2="v2" */
  double value, sum;
  unsigned long long count, buckets[MAX_BUCKETS];
} series;

typedef struct family {
  char name[64], help[160];
  int type, nbuckets;
  double bounds[MAX_BUCKETS];
  int nseries, overflow;
  series *s[MAX_SERIES];
} family;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static family *fams[MAX_FAMILIES];
static int nfams;
static lua_Integer epoch; /* bumped by reset: older handles are stale */

static int name_ok(const char *s) {
  if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_'))
    return 0;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
          (*s >= '0' && *s <= '9') || *s == '_'))
      return 0;
  return 1;
}

static family *find(const char *name) {
  for (int i = 0; i < nfams; i++)
    if (strcmp(fams[i]->name, name) == 0)
      return fams[i];
  return NULL;
}

static int declare(lua_State *L, int type) {
  const char *name = luaL_checkstring(L, 1), *help = luaL_checkstring(L, 2);
  double bounds[MAX_BUCKETS];
  int nb = 0;
  luaL_argcheck(L, name_ok(name) && strlen(name) < 64, 1, "metric name");
  luaL_argcheck(L, strlen(help) < 160 && !strchr(help, '\n'), 2, "help");
  if (type == T_HISTOGRAM) {
    luaL_checktype(L, 3, LUA_TTABLE);
    nb = (int)lua_rawlen(L, 3);
    luaL_argcheck(L, nb > 0 && nb <= MAX_BUCKETS, 3, "1 to 16 bounds");
    for (int i = 0; i < nb; i++) {
      lua_rawgeti(L, 3, i + 1);
      bounds[i] = luaL_checknumber(L, -1);
      luaL_argcheck(L, i == 0 || bounds[i] > bounds[i - 1], 3, "increasing");
      lua_pop(L, 1);
    }
  }
  family *f = calloc(1, sizeof *f);
  if (f == NULL)
    return luaL_error(L, "telemetry: not enough memory");
  snprintf(f->name, sizeof f->name, "%s", name);
  snprintf(f->help, sizeof f->help, "%s", help);
  f->type = type, f->nbuckets = nb;
  memcpy(f->bounds, bounds, sizeof(double) * (size_t)nb);
  pthread_mutex_lock(&mu);
  family *old = find(name);
  int full = old == NULL && nfams == MAX_FAMILIES;
  int clash = old != NULL && old->type != type;
  if (old == NULL && !full)
    fams[nfams++] = f, f = NULL;
  pthread_mutex_unlock(&mu);
  free(f);
  if (clash)
    return luaL_error(L, "telemetry: %s is declared with another type", name);
  if (full)
    return luaL_error(L, "telemetry: more than %d families", MAX_FAMILIES);
  return 0;
}

static int l_counter(lua_State *L) { return declare(L, T_COUNTER); }
static int l_gauge(lua_State *L) { return declare(L, T_GAUGE); }
static int l_histogram(lua_State *L) { return declare(L, T_HISTOGRAM); }

/* ---- labels: k="v",... in key order, into out (MAX_LABELS) */

typedef struct lbuf {
  char *p;
  size_t n;
  int over;
} lbuf;

static void lput(lbuf *b, const char *s, size_t n) {
  if (b->n + n >= MAX_LABELS) {
    b->over = 1;
    return;
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = '\0';
}

static void lput_escaped(lbuf *b, const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    const char *e = s[i] == '\\' ? "\\\\" : s[i] == '"' ? "\\\"" : NULL;
    if (s[i] == '\n')
      e = "\\n";
    if (e)
      lput(b, e, 2);
    else
      lput(b, s + i, 1);
  }
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void labels_of(lua_State *L, int idx, char *out) {
  const char *keys[16];
  int n = 0;
  lbuf b = {out, 0, 0};
  out[0] = '\0';
  if (lua_isnoneornil(L, idx))
    return;
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    luaL_argcheck(L, lua_type(L, -2) == LUA_TSTRING && n < 16, idx,
                  "at most 16 string keys");
    keys[n] = lua_tostring(L, -2);
    luaL_argcheck(L, name_ok(keys[n]), idx, "label key");
    n++;
    lua_pop(L, 1);
  }
  qsort(keys, (size_t)n, sizeof *keys, cmp_str);
  for (int i = 0; i < n; i++) {
    size_t vn;
    lua_getfield(L, idx, keys[i]);
    const char *v = luaL_tolstring(L, -1, &vn);
    if (i)
      lput(&b, ",", 1);
    lput(&b, keys[i], strlen(keys[i]));
    lput(&b, "=\"", 2);
    lput_escaped(&b, v, vn);
    lput(&b, "\"", 1);
    lua_pop(L, 2);
  }
  luaL_argcheck(L, !b.over, idx, "labels too long");
}

/* The series of f with these labels, made when new (lock held; fresh: a
 * zeroed series allocated before the lock, taken when used). */
static series *series_of(family *f, const char *labels, series **fresh) {
  for (int i = 0; i < f->nseries; i++)
    if (strcmp(f->s[i]->labels, labels) == 0)
      return f->s[i];
  if (f->nseries == MAX_SERIES || *fresh == NULL) {
    f->overflow++;
    return NULL;
  }
  series *s = *fresh;
  *fresh = NULL;
  memcpy(s->labels, labels, strlen(labels) + 1);
  f->s[f->nseries++] = s;
  return s;
}

enum { OP_INC, OP_SET, OP_OBSERVE };

/* Adds v to s of f as inc (counter, gauge) or observe (histogram) does. */
static void apply(family *f, series *s, double v) {
  if (f->type != T_HISTOGRAM) {
    s->value += v;
    return;
  }
  for (int i = 0; i < f->nbuckets; i++)
    if (v <= f->bounds[i])
      s->buckets[i]++;
  s->sum += v;
  s->count++;
}

static int update(lua_State *L, int op) {
  const char *name = luaL_checkstring(L, 1);
  char labels[MAX_LABELS];
  double v = op == OP_INC ? luaL_optnumber(L, 3, 1) : luaL_checknumber(L, 3);
  labels_of(L, 2, labels);
  series *fresh = calloc(1, sizeof *fresh);
  const char *err = NULL;
  pthread_mutex_lock(&mu);
  family *f = find(name);
  if (f == NULL)
    err = "not declared";
  else if ((op == OP_OBSERVE) != (f->type == T_HISTOGRAM) ||
           (op != OP_OBSERVE && f->type == T_COUNTER && v < 0))
    err = "not of that type (or a counter going down)";
  series *s = err ? NULL : series_of(f, labels, &fresh);
  if (s && op == OP_SET && f->type == T_COUNTER)
    s->value = v > s->value ? v : s->value; /* two scrapes may race */
  else if (s && op == OP_SET)
    s->value = v;
  else if (s)
    apply(f, s, v);
  pthread_mutex_unlock(&mu);
  free(fresh);
  if (err)
    return luaL_error(L, "telemetry: %s: %s", name, err);
  return 0;
}

/* A handle: the epoch, the family's index, the series' index. */
#define H_SERIES 1024
#define H_FAMS (H_SERIES * MAX_FAMILIES)

static int l_series(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  char labels[MAX_LABELS];
  labels_of(L, 2, labels);
  series *fresh = calloc(1, sizeof *fresh);
  lua_Integer h = -1;
  pthread_mutex_lock(&mu);
  for (int i = 0; i < nfams && h < 0; i++) {
    if (strcmp(fams[i]->name, name) != 0)
      continue;
    h = -2;
    series *s = series_of(fams[i], labels, &fresh);
    for (int k = 0; s != NULL && k < fams[i]->nseries; k++)
      if (fams[i]->s[k] == s)
        h = epoch * H_FAMS + (lua_Integer)i * H_SERIES + k;
  }
  pthread_mutex_unlock(&mu);
  free(fresh);
  if (h == -1)
    return luaL_error(L, "telemetry: %s: not declared", name);
  if (h < 0)
    return 0; /* no room: counted under the family's overflow */
  lua_pushinteger(L, h);
  return 1;
}

static int l_bump(lua_State *L) {
  int n = lua_gettop(L) / 2, ok = 1, down = 0;
  luaL_argcheck(L, n >= 1 && n <= 8, 1, "1 to 8 handle, value pairs");
  lua_Integer h[8];
  double v[8];
  for (int i = 0; i < n; i++) {
    int isint, isnum; /* the luaL_check* calls only to raise */
    h[i] = lua_tointegerx(L, 2 * i + 1, &isint);
    v[i] = lua_tonumberx(L, 2 * i + 2, &isnum);
    if (!isint)
      luaL_checkinteger(L, 2 * i + 1);
    if (!isnum)
      luaL_checknumber(L, 2 * i + 2);
  }
  pthread_mutex_lock(&mu);
  for (int i = 0; i < n && ok; i++) {
    lua_Integer fi = h[i] % H_FAMS / H_SERIES, si = h[i] % H_SERIES;
    ok = h[i] >= 0 && h[i] / H_FAMS == epoch && fi < nfams &&
         si < fams[fi]->nseries;
    down |= ok && v[i] < 0 && fams[fi]->type == T_COUNTER;
  }
  for (int i = 0; i < n && ok && !down; i++) {
    family *f = fams[h[i] % H_FAMS / H_SERIES];
    apply(f, f->s[h[i] % H_SERIES], v[i]);
  }
  pthread_mutex_unlock(&mu);
  if (down)
    return luaL_error(L, "telemetry.bump: a counter going down");
  lua_pushboolean(L, ok);
  return 1;
}

static int l_inc(lua_State *L) { return update(L, OP_INC); }
static int l_set(lua_State *L) { return update(L, OP_SET); }
static int l_observe(lua_State *L) { return update(L, OP_OBSERVE); }

/* ---- rendering, into a luaL_Buffer copy made outside the lock */

static void add_num(luaL_Buffer *b, double v) {
  char num[40];
  if (isinf(v))
    snprintf(num, sizeof num, v > 0 ? "+Inf" : "-Inf");
  else if (v == floor(v) && fabs(v) < 9007199254740992.0)
    snprintf(num, sizeof num, "%.0f", v);
  else
    hx_shortest(num, sizeof num, v);
  luaL_addstring(b, num);
}

static void add_sample(luaL_Buffer *b, const char *name, const char *suffix,
                       const char *labels, const char *extra, double v) {
  luaL_addstring(b, name);
  luaL_addstring(b, suffix);
  if (*labels || extra) {
    luaL_addchar(b, '{');
    luaL_addstring(b, labels);
    if (*labels && extra)
      luaL_addchar(b, ',');
    if (extra)
      luaL_addstring(b, extra);
    luaL_addchar(b, '}');
  }
  luaL_addchar(b, ' ');
  add_num(b, v);
  luaL_addchar(b, '\n');
}

static void add_family(luaL_Buffer *b, const family *f, int om) {
  static const char *const types[3] = {"counter", "gauge", "histogram"};
  size_t n = strlen(f->name);
  char extra[64];
  if (om && f->type == T_COUNTER && n > 6 &&
      strcmp(f->name + n - 6, "_total") == 0)
    n -= 6;
  luaL_addstring(b, "# HELP ");
  luaL_addlstring(b, f->name, n);
  luaL_addchar(b, ' ');
  luaL_addstring(b, f->help);
  luaL_addstring(b, "\n# TYPE ");
  luaL_addlstring(b, f->name, n);
  luaL_addchar(b, ' ');
  luaL_addstring(b, types[f->type]);
  luaL_addchar(b, '\n');
  for (int i = 0; i < f->nseries; i++) {
    const series *s = f->s[i];
    if (f->type != T_HISTOGRAM) {
      add_sample(b, f->name, "", s->labels, NULL, s->value);
      continue;
    }
    for (int k = 0; k < f->nbuckets; k++) {
      char le[32];
      hx_shortest(le, sizeof le, f->bounds[k]);
      snprintf(extra, sizeof extra, "le=\"%s\"", le);
      add_sample(b, f->name, "_bucket", s->labels, extra,
                 (double)s->buckets[k]);
    }
    add_sample(b, f->name, "_bucket", s->labels, "le=\"+Inf\"",
               (double)s->count);
    add_sample(b, f->name, "_sum", s->labels, NULL, s->sum);
    add_sample(b, f->name, "_count", s->labels, NULL, (double)s->count);
  }
}

/* A snapshot of the registry (copied under the lock, rendered after). */
static int l_render(lua_State *L) {
  int om = lua_toboolean(L, 1);
  for (;;) {
    size_t want = 0;
    pthread_mutex_lock(&mu);
    for (int i = 0; i < nfams; i++)
      want += sizeof(family) + (size_t)fams[i]->nseries * sizeof(series);
    pthread_mutex_unlock(&mu);
    char *snap = lua_newuserdatauv(L, want + 1, 0);
    size_t used = 0;
    int n = 0, fits = 1;
    pthread_mutex_lock(&mu);
    for (int i = 0; i < nfams && fits; i++) {
      size_t need = sizeof(family) + (size_t)fams[i]->nseries * sizeof(series);
      if (used + need > want) {
        fits = 0;
        break;
      }
      family *f = (family *)(snap + used);
      memcpy(f, fams[i], sizeof *f);
      series *s = (series *)(f + 1);
      for (int k = 0; k < f->nseries; k++)
        s[k] = *fams[i]->s[k], f->s[k] = &s[k];
      used += need, n++;
    }
    pthread_mutex_unlock(&mu);
    if (!fits) {
      lua_pop(L, 1);
      continue; /* grew in between */
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (size_t at = 0; n-- > 0;) {
      const family *f = (const family *)(snap + at);
      if (f->nseries > 0)
        add_family(&b, f, om);
      at += sizeof(family) + (size_t)f->nseries * sizeof(series);
    }
    luaL_pushresult(&b);
    return 1;
  }
}

static int l_reset(lua_State *L) {
  (void)L;
  pthread_mutex_lock(&mu);
  for (int i = 0; i < nfams; i++) {
    for (int k = 0; k < fams[i]->nseries; k++)
      free(fams[i]->s[k]);
    free(fams[i]);
  }
  nfams = 0;
  epoch++;
  pthread_mutex_unlock(&mu);
  return 0;
}

/* gzip(text [, level]) -> the gzip file of text: HTTP's Content-Encoding. */
static int l_gzip(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  int level = (int)luaL_optinteger(L, 2, 1);
  luaL_argcheck(L, level >= 0 && level <= 9, 2, "level 0..9");
  /* deflateBound's worst case for gzip, without a stream to ask: the
   * output goes into a userdata, so nothing leaks if a Lua call raises */
  size_t cap = n + n / 8 + n / 64 + 64;
  char *out = lua_newuserdatauv(L, cap, 0);
  z_stream z;
  memset(&z, 0, sizeof z);
  /* 15 + 16: a gzip header and trailer, not zlib's */
  if (deflateInit2(&z, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) !=
      Z_OK)
    return luaL_error(L, "telemetry.gzip: deflateInit2 failed");
  z.next_in = (Bytef *)s, z.avail_in = (uInt)n;
  z.next_out = (Bytef *)out, z.avail_out = (uInt)cap;
  int rc = deflate(&z, Z_FINISH);
  size_t len = z.total_out;
  deflateEnd(&z);
  if (rc != Z_STREAM_END)
    return luaL_error(L, "telemetry.gzip: deflate failed");
  lua_pushlstring(L, out, len);
  return 1;
}

static const luaL_Reg funcs[] = {
    {"counter", l_counter}, {"gauge", l_gauge}, {"histogram", l_histogram},
    {"inc", l_inc},         {"set", l_set},     {"observe", l_observe},
    {"series", l_series},   {"bump", l_bump},   {"render", l_render},
    {"reset", l_reset},     {"gzip", l_gzip},   {NULL, NULL}};

HX_EXPORT int luaopen_horcrux_telemetry(lua_State *L) {
  luaL_newlib(L, funcs);
  return 1;
}
