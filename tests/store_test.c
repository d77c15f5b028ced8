/*
 * store_test.c - the bounded store core (core/store.c) on its own, in C:
 * the index with repeated keys, the order, the bounds, dead lists, copying
 * out to Lua (the retry when the first buffer is too small), and writers
 * and readers on several threads checking the structure as they go (run
 * under ASan by scripts/test, so a use after free fails too). Prints each
 * failed check and exits 1; tests/store_spec.lua runs it.
 */
#define _GNU_SOURCE
#include "store.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;
#define CHECK(c)                                                               \
  do {                                                                         \
    if (!(c)) {                                                                \
      fprintf(stderr, "%s:%d: failed: %s\n", __FILE__, __LINE__, #c);          \
      failures++;                                                              \
    }                                                                          \
  } while (0)

typedef struct item {
  hx_node node;
  hx_link alt; /* a second index, as view's names */
  char key[24];
} item;

static item *make(const char *key, size_t bytes) {
  item *it = calloc(1, sizeof *it);
  if (!it)
    abort();
  snprintf(it->key, sizeof it->key, "%s", key);
  it->node.link.key = it->key;
  it->node.link.klen = strlen(it->key);
  it->node.bytes = bytes;
  return it;
}

static void free_node(hx_node *n) { free(HX_ENTRY_OF(n, item, node)); }

static const char *key_of(const hx_node *n) {
  return n ? HX_ENTRY_OF(n, item, node)->key : "(none)";
}

/* The keys in store order, joined by spaces. */
static const char *order(const hx_store *s) {
  static char buf[256];
  buf[0] = '\0';
  for (hx_node *n = s->first; n; n = n->next) {
    strcat(buf, buf[0] ? " " : "");
    strcat(buf, key_of(n));
  }
  return buf;
}

static void test_order_and_bounds(void) {
  static hx_link *buckets[4]; /* few buckets: chains */
  hx_store s = HX_STORE_INIT(buckets, 3, 100, free_node, NULL, NULL);
  hx_node *dead = NULL;
  item *a = make("a", 10), *bb = make("b", 20), *c = make("c", 30);
  hx_store_add(&s, &a->node);
  hx_store_add(&s, &bb->node);
  hx_store_add(&s, &c->node);
  CHECK(strcmp(order(&s), "a b c") == 0);
  CHECK(s.count == 3 && s.bytes == 60);
  CHECK(hx_store_find(&s, "b", 1) == &bb->node);
  CHECK(hx_store_find(&s, "bb", 2) == NULL);
  hx_store_touch(&s, &a->node);
  CHECK(strcmp(order(&s), "b c a") == 0);
  hx_store_touch(&s, &a->node); /* already last */
  CHECK(strcmp(order(&s), "b c a") == 0);
  /* full by count; in place of an entry it fits unless too big */
  CHECK(hx_store_over(&s, NULL, 1) == HX_STORE_OVER_COUNT);
  CHECK(hx_store_over(&s, &c->node, 70) == HX_STORE_FITS);
  CHECK(hx_store_over(&s, &c->node, 71) == HX_STORE_OVER_BYTES);
  hx_store_resize(&s, &c->node, 5);
  CHECK(s.bytes == 35);
  hx_store_drop(&s, &bb->node, &dead);
  CHECK(strcmp(order(&s), "c a") == 0);
  CHECK(s.count == 2 && s.bytes == 15);
  CHECK(hx_store_find(&s, "b", 1) == NULL);
  CHECK(dead == &bb->node);
  s.max_bytes = 0; /* no byte bound */
  CHECK(hx_store_over(&s, NULL, (size_t)1 << 40) == HX_STORE_FITS);
  hx_store_free_list(&s, dead);
  CHECK(hx_store_clear(&s) == 2);
  CHECK(s.first == NULL && s.last == NULL && s.count == 0 && s.bytes == 0);
  CHECK(hx_store_find(&s, "a", 1) == NULL);
}

static void test_index_repeated_keys(void) {
  static hx_link *buckets[2];
  hx_index ix = HX_INDEX_INIT(buckets);
  item *x1 = make("x", 0), *x2 = make("x", 0), *y = make("y", 0);
  item *all[] = {x1, x2, y};
  for (int i = 0; i < 3; i++) {
    all[i]->alt.key = all[i]->key;
    all[i]->alt.klen = 1;
    hx_index_add(&ix, &all[i]->alt);
  }
  int n = 0;
  for (hx_link *l = hx_index_find(&ix, "x", 1); l; l = hx_index_next(l, "x", 1))
    n++;
  CHECK(n == 2);
  hx_index_remove(&ix, &x1->alt);
  hx_index_remove(&ix, &x1->alt); /* not filed: nothing */
  CHECK(hx_index_find(&ix, "x", 1) == &x2->alt);
  CHECK(hx_index_next(&x2->alt, "x", 1) == NULL);
  CHECK(hx_index_find(&ix, "y", 1) == &y->alt);
  hx_index_clear(&ix);
  CHECK(hx_index_find(&ix, "y", 1) == NULL);
  for (int i = 0; i < 3; i++)
    free(all[i]);
}

/* ---- the hooks: a sweep of stale entries, a second index */

static void sweep_x(hx_store *s, int64_t now, hx_node **dead) {
  (void)now;
  for (hx_node *n = s->first, *next; n; n = next) {
    next = n->next;
    if (key_of(n)[0] == 'x') {
      hx_index_remove(s->also, &HX_ENTRY_OF(n, item, node)->alt);
      hx_store_drop(s, n, dead);
    }
  }
}

static void test_hooks(void) {
  static hx_link *buckets[4], *alt[4];
  static hx_index ix = HX_INDEX_INIT(alt);
  static hx_store s = HX_STORE_INIT(buckets, 10, 0, free_node, sweep_x, &ix);
  const char *keys[] = {"a", "x1", "b", "x2"};
  for (int i = 0; i < 4; i++) {
    item *it = make(keys[i], 0);
    it->alt.key = it->key;
    it->alt.klen = 1;
    hx_store_add(&s, &it->node);
    hx_index_add(&ix, &it->alt);
  }
  CHECK(s.count == 4);
  CHECK(hx_store_count(&s) == 2); /* x1 and x2 swept */
  CHECK(strcmp(order(&s), "a b") == 0);
  CHECK(hx_store_clear(&s) == 2);
  CHECK(hx_index_find(&ix, "a", 1) == NULL); /* emptied with the store */
}

/* ---- copying out */

static size_t even_size(const hx_node *n, void *arg) {
  (void)arg;
  int k = atoi(key_of(n) + 1);
  return k % 2 == 0 ? n->link.klen + 1 : 0;
}

static size_t even_copy(const hx_node *n, char *at, void *arg) {
  size_t k = even_size(n, arg);
  if (k > 0) {
    memcpy(at, n->link.key, n->link.klen);
    at[n->link.klen] = ' ';
  }
  return k;
}

static void test_copy_out(void) {
  static hx_link *buckets[16];
  static hx_store s = HX_STORE_INIT(buckets, 1000, 0, free_node, NULL, NULL);
  char want[4096] = "";
  for (int i = 0; i < 200; i++) {
    char key[16];
    snprintf(key, sizeof key, "k%d", i);
    hx_store_add(&s, &make(key, 0)->node);
    if (i % 2 == 0 && i < 20) {
      strcat(want, key);
      strcat(want, " ");
    }
  }
  lua_State *L = luaL_newstate();
  const char *buf;
  /* a guess of 1 byte: measured, too small, made again to fit */
  hx_copier c = {even_size, even_copy, NULL, 10, 1};
  size_t n = hx_store_copy_out(L, &s, &c, &buf);
  CHECK(n == 10);
  CHECK(lua_gettop(L) == 1 && lua_rawlen(L, 1) >= strlen(want));
  CHECK(memcmp(buf, want, strlen(want)) == 0);
  c.max = 0;
  lua_settop(L, 0);
  CHECK(hx_store_copy_out(L, &s, &c, &buf) == 100);
  lua_close(L);
  CHECK(hx_store_clear(&s) == 200);
}

/* ---- threads: writers add and drop, readers walk and check */

#define KEYS 300
#define ROUNDS 20000
static hx_link *tbuckets[64];
static hx_store ts =
    HX_STORE_INIT(tbuckets, 200, 200 * 8, free_node, NULL, NULL);
static int bad_walks;

static void *writer(void *arg) {
  unsigned seed = (unsigned)(size_t)arg;
  for (int i = 0; i < ROUNDS; i++) {
    char key[16];
    snprintf(key, sizeof key, "t%u", (unsigned)rand_r(&seed) % KEYS);
    item *fresh = make(key, 1 + rand_r(&seed) % 8);
    hx_node *dead = NULL;
    hx_store_wrlock(&ts);
    hx_node *n = hx_store_find(&ts, key, strlen(key));
    if (n && rand_r(&seed) % 2)
      hx_store_drop(&ts, n, &dead);
    else if (n)
      hx_store_touch(&ts, n);
    else if (hx_store_over(&ts, NULL, fresh->node.bytes) == HX_STORE_FITS) {
      hx_store_add(&ts, &fresh->node);
      fresh = NULL;
    } else if (ts.first)
      hx_store_drop(&ts, ts.first, &dead); /* make room, as cpu does */
    hx_store_unlock(&ts);
    free(fresh);
    hx_store_free_list(&ts, dead);
  }
  return NULL;
}

/* Under the read lock: the list, the index and the totals agree. */
static int walk_ok(void) {
  size_t count = 0, bytes = 0;
  const hx_node *prev = NULL;
  for (hx_node *n = ts.first; n; prev = n, n = n->next) {
    if (n->prev != prev || hx_store_find(&ts, n->link.key, n->link.klen) != n)
      return 0;
    count++;
    bytes += n->bytes;
  }
  return prev == ts.last && count == ts.count && bytes == ts.bytes &&
         count <= ts.max_count && bytes <= ts.max_bytes;
}

static void *reader(void *arg) {
  (void)arg;
  for (int i = 0; i < ROUNDS / 4; i++) {
    hx_store_rdlock(&ts);
    int ok = walk_ok();
    hx_store_unlock(&ts);
    if (!ok)
      __atomic_add_fetch(&bad_walks, 1, __ATOMIC_RELAXED);
  }
  return NULL;
}

static void test_threads(void) {
  pthread_t t[8];
  for (int i = 0; i < 8; i++)
    pthread_create(&t[i], NULL, i < 4 ? writer : reader, (void *)(size_t)i);
  for (int i = 0; i < 8; i++)
    pthread_join(t[i], NULL);
  CHECK(bad_walks == 0);
  CHECK(walk_ok());
  size_t n = ts.count;
  CHECK(n > 0);
  CHECK(hx_store_clear(&ts) == n);
  CHECK(hx_store_count(&ts) == 0);
}

int main(void) {
  test_order_and_bounds();
  test_index_repeated_keys();
  test_hooks();
  test_copy_out();
  test_threads();
  if (failures)
    fprintf(stderr, "store_test: %d checks failed\n", failures);
  else
    puts("store_test: ok");
  return failures ? 1 : 0;
}
