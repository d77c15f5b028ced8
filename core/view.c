/*
 * view.c - horcrux.view: the live view. For every container the collector
 * follows, its latest stats record and its metadata, in one store shared by
 * every Lua state of the process.
 *
 *   view.put(id, record [, meta [, taken_ns]]) -> true | nil, msg, "limit"
 *   view.set_meta(id, meta)    -> true | nil, msg, "limit"
 *   view.sample([opts])        -> summary (view_sample.c: the figures of
 *                                 every running container, read from its
 *                                 cgroup in C)
 *   view.get(id)               -> record, meta|nil | nil, msg, "not_found"
 *   view.meta(id)              -> meta | nil, msg, "not_found"
 *   view.find(ref)             -> full id | nil, msg, kind
 *   view.all()                 -> array of records (each with id and name)
 *   view.stats_json([want])    -> the JSON text of all() (of the ids in the
 *                                 set want only), written in C; and n
 *   view.ids()                 -> array of full ids
 *   view.remove(id)            -> true if id was held
 *   view.clear()               -> number of containers dropped
 *   view.count()               -> number of containers held
 *   view.set_limits{max_containers=, max_fds=} -> previous limits
 *   view.metas()               -> array of every meta held, each with
 *                                 full_id (the collector keeps stopped
 *                                 containers' too: GET /api/containers)
 *   view.unsampled()           -> the ids whose meta says running and that
 *                                 hold no record yet
 *   view.set_status(t), view.status() -> the collector's word on the view
 *                                 ({trusted = ...}), or nil before any
 *   view.footprint()           -> {containers =, bytes =, fds =}: malloc'd
 *                                 bytes the view holds (entries, records,
 *                                 metas, what sample() keeps) and the
 *                                 descriptors sample() keeps open
 *
 * Ids are full container ids: 64 lowercase hex digits; anything else raises
 * (misuse). A record and a meta are tables of strings, numbers, booleans,
 * json.null and nested tables with string or integer keys (a function, a
 * userdata other than json.null, a cycle or nesting past MAX_DEPTH raises).
 * They come back as they went in: an integer stays an integer, a float a
 * float, json.null stays json.null, and an array tagged with json.array_mt
 * keeps its tag, so `[]` encodes as `[]`.
 *
 * put() replaces the record; with a meta it replaces the meta too (nil
 * keeps the stored one). taken_ns is when the record's figures were read,
 * in CLOCK_MONOTONIC ns (horcrux.clock.mono_ns(), the cgroup reader's
 * mono_ns); it defaults to the time of the put. get() and all() add
 * sample_age_ms, an integer: now minus taken_ns, computed at read time.
 * all() also sets id (the full id) and name (meta.name without a leading
 * "/", else the record's own name, else json.null) in each record; get()
 * returns the record as stored plus sample_age_ms. all() and ids() list in
 * the order the containers were first stored; an entry that has a meta but
 * no record yet (set_meta() first) is left out of all() and counts
 * everywhere else.
 *
 * Records from C. sample() stores a container's figures as a C struct in
 * its entry, not as a Lua table; get() and all() build the same stats
 * record from it as lua/horcrux/record.lua builds from any source
 * (view_record.c), with id, name (as all() sets it) and sample_age_ms. A
 * put() replaces such figures with its record and a sample() replaces a
 * put record with figures: the newest wins, whichever made it. Which
 * containers sample() reads: those whose meta (put or set_meta) has
 * status = "running".
 *
 * find(ref) resolves as the daemon does: a full id, then a name (meta.name,
 * a leading "/" ignored), then a unique id prefix. Not held: nil, msg,
 * "not_found" -- the caller may then ask a source, the view holds only what
 * the collector put. A prefix of several ids: nil, msg, "bad_request" (the
 * daemon answers such a prefix with 400 as well). An empty ref: nil, msg,
 * "bad_request".
 *
 * The store is bounded (max_containers, default 10000): a put or set_meta
 * of a new id when it is full fails with kind "limit"; nothing is evicted
 * behind the collector's back. max_fds bounds the descriptors sample()
 * keeps open (view_sample.c); -1, the default, is half the soft
 * RLIMIT_NOFILE. remove() and clear() close what sample() keeps for a
 * container.
 *
 * Storage. A Lua record and a meta are packed into flat byte strings
 * (view_pack.c) held in malloc'd memory, so no Lua state owns them.
 * Packing and unpacking run outside the lock, in buffers that are Lua
 * userdata: a Lua error (a bad value, out of memory) never leaks and never
 * leaves the lock held. get() and all() copy what they return under the
 * read lock and build the tables after unlocking.
 */
#define _GNU_SOURCE /* the store's writer-preferring lock */
#include "aux.h"
#include "jsonconv.h"
#include "store.h"
#include "view_private.h"

#include <malloc.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ID_LEN VIEW_ID_LEN
#define NBUCKET 4096 /* hash buckets of each index (power of two) */
#define DEFAULT_MAX_CONTAINERS 10000
#define MAX_CONTAINERS (1 << 20)
#define MAX_DEPTH VIEW_MAX_DEPTH
#define FIRST_GUESS 1024 /* bytes copied out on a first try */
#define MAX_FDS (1 << 24)
#define MAX_HISTORY 86400 /* points a container (a day at 1 s) */

typedef struct blob {
  char *p; /* malloc'd; NULL when absent */
  size_t n;
} blob;

typedef struct entry {
  hx_node node;      /* filed under id, in the order of first storage */
  hx_link name_link; /* in the name index while name != NULL */
  char *name;        /* meta.name without a leading "/", or NULL */
  size_t namelen;
  blob rec, meta;   /* rec: a put record, NULL when figs hold it */
  int64_t taken_ns; /* CLOCK_MONOTONIC of the record's figures */
  int has_figs;     /* the record is figs (sample), not rec (put) */
  int running;      /* meta.status is "running": sample() reads it */
  uint64_t gen;     /* unique to this entry, never reused */
  /* The sampler's (one sample() at a time): it changes them under the read
   * lock, remove and clear read them under the write lock. busy: checked
   * out by a round, which then owns the probe and closes it if the entry
   * went. */
  int busy;
  view_probe *probe;
  view_ring *ring; /* the history (view_history.c); NULL: none yet */
  /* The record's JSON text as view.stats_json last wrote it from figs,
   * without its age (written at frag_age when asked): NULL when none or
   * stale. ver counts the changes of what the text says (the figures, the
   * name, a put record); a text written from a copy of another ver is not
   * installed. Both under the store's lock, as the rest. */
  char *frag;
  uint32_t frag_n, frag_age;
  uint64_t ver;
  view_figs figs;
  char id[ID_LEN];
} entry;

/*
 * The view is process-wide on purpose: `horcrux serve` runs the collector in
 * a thread with its own lua_State and answers requests on worker threads
 * that each have theirs, and every one of them must read what the collector
 * wrote. Everything in it, the name index included, is guarded by the
 * store's lock: readers (get, find, all) share it, writers (put, remove)
 * take it alone, and the writer is preferred so a stream of requests cannot
 * starve the collector. No Lua API call is made while the lock is held (a
 * Lua error would longjmp over the unlock), nor malloc or free: a write
 * allocates before locking and frees what it replaced after unlocking. One
 * store per copy of this code: the horcrux binary must load horcrux.view
 * from package.preload, never this file's .so as well.
 */
static void free_node(hx_node *n);
static hx_link *id_buckets[NBUCKET], *name_buckets[NBUCKET];
static hx_index names = HX_INDEX_INIT(name_buckets);
static hx_store store = HX_STORE_INIT(id_buckets, DEFAULT_MAX_CONTAINERS, 0,
                                      free_node, NULL, &names);
static uint64_t next_gen = 1; /* write lock held */
/* Bumped by every change of the metas held (a meta set, an entry gone),
 * under the write lock or after the change is seen: view.generation(). */
static atomic_ullong meta_gen = 1;

/* The full id at arg; raises unless it is 64 lowercase hex digits. */
static const char *check_id(lua_State *L, int arg) {
  size_t n;
  luaL_checktype(L, arg, LUA_TSTRING);
  const char *id = lua_tolstring(L, arg, &n);
  luaL_argcheck(L, n == ID_LEN && hx_is_lower_hex(id, n), arg,
                "full container id expected (64 lowercase hex digits)");
  return id;
}

/* ---- the store's own behaviour: the name index (lock held) ---- */

static entry *entry_of(hx_node *n) {
  return n ? HX_ENTRY_OF(n, entry, node) : NULL;
}

static entry *by_id(const char *id) {
  return entry_of(hx_store_find(&store, id, ID_LEN));
}

/* The entry named name; of several (a name reused before the collector
 * dropped the old container), the one with the newest record. */
static entry *by_name(const char *name, size_t n) {
  entry *best = NULL;
  for (hx_link *l = hx_index_find(&names, name, n); l;
       l = hx_index_next(l, name, n)) {
    entry *e = HX_ENTRY_OF(l, entry, name_link);
    if (!best || e->taken_ns > best->taken_ns)
      best = e;
  }
  return best;
}

/* Gives e the name (NULL: none), refiling it in the name index; returns the
 * old name for the caller to free after unlocking. */
static char *rename_entry(entry *e, char *name, size_t namelen) {
  char *old = e->name;
  if (e->name)
    hx_index_remove(&names, &e->name_link);
  e->name = name;
  e->namelen = namelen;
  e->name_link.key = name;
  e->name_link.klen = namelen;
  if (name)
    hx_index_add(&names, &e->name_link);
  return old;
}

/* A busy entry's probe is the sampler's: it closes it when it finds the
 * entry gone. */
static void free_entry(entry *e) {
  if (!e)
    return;
  if (!e->busy)
    view_probe_close(e->probe);
  free(e->rec.p);
  free(e->meta.p);
  free(e->name);
  view_ring_free(e->ring);
  free(e->frag);
  free(e);
  atomic_fetch_add(&meta_gen, 1); /* after the entry left the store */
}

static void free_node(hx_node *n) { free_entry(entry_of(n)); }

/* ---- writing ---- */

/* What a write brings, all allocated before the lock is taken. */
typedef struct update {
  blob rec, meta;
  char *name; /* the new name when meta is set (NULL: the meta has none) */
  size_t namelen;
  int has_rec, has_meta;
  int running; /* meta.status is "running" */
  int64_t taken_ns;
  entry *fresh;  /* used if the id is new */
  int has_point; /* a record: its point goes into the history */
  view_point point;
  view_ring *ring; /* a new ring when the entry's does not fit, or NULL */
  char *frag;      /* the entry's JSON text, stale now */
} update;

static void update_free(update *u) {
  free(u->frag);
  free(u->ring);
  free(u->rec.p);
  free(u->meta.p);
  free(u->name);
  free(u->fresh);
}

static char *dup_bytes(const char *s, size_t n) {
  char *d = malloc(n ? n : 1);
  if (d)
    memcpy(d, s, n);
  return d;
}

/* meta.name of the table at idx, without a leading "/", or NULL. */
static const char *meta_name(lua_State *L, int idx, size_t *n) {
  const char *name = NULL;
  if (lua_getfield(L, idx, "name") == LUA_TSTRING) {
    name = lua_tolstring(L, -1, n);
    if (*n > 0 && name[0] == '/')
      name++, (*n)--;
    if (*n == 0)
      name = NULL;
  }
  return name; /* the string stays on the stack, anchored */
}

/* Whether meta.status of the table at idx is "running". */
static int meta_running(lua_State *L, int idx) {
  size_t n;
  const char *st = NULL;
  if (lua_getfield(L, idx, "status") == LUA_TSTRING)
    st = lua_tolstring(L, -1, &n);
  int running = st && n == 7 && memcmp(st, "running", 7) == 0;
  lua_pop(L, 1);
  return running;
}

/* Packs and copies what update() stores; raises on misuse or out of
 * memory, owning nothing by then. */
static void prepare(lua_State *L, const char *id, int rec_arg, int meta_arg,
                    update *u) {
  const char *rp = NULL, *mp = NULL, *name = NULL;
  size_t rn = 0, mn = 0, namen = 0;
  memset(u, 0, sizeof *u);
  if (rec_arg) {
    rp = view_pack(L, rec_arg, &rn);
    u->has_rec = 1;
  }
  if (meta_arg) {
    mp = view_pack(L, meta_arg, &mn);
    u->running = meta_running(L, meta_arg);
    name = meta_name(L, meta_arg, &namen);
    u->has_meta = 1;
  }
  /* No Lua call from here on: nothing may raise while we own memory. */
  int oom = 0;
  if (rp && !(u->rec.p = dup_bytes(rp, rn)))
    oom = 1;
  if (mp && !(u->meta.p = dup_bytes(mp, mn)))
    oom = 1;
  if (name && !(u->name = dup_bytes(name, namen)))
    oom = 1;
  if (!(u->fresh = calloc(1, sizeof *u->fresh)))
    oom = 1;
  if (oom) {
    update_free(u);
    luaL_error(L, "horcrux.view: not enough memory");
  }
  u->rec.n = rn;
  u->meta.n = mn;
  u->namelen = namen;
  memcpy(u->fresh->id, id, ID_LEN);
}

/* Applies u to id's entry (made if new); returns 0, or -1 when the view is
 * full. What it replaced is left in u for the caller to free. */
static int update_locked(const char *id, update *u) {
  entry *e = by_id(id);
  if (!e) {
    if (hx_store_over(&store, NULL, 0) != HX_STORE_FITS)
      return -1;
    e = u->fresh;
    u->fresh = NULL;
    e->node.link.key = e->id;
    e->node.link.klen = ID_LEN;
    e->gen = next_gen++;
    hx_store_add(&store, &e->node);
  }
  int new_meta =
      u->has_meta &&
      (u->meta.n != e->meta.n ||
       (u->meta.n > 0 && memcmp(u->meta.p, e->meta.p, u->meta.n) != 0));
  if (new_meta)
    atomic_fetch_add(&meta_gen, 1);
  if (u->has_rec || new_meta) { /* the record, or its name, changes */
    u->frag = e->frag;
    e->frag = NULL;
    e->ver++;
  }
  if (u->has_rec) {
    blob old = e->rec;
    e->rec = u->rec;
    e->taken_ns = u->taken_ns;
    e->has_figs = 0;
    u->rec = old;
  }
  if (u->has_point)
    u->ring = view_ring_add(&e->ring, u->ring, &u->point);
  if (u->has_meta) {
    blob old = e->meta;
    e->meta = u->meta;
    e->running = u->running;
    u->meta = old;
    u->name = rename_entry(e, u->name, u->namelen);
  }
  return 0;
}

/* Whether id's entry needs a new ring for its history (a peek: the write
 * that follows checks again). */
static int needs_ring(const char *id) {
  hx_store_rdlock(&store);
  entry *e = by_id(id);
  int fits = view_ring_fits(e ? e->ring : NULL);
  hx_store_unlock(&store);
  return !fits;
}

/* The wall clock of monotonic time t. */
static int64_t wall_of(int64_t t) { return hx_real_ns() - (hx_mono_ns() - t); }

static int apply(lua_State *L, update *u, const char *id) {
  if (u->has_point && needs_ring(id))
    u->ring = view_ring_new();
  hx_store_wrlock(&store);
  int full = update_locked(id, u);
  size_t max = store.max_count;
  hx_store_unlock(&store);
  update_free(u);
  if (full)
    return hx_fail(L, HX_LIMIT, "view: full (%d containers)", (int)max);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_put(lua_State *L) {
  const char *id = check_id(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  if (!lua_isnoneornil(L, 3))
    luaL_checktype(L, 3, LUA_TTABLE);
  int64_t taken = hx_mono_ns();
  if (!lua_isnoneornil(L, 4)) {
    lua_Integer t = luaL_checkinteger(L, 4);
    luaL_argcheck(L, t >= 0, 4, "monotonic ns expected");
    taken = (int64_t)t;
  }
  lua_settop(L, 4);
  view_point point;
  view_point_of_table(L, 2, &point, wall_of(taken));
  update u;
  prepare(L, id, 2, lua_isnil(L, 3) ? 0 : 3, &u);
  u.taken_ns = taken;
  u.point = point;
  u.has_point = 1;
  return apply(L, &u, id);
}

static int l_set_meta(lua_State *L) {
  const char *id = check_id(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  update u;
  prepare(L, id, 0, 2, &u);
  return apply(L, &u, id);
}

/* ---- reading ---- */

/* The age in ms of figures taken at taken_ns; never negative. */
static lua_Integer age_ms(int64_t now, int64_t taken_ns) {
  return now > taken_ns ? (lua_Integer)((now - taken_ns) / 1000000) : 0;
}

/* One entry as copied out: [copied][id][name][record][meta], the record
 * either packed (put) or a view_figs (sample), the meta only for get() and
 * meta(). */
typedef struct copied {
  int64_t taken_ns;
  uint32_t rn, mn, nn;
  int figs;
} copied;

static int has_record(const entry *e) { return e->has_figs || e->rec.p; }

static size_t rec_size(const entry *e) {
  return e->has_figs ? sizeof e->figs : e->rec.n;
}

static size_t copied_size(const entry *e, int with_meta) {
  return sizeof(copied) + ID_LEN + e->namelen + rec_size(e) +
         (with_meta ? e->meta.n : 0);
}

static char *put_bytes(char *at, const void *p, size_t n) {
  if (n)
    memcpy(at, p, n);
  return at + n;
}

static char *copy_out(char *at, const entry *e, int with_meta) {
  copied c = {e->taken_ns, (uint32_t)rec_size(e),
              with_meta ? (uint32_t)e->meta.n : 0, (uint32_t)e->namelen,
              e->has_figs};
  at = put_bytes(at, &c, sizeof c);
  at = put_bytes(at, e->id, ID_LEN);
  at = put_bytes(at, e->name, e->namelen);
  at = put_bytes(at, e->has_figs ? (const void *)&e->figs : e->rec.p, c.rn);
  return put_bytes(at, e->meta.p, c.mn);
}

/* Where a copied entry's parts are. */
typedef struct view_of {
  copied c;
  const char *id, *name, *rec, *meta;
  const char *next;
} view_of;

static view_of read_copied(const char *at) {
  view_of v;
  memcpy(&v.c, at, sizeof v.c);
  v.id = at + sizeof v.c;
  v.name = v.id + ID_LEN;
  v.rec = v.name + v.c.nn;
  v.meta = v.rec + v.c.rn;
  v.next = v.meta + v.c.mn;
  return v;
}

enum { GOT_NONE, GOT_NO_RECORD, GOT_SMALL, GOT_IT };

/* Copies id's entry into a userdata pushed on the stack; grows and retries
 * when it does not fit. Returns GOT_NONE, GOT_NO_RECORD or GOT_IT. */
static int fetch(lua_State *L, const char *id, int need_rec, view_of *out) {
  size_t cap = FIRST_GUESS;
  for (;;) {
    char *buf = lua_newuserdatauv(L, cap, 0);
    int got;
    size_t need = 0;
    hx_store_rdlock(&store);
    entry *e = by_id(id);
    if (!e)
      got = GOT_NONE;
    else if (need_rec && !has_record(e))
      got = GOT_NO_RECORD;
    else if ((need = copied_size(e, 1)) > cap)
      got = GOT_SMALL;
    else {
      copy_out(buf, e, 1);
      got = GOT_IT;
    }
    hx_store_unlock(&store);
    if (got != GOT_SMALL) {
      if (got == GOT_IT)
        *out = read_copied(buf);
      return got;
    }
    lua_pop(L, 1);
    cap = need;
  }
}

static int not_held(lua_State *L, const char *id, int got) {
  lua_pushlstring(L, id, 12);
  const char *sid = lua_tostring(L, -1);
  if (got == GOT_NO_RECORD)
    return hx_fail(L, HX_NOT_FOUND, "view: no record yet for container %s",
                   sid);
  return hx_fail(L, HX_NOT_FOUND, "view: container %s is not in the view", sid);
}

static void push_meta(lua_State *L, const view_of *v) {
  if (v->c.mn)
    view_unpack(L, v->meta, v->c.mn);
  else
    lua_pushnil(L);
}

/* Sets record.name (at -1) from meta.name, else keeps the record's own
 * string name, else json.null. */
static void set_name(lua_State *L, const view_of *v) {
  if (v->c.nn) {
    lua_pushlstring(L, v->name, v->c.nn);
  } else if (lua_getfield(L, -1, "name") == LUA_TSTRING) {
    lua_pop(L, 1);
    return;
  } else {
    lua_pop(L, 1);
    hx_json_push_null(L);
  }
  lua_setfield(L, -2, "name");
}

/* Pushes the copied record with sample_age_ms; a record from figures, or
 * any record when `named`, also gets id and name. */
static void push_record(lua_State *L, const view_of *v, int64_t now,
                        int named) {
  if (v->c.figs) {
    view_figs f;
    memcpy(&f, v->rec, sizeof f);
    view_push_record(L, &f);
  } else {
    view_unpack(L, v->rec, v->c.rn);
  }
  if (named || v->c.figs) {
    lua_pushlstring(L, v->id, ID_LEN);
    lua_setfield(L, -2, "id");
    set_name(L, v);
  }
  lua_pushinteger(L, age_ms(now, v->c.taken_ns));
  lua_setfield(L, -2, "sample_age_ms");
}

static int l_get(lua_State *L) {
  const char *id = check_id(L, 1);
  view_of v;
  int got = fetch(L, id, 1, &v);
  if (got != GOT_IT)
    return not_held(L, id, got);
  push_record(L, &v, hx_mono_ns(), 0);
  push_meta(L, &v);
  return 2;
}

static int l_meta(lua_State *L) {
  const char *id = check_id(L, 1);
  view_of v;
  int got = fetch(L, id, 0, &v);
  if (got != GOT_IT || v.c.mn == 0)
    return not_held(L, id, got);
  push_meta(L, &v);
  return 1;
}

/* all(): every entry with a record, without its meta (the name is copied
 * on its own), into a userdata pushed on the stack; returns how many. */
static size_t with_record_size(const hx_node *n, void *arg) {
  const entry *e = HX_ENTRY_OF(n, const entry, node);
  (void)arg;
  return has_record(e) ? copied_size(e, 0) : 0;
}

static size_t with_record_copy(const hx_node *n, char *at, void *arg) {
  const entry *e = HX_ENTRY_OF(n, const entry, node);
  (void)arg;
  return has_record(e) ? (size_t)(copy_out(at, e, 0) - at) : 0;
}

static size_t fetch_all(lua_State *L, const char **out) {
  hx_copier c = {with_record_size, with_record_copy, NULL, 0, FIRST_GUESS * 8};
  return hx_store_copy_out(L, &store, &c, out);
}

static int l_all(lua_State *L) {
  const char *buf;
  size_t n = fetch_all(L, &buf);
  int64_t now = hx_mono_ns();
  lua_createtable(L, n > INT32_MAX ? 0 : (int)n, 0);
  for (size_t i = 1; i <= n; i++) {
    view_of v = read_copied(buf);
    buf = v.next;
    push_record(L, &v, now, 1);
    lua_rawseti(L, -2, (lua_Integer)i);
  }
  hx_json_push_array_mt(L);
  lua_setmetatable(L, -2);
  return 1;
}

/* stats_json (view_json.c): every entry with a record, as its cached
 * JSON text when it has one, else as all() copies it, with what installing
 * a text needs (view_private.h). */
static size_t json_size(const entry *e) {
  if (!has_record(e))
    return 0;
  return sizeof(view_jcopy) + ID_LEN + e->namelen +
         (e->frag ? e->frag_n : rec_size(e));
}

static char *json_copy(const entry *e, char *at) {
  view_jcopy c = {e->taken_ns,
                  e->gen,
                  e->ver,
                  (uint32_t)e->namelen,
                  e->frag ? e->frag_n : (uint32_t)rec_size(e),
                  e->frag_age,
                  e->frag       ? VJ_TEXT
                  : e->has_figs ? VJ_FIGS
                                : VJ_PUT};
  char *p = put_bytes(at, &c, sizeof c);
  p = put_bytes(p, e->id, ID_LEN);
  p = put_bytes(p, e->name, e->namelen);
  return put_bytes(p,
                   e->frag       ? e->frag
                   : e->has_figs ? (const void *)&e->figs
                                 : e->rec.p,
                   c.rn);
}

static int id_cmp(const void *a, const void *b) { return memcmp(a, b, ID_LEN); }

/* Whether e is one of the sorted ids (NULL: every one). */
static int in_ids(const entry *e, const char *ids, size_t nids) {
  return !ids || bsearch(e->id, ids, nids, ID_LEN, id_cmp) != NULL;
}

size_t view_copy_json(const char *ids, size_t nids, view_jbuf *out) {
  for (;;) {
    size_t need = 0, n = 0;
    hx_store_rdlock(&store);
    for (hx_node *x = store.first; x; x = x->next)
      if (in_ids(entry_of(x), ids, nids))
        need += json_size(entry_of(x));
    if (need <= out->cap) {
      char *at = out->p;
      for (hx_node *x = store.first; x; x = x->next) {
        entry *e = entry_of(x);
        if (has_record(e) && in_ids(e, ids, nids)) {
          at = json_copy(e, at);
          n++;
        }
      }
      out->n = (size_t)(at - out->p);
    }
    hx_store_unlock(&store);
    if (need <= out->cap)
      return n;
    out->n = 0; /* room for what arrives meanwhile */
    if (!view_jbuf_room(out, need + need / 4 + 256))
      return (size_t)-1;
  }
}

void view_push_put(lua_State *L, const view_jcopy *c, const char *id,
                   int64_t now) {
  view_of v = {{c->taken_ns, c->rn, 0, c->nn, 0},
               id,
               id + ID_LEN,
               id + ID_LEN + c->nn,
               NULL,
               NULL};
  push_record(L, &v, now, 1);
}

void view_frags_install(view_frag *f, size_t n) {
  hx_store_wrlock(&store);
  for (size_t i = 0; i < n; i++) {
    entry *e = f[i].p ? by_id(f[i].id) : NULL;
    if (e && e->gen == f[i].gen && e->ver == f[i].ver && e->has_figs &&
        !e->frag) {
      e->frag = f[i].p;
      e->frag_n = f[i].n;
      e->frag_age = f[i].age;
      f[i].p = NULL;
    }
  }
  hx_store_unlock(&store);
  for (size_t i = 0; i < n; i++) {
    free(f[i].p); /* not installed: the entry changed meanwhile */
    f[i].p = NULL;
  }
}

/* generation() -> an integer that changes whenever a meta held changes
 * (set, or its entry gone): what is worked out from metas() alone holds
 * while it stays the same. */
static int l_generation(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)atomic_load(&meta_gen));
  return 1;
}

/* Every entry with a record, with its meta, as all() copies them. */
static size_t with_both_size(const hx_node *n, void *arg) {
  const entry *e = HX_ENTRY_OF(n, const entry, node);
  (void)arg;
  return has_record(e) ? copied_size(e, 1) : 0;
}

static size_t with_both_copy(const hx_node *n, char *at, void *arg) {
  const entry *e = HX_ENTRY_OF(n, const entry, node);
  (void)arg;
  return has_record(e) ? (size_t)(copy_out(at, e, 1) - at) : 0;
}

void view_each(lua_State *L, void (*fn)(lua_State *L, void *arg), void *arg) {
  hx_copier c = {with_both_size, with_both_copy, NULL, 0, FIRST_GUESS * 16};
  const char *buf;
  size_t n = hx_store_copy_out(L, &store, &c, &buf);
  int64_t now = hx_mono_ns();
  for (size_t i = 0; i < n; i++) {
    view_of v = read_copied(buf);
    buf = v.next;
    push_record(L, &v, now, 1);
    push_meta(L, &v);
    fn(L, arg);
    lua_pop(L, 2);
  }
  lua_pop(L, 1); /* the copy */
}

/* metas(): every entry's meta (those that have one), copied out under the
 * read lock, each given full_id after unlocking. */
static size_t with_meta_size(const hx_node *n, void *arg) {
  const entry *e = HX_ENTRY_OF(n, const entry, node);
  (void)arg;
  return e->meta.n ? sizeof(copied) + ID_LEN + e->namelen + e->meta.n : 0;
}

static size_t with_meta_copy(const hx_node *n, char *at, void *arg) {
  const entry *e = HX_ENTRY_OF(n, const entry, node);
  (void)arg;
  if (!e->meta.n)
    return 0;
  copied c = {e->taken_ns, 0, (uint32_t)e->meta.n, (uint32_t)e->namelen, 0};
  char *p = put_bytes(at, &c, sizeof c);
  p = put_bytes(p, e->id, ID_LEN);
  p = put_bytes(p, e->name, e->namelen);
  return (size_t)(put_bytes(p, e->meta.p, e->meta.n) - at);
}

static int l_metas(lua_State *L) {
  hx_copier c = {with_meta_size, with_meta_copy, NULL, 0, FIRST_GUESS * 8};
  const char *buf;
  size_t n = hx_store_copy_out(L, &store, &c, &buf);
  lua_createtable(L, n > INT32_MAX ? 0 : (int)n, 0);
  for (size_t i = 1; i <= n; i++) {
    view_of v = read_copied(buf);
    buf = v.next;
    view_unpack(L, v.meta, v.c.mn);
    lua_pushlstring(L, v.id, ID_LEN);
    lua_setfield(L, -2, "full_id");
    lua_rawseti(L, -2, (lua_Integer)i);
  }
  hx_json_push_array_mt(L);
  lua_setmetatable(L, -2);
  return 1;
}

/* The collector's word on the view, e.g. {trusted = true, ...}: a packed
 * table, process-wide like the store (the collector's thread writes it,
 * every worker reads it), behind a lock of its own; the packing and the
 * unpacking run outside it. */
static pthread_mutex_t status_mu = PTHREAD_MUTEX_INITIALIZER;
static blob status_blob;

static int l_set_status(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  size_t n;
  const char *p = view_pack(L, 1, &n);
  char *copy = dup_bytes(p, n);
  if (copy == NULL)
    return luaL_error(L, "view: not enough memory");
  pthread_mutex_lock(&status_mu);
  char *old = status_blob.p;
  status_blob.p = copy;
  status_blob.n = n;
  pthread_mutex_unlock(&status_mu);
  free(old);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_status(lua_State *L) {
  char *buf = NULL;
  size_t n;
  for (;;) {
    pthread_mutex_lock(&status_mu);
    n = status_blob.n;
    int fits = buf != NULL && lua_rawlen(L, -1) >= n;
    if (fits)
      memcpy(buf, status_blob.p, n);
    pthread_mutex_unlock(&status_mu);
    if (n == 0 || fits)
      break;
    if (buf != NULL)
      lua_pop(L, 1);
    buf = lua_newuserdatauv(L, n, 0);
  }
  if (n == 0) {
    lua_pushnil(L);
    return 1;
  }
  view_unpack(L, buf, n);
  return 1;
}

/* unsampled(): the ids of the entries whose meta says running and that
 * hold no record yet (just started, or made running by view.set_meta). */
static size_t unsampled_size(const hx_node *n, void *arg) {
  const entry *e = HX_ENTRY_OF(n, const entry, node);
  (void)arg;
  return e->running && !has_record(e) ? ID_LEN : 0;
}

static size_t unsampled_copy(const hx_node *n, char *at, void *arg) {
  const entry *e = HX_ENTRY_OF(n, const entry, node);
  (void)arg;
  if (!e->running || has_record(e))
    return 0;
  memcpy(at, e->id, ID_LEN);
  return ID_LEN;
}

static int l_unsampled(lua_State *L) {
  hx_copier c = {unsampled_size, unsampled_copy, NULL, 0, ID_LEN * 64};
  const char *buf;
  size_t n = hx_store_copy_out(L, &store, &c, &buf);
  lua_createtable(L, n > INT32_MAX ? 0 : (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_pushlstring(L, buf + i * ID_LEN, ID_LEN);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

static size_t id_size(const hx_node *n, void *arg) {
  (void)n, (void)arg;
  return ID_LEN;
}

static size_t id_copy(const hx_node *n, char *at, void *arg) {
  (void)arg;
  memcpy(at, n->link.key, ID_LEN);
  return ID_LEN;
}

static int l_ids(lua_State *L) {
  hx_copier c = {id_size, id_copy, NULL, 0, 64 * ID_LEN};
  const char *buf;
  size_t n = hx_store_copy_out(L, &store, &c, &buf);
  lua_createtable(L, n > INT32_MAX ? 0 : (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_pushlstring(L, buf + ID_LEN * i, ID_LEN);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  hx_json_push_array_mt(L);
  lua_setmetatable(L, -2);
  return 1;
}

/* find: full id, then name, then unique id prefix (the daemon's order). */
static int l_find(lua_State *L) {
  size_t n;
  luaL_checktype(L, 1, LUA_TSTRING);
  const char *ref = lua_tolstring(L, 1, &n);
  if (n > 0 && ref[0] == '/')
    ref++, n--;
  if (n == 0)
    return hx_fail(L, HX_BAD_REQUEST, "view: empty container reference");
  char id[ID_LEN];
  size_t matches = 0;
  int hex = hx_is_lower_hex(ref, n);
  hx_store_rdlock(&store);
  entry *e = n == ID_LEN && hex ? by_id(ref) : NULL;
  if (!e)
    e = by_name(ref, n);
  if (e) {
    memcpy(id, e->id, ID_LEN);
    matches = 1;
  } else if (hex && n < ID_LEN) {
    for (hx_node *x = store.first; x; x = x->next)
      if (memcmp(x->link.key, ref, n) == 0 && matches++ == 0)
        memcpy(id, x->link.key, ID_LEN);
  }
  hx_store_unlock(&store);
  if (matches == 1) {
    lua_pushlstring(L, id, ID_LEN);
    return 1;
  }
  lua_pushlstring(L, ref, n > 64 ? 64 : n);
  const char *shown = lua_tostring(L, -1);
  if (matches > 1)
    return hx_fail(L, HX_BAD_REQUEST,
                   "view: id prefix '%s' is ambiguous (%d containers)", shown,
                   (int)matches);
  return hx_fail(L, HX_NOT_FOUND, "view: no container '%s' in the view", shown);
}

static int l_remove(lua_State *L) {
  const char *id = check_id(L, 1);
  hx_store_wrlock(&store);
  entry *e = by_id(id);
  if (e) {
    if (e->name)
      hx_index_remove(&names, &e->name_link);
    hx_store_remove(&store, &e->node);
  }
  hx_store_unlock(&store);
  free_entry(e);
  lua_pushboolean(L, e != NULL);
  return 1;
}

/* footprint() -> {containers =, bytes =, fds =}: what the view holds in
 * malloc'd memory (entries, records, metas, names, and what the sampler
 * keeps), and the descriptors the sampler keeps open. */
static int l_footprint(lua_State *L) {
  size_t bytes = 0, count;
  hx_store_rdlock(&store);
  count = store.count;
  for (hx_node *x = store.first; x; x = x->next) {
    entry *e = entry_of(x);
    bytes += malloc_usable_size(e) + malloc_usable_size(e->rec.p) +
             malloc_usable_size(e->meta.p) + malloc_usable_size(e->name) +
             view_ring_bytes(e->ring);
  }
  hx_store_unlock(&store);
  bytes += view_sampler_bytes();
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, (lua_Integer)count);
  lua_setfield(L, -2, "containers");
  lua_pushinteger(L, (lua_Integer)bytes);
  lua_setfield(L, -2, "bytes");
  lua_pushinteger(L, view_sampler_fds());
  lua_setfield(L, -2, "fds");
  return 1;
}

/* history(id, {window =, step =, points =}) -> {points =, summary =} |
 * nil, msg, "not_found": window and step in ns (step >= 1 ms, at most
 * 10000 buckets); points: false leaves them out. */
static int l_history(lua_State *L) {
  const char *id = check_id(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_Integer window = (lua_getfield(L, 2, "window"), luaL_checkinteger(L, -1));
  lua_Integer step = (lua_getfield(L, 2, "step"), luaL_checkinteger(L, -1));
  int with_points = (lua_getfield(L, 2, "points"),
                     !lua_isboolean(L, -1) || lua_toboolean(L, -1));
  luaL_argcheck(L, step >= 1000000 && window >= step && window / step <= 10000,
                2, "window >= step >= 1 ms, at most 10000 steps");
  lua_settop(L, 1);
  size_t n = 0, cap = 0;
  view_point *pts = NULL;
  for (;;) {
    hx_store_rdlock(&store);
    entry *e = by_id(id);
    size_t need = e ? view_ring_len(e->ring) : 0;
    if (e && need <= cap)
      n = view_ring_copy(e->ring, pts, cap);
    hx_store_unlock(&store);
    if (e == NULL)
      return not_held(L, id, GOT_NONE);
    if (need <= cap)
      break;
    cap = need; /* room for every point held: copy again */
    pts = lua_newuserdatauv(L, cap * sizeof *pts, 0);
  }
  view_history_push(L, pts, n, hx_real_ns(), (int64_t)window, (int64_t)step,
                    with_points);
  return 1;
}

/* The view outlives every lua_State; it goes when the code does (exit, or
 * dlclose of this module by the last lua_close), so nothing is leaked. */
__attribute__((destructor)) static void free_store(void) {
  hx_store_clear(&store);
  free(status_blob.p); /* the collector's word (set_status) goes with it */
  status_blob.p = NULL;
}

/* max_fds: an integer >= -1, or -2 when absent. */
static lua_Integer opt_max_fds(lua_State *L) {
  int ok;
  if (lua_getfield(L, 1, "max_fds") == LUA_TNIL) {
    lua_pop(L, 1);
    return -2;
  }
  lua_Integer v = lua_tointegerx(L, -1, &ok);
  if (!ok || v < -1 || v > MAX_FDS)
    luaL_error(L, "option 'max_fds': integer in -1..%d expected", MAX_FDS);
  lua_pop(L, 1);
  return v;
}

/* set_limits{max_containers=, max_fds=, history=, history_gap_ms=}:
 * history is the points each container keeps (0: none; a new size takes
 * effect at each container's next point), history_gap_ms the least time
 * between two (a closer one replaces the last). Lowering max_containers below
 * the count drops nothing (new ids are refused until the count is under it);
 * lowering max_fds closes the descriptors over it on the next sample(). */
static int l_set_limits(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer max =
      hx_store_opt_limit(L, 1, "max_containers", 1, MAX_CONTAINERS);
  lua_Integer fds = opt_max_fds(L);
  hx_store_wrlock(&store);
  size_t old = store.max_count;
  if (max != -1)
    store.max_count = (size_t)max;
  hx_store_unlock(&store);
  int old_fds = view_max_fds((int)fds, fds != -2);
  lua_Integer hist = hx_store_opt_limit(L, 1, "history", 0, MAX_HISTORY);
  lua_Integer gap = hx_store_opt_limit(L, 1, "history_gap_ms", 0, 3600000);
  size_t old_hist = view_history_cap();
  if (hist != -1 || gap != -1)
    view_history_set(hist != -1 ? (size_t)hist : old_hist,
                     gap != -1 ? (int64_t)gap * 1000000 : -1);
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, (lua_Integer)old_hist);
  lua_setfield(L, -2, "history");
  lua_pushinteger(L, (lua_Integer)old);
  lua_setfield(L, -2, "max_containers");
  lua_pushinteger(L, old_fds);
  lua_setfield(L, -2, "max_fds");
  return 1;
}

/* ---- the sampler's hold on the entries (view_private.h) ---- */

size_t view_count_hint(void) {
  hx_store_rdlock(&store);
  size_t n = store.count;
  hx_store_unlock(&store);
  return n;
}

size_t view_checkout(view_job *jobs, view_probe **idle, size_t cap,
                     size_t *nidle) {
  size_t n = 0;
  *nidle = 0;
  hx_store_rdlock(&store);
  if (store.count > cap) {
    hx_store_unlock(&store);
    return (size_t)-1;
  }
  for (hx_node *x = store.first; x; x = x->next) {
    entry *e = entry_of(x);
    if (e->busy)
      continue; /* cannot be: one sample() at a time */
    if (e->running) {
      memcpy(jobs[n].id, e->id, ID_LEN);
      jobs[n].gen = e->gen;
      jobs[n].probe = e->probe;
      jobs[n].ring_fits = view_ring_fits(e->ring);
      e->probe = NULL;
      e->busy = 1;
      n++;
    } else if (e->probe) {
      idle[(*nidle)++] = e->probe;
      e->probe = NULL;
    }
  }
  hx_store_unlock(&store);
  return n;
}

/* j's entry, if it is still the one checked out (lock held). */
static entry *job_entry(const view_job *j) {
  entry *e = by_id(j->id);
  return e && e->gen == j->gen ? e : NULL;
}

int view_store(const view_job *j, const view_figs *f, int64_t taken_ns) {
  blob old = {NULL, 0};
  char *frag = NULL;
  view_ring *ring = j->ring_fits ? NULL : view_ring_new();
  view_point point;
  view_point_of_figs(&point, f, wall_of(taken_ns));
  hx_store_wrlock(&store);
  entry *e = job_entry(j);
  if (e) {
    ring = view_ring_add(&e->ring, ring, &point);
    old = e->rec;
    e->rec.p = NULL;
    e->rec.n = 0;
    e->figs = *f;
    e->has_figs = 1;
    frag = e->frag;
    e->frag = NULL;
    e->ver++;
    e->taken_ns = taken_ns;
    e->probe = j->probe;
    e->busy = 0;
  }
  hx_store_unlock(&store);
  free(old.p);
  free(frag);
  free(ring);
  return e != NULL;
}

int view_give_back(const view_job *j, view_probe *p) {
  hx_store_rdlock(&store);
  entry *e = job_entry(j);
  if (e) {
    e->probe = p;
    e->busy = 0;
  }
  hx_store_unlock(&store);
  return e != NULL;
}

static const luaL_Reg funcs[] = {{"put", l_put},
                                 {"set_meta", l_set_meta},
                                 {"get", l_get},
                                 {"meta", l_meta},
                                 {"find", l_find},
                                 {"all", l_all},
                                 {"ids", l_ids},
                                 {"remove", l_remove},
                                 {"sample", view_sample},
                                 {"set_limits", l_set_limits},
                                 {"footprint", l_footprint},
                                 {"history", l_history},
                                 {"prometheus", view_prometheus},
                                 {"stats_json", view_stats_json},
                                 {"generation", l_generation},
                                 {"metas", l_metas},
                                 {"unsampled", l_unsampled},
                                 {"set_status", l_set_status},
                                 {"status", l_status},
                                 {NULL, NULL}};

static const hx_const consts[] = {
    {"DEFAULT_MAX_CONTAINERS", DEFAULT_MAX_CONTAINERS},
    {"MAX_DEPTH", MAX_DEPTH},
    {"DEFAULT_MAX_FDS", -1},
    {NULL, 0}};

HX_EXPORT int luaopen_horcrux_view(lua_State *L) {
  view_sample_open(L);
  luaL_newlib(L, funcs);
  hx_store_setfuncs(L, &store); /* clear, count */
  hx_set_consts(L, consts);
  return 1;
}
