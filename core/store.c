/* store.c - the bounded store under the process-wide stores (see store.h). */
#define _GNU_SOURCE /* the writer-preferring rwlock initializer */
#include "store.h"
#include "aux.h"

#include <lauxlib.h>
#include <string.h>

/* ---- hx_index */

static hx_link **chain(const hx_index *ix, const char *key, size_t klen) {
  return &ix->bucket[hx_fnv1a(key, klen) & ix->mask];
}

static int same_key(const hx_link *l, const char *key, size_t klen) {
  return l->klen == klen && memcmp(l->key, key, klen) == 0;
}

hx_link *hx_index_find(const hx_index *ix, const char *key, size_t klen) {
  hx_link *l = *chain(ix, key, klen);
  while (l && !same_key(l, key, klen))
    l = l->next;
  return l;
}

hx_link *hx_index_next(const hx_link *l, const char *key, size_t klen) {
  for (l = l->next; l; l = l->next)
    if (same_key(l, key, klen))
      return (hx_link *)l;
  return NULL;
}

void hx_index_add(hx_index *ix, hx_link *l) {
  hx_link **head = chain(ix, l->key, l->klen);
  l->next = *head;
  *head = l;
}

void hx_index_remove(hx_index *ix, hx_link *l) {
  hx_link **p = chain(ix, l->key, l->klen);
  while (*p && *p != l)
    p = &(*p)->next;
  if (*p)
    *p = l->next;
  l->next = NULL;
}

void hx_index_clear(hx_index *ix) {
  memset(ix->bucket, 0, (ix->mask + 1) * sizeof *ix->bucket);
}

/* ---- hx_store */

void hx_store_rdlock(hx_store *s) { pthread_rwlock_rdlock(&s->lock); }
void hx_store_wrlock(hx_store *s) { pthread_rwlock_wrlock(&s->lock); }
void hx_store_unlock(hx_store *s) { pthread_rwlock_unlock(&s->lock); }

hx_node *hx_store_find(const hx_store *s, const char *key, size_t klen) {
  hx_link *l = hx_index_find(&s->index, key, klen);
  return l ? HX_ENTRY_OF(l, hx_node, link) : NULL;
}

static void order_unlink(hx_store *s, hx_node *n) {
  if (n->prev)
    n->prev->next = n->next;
  else
    s->first = n->next;
  if (n->next)
    n->next->prev = n->prev;
  else
    s->last = n->prev;
  n->prev = n->next = NULL;
}

static void order_append(hx_store *s, hx_node *n) {
  n->prev = s->last;
  n->next = NULL;
  if (s->last)
    s->last->next = n;
  else
    s->first = n;
  s->last = n;
}

void hx_store_add(hx_store *s, hx_node *n) {
  hx_index_add(&s->index, &n->link);
  order_append(s, n);
  s->count++;
  s->bytes += n->bytes;
}

void hx_store_remove(hx_store *s, hx_node *n) {
  hx_index_remove(&s->index, &n->link);
  order_unlink(s, n);
  s->count--;
  s->bytes -= n->bytes;
}

void hx_store_drop(hx_store *s, hx_node *n, hx_node **dead) {
  hx_store_remove(s, n);
  n->next = *dead;
  *dead = n;
}

void hx_store_touch(hx_store *s, hx_node *n) {
  if (s->last == n)
    return;
  order_unlink(s, n);
  order_append(s, n);
}

void hx_store_resize(hx_store *s, hx_node *n, size_t bytes) {
  s->bytes = s->bytes - n->bytes + bytes;
  n->bytes = bytes;
}

int hx_store_over(const hx_store *s, const hx_node *old, size_t bytes) {
  size_t count = s->count + (old ? 0 : 1);
  size_t total = s->bytes - (old ? old->bytes : 0) + bytes;
  if (count > s->max_count)
    return HX_STORE_OVER_COUNT;
  if (s->max_bytes && total > s->max_bytes)
    return HX_STORE_OVER_BYTES;
  return HX_STORE_FITS;
}

void hx_store_free_list(hx_store *s, hx_node *dead) {
  while (dead) {
    hx_node *next = dead->next;
    s->free_node(dead);
    dead = next;
  }
}

hx_node *hx_store_detach(hx_store *s) {
  hx_node *all = s->first; /* still linked by next */
  hx_index_clear(&s->index);
  if (s->also)
    hx_index_clear(s->also);
  s->first = s->last = NULL;
  s->count = s->bytes = 0;
  return all;
}

size_t hx_store_clear(hx_store *s) {
  hx_store_wrlock(s);
  size_t n = s->count;
  hx_node *all = hx_store_detach(s);
  hx_store_unlock(s);
  hx_store_free_list(s, all);
  return n;
}

size_t hx_store_count(hx_store *s) {
  hx_node *dead = NULL;
  if (s->sweep) {
    int64_t now = hx_mono_ns();
    hx_store_wrlock(s);
    s->sweep(s, now, &dead);
  } else {
    hx_store_rdlock(s);
  }
  size_t n = s->count;
  hx_store_unlock(s);
  hx_store_free_list(s, dead);
  return n;
}

/* ---- copying out */

/* Under the lock: the bytes the copier wants; copies them when they fit in
 * cap. Returns the bytes needed, *n the entries. */
static size_t copy_locked(const hx_store *s, const hx_copier *c, char *buf,
                          size_t cap, size_t *n) {
  size_t need = 0, got = 0;
  for (hx_node *e = s->first; e && (c->max == 0 || got < c->max); e = e->next) {
    size_t k = c->size(e, c->arg);
    need += k;
    got += k > 0;
  }
  *n = got;
  if (need > cap)
    return need;
  got = 0;
  for (hx_node *e = s->first; e && (c->max == 0 || got < c->max); e = e->next) {
    size_t k = c->copy(e, buf, c->arg);
    buf += k;
    got += k > 0;
  }
  return need;
}

size_t hx_store_copy_out(lua_State *L, hx_store *s, const hx_copier *c,
                         const char **buf) {
  size_t cap = c->guess;
  for (;;) {
    char *p = lua_newuserdatauv(L, cap ? cap : 1, 0);
    size_t n;
    hx_store_rdlock(s);
    size_t need = copy_locked(s, c, p, cap, &n);
    hx_store_unlock(s);
    if (need <= cap) {
      *buf = p;
      return n;
    }
    lua_pop(L, 1);
    cap = need + need / 4 + 256; /* room for what arrives meanwhile */
  }
}

static int l_clear(lua_State *L) {
  hx_store *s = lua_touserdata(L, lua_upvalueindex(1));
  lua_pushinteger(L, (lua_Integer)hx_store_clear(s));
  return 1;
}

static int l_count(lua_State *L) {
  hx_store *s = lua_touserdata(L, lua_upvalueindex(1));
  lua_pushinteger(L, (lua_Integer)hx_store_count(s));
  return 1;
}

void hx_store_setfuncs(lua_State *L, hx_store *s) {
  static const luaL_Reg funcs[] = {
      {"clear", l_clear}, {"count", l_count}, {NULL, NULL}};
  lua_pushlightuserdata(L, s);
  luaL_setfuncs(L, funcs, 1);
}

lua_Integer hx_store_opt_limit(lua_State *L, int idx, const char *field,
                               lua_Integer min, lua_Integer max) {
  idx = lua_absindex(L, idx);
  int absent = lua_getfield(L, idx, field) == LUA_TNIL;
  lua_pop(L, 1);
  if (absent)
    return -1;
  lua_Integer v = hx_opt_integer(L, idx, field, 0);
  if (v < min || v > max)
    luaL_argerror(
        L, idx, lua_pushfstring(L, "%s out of range %I..%I", field, min, max));
  return v;
}
