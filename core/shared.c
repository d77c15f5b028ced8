/*
 * shared.c - horcrux.shared: a small key/value store for operators' scripts,
 * shared by every Lua state of the process (as OpenResty's ngx.shared.DICT).
 *
 *   shared.set(key, value [, ttl])     -> true | nil, msg, "limit"
 *   shared.add(key, value [, ttl])     -> true | nil, msg, "conflict"|"limit"
 *   shared.get(key)                    -> value | nil
 *   shared.incr(key, delta [, init [, ttl]])
 *                                      -> value | nil, msg, kind
 *   shared.delete(key)                 -> true if key was held
 *   shared.ttl(key)                    -> seconds left (0: none)
 *                                         | nil, msg, "not_found"
 *   shared.keys([max])                 -> array of keys (max 1024; 0: all)
 *   shared.count()                     -> number of keys held
 *   shared.clear()                     -> number of keys dropped
 *   shared.set_limits{max_entries=, max_bytes=} -> previous limits
 *
 * Keys are strings of 1..KEY_MAX bytes; values are strings (up to VALUE_MAX
 * bytes), numbers (an integer stays an integer, a float a float) and
 * booleans; set(key, nil) deletes. Anything else raises (misuse). A ttl is
 * in seconds (a float is fine: 0.2); nil or 0 means the entry never
 * expires. An expired entry is gone for every reader at once and its memory
 * is reclaimed lazily: on the next access to its key, by count(), and by a
 * write that finds the store full.
 *
 * add() stores only when the key is absent (nil, msg, "conflict" otherwise).
 * incr() adds delta to a number under the lock, so concurrent increments
 * from any number of workers are never lost: integer + integer stays an
 * integer (wrapping as Lua's + does), anything else is a float. An absent
 * key with init is created as init + delta, with ttl (the ttl applies only
 * when incr creates the key); absent without init is nil, msg, "not_found";
 * a key holding a string or a boolean is nil, msg, "bad_request".
 *
 * Bounds: at most max_entries keys (default 10000) and max_bytes (default
 * 16 MiB) counted as key + value + ENTRY_OVERHEAD bytes of bookkeeping per
 * key. A write that would pass either bound is refused with "limit" after
 * expired entries are dropped; nothing live is evicted. An operator's
 * counter or lock vanishing behind their back (as LRU eviction would do)
 * is worse than a loud "limit". Lowering the limits evicts nothing either:
 * new keys are refused until the store is back under them.
 */
#include "aux.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define KEY_MAX 256
#define VALUE_MAX (64 * 1024)
#define NBUCKET 16384 /* hash buckets (power of two) */
#define DEFAULT_MAX_ENTRIES 10000
#define DEFAULT_MAX_BYTES (16 * 1024 * 1024)
#define MAX_ENTRIES (1 << 22)
#define MAX_BYTES ((lua_Integer)1 << 40)
#define MAX_TTL_S (100.0 * 365 * 24 * 3600) /* keeps now + ttl in int64 ns */
#define KEYS_DEFAULT 1024                   /* keys() without max */
#define GET_STACK 1024 /* string values up to this size skip the Lua buffer */

enum { V_NIL, V_BOOL, V_INT, V_FLOAT, V_STR };

typedef struct value {
  int type;
  int b;
  lua_Integer i;
  lua_Number d;
  const char *s; /* V_STR: the bytes (in a Lua string or an entry) */
  size_t n;
} value;

typedef struct entry {
  struct entry *hnext;       /* hash chain; the dead list once unlinked */
  struct entry *prev, *next; /* every entry, in the order stored */
  int64_t expires_ns;        /* CLOCK_MONOTONIC; 0: never */
  size_t klen;
  value v;     /* v.s points into data for a string */
  char data[]; /* the key, then a string value */
} entry;

#define ENTRY_OVERHEAD ((lua_Integer)sizeof(entry))

/*
 * The store is process-wide on purpose: `horcrux serve` runs one lua_State
 * per worker thread, and a route on any worker must see what a route on
 * another wrote (counters, flags, caches). Everything in it is guarded by
 * `lock`. No Lua API call is made while it is held (a Lua error would
 * longjmp over the unlock), nor malloc or free: a write allocates its entry
 * before locking, and whatever the locked section unlinks goes on a dead
 * list that is freed after unlocking. One store per copy of this code: the
 * horcrux binary must load horcrux.shared from package.preload, never this
 * file's .so as well.
 */
static struct {
  pthread_mutex_t lock;
  entry *bucket[NBUCKET];
  entry *first, *last;
  size_t count;
  size_t bytes;  /* entry_size() of every entry */
  size_t kbytes; /* key bytes of every entry, to size keys()'s buffer */
  size_t max_entries;
  size_t max_bytes;
} store = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .max_entries = DEFAULT_MAX_ENTRIES,
    .max_bytes = DEFAULT_MAX_BYTES,
};

/* ---- arguments (may raise: call without the lock) ---- */

static const char *check_key(lua_State *L, int arg, size_t *len) {
  luaL_checktype(L, arg, LUA_TSTRING); /* not a number made into a string */
  const char *k = lua_tolstring(L, arg, len);
  luaL_argcheck(L, *len > 0 && *len <= KEY_MAX, arg,
                "key must be 1..256 bytes");
  return k;
}

static void check_value(lua_State *L, int arg, value *v) {
  memset(v, 0, sizeof *v);
  switch (lua_type(L, arg)) {
  case LUA_TNONE:
  case LUA_TNIL:
    v->type = V_NIL;
    break;
  case LUA_TBOOLEAN:
    v->type = V_BOOL;
    v->b = lua_toboolean(L, arg);
    break;
  case LUA_TNUMBER:
    if (lua_isinteger(L, arg)) {
      v->type = V_INT;
      v->i = lua_tointeger(L, arg);
    } else {
      v->type = V_FLOAT;
      v->d = lua_tonumber(L, arg);
    }
    break;
  case LUA_TSTRING:
    v->type = V_STR;
    v->s = lua_tolstring(L, arg, &v->n);
    luaL_argcheck(L, v->n <= VALUE_MAX, arg, "value longer than 65536 bytes");
    break;
  default:
    luaL_typeerror(L, arg, "string, number, boolean or nil");
  }
}

static void check_number(lua_State *L, int arg, value *v) {
  luaL_checktype(L, arg, LUA_TNUMBER);
  check_value(L, arg, v);
}

/* The expiry time for the ttl at arg (none, nil or 0: never). */
static int64_t check_ttl(lua_State *L, int arg, int64_t now) {
  lua_Number ttl = luaL_optnumber(L, arg, 0);
  luaL_argcheck(L, ttl >= 0 && ttl <= MAX_TTL_S, arg,
                "ttl must be 0..3153600000 seconds");
  if (ttl == 0)
    return 0;
  int64_t ns = (int64_t)(ttl * 1e9);
  return now + (ns > 0 ? ns : 1);
}

static size_t entry_size(size_t klen, const value *v) {
  return (size_t)ENTRY_OVERHEAD + klen + (v->type == V_STR ? v->n : 0);
}

/* A new entry holding a copy of key and v; raises when out of memory. */
static entry *make_entry(lua_State *L, const char *key, size_t klen,
                         const value *v, int64_t expires_ns) {
  size_t vn = v->type == V_STR ? v->n : 0;
  entry *e = malloc(sizeof *e + klen + vn);
  if (!e) {
    luaL_error(L, "horcrux.shared: not enough memory");
    return NULL;
  }
  memset(e, 0, sizeof *e);
  memcpy(e->data, key, klen);
  e->klen = klen;
  e->v = *v;
  if (v->type == V_STR) {
    memcpy(e->data + klen, v->s, vn);
    e->v.s = e->data + klen;
  }
  e->expires_ns = expires_ns;
  return e;
}

static void free_list(entry *e) {
  while (e) {
    entry *next = e->hnext;
    free(e);
    e = next;
  }
}

/* ---- the store (call with the lock held) ---- */

static int expired(const entry *e, int64_t now) {
  return e->expires_ns != 0 && now >= e->expires_ns;
}

static entry **slot_of(const char *key, size_t klen) {
  entry **p = &store.bucket[hx_fnv1a(key, klen) & (NBUCKET - 1)];
  while (*p && ((*p)->klen != klen || memcmp((*p)->data, key, klen) != 0))
    p = &(*p)->hnext;
  return p;
}

/* Takes e out of the store and puts it on *dead, to be freed unlocked. */
static void unlink_entry(entry *e, entry **dead) {
  entry **p = slot_of(e->data, e->klen);
  *p = e->hnext;
  if (e->prev)
    e->prev->next = e->next;
  else
    store.first = e->next;
  if (e->next)
    e->next->prev = e->prev;
  else
    store.last = e->prev;
  store.count--;
  store.bytes -= entry_size(e->klen, &e->v);
  store.kbytes -= e->klen;
  e->hnext = *dead;
  *dead = e;
}

static void insert(entry *e) {
  entry **p = slot_of(e->data, e->klen);
  e->hnext = *p;
  *p = e;
  e->prev = store.last;
  e->next = NULL;
  if (store.last)
    store.last->next = e;
  else
    store.first = e;
  store.last = e;
  store.count++;
  store.bytes += entry_size(e->klen, &e->v);
  store.kbytes += e->klen;
}

/* The live entry of key, or NULL; an expired one is dropped on the way. */
static entry *find(const char *key, size_t klen, int64_t now, entry **dead) {
  entry *e = *slot_of(key, klen);
  if (e && expired(e, now)) {
    unlink_entry(e, dead);
    return NULL;
  }
  return e;
}

static void purge_expired(int64_t now, entry **dead) {
  entry *e = store.first;
  while (e) {
    entry *next = e->next;
    if (expired(e, now))
      unlink_entry(e, dead);
    e = next;
  }
}

/* The limit that storing n in place of old (or NULL) would pass, or NULL;
 * its value goes to *max. */
static const char *over_limit(const entry *old, const entry *n, size_t *max) {
  size_t count = store.count + (old ? 0 : 1);
  size_t bytes = store.bytes - (old ? entry_size(old->klen, &old->v) : 0) +
                 entry_size(n->klen, &n->v);
  if (count > store.max_entries) {
    *max = store.max_entries;
    return "max_entries";
  }
  if (bytes > store.max_bytes) {
    *max = store.max_bytes;
    return "max_bytes";
  }
  return NULL;
}

/* Stores n in place of old (or NULL) if the limits allow; returns NULL or
 * the name of the limit that refused it (its value in *max). */
static const char *put(entry *old, entry *n, int64_t now, entry **dead,
                       size_t *max) {
  const char *limit = over_limit(old, n, max);
  if (limit) {
    purge_expired(now, dead); /* old is live at now: it stays */
    limit = over_limit(old, n, max);
  }
  if (limit)
    return limit;
  if (old)
    unlink_entry(old, dead);
  insert(n);
  return NULL;
}

/* ---- Lua functions ---- */

static int fail_limit(lua_State *L, const char *limit, size_t max) {
  return hx_fail(L, HX_LIMIT, "shared: store full (%s %I)", limit,
                 (lua_Integer)max);
}

static int l_delete(lua_State *L) {
  size_t klen;
  const char *key = check_key(L, 1, &klen);
  int64_t now = hx_mono_ns();
  entry *dead = NULL;
  pthread_mutex_lock(&store.lock);
  entry *e = find(key, klen, now, &dead);
  if (e)
    unlink_entry(e, &dead);
  pthread_mutex_unlock(&store.lock);
  free_list(dead);
  lua_pushboolean(L, e != NULL);
  return 1;
}

/* set() and add(): add stores only when the key is absent. */
static int store_value(lua_State *L, int add) {
  size_t klen;
  const char *key = check_key(L, 1, &klen);
  value v;
  check_value(L, 2, &v);
  if (v.type == V_NIL) {
    luaL_argcheck(L, !add, 2, "value expected");
    lua_settop(L, 1);
    l_delete(L);
    lua_pushboolean(L, 1);
    return 1;
  }
  int64_t now = hx_mono_ns();
  int64_t expires = check_ttl(L, 3, now);
  entry *n = make_entry(L, key, klen, &v, expires), *dead = NULL;
  const char *limit = NULL;
  size_t max = 0;
  int exists = 0;

  pthread_mutex_lock(&store.lock);
  entry *old = find(key, klen, now, &dead);
  if (add && old)
    exists = 1;
  else
    limit = put(old, n, now, &dead, &max);
  pthread_mutex_unlock(&store.lock);

  free_list(dead);
  if (exists || limit)
    free(n);
  if (exists)
    return hx_fail(L, HX_CONFLICT, "exists");
  if (limit)
    return fail_limit(L, limit, max);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_set(lua_State *L) { return store_value(L, 0); }
static int l_add(lua_State *L) { return store_value(L, 1); }

static void push_value(lua_State *L, const value *v) {
  switch (v->type) {
  case V_BOOL:
    lua_pushboolean(L, v->b);
    break;
  case V_INT:
    lua_pushinteger(L, v->i);
    break;
  case V_FLOAT:
    lua_pushnumber(L, v->d);
    break;
  case V_STR:
    lua_pushlstring(L, v->s, v->n);
    break;
  default:
    lua_pushnil(L);
  }
}

/* Copies key's value to *v, and a string value's bytes to buf when they fit
 * in cap (v->s = buf then; v->s = NULL when they did not fit). */
static void fetch(const char *key, size_t klen, char *buf, size_t cap,
                  value *v) {
  int64_t now = hx_mono_ns();
  entry *dead = NULL;
  pthread_mutex_lock(&store.lock);
  entry *e = find(key, klen, now, &dead);
  if (e) {
    *v = e->v;
    if (v->type == V_STR) {
      v->s = v->n <= cap ? buf : NULL;
      if (v->s)
        memcpy(buf, e->v.s, v->n);
    }
  } else {
    v->type = V_NIL;
  }
  pthread_mutex_unlock(&store.lock);
  free_list(dead);
}

static int l_get(lua_State *L) {
  size_t klen;
  const char *key = check_key(L, 1, &klen);
  char small[GET_STACK];
  value v;
  fetch(key, klen, small, sizeof small, &v);
  /* A long string is copied straight into a Lua buffer sized for it; the
   * value may change between the two looks, so look until it fits. */
  while (v.type == V_STR && v.s == NULL) {
    luaL_Buffer b;
    size_t cap = v.n;
    char *p = luaL_buffinitsize(L, &b, cap);
    fetch(key, klen, p, cap, &v);
    if (v.type == V_STR && v.s) {
      luaL_pushresultsize(&b, v.n);
      return 1;
    }
    lua_settop(L, 1);
  }
  push_value(L, &v);
  return 1;
}

/* a + b as Lua's + does it for integers and floats. */
static value add_numbers(const value *a, const value *b) {
  value r = {0};
  if (a->type == V_INT && b->type == V_INT) {
    r.type = V_INT;
    r.i = (lua_Integer)((lua_Unsigned)a->i + (lua_Unsigned)b->i);
  } else {
    r.type = V_FLOAT;
    r.d = (a->type == V_INT ? (lua_Number)a->i : a->d) +
          (b->type == V_INT ? (lua_Number)b->i : b->d);
  }
  return r;
}

static int l_incr(lua_State *L) {
  size_t klen;
  const char *key = check_key(L, 1, &klen);
  value delta, init, res = {0};
  check_number(L, 2, &delta);
  int has_init = !lua_isnoneornil(L, 3);
  if (has_init)
    check_number(L, 3, &init);
  int64_t now = hx_mono_ns();
  int64_t expires = check_ttl(L, 4, now);
  entry *n = NULL, *dead = NULL;
  if (has_init) {
    value first = add_numbers(&init, &delta);
    n = make_entry(L, key, klen, &first, expires);
  }
  enum { OK, NOT_NUMBER, ABSENT } why = OK;
  const char *limit = NULL;
  size_t max = 0;
  int used = 0;

  pthread_mutex_lock(&store.lock);
  entry *e = find(key, klen, now, &dead);
  if (e && (e->v.type == V_INT || e->v.type == V_FLOAT)) {
    e->v = res = add_numbers(&e->v, &delta); /* same size: bytes unchanged */
  } else if (e) {
    why = NOT_NUMBER;
  } else if (!n) {
    why = ABSENT;
  } else if (!(limit = put(NULL, n, now, &dead, &max))) {
    res = n->v;
    used = 1;
  }
  pthread_mutex_unlock(&store.lock);

  free_list(dead);
  if (!used)
    free(n);
  if (why == NOT_NUMBER)
    return hx_fail(L, HX_BAD_REQUEST, "shared.incr: value is not a number");
  if (why == ABSENT)
    return hx_fail(L, HX_NOT_FOUND, "not found");
  if (limit)
    return fail_limit(L, limit, max);
  push_value(L, &res);
  return 1;
}

static int l_ttl(lua_State *L) {
  size_t klen;
  const char *key = check_key(L, 1, &klen);
  int64_t now = hx_mono_ns(), expires = 0;
  entry *dead = NULL;
  pthread_mutex_lock(&store.lock);
  entry *e = find(key, klen, now, &dead);
  if (e)
    expires = e->expires_ns;
  pthread_mutex_unlock(&store.lock);
  free_list(dead);
  if (!e)
    return hx_fail(L, HX_NOT_FOUND, "not found");
  lua_pushnumber(L, expires ? (lua_Number)(expires - now) / 1e9 : 0);
  return 1;
}

/* keys([max]): the keys are copied into a userdata (each a size_t length,
 * then the bytes) under the lock and made strings after it, so an error in
 * Lua leaks nothing. The buffer is sized from the totals first; if the
 * store grew in between, the copy is tried again with the new totals. */
static int l_keys(lua_State *L) {
  lua_Integer max = luaL_optinteger(L, 1, KEYS_DEFAULT);
  luaL_argcheck(L, max >= 0, 1, "max must be >= 0");
  size_t limit = max == 0 ? SIZE_MAX : (size_t)max;
  size_t got = 0, used = 0;
  char *buf;
  for (;;) {
    pthread_mutex_lock(&store.lock);
    size_t want = store.kbytes + store.count * sizeof(size_t);
    pthread_mutex_unlock(&store.lock);
    size_t cap = want + want / 4 + 256;
    lua_settop(L, 1);
    buf = lua_newuserdatauv(L, cap, 0);
    int64_t now = hx_mono_ns();
    int fits = 1;
    got = used = 0;
    pthread_mutex_lock(&store.lock);
    for (entry *e = store.first; e && got < limit; e = e->next) {
      if (expired(e, now))
        continue;
      if (used + sizeof(size_t) + e->klen > cap) {
        fits = 0;
        break;
      }
      memcpy(buf + used, &e->klen, sizeof(size_t));
      memcpy(buf + used + sizeof(size_t), e->data, e->klen);
      used += sizeof(size_t) + e->klen;
      got++;
    }
    pthread_mutex_unlock(&store.lock);
    if (fits)
      break;
  }
  lua_createtable(L, (int)(got < INT32_MAX ? got : 0), 0);
  size_t off = 0;
  for (size_t i = 1; i <= got; i++) {
    size_t n;
    memcpy(&n, buf + off, sizeof n);
    lua_pushlstring(L, buf + off + sizeof n, n);
    lua_rawseti(L, -2, (lua_Integer)i);
    off += sizeof n + n;
  }
  return 1;
}

static int l_count(lua_State *L) {
  int64_t now = hx_mono_ns();
  entry *dead = NULL;
  pthread_mutex_lock(&store.lock);
  purge_expired(now, &dead);
  size_t n = store.count;
  pthread_mutex_unlock(&store.lock);
  free_list(dead);
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

static size_t clear_store(void) {
  pthread_mutex_lock(&store.lock);
  entry *e = store.first;
  size_t n = store.count;
  memset(store.bucket, 0, sizeof store.bucket);
  store.first = store.last = NULL;
  store.count = store.bytes = store.kbytes = 0;
  pthread_mutex_unlock(&store.lock);
  while (e) {
    entry *next = e->next;
    free(e);
    e = next;
  }
  return n;
}

static int l_clear(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)clear_store());
  return 1;
}

/* The store outlives every lua_State; it goes when the code does (exit, or
 * dlclose of this module by the last lua_close), so nothing is leaked. */
__attribute__((destructor)) static void free_store(void) { clear_store(); }

/* set_limits{max_entries=, max_bytes=}: either may be left out; returns
 * the previous limits in the same shape. */
static int l_set_limits(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer me = hx_opt_integer(L, 1, "max_entries", -1);
  lua_Integer mb = hx_opt_integer(L, 1, "max_bytes", -1);
  if (me != -1 && (me < 1 || me > MAX_ENTRIES))
    luaL_argerror(L, 1, "max_entries out of range 1..4194304");
  if (mb != -1 && (mb < 1 || mb > MAX_BYTES))
    luaL_argerror(L, 1, "max_bytes out of range 1..2^40");
  pthread_mutex_lock(&store.lock);
  size_t old_me = store.max_entries, old_mb = store.max_bytes;
  if (me != -1)
    store.max_entries = (size_t)me;
  if (mb != -1)
    store.max_bytes = (size_t)mb;
  pthread_mutex_unlock(&store.lock);
  lua_createtable(L, 0, 2);
  lua_pushinteger(L, (lua_Integer)old_me);
  lua_setfield(L, -2, "max_entries");
  lua_pushinteger(L, (lua_Integer)old_mb);
  lua_setfield(L, -2, "max_bytes");
  return 1;
}

static const luaL_Reg funcs[] = {
    {"set", l_set},       {"add", l_add},
    {"get", l_get},       {"incr", l_incr},
    {"delete", l_delete}, {"ttl", l_ttl},
    {"keys", l_keys},     {"count", l_count},
    {"clear", l_clear},   {"set_limits", l_set_limits},
    {NULL, NULL}};

static const hx_const consts[] = {{"KEY_MAX", KEY_MAX},
                                  {"VALUE_MAX", VALUE_MAX},
                                  {"ENTRY_OVERHEAD", ENTRY_OVERHEAD},
                                  {"DEFAULT_MAX_ENTRIES", DEFAULT_MAX_ENTRIES},
                                  {"DEFAULT_MAX_BYTES", DEFAULT_MAX_BYTES},
                                  {NULL, 0}};

HX_EXPORT int luaopen_horcrux_shared(lua_State *L) {
  luaL_newlib(L, funcs);
  hx_set_consts(L, consts);
  return 1;
}
