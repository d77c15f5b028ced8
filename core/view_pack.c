/*
 * view_pack.c - horcrux.view's packed format: a record or a meta table as
 * a flat byte string (a type tag, then the payload; tables carry their pair
 * count so unpacking sizes them once), held in malloc'd memory so no Lua
 * state owns it (see view.c). Packing may raise and runs without the
 * store's lock, in buffers that are Lua userdata, so a Lua error never
 * leaks; unpacking reads what packing wrote.
 */
#include "jsonconv.h"
#include "view_private.h"

#include <stdint.h>
#include <string.h>

#define MAX_BLOB (1u << 20) /* bytes of one packed record or meta */

/* Tags of the packed format. */
enum {
  T_NULL = 'z',
  T_TRUE = 't',
  T_FALSE = 'f',
  T_INT = 'i',
  T_FLOAT = 'd',
  T_STRING = 's',
  T_TABLE = 'T',
  T_ARRAY = 'A' /* a table tagged with json.array_mt */
};

/* ---- packing (may raise: call without the lock) ---- */

/* The output buffer is a userdata at stack index `idx`; growing it makes a
 * bigger one and puts it in the same slot, so nothing here is C-owned. */
typedef struct packer {
  lua_State *L;
  int idx;    /* the buffer userdata */
  int mt_idx; /* json.array_mt */
  char *p;
  size_t n, cap;
} packer;

static void pk_init(packer *k, lua_State *L, int mt_idx) {
  k->L = L;
  k->mt_idx = mt_idx;
  k->cap = 256;
  k->n = 0;
  k->p = lua_newuserdatauv(L, k->cap, 0);
  k->idx = lua_gettop(L);
}

static char *pk_room(packer *k, size_t more) {
  if (more > MAX_BLOB - k->n)
    luaL_error(k->L, "horcrux.view: record larger than %d bytes",
               (int)MAX_BLOB);
  if (k->n + more > k->cap) {
    size_t cap = k->cap * 2 > k->n + more ? k->cap * 2 : k->n + more;
    char *p = lua_newuserdatauv(k->L, cap, 0);
    memcpy(p, k->p, k->n);
    lua_replace(k->L, k->idx);
    k->p = p;
    k->cap = cap;
  }
  char *at = k->p + k->n;
  k->n += more;
  return at;
}

static void pk_tag(packer *k, char tag) { *pk_room(k, 1) = tag; }

static void pk_bytes(packer *k, const void *b, size_t n) {
  memcpy(pk_room(k, n), b, n);
}

static void pack_value(packer *k, int idx, int depth, const char *key);

/* A key: a string or an integer (a float key would not survive JSON either).
 */
static void pack_key(packer *k, int idx) {
  lua_State *L = k->L;
  if (lua_type(L, idx) == LUA_TSTRING ||
      (lua_type(L, idx) == LUA_TNUMBER && lua_isinteger(L, idx)))
    pack_value(k, idx, 0, NULL);
  else
    luaL_error(L,
               "horcrux.view: table key of type %s (string or integer "
               "expected)",
               luaL_typename(L, idx));
}

static void pack_table(packer *k, int idx, int depth) {
  lua_State *L = k->L;
  if (depth >= VIEW_MAX_DEPTH)
    luaL_error(L, "horcrux.view: tables nested deeper than %d (a cycle?)",
               VIEW_MAX_DEPTH);
  luaL_checkstack(L, 4, "horcrux.view: nesting");
  char tag = T_TABLE;
  if (lua_getmetatable(L, idx)) {
    if (lua_rawequal(L, -1, k->mt_idx))
      tag = T_ARRAY;
    lua_pop(L, 1);
  }
  pk_tag(k, tag);
  size_t at = k->n; /* the pair count, written when known */
  pk_room(k, sizeof(uint32_t));
  uint32_t pairs = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    pack_key(k, lua_gettop(L) - 1);
    pack_value(k, lua_gettop(L), depth + 1,
               lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL);
    lua_pop(L, 1);
    pairs++;
  }
  memcpy(k->p + at, &pairs, sizeof pairs);
}

static void pack_value(packer *k, int idx, int depth, const char *key) {
  lua_State *L = k->L;
  idx = lua_absindex(L, idx);
  switch (lua_type(L, idx)) {
  case LUA_TBOOLEAN:
    pk_tag(k, lua_toboolean(L, idx) ? T_TRUE : T_FALSE);
    return;
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) {
      int64_t v = (int64_t)lua_tointeger(L, idx);
      pk_tag(k, T_INT);
      pk_bytes(k, &v, sizeof v);
    } else {
      double v = (double)lua_tonumber(L, idx);
      pk_tag(k, T_FLOAT);
      pk_bytes(k, &v, sizeof v);
    }
    return;
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    if (n > MAX_BLOB)
      luaL_error(L, "horcrux.view: string longer than %d bytes", (int)MAX_BLOB);
    uint32_t len = (uint32_t)n;
    pk_tag(k, T_STRING);
    pk_bytes(k, &len, sizeof len);
    pk_bytes(k, s, n);
    return;
  }
  case LUA_TLIGHTUSERDATA:
    if (lua_touserdata(L, idx) == NULL) {
      pk_tag(k, T_NULL);
      return;
    }
    break;
  case LUA_TTABLE:
    pack_table(k, idx, depth);
    return;
  }
  luaL_error(L, "horcrux.view: cannot store a %s%s%s%s", luaL_typename(L, idx),
             key ? " (field '" : "", key ? key : "", key ? "')" : "");
}

/* Packs the table at arg into a new buffer userdata (pushed); returns it and
 * sets *n. */
const char *view_pack(lua_State *L, int arg, size_t *n) {
  arg = lua_absindex(L, arg);
  hx_json_push_array_mt(L);
  int mt = lua_gettop(L);
  packer k;
  pk_init(&k, L, mt);
  pack_table(&k, arg, 0);
  lua_remove(L, mt);
  *n = k.n;
  return k.p;
}

/* ---- unpacking (trusted input: we wrote it) ---- */

typedef struct reader {
  const char *p;
  int mt_idx;
} reader;

static void rd(reader *r, void *out, size_t n) {
  memcpy(out, r->p, n);
  r->p += n;
}

static void unpack_value(lua_State *L, reader *r) {
  char tag = *r->p++;
  switch (tag) {
  case T_NULL:
    hx_json_push_null(L);
    break;
  case T_TRUE:
  case T_FALSE:
    lua_pushboolean(L, tag == T_TRUE);
    break;
  case T_INT: {
    int64_t v;
    rd(r, &v, sizeof v);
    lua_pushinteger(L, (lua_Integer)v);
    break;
  }
  case T_FLOAT: {
    double v;
    rd(r, &v, sizeof v);
    lua_pushnumber(L, (lua_Number)v);
    break;
  }
  case T_STRING: {
    uint32_t n;
    rd(r, &n, sizeof n);
    lua_pushlstring(L, r->p, n);
    r->p += n;
    break;
  }
  default: { /* T_TABLE, T_ARRAY */
    uint32_t pairs;
    rd(r, &pairs, sizeof pairs);
    luaL_checkstack(L, 3, "horcrux.view: nesting");
    int cap = pairs > 1024 ? 1024 : (int)pairs;
    if (tag == T_ARRAY)
      lua_createtable(L, cap, 0);
    else
      lua_createtable(L, 0, cap);
    for (uint32_t i = 0; i < pairs; i++) {
      unpack_value(L, r); /* key */
      unpack_value(L, r); /* value */
      lua_rawset(L, -3);
    }
    if (tag == T_ARRAY) {
      lua_pushvalue(L, r->mt_idx);
      lua_setmetatable(L, -2);
    }
  }
  }
}

/* Pushes the table packed in [p, p + n). */
void view_unpack(lua_State *L, const char *p, size_t n) {
  hx_json_push_array_mt(L);
  reader r = {p, lua_gettop(L)};
  (void)n; /* trusted: we wrote it, its own counts end it */
  unpack_value(L, &r);
  lua_remove(L, r.mt_idx);
}
