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
#define _GNU_SOURCE /* the store's writer-preferring lock */
#include "aux.h"
#include "store.h"

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
  hx_node node;       /* filed under the key in data; bytes: entry_size() */
  int64_t expires_ns; /* CLOCK_MONOTONIC; 0: never */
  value v;            /* v.s points into data for a string */
  char data[];        /* the key, then a string value */
} entry;

#define ENTRY_OVERHEAD ((lua_Integer)sizeof(entry))

/*
 * The store is process-wide on purpose: `horcrux serve` runs one lua_State
 * per worker thread, and a route on any worker must see what a route on
 * another wrote (counters, flags, caches). Everything in it is guarded by
 * the store's lock, taken for writing by every call that may drop an
 * expired entry. No Lua API call is made while it is held (a Lua error
 * would longjmp over the unlock), nor malloc or free: a write allocates its
 * entry before locking, and whatever the locked section unlinks goes on a
 * dead list that is freed after unlocking. The bounds are the store's
 * max_count (max_entries) and max_bytes. One store per copy of this code:
 * the horcrux binary must load horcrux.shared from package.preload, never
 * this file's .so as well.
 */
static void free_node(hx_node *n);
static void purge_expired(hx_store *s, int64_t now, hx_node **dead);
static hx_link *buckets[NBUCKET];
static hx_store store =
    HX_STORE_INIT(buckets, DEFAULT_MAX_ENTRIES, DEFAULT_MAX_BYTES, free_node,
                  purge_expired, NULL);

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
  e->node.link.key = e->data;
  e->node.link.klen = klen;
  e->node.bytes = entry_size(klen, v);
  e->v = *v;
  if (v->type == V_STR) {
    memcpy(e->data + klen, v->s, vn);
    e->v.s = e->data + klen;
  }
  e->expires_ns = expires_ns;
  return e;
}

static entry *entry_of(hx_node *n) {
  return n ? HX_ENTRY_OF(n, entry, node) : NULL;
}

static void free_node(hx_node *n) { free(entry_of(n)); }

/* ---- the store's own behaviour: TTL and refusal at the bounds (lock
 * held) ---- */

static int expired(const entry *e, int64_t now) {
  return e->expires_ns != 0 && now >= e->expires_ns;
}

/* The live entry of key, or NULL; an expired one is dropped on the way. */
static entry *find(const char *key, size_t klen, int64_t now, hx_node **dead) {
  entry *e = entry_of(hx_store_find(&store, key, klen));
  if (e && expired(e, now)) {
    hx_store_drop(&store, &e->node, dead);
    return NULL;
  }
  return e;
}

static void purge_expired(hx_store *s, int64_t now, hx_node **dead) {
  hx_node *n = s->first;
  while (n) {
    hx_node *next = n->next;
    if (expired(entry_of(n), now))
      hx_store_drop(s, n, dead);
    n = next;
  }
}

/* The limit that storing n in place of old (or NULL) would pass, or NULL;
 * its value goes to *max. */
static const char *over_limit(entry *old, const entry *n, size_t *max) {
  switch (hx_store_over(&store, old ? &old->node : NULL, n->node.bytes)) {
  case HX_STORE_OVER_COUNT:
    *max = store.max_count;
    return "max_entries";
  case HX_STORE_OVER_BYTES:
    *max = store.max_bytes;
    return "max_bytes";
  }
  return NULL;
}

/* Stores n in place of old (or NULL) if the limits allow; returns NULL or
 * the name of the limit that refused it (its value in *max). */
static const char *put(entry *old, entry *n, int64_t now, hx_node **dead,
                       size_t *max) {
  const char *limit = over_limit(old, n, max);
  if (limit) {
    purge_expired(&store, now, dead); /* old is live at now: it stays */
    limit = over_limit(old, n, max);
  }
  if (limit)
    return limit;
  if (old)
    hx_store_drop(&store, &old->node, dead);
  hx_store_add(&store, &n->node);
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
  hx_node *dead = NULL;
  hx_store_wrlock(&store);
  entry *e = find(key, klen, now, &dead);
  if (e)
    hx_store_drop(&store, &e->node, &dead);
  hx_store_unlock(&store);
  hx_store_free_list(&store, dead);
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
  entry *n = make_entry(L, key, klen, &v, expires);
  hx_node *dead = NULL;
  const char *limit = NULL;
  size_t max = 0;
  int exists = 0;

  hx_store_wrlock(&store);
  entry *old = find(key, klen, now, &dead);
  if (add && old)
    exists = 1;
  else
    limit = put(old, n, now, &dead, &max);
  hx_store_unlock(&store);

  hx_store_free_list(&store, dead);
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
  hx_node *dead = NULL;
  hx_store_wrlock(&store);
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
  hx_store_unlock(&store);
  hx_store_free_list(&store, dead);
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
  entry *n = NULL;
  hx_node *dead = NULL;
  if (has_init) {
    value first = add_numbers(&init, &delta);
    n = make_entry(L, key, klen, &first, expires);
  }
  enum { OK, NOT_NUMBER, ABSENT } why = OK;
  const char *limit = NULL;
  size_t max = 0;
  int used = 0;

  hx_store_wrlock(&store);
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
  hx_store_unlock(&store);

  hx_store_free_list(&store, dead);
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
  hx_node *dead = NULL;
  hx_store_wrlock(&store);
  entry *e = find(key, klen, now, &dead);
  if (e)
    expires = e->expires_ns;
  hx_store_unlock(&store);
  hx_store_free_list(&store, dead);
  if (!e)
    return hx_fail(L, HX_NOT_FOUND, "not found");
  lua_pushnumber(L, expires ? (lua_Number)(expires - now) / 1e9 : 0);
  return 1;
}

/* keys([max]): the live keys are copied into a userdata (each a size_t
 * length, then the bytes) under the lock and made strings after it, so an
 * error in Lua leaks nothing. */
static size_t key_size(const hx_node *n, void *now) {
  const entry *e = HX_ENTRY_OF(n, const entry, node);
  return expired(e, *(int64_t *)now) ? 0 : sizeof(size_t) + n->link.klen;
}

static size_t key_copy(const hx_node *n, char *at, void *now) {
  size_t k = key_size(n, now);
  if (k > 0) {
    memcpy(at, &n->link.klen, sizeof(size_t));
    memcpy(at + sizeof(size_t), n->link.key, n->link.klen);
  }
  return k;
}

static int l_keys(lua_State *L) {
  lua_Integer max = luaL_optinteger(L, 1, KEYS_DEFAULT);
  luaL_argcheck(L, max >= 0, 1, "max must be >= 0");
  int64_t now = hx_mono_ns();
  hx_copier c = {key_size, key_copy, &now, (size_t)max, 4096};
  const char *buf;
  size_t got = hx_store_copy_out(L, &store, &c, &buf);
  lua_createtable(L, (int)(got < INT32_MAX ? got : 0), 0);
  for (size_t i = 1; i <= got; i++) {
    size_t n;
    memcpy(&n, buf, sizeof n);
    lua_pushlstring(L, buf + sizeof n, n);
    lua_rawseti(L, -2, (lua_Integer)i);
    buf += sizeof n + n;
  }
  return 1;
}

/* The store outlives every lua_State; it goes when the code does (exit, or
 * dlclose of this module by the last lua_close), so nothing is leaked. */
__attribute__((destructor)) static void free_store(void) {
  hx_store_clear(&store);
}

/* set_limits{max_entries=, max_bytes=}: either may be left out; returns
 * the previous limits in the same shape. */
static int l_set_limits(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer me = hx_store_opt_limit(L, 1, "max_entries", 1, MAX_ENTRIES);
  lua_Integer mb = hx_store_opt_limit(L, 1, "max_bytes", 1, MAX_BYTES);
  hx_store_wrlock(&store);
  size_t old_me = store.max_count, old_mb = store.max_bytes;
  if (me != -1)
    store.max_count = (size_t)me;
  if (mb != -1)
    store.max_bytes = (size_t)mb;
  hx_store_unlock(&store);
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
    {"keys", l_keys},     {"set_limits", l_set_limits},
    {NULL, NULL}};

static const hx_const consts[] = {{"KEY_MAX", KEY_MAX},
                                  {"VALUE_MAX", VALUE_MAX},
                                  {"ENTRY_OVERHEAD", ENTRY_OVERHEAD},
                                  {"DEFAULT_MAX_ENTRIES", DEFAULT_MAX_ENTRIES},
                                  {"DEFAULT_MAX_BYTES", DEFAULT_MAX_BYTES},
                                  {NULL, 0}};

HX_EXPORT int luaopen_horcrux_shared(lua_State *L) {
  luaL_newlib(L, funcs);
  hx_store_setfuncs(L, &store); /* clear, count */
  hx_set_consts(L, consts);
  return 1;
}
