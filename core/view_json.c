/*
 * view_json.c - the stats records of the view as JSON text, written in C
 * from the figures view.sample() stored (view.stats_json, view.c), with no
 * Lua table per record: GET /api/stats at a thousand containers spent most
 * of its time building a table of some 40 fields per record and encoding
 * it again.
 *
 * The text is what horcrux.json.encode(record, {sort_keys = true}) writes
 * for the record view.all() gives (the same members, from view_record.c's
 * one description of the record; every object's keys in byte order; floats
 * by hx_json_format_double, as the encoder writes them), so a client sees
 * no difference between the two. A float that is not finite (the encoder
 * refuses one) is written as null.
 *
 * Writing. Members are written in the order view_record.c gives them, each
 * as `"key":value`; when an object closes, its members are copied back in
 * key order with the commas and braces. A record has the same top-level
 * keys as the last one nearly always: the order worked out for it is kept
 * for the next (compared by the keys' addresses, which are literals).
 */
#include "jsonconv.h"
#include "view_private.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#define JBUF_MT "horcrux.view.jbuf"
#define JO_DEPTH 8    /* nesting of a record's objects and arrays */
#define JO_MEMBERS 64 /* members of one object */
#define JO_KEY 32     /* a key's bytes kept for sorting */

/* ---- the growable buffer: a userdata whose __gc frees its bytes ---- */

static int jbuf_gc(lua_State *L) {
  view_jbuf *b = luaL_checkudata(L, 1, JBUF_MT);
  free(b->p);
  b->p = NULL;
  b->n = b->cap = 0;
  return 0;
}

view_jbuf *view_jbuf_new(lua_State *L) {
  view_jbuf *b = lua_newuserdatauv(L, sizeof *b, 0);
  memset(b, 0, sizeof *b);
  if (luaL_newmetatable(L, JBUF_MT)) {
    lua_pushcfunction(L, jbuf_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  return b;
}

/* Room for n more bytes; 0 (and b->oom) when there is none. */
static int grow(view_jbuf *b, size_t n) {
  size_t cap = b->cap ? b->cap : 4096;
  while (cap - b->n < n) {
    if (cap > SIZE_MAX / 2) {
      b->oom = 1;
      return 0;
    }
    cap *= 2;
  }
  char *p = realloc(b->p, cap);
  if (!p) {
    b->oom = 1;
    return 0;
  }
  b->p = p;
  b->cap = cap;
  return 1;
}

static inline int reserve(view_jbuf *b, size_t n) {
  if (b->oom)
    return 0;
  return b->cap - b->n >= n ? 1 : grow(b, n);
}

static inline int put(view_jbuf *b, const char *s, size_t n) {
  if (!reserve(b, n))
    return 0;
  memcpy(b->p + b->n, s, n);
  b->n += n;
  return 1;
}

int view_jbuf_put(view_jbuf *b, const char *s, size_t n) {
  return put(b, s, n);
}

int view_jbuf_room(view_jbuf *b, size_t n) { return reserve(b, n); }

void view_jbuf_free(view_jbuf *b) {
  free(b->p);
  b->p = NULL;
  b->n = b->cap = 0;
}

/* Whether a JSON string holds byte c as it is: printable ASCII but '"'
 * and '\\'. (A table filled at first use was a data race between workers,
 * which ThreadSanitizer reported.) */
static inline int plain(unsigned char c) {
  return c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
}

/* s as a JSON string: printable ASCII without '"' and '\\' (every key
 * and nearly every value) is copied as it is, the rest quoted as the
 * encoder quotes it. */
static void put_quoted(view_jbuf *b, const char *s, size_t n) {
  size_t i = 0;
  if (n > (SIZE_MAX - 2) / 6 || !reserve(b, 6 * n + 2))
    return;
  while (i < n && plain((unsigned char)s[i]))
    i++;
  if (i < n) {
    b->n += hx_json_quote(b->p + b->n, s, n);
    return;
  }
  char *o = b->p + b->n;
  o[0] = '"';
  memcpy(o + 1, s, n);
  o[n + 1] = '"';
  b->n += n + 2;
}

/* The digits of v into the end of tmp (24 bytes); returns where they
 * start. */
static char *digits(char *end, uint64_t v) {
  do
    *--end = (char)('0' + v % 10);
  while ((v /= 10) != 0);
  return end;
}

/* v as hx_json_format_double writes it when v is a whole number of
 * hundredths below 1e13 (the pressure averages, whole numbers): the
 * shortest decimal that reads back as v is then those digits, and the
 * encoder's %g layout is the fixed one. Returns the length, 0 otherwise
 * (the caller formats it the long way). */
static size_t short_float(char *out, double v) {
  double a = v < 0 ? -v : v, w = a * 100;
  if (!(a < 1e13) || w != (double)(uint64_t)w || (double)(uint64_t)w / 100 != a)
    return 0;
  uint64_t h = (uint64_t)w;
  char tmp[24], *q = digits(tmp + sizeof tmp, h / 100);
  size_t n = 0;
  if (v < 0)
    out[n++] = '-';
  memcpy(out + n, q, (size_t)(tmp + sizeof tmp - q));
  n += (size_t)(tmp + sizeof tmp - q);
  if (h % 100) {
    out[n++] = '.';
    out[n++] = (char)('0' + h % 100 / 10);
    if (h % 10)
      out[n++] = (char)('0' + h % 10);
  }
  return n;
}

/* ---- the writer ---- */

typedef struct member {
  const char *kp; /* the key as given (its address: the order cache) */
  char key[JO_KEY];
  size_t at; /* where `"key":value` starts */
} member;

typedef struct frame {
  int array, n;
  size_t start;
  member m[JO_MEMBERS];
} frame;

typedef struct json_out {
  view_out o;
  view_jbuf *b, *scratch;
  int depth; /* frames open; 0: none (a record's object is frame 1) */
  frame f[JO_DEPTH + 1];
  /* the key order of the last record's object, and its keys */
  int cached_n;
  const char *cached_kp[JO_MEMBERS];
  unsigned char cached_order[JO_MEMBERS];
  /* where the last record's sample_age_ms value is in b: [age_at, age_end) */
  size_t age_at, age_end;
} json_out;

/* The key of the age (its address marks it, as the order cache's keys). */
static const char AGE_KEY[] = "sample_age_ms";

/* Starts a member (an object's key, an array's comma). */
static void begin(json_out *u, const char *k) {
  frame *f = &u->f[u->depth];
  if (u->depth == 0)
    return;
  if (f->array) {
    if (f->n++ > 0)
      put(u->b, ",", 1);
    return;
  }
  if (f->n >= JO_MEMBERS || !k) {
    u->b->bad = 1;
    return;
  }
  member *m = &f->m[f->n++];
  size_t kn = strlen(k);
  m->kp = k;
  memcpy(m->key, k, kn < JO_KEY ? kn + 1 : JO_KEY - 1);
  m->key[JO_KEY - 1] = '\0';
  m->at = u->b->n;
  put_quoted(u->b, k, kn);
  put(u->b, ":", 1);
}

static void j_num(view_out *o, const char *k, int kind, int64_t i, double d) {
  json_out *u = (json_out *)o;
  char tmp[48];
  size_t n = 0;
  begin(u, k);
  if (kind == VO_INT) {
    char *q = digits(tmp + sizeof tmp, i < 0 ? 0 - (uint64_t)i : (uint64_t)i);
    if (i < 0)
      *--q = '-';
    put(u->b, q, (size_t)(tmp + sizeof tmp - q));
    return;
  }
  if (kind == VO_FLOAT && d != 0 && (n = short_float(tmp, d)) == 0)
    n = hx_json_format_double(tmp, d);
  else if (kind == VO_FLOAT && d == 0)
    n = hx_json_format_double(tmp, d);
  if (n == 0)
    put(u->b, "null", 4);
  else
    put(u->b, tmp, n);
}

static void j_str(view_out *o, const char *k, const char *s) {
  json_out *u = (json_out *)o;
  begin(u, k);
  put_quoted(u->b, s, strlen(s));
}

static void j_open(view_out *o, const char *k, int array, int hint) {
  json_out *u = (json_out *)o;
  (void)hint;
  begin(u, k);
  if (u->depth >= JO_DEPTH) {
    u->b->bad = 1;
    return;
  }
  frame *f = &u->f[++u->depth];
  f->array = array;
  f->n = 0;
  f->start = u->b->n;
  if (array)
    put(u->b, "[", 1);
}

/* The order of f's members by key (an insertion sort: objects are small,
 * and the record's own order comes from the cache). */
static void order_of(const frame *f, unsigned char *idx) {
  for (int i = 0; i < f->n; i++) {
    int j = i;
    while (j > 0 && (f->m[idx[j - 1]].key[0] > f->m[i].key[0] ||
                     (f->m[idx[j - 1]].key[0] == f->m[i].key[0] &&
                      strcmp(f->m[idx[j - 1]].key, f->m[i].key) > 0))) {
      idx[j] = idx[j - 1];
      j--;
    }
    idx[j] = (unsigned char)i;
  }
}

/* The record's order: the cached one when its keys are the last one's. */
static const unsigned char *record_order(json_out *u, const frame *f,
                                         unsigned char *idx) {
  int same = u->cached_n == f->n;
  for (int i = 0; same && i < f->n; i++)
    same = u->cached_kp[i] == f->m[i].kp;
  if (same)
    return u->cached_order;
  order_of(f, idx);
  u->cached_n = f->n;
  for (int i = 0; i < f->n; i++)
    u->cached_kp[i] = f->m[i].kp;
  memcpy(u->cached_order, idx, (size_t)f->n);
  return idx;
}

/* Rewrites the members of object f, from f->start on, in key order. */
static void close_object(json_out *u, const frame *f) {
  view_jbuf *b = u->b, *s = u->scratch;
  unsigned char idx[JO_MEMBERS];
  const unsigned char *ord;
  if (b->oom || b->bad)
    return;
  ord = u->depth == 1 ? record_order(u, f, idx) : (order_of(f, idx), idx);
  s->n = 0;
  put(s, "{", 1);
  for (int i = 0; i < f->n; i++) {
    int m = ord[i];
    size_t from = f->m[m].at, to = m + 1 < f->n ? f->m[m + 1].at : b->n;
    if (i > 0)
      put(s, ",", 1);
    if (u->depth == 1 && f->m[m].kp == AGE_KEY) {
      u->age_at = f->start + s->n + sizeof AGE_KEY + 2; /* "key": */
      u->age_end = f->start + s->n + (to - from);
    }
    put(s, b->p + from, to - from);
  }
  put(s, "}", 1);
  if (s->oom) {
    b->oom = 1;
    return;
  }
  b->n = f->start;
  put(b, s->p, s->n);
}

static void j_close(view_out *o, int array) {
  json_out *u = (json_out *)o;
  if (u->depth == 0) {
    u->b->bad = 1;
    return;
  }
  if (array)
    put(u->b, "]", 1);
  else
    close_object(u, &u->f[u->depth]);
  u->depth--;
}

view_json *view_json_new(lua_State *L) {
  json_out *u = lua_newuserdatauv(L, sizeof *u, 2);
  u->depth = u->cached_n = 0; /* the frames are set as they open */
  u->o = (view_out){j_num, j_str, j_open, j_close};
  u->b = view_jbuf_new(L);
  lua_setiuservalue(L, -2, 1);
  u->scratch = view_jbuf_new(L);
  lua_setiuservalue(L, -2, 2);
  return (view_json *)u;
}

view_jbuf *view_json_buf(view_json *j) { return ((json_out *)j)->b; }

/* Appends f's record with id, name (namelen 0: null) and sample_age_ms, as
 * json.encode(record, {sort_keys = true}) writes what view.all() gives;
 * u->age_at and age_end say where the age is. */
static void view_json_figs(view_json *j, const view_figs *f, const char *id,
                           const char *name, size_t namelen, int64_t age_ms) {
  json_out *u = (json_out *)j;
  char sid[VIEW_ID_LEN + 1];
  u->depth = 0;
  u->age_at = u->age_end = 0;
  j_open(&u->o, NULL, 0, 44);
  view_emit_record(&u->o, f);
  memcpy(sid, id, VIEW_ID_LEN);
  sid[VIEW_ID_LEN] = '\0';
  j_str(&u->o, "id", sid);
  if (namelen) {
    begin(u, "name");
    put_quoted(u->b, name, namelen);
  } else {
    j_num(&u->o, "name", VO_NULL, 0, 0);
  }
  j_num(&u->o, AGE_KEY, VO_INT, age_ms, 0);
  j_close(&u->o, 0);
}

/* ---- view.stats_json ---- */

static lua_Integer age_of(int64_t now, int64_t taken_ns) {
  return now > taken_ns ? (lua_Integer)((now - taken_ns) / 1000000) : 0;
}

/* c's cached text into b, its age written where it goes. */
static void put_text(view_jbuf *b, const view_jcopy *c, const char *text,
                     lua_Integer age) {
  char tmp[24], *q = digits(tmp + sizeof tmp, (uint64_t)age);
  put(b, text, c->age);
  put(b, q, (size_t)(tmp + sizeof tmp - q));
  put(b, text + c->age, c->rn - c->age);
}

/* The texts written this time (fr[0..n)), copied out of b for their
 * entries, the age left out; what cannot be copied is left NULL. */
static void make_frags(const view_jbuf *b, view_frag *fr, size_t n) {
  for (size_t i = 0; i < n; i++) {
    view_frag *x = &fr[i];
    size_t head = x->age_at - x->from, tail = x->to - x->age_end;
    x->p = head + tail <= UINT32_MAX ? malloc(head + tail + 1) : NULL;
    if (!x->p)
      continue;
    memcpy(x->p, b->p + x->from, head);
    memcpy(x->p + head, b->p + x->age_end, tail);
    x->n = (uint32_t)(head + tail);
    x->age = (uint32_t)head;
  }
}

static int id_order(const void *a, const void *b) {
  return memcmp(a, b, VIEW_ID_LEN);
}

/* The ids of the set at index 1 ({[full id] = true}), sorted, into ids;
 * how many. A key that is not a full id is no container's. */
static size_t want_ids(lua_State *L, view_jbuf *ids) {
  size_t n = 0;
  lua_pushnil(L);
  while (lua_next(L, 1) != 0) {
    size_t kn;
    if (lua_type(L, -2) == LUA_TSTRING && lua_toboolean(L, -1)) {
      const char *k = lua_tolstring(L, -2, &kn);
      if (kn == VIEW_ID_LEN && put(ids, k, kn))
        n++;
    }
    lua_pop(L, 1);
  }
  if (n > 1)
    qsort(ids->p, n, VIEW_ID_LEN, id_order);
  return n;
}

/* The buffers of one call, freed at its end (their userdata's __gc frees
 * them too when a Lua error cuts it short). */
typedef struct call {
  view_jbuf *ids, *copy, *frags;
} call;

static void call_free(call *c) {
  view_jbuf_free(c->ids);
  view_jbuf_free(c->copy);
  view_jbuf_free(c->frags);
}

/* One copied entry's record into u's buffer; a record written from
 * figures is noted in fr for its entry (*nfr). */
static void write_one(lua_State *L, json_out *u, const view_jcopy *c,
                      const char *id, int64_t now, view_frag *fr, size_t *nfr) {
  view_jbuf *b = u->b;
  const char *name = id + VIEW_ID_LEN, *rec = name + c->nn;
  lua_Integer age = age_of(now, c->taken_ns);
  if (c->kind == VJ_TEXT) {
    put_text(b, c, rec, age);
  } else if (c->kind == VJ_FIGS) {
    view_figs f;
    size_t from = b->n;
    memcpy(&f, rec, sizeof f);
    view_json_figs((view_json *)u, &f, id, name, c->nn, age);
    if (!b->oom && !b->bad && u->age_at > from)
      fr[(*nfr)++] = (view_frag){id, c->gen, c->ver,    NULL,       0,
                                 0,  from,   u->age_at, u->age_end, b->n};
  } else {
    view_push_put(L, c, id, now);
    if (!hx_json_encode(L, -1, 0, HX_JSON_SORT_KEYS))
      luaL_error(L, "view: %s", lua_tostring(L, -1));
    size_t tn;
    const char *t = lua_tolstring(L, -1, &tn);
    put(b, t, tn);
    lua_pop(L, 2);
  }
}

/* stats_json([want]) -> text, n: the JSON array of the records all() gives
 * (those of the ids in the set `want` only, when given: {[full id] =
 * true}), as json.encode(all(), {sort_keys = true}) writes it; n records.
 * A record from figures is written in C once and kept in its entry (its
 * age written at each call); a record put from Lua is built and encoded as
 * all() would. The entries (those wanted) are copied under the read lock
 * into malloc'd memory, written after it, and the new texts installed
 * under the write lock, each only if its entry has not changed since. */
int view_stats_json(lua_State *L) {
  int want = !lua_isnoneornil(L, 1);
  if (want)
    luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  json_out *u = (json_out *)view_json_new(L);
  view_jbuf *b = u->b;
  call c = {view_jbuf_new(L), view_jbuf_new(L), view_jbuf_new(L)};
  size_t nids = want ? want_ids(L, c.ids) : 0, nfr = 0;
  size_t n = want && nids == 0 ? 0 : view_copy_json(c.ids->p, nids, c.copy);
  if (c.ids->oom || n == (size_t)-1 ||
      !reserve(c.frags, (n ? n : 1) * sizeof(view_frag)) ||
      !reserve(b, c.copy->n + 24 * n + 2)) {
    call_free(&c);
    return luaL_error(L, "view: not enough memory");
  }
  view_frag *fr = (view_frag *)(void *)c.frags->p;
  const char *at = c.copy->p;
  int64_t now = hx_mono_ns();
  put(b, "[", 1);
  for (size_t i = 0; i < n; i++) {
    view_jcopy jc;
    memcpy(&jc, at, sizeof jc);
    const char *id = at + sizeof jc;
    at = id + VIEW_ID_LEN + jc.nn + jc.rn;
    if (i > 0)
      put(b, ",", 1);
    write_one(L, u, &jc, id, now, fr, &nfr);
  }
  put(b, "]", 1);
  if (b->oom || b->bad) {
    call_free(&c);
    return luaL_error(L, "view: %s",
                      b->oom ? "not enough memory"
                             : "a record past the writer's bounds");
  }
  /* no Lua call raises from here to the install: the copies are owned */
  make_frags(b, fr, nfr);
  view_frags_install(fr, nfr);
  call_free(&c);
  lua_pushlstring(L, b->p, b->n);
  view_jbuf_free(b);
  view_jbuf_free(u->scratch);
  lua_pushinteger(L, (lua_Integer)n);
  return 2;
}
