/*
 * store.h - the bounded store under the process-wide stores (horcrux.cpu's
 * samples, horcrux.shared's keys, horcrux.view's containers): a hash index
 * of byte-string keys with chains, one ordered list, the counts and bounds
 * (entries and bytes), a lock, and iteration that copies entries out under
 * the lock. Each store keeps only its own behaviour on top: cpu moves an
 * entry to the end on use (LRU) and drops idle ones, shared expires entries
 * and refuses writes past its bounds, view keeps insertion order and a name
 * index (a second hx_index).
 *
 * Entries are the caller's structs with an hx_node inside (intrusive), found
 * again with HX_ENTRY_OF. The core allocates nothing, frees an entry only
 * through the store's free_node hook and never while it holds the lock, and
 * calls Lua only in the copy-out and registration helpers at the end, so it
 * can be used from any thread, with or without a lua_State (a C sampler as
 * well as a route). What a locked section takes out goes on a dead list
 * (hx_store_drop), freed after unlocking (hx_store_free_list).
 *
 * The lock is a readers-writer lock that prefers writers (glibc), so a
 * stream of readers cannot starve the one writer that feeds the store.
 * Functions named *_locked, and every hx_index and hx_store function that
 * takes no lock itself, expect the caller to hold it (a read lock where
 * they only read).
 */
#ifndef HORCRUX_STORE_H
#define HORCRUX_STORE_H

#include <lua.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define HX_ENTRY_OF(ptr, type, member)                                         \
  ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* A link in a hash chain: the key it is filed under lives in the entry. */
typedef struct hx_link {
  struct hx_link *next;
  const char *key;
  size_t klen;
} hx_link;

/* A hash index: a power of two of chains. Keys need not be unique (view's
 * names); hx_index_find gives the first link with a key, hx_index_next the
 * following ones. */
typedef struct hx_index {
  hx_link **bucket;
  size_t mask; /* buckets - 1 */
} hx_index;

#define HX_INDEX_INIT(buckets)                                                 \
  { (buckets), sizeof(buckets) / sizeof *(buckets)-1 }

hx_link *hx_index_find(const hx_index *ix, const char *key, size_t klen);
hx_link *hx_index_next(const hx_link *l, const char *key, size_t klen);
void hx_index_add(hx_index *ix, hx_link *l);
void hx_index_remove(hx_index *ix, hx_link *l); /* no-op when not filed */
void hx_index_clear(hx_index *ix);

/* An entry's part in a store: filed under link.key (unique), kept in the
 * store's order (first: the oldest added or, after hx_store_touch, the
 * least recently touched), counted as `bytes` against max_bytes. */
typedef struct hx_node {
  hx_link link;
  struct hx_node *prev, *next; /* next: the dead list once dropped */
  size_t bytes;
} hx_node;

typedef struct hx_store {
  pthread_rwlock_t lock;
  hx_index index;
  hx_node *first, *last;
  size_t count, bytes;
  size_t max_count, max_bytes; /* max_bytes 0: no byte bound */
  /* The store's own behaviour: how an entry is freed (no lock held),
   * which entries are stale at `now` (lock held; NULL: none ever is), and
   * a second index over the entries, emptied with the store (NULL: none;
   * the store's owner files and unfiles its links). */
  void (*free_node)(hx_node *n);
  void (*sweep)(struct hx_store *s, int64_t now, struct hx_node **dead);
  hx_index *also;
} hx_store;

#ifdef PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP
#define HX_STORE_LOCK_INIT PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP
#elif defined(__GLIBC__)
#error "define _GNU_SOURCE before the first #include: the store's lock"
#else
#define HX_STORE_LOCK_INIT PTHREAD_RWLOCK_INITIALIZER
#endif

/* A static store over a static bucket array. */
#define HX_STORE_INIT(buckets, max_count_, max_bytes_, free_, sweep_, also_)   \
  {                                                                            \
    .lock = HX_STORE_LOCK_INIT, .index = HX_INDEX_INIT(buckets),               \
    .max_count = (max_count_), .max_bytes = (max_bytes_),                      \
    .free_node = (free_), .sweep = (sweep_), .also = (also_)                   \
  }

void hx_store_rdlock(hx_store *s);
void hx_store_wrlock(hx_store *s);
void hx_store_unlock(hx_store *s);

/* The node filed under key, or NULL. */
hx_node *hx_store_find(const hx_store *s, const char *key, size_t klen);
/* Files n (link.key, link.klen and bytes set; key not held yet) at the end
 * of the order. */
void hx_store_add(hx_store *s, hx_node *n);
/* Takes n out of the index and the order. */
void hx_store_remove(hx_store *s, hx_node *n);
/* hx_store_remove, then n on the front of *dead (freed after unlocking). */
void hx_store_drop(hx_store *s, hx_node *n, hx_node **dead);
/* Moves n to the end of the order (most recently used). */
void hx_store_touch(hx_store *s, hx_node *n);
/* Sets n's byte count, keeping the store's total. */
void hx_store_resize(hx_store *s, hx_node *n, size_t bytes);

/* Which bound storing an entry of `bytes` in place of old (NULL: a new key)
 * would pass: HX_STORE_FITS, or the first of count, bytes it passes. */
enum { HX_STORE_FITS, HX_STORE_OVER_COUNT, HX_STORE_OVER_BYTES };
int hx_store_over(const hx_store *s, const hx_node *old, size_t bytes);

/* Empties the store (lock held) and returns its entries as a dead list. */
hx_node *hx_store_detach(hx_store *s);

/* Frees a dead list (or a detached store) with s->free_node, unlocked. */
void hx_store_free_list(hx_store *s, hx_node *dead);

/* Empties the store under its lock and frees every entry after unlocking;
 * returns how many there were. */
size_t hx_store_clear(hx_store *s);

/* The number of live entries: the stale ones swept first. */
size_t hx_store_count(hx_store *s);

/* ---- copying out to Lua: the only part that touches a lua_State */

/* What hx_store_copy_out asks of each entry in order, under a read lock:
 * size() the bytes it takes (0: leave it out), copy() writes exactly those
 * at `at` and returns their number (0 for an entry left out). At most `max`
 * entries are copied (0: all). */
typedef struct hx_copier {
  size_t (*size)(const hx_node *n, void *arg);
  size_t (*copy)(const hx_node *n, char *at, void *arg);
  void *arg;
  size_t max;
  size_t guess; /* bytes of the first try */
} hx_copier;

/* Copies the entries into a userdata pushed on L: measured and copied under
 * one read lock, allocated outside it (a Lua error never leaves the lock
 * held) and tried again, bigger, when the store grew in between. Returns
 * how many entries were copied; *buf is the userdata's memory. */
size_t hx_store_copy_out(lua_State *L, hx_store *s, const hx_copier *c,
                         const char **buf);

/* Sets clear() and count() in the module table on top of the stack, as
 * closures over s (which outlives every state: it is static). */
void hx_store_setfuncs(lua_State *L, hx_store *s);

/* opts[field] of the option table at idx: an integer in min..max (raises
 * otherwise), or -1 when absent (so min >= 0). */
lua_Integer hx_store_opt_limit(lua_State *L, int idx, const char *field,
                               lua_Integer min, lua_Integer max);

#endif
