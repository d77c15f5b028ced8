/* request.c - the lazy request table and the access log line (see
 * request.h). */
#include "request.h"

#include "aux.h"
#include "logline.h"

#include <arpa/inet.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* a.b.c.d of an IPv4 address into host (at least INET_ADDRSTRLEN bytes):
 * glibc's inet_ntop goes through sprintf, most of an access line's cost. */
static void ipv4_text(const struct in_addr *in, char *host) {
  const unsigned char *b = (const unsigned char *)&in->s_addr;
  char *p = host;
  for (int i = 0; i < 4; i++) {
    unsigned v = b[i];
    if (v >= 100)
      *p++ = (char)('0' + v / 100);
    if (v >= 10)
      *p++ = (char)('0' + v / 10 % 10);
    *p++ = (char)('0' + v % 10);
    *p++ = i < 3 ? '.' : '\0';
  }
}

const char *hx_client_host(struct MHD_Connection *conn, char *host, size_t size,
                           const char *none) {
  const union MHD_ConnectionInfo *ci =
      MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  const struct sockaddr *sa = ci != NULL ? ci->client_addr : NULL;
  if (sa != NULL && sa->sa_family == AF_INET && size >= INET_ADDRSTRLEN) {
    ipv4_text(&((const struct sockaddr_in *)sa)->sin_addr, host);
    return host;
  }
  if (sa != NULL && sa->sa_family == AF_INET6 &&
      inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, host,
                (socklen_t)size) != NULL)
    return host;
  return none;
}

/* headers[lower(key)] = value into the table on top. */
static enum MHD_Result add_header(void *cls, enum MHD_ValueKind kind,
                                  const char *key, const char *value) {
  lua_State *L = cls;
  (void)kind;
  if (key == NULL)
    return MHD_YES;
  luaL_Buffer b;
  size_t n = strlen(key);
  char *p = luaL_buffinitsize(L, &b, n);
  for (size_t i = 0; i < n; i++)
    p[i] = (char)(key[i] >= 'A' && key[i] <= 'Z' ? key[i] + 32 : key[i]);
  luaL_pushresultsize(&b, n);
  lua_pushstring(L, value != NULL ? value : "");
  lua_rawset(L, -3);
  return MHD_YES;
}

/* query[key] = value into the table on top; the first value of a key
 * wins. */
static enum MHD_Result add_query(void *cls, enum MHD_ValueKind kind,
                                 const char *key, const char *value) {
  lua_State *L = cls;
  (void)kind;
  if (key == NULL)
    return MHD_YES;
  lua_pushstring(L, key);
  if (lua_rawget(L, -2) == LUA_TNIL) {
    lua_pushstring(L, key);
    lua_pushstring(L, value != NULL ? value : "");
    lua_rawset(L, -4);
  }
  lua_pop(L, 1);
  return MHD_YES;
}

/* args[#args + 1] = {key, value} into the table on top. */
static enum MHD_Result add_arg(void *cls, enum MHD_ValueKind kind,
                               const char *key, const char *value) {
  lua_State *L = cls;
  (void)kind;
  if (key == NULL)
    return MHD_YES;
  lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
  lua_createtable(L, 2, 0);
  lua_pushstring(L, key);
  lua_rawseti(L, -2, 1);
  lua_pushstring(L, value != NULL ? value : "");
  lua_rawseti(L, -2, 2);
  lua_rawseti(L, -2, n + 1);
  return MHD_YES;
}

/* Pushes the value of field k of rq; returns 0 (nothing pushed) for a
 * field requests do not have. */
static int push_field(lua_State *L, request *rq, const char *k, size_t n) {
  char host[INET6_ADDRSTRLEN];
  if (n == 7 && memcmp(k, "headers", 7) == 0) {
    lua_createtable(L, 0, 8);
    MHD_get_connection_values(rq->conn, MHD_HEADER_KIND, add_header, L);
  } else if (n == 5 && memcmp(k, "query", 5) == 0) {
    lua_newtable(L);
    MHD_get_connection_values(rq->conn, MHD_GET_ARGUMENT_KIND, add_query, L);
  } else if (n == 4 && memcmp(k, "args", 4) == 0) {
    lua_newtable(L);
    MHD_get_connection_values(rq->conn, MHD_GET_ARGUMENT_KIND, add_arg, L);
  } else if (n == 4 && memcmp(k, "body", 4) == 0) {
    lua_pushlstring(L, rq->body != NULL ? rq->body : "", rq->len);
  } else if (n == 2 && memcmp(k, "id", 2) == 0) {
    lua_pushstring(L, rq->id);
  } else if (n == 6 && memcmp(k, "remote", 6) == 0) {
    lua_pushstring(L, hx_client_host(rq->conn, host, sizeof host, ""));
  } else if (n == 9 && memcmp(k, "read_only", 9) == 0) {
    lua_pushboolean(L, rq->read_only);
  } else if (n == 13 && memcmp(k, "authenticated", 13) == 0) {
    lua_pushboolean(L, rq->authenticated);
  } else {
    return 0;
  }
  return 1;
}

/* The slots of request tables (request.h): registry[st->request_slots_ref]
 * is a table with [0] = the metatable of a table whose request is over
 * (fields it never read are nil), [2i - 1] = the metatable of slot i and
 * [2i] = the request table in slot i, or false; st->req_slot[i - 1] is its
 * request. A request table reaches its request through its metatable (a
 * field would show in pairs and JSON), and is cut off it when the request
 * ends by having its metatable swapped: neither allocates. */

/* __index(t, k) of slot upvalue 2 of state upvalue 1: makes field k of the
 * request, stores it in t. A table that took the slot's metatable by
 * setmetatable, not its own, gets nothing. */
static int request_index(lua_State *L) {
  if (lua_type(L, 2) != LUA_TSTRING)
    return 0;
  hx_state *st = lua_touserdata(L, lua_upvalueindex(1));
  lua_Integer i = lua_tointeger(L, lua_upvalueindex(2));
  request *rq = st->req_slot[i - 1];
  lua_rawgeti(L, LUA_REGISTRYINDEX, st->request_slots_ref);
  lua_rawgeti(L, -1, 2 * i);
  if (rq == NULL || !lua_rawequal(L, -1, 1))
    return 0;
  size_t n;
  const char *k = lua_tolstring(L, 2, &n);
  if (!push_field(L, rq, k, n))
    return 0;
  lua_pushvalue(L, 2);
  lua_pushvalue(L, -2);
  lua_rawset(L, 1);
  return 1;
}

/* {__name = "horcrux.request", [1] = "method", [2] = "path"}, with
 * __index the field maker of slot i when i > 0. The names of the two
 * fields every request table gets are kept as strings so that
 * hx_request_push does not look them up by their C text every request. */
static void push_metatable(lua_State *L, hx_state *st, lua_Integer i) {
  lua_createtable(L, 2, 2);
  if (i > 0) {
    lua_pushlightuserdata(L, st);
    lua_pushinteger(L, i);
    lua_pushcclosure(L, request_index, 2);
    lua_setfield(L, -2, "__index");
  }
  lua_pushliteral(L, "horcrux.request");
  lua_setfield(L, -2, "__name");
  lua_pushliteral(L, "method");
  lua_rawseti(L, -2, 1);
  lua_pushliteral(L, "path");
  lua_rawseti(L, -2, 2);
}

void hx_request_slots(lua_State *L, hx_state *st) {
  lua_createtable(L, 16, 1);
  push_metatable(L, st, 0);
  lua_rawseti(L, -2, 0);
  st->request_slots_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

/* A free slot for rq, the slots table on top of L: one that served before,
 * else a new one (its metatable made). Raises on a memory error. */
static lua_Integer take_slot(lua_State *L, hx_state *st, request *rq) {
  if (st->req_nfree == 0) {
    int n = st->req_nslots + 1;
    request **slot = realloc(st->req_slot, (size_t)n * sizeof *slot);
    if (slot != NULL)
      st->req_slot = slot;
    int *fr =
        slot != NULL ? realloc(st->req_free, (size_t)n * sizeof *fr) : NULL;
    if (fr == NULL)
      luaL_error(L, "not enough memory");
    st->req_free = fr;
    push_metatable(L, st, n);
    lua_rawseti(L, -2, 2 * n - 1);
    lua_pushboolean(L, 0);
    lua_rawseti(L, -2, 2 * n);
    slot[n - 1] = NULL;
    st->req_nslots = n;
    st->req_free[st->req_nfree++] = n;
  }
  lua_Integer i = st->req_free[--st->req_nfree];
  st->req_slot[i - 1] = rq;
  rq->slot = (int)i;
  return i;
}

void hx_request_push(lua_State *L, request *rq, hx_state *st) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, st->request_slots_ref);
  lua_Integer i = take_slot(L, st, rq);
  /* Room for the fields a route usually reads, so they rarely rehash. */
  lua_createtable(L, 0, 8);
  lua_rawgeti(L, -2, 2 * i - 1);
  lua_rawgeti(L, -1, 1);
  lua_pushstring(L, rq->method);
  lua_rawset(L, -4);
  lua_rawgeti(L, -1, 2);
  lua_pushlstring(L, rq->path, rq->path_len);
  lua_rawset(L, -4);
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_rawseti(L, -3, 2 * i); /* slots[2i] = req */
  lua_remove(L, -2);
}

void hx_request_forget(lua_State *L, request *rq, hx_state *st) {
  if (rq->slot == 0)
    return;
  lua_Integer i = rq->slot;
  lua_rawgeti(L, LUA_REGISTRYINDEX, st->request_slots_ref);
  if (lua_rawgeti(L, -1, 2 * i) == LUA_TTABLE) {
    lua_rawgeti(L, -2, 0);
    lua_setmetatable(L, -2);
  }
  lua_pop(L, 1);
  lua_pushboolean(L, 0); /* the key exists: setting it allocates nothing */
  lua_rawseti(L, -2, 2 * i);
  lua_pop(L, 1);
  st->req_slot[i - 1] = NULL;
  st->req_free[st->req_nfree++] = (int)i;
  rq->slot = 0;
}

static char *put_hex(char *p, unsigned long long v, int digits) {
  static const char hex[] = "0123456789abcdef";
  for (int i = digits - 1; i >= 0; i--, v >>= 4)
    p[i] = hex[v & 15];
  return p + digits;
}

void hx_request_id(request *rq, unsigned long long base, unsigned long long n) {
  char *p = put_hex(rq->id, base, 8);
  *put_hex(p, n, 8) = '\0';
}

/* See request.h. MHD hands the decoded path on as a C string, so a
 * decoded NUL would cut "/api/containers/a%00b/stats" to
 * "/api/containers/a" and act on another container. Left encoded, "%00"
 * fails the id check like any bad byte. */
size_t hx_unescape(void *cls, struct MHD_Connection *c, char *s) {
  (void)cls;
  (void)c;
  char *w = s;
  for (const char *r = s; *r != '\0'; r++) {
    int hi, lo;
    if (r[0] == '%' && (hi = hx_hexval(r[1])) >= 0 &&
        (lo = hx_hexval(r[2])) >= 0 && (hi | lo) != 0) {
      *w++ = (char)(hi * 16 + lo);
      r += 2;
    } else {
      *w++ = *r;
    }
  }
  *w = '\0';
  return (size_t)(w - s);
}

/* ---- the access log ---------------------------------------------------- */

typedef struct line {
  char *p, *end;
} line;

static void put(line *l, const char *s, size_t n) {
  size_t room = (size_t)(l->end - l->p);
  if (n > room)
    n = room;
  memcpy(l->p, s, n);
  l->p += n;
}

static void put_str(line *l, const char *s) { put(l, s, strlen(s)); }

/* Text that came from the client, escaped (logline.h): a decoded "%0a"
 * in a path never starts a forged line. */
static void put_escaped(line *l, const char *s, size_t n) {
  l->p += hx_log_escape(l->p, (size_t)(l->end - l->p), s, n, NULL);
}

static void put_uint(line *l, unsigned long long v, int min_digits) {
  char buf[24];
  int i = (int)sizeof buf;
  do {
    buf[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v != 0 || (int)sizeof buf - i < min_digits);
  put(l, buf + i, sizeof buf - (size_t)i);
}

/* "YYYY-MM-DDTHH:MM:SS" of the current second, formatted once a second per
 * thread (the log's every line needs it). */
static const char *second_text(time_t sec) {
  static _Thread_local time_t cached = -1;
  static _Thread_local char text[32];
  if (sec != cached) {
    struct tm tm;
    gmtime_r(&sec, &tm);
    strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &tm);
    cached = sec;
  }
  return text;
}

void hx_request_log(const request *rq, int aborted) {
  char buf[2048], host[INET6_ADDRSTRLEN];
  struct timespec now, end;
  clock_gettime(CLOCK_REALTIME, &now);
  clock_gettime(CLOCK_MONOTONIC, &end);
  long long us = (long long)(end.tv_sec - rq->start.tv_sec) * 1000000 +
                 (end.tv_nsec - rq->start.tv_nsec) / 1000;
  if (us < 0)
    us = 0;
  /* Room kept at the end for the fields after the path and the newline. */
  line l = {buf, buf + sizeof buf - 160};
  put_str(&l, second_text(now.tv_sec));
  put(&l, ".", 1);
  put_uint(&l, (unsigned long long)now.tv_nsec / 1000000, 3);
  put_str(&l, "Z access ");
  put_escaped(&l, rq->method, strlen(rq->method));
  put(&l, " ", 1);
  put_escaped(&l, rq->path, rq->path_len);
  l.end = buf + sizeof buf;
  put(&l, " ", 1);
  put_uint(&l, (unsigned long long)rq->status, 1);
  put(&l, " ", 1);
  put_uint(&l, (unsigned long long)(us + 50) / 1000, 1);
  put(&l, ".", 1);
  put_uint(&l, (unsigned long long)((us + 50) / 100) % 10, 1);
  put_str(&l, "ms ");
  put_str(&l, hx_client_host(rq->conn, host, sizeof host, "-"));
  put_str(&l, " id=");
  put_str(&l, rq->id);
  if (aborted)
    put_str(&l, " (aborted)");
  put(&l, "\n", 1);
  /* One write: lines of concurrent workers never interleave. */
  ssize_t w = write(STDERR_FILENO, buf, (size_t)(l.p - buf));
  (void)w;
}
