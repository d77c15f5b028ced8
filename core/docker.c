/*
 * docker.c - horcrux.docker: a Docker Engine API client over libcurl.
 *
 *   docker.connect([opts])          -> client | nil, msg, kind
 *   docker.valid_id(s)              -> boolean (hex id or id prefix)
 *   docker.valid_name(s)            -> boolean (a name, an id or a prefix)
 *   docker.ref(s)                   -> s without its leading "/" | nil,msg,kind
 *   docker.max_api_version          "1.51"
 *   c:version()  c:ping()  c:containers([opts])  c:inspect(ref[, opts])
 *   c:stats(ref)                    -> value | nil, msg, kind
 *   c:stats_many(refs)              -> {{value = v} | {error = msg,
 *                                       kind = kind}, ...} aligned with refs
 *   c:events([opts,] callback)      -> true, "stopped" | "ended"
 *                                    | nil, msg, kind
 *   c:stats_stream(ref[, opts], callback)   (the same)
 *   c:request(method, path[, query[, body[, content_type]]])
 *                                   -> status, body, headers | nil, msg, kind
 *   c:api_version()                 -> "1.41" | nil before negotiation
 *   c:connections()                 -> connections opened so far
 *   c:close()                       (also __gc and __close)
 *
 * connect() reads configuration only; nothing is sent until the first call.
 *   host             DOCKER_HOST, else unix:///var/run/docker.sock; also
 *                    tcp://h[:p]; npipe:// and ssh:// are refused
 *   tls_verify       for tcp://: https with ca.pem, cert.pem and key.pem
 *   cert_path        from here (DOCKER_TLS_VERIFY, DOCKER_CERT_PATH, ~/.docker)
 *   api_version      DOCKER_API_VERSION, else negotiated on the first call
 *                    that needs it: min(daemon's ApiVersion, max_api_version)
 *   timeout          seconds for a whole request (30; 0: none)
 *   connect_timeout  seconds (5)
 *   max_response     bytes of a reply (64 MiB); more fails with kind "limit"
 *
 * Kinds (aux.h): unavailable (connect, TLS, socket errors), timeout,
 * not_found (404), conflict (409), bad_request (other 4xx, and a bad ref or
 * path, refused before any request), server (5xx), protocol (bad or
 * truncated JSON, not HTTP), limit (max_response). request() returns any
 * HTTP status as an answer; it fails only where no answer came.
 *
 * How a request flows. Everything a transfer needs lives in a request
 * userdata ("horcrux.docker.request") that the method pushes on its own
 * stack: the easy handle, the reply buffers, the header list, and as user
 * values the client, the target (path and query, without the version
 * prefix) and the body. Its stack index is the continuation context.
 *
 *   method     validates the ref/path (a bad one fails before anything
 *              is built), pushes the request, calls send_request()
 *   send_request  takes an easy handle from the client's free-list, sets
 *              it up, and calls hx_perform() with k_done; when the client
 *              has no API version yet, it first sets up GET /version with
 *              k_negotiated, which records the version and calls
 *              send_request() again (a second transfer, chained)
 *   hx_perform runs the transfer at once (stock Lua), or yields the handle
 *              to the host's curl-multi thread (`horcrux serve`); either
 *              way the continuation gets the CURLcode on top of the stack
 *   k_done     reads the status, gives the handle back to the free-list,
 *              and turns the reply into the method's results
 *
 * Nothing lives on the C stack across hx_perform(), and C-owned memory (the
 * reply buffers, the header list) hangs off the request userdata, whose
 * __gc frees it, so a Lua error or a yield never leaks it. Several requests
 * of one client may be in flight at once (coroutines in the server): each
 * takes its own handle. In stock Lua they run one after the other and the
 * free-list hands back the same handle, whose connection curl keeps alive.
 *
 * Many at once (stats_many). One request userdata per ref, all in a table
 * that a batch userdata holds; the batch also holds the arrays that
 * hx_perform_many() reads and fills (CURL **, CURLcode *), so they outlive
 * the yield. After GET /version if needed (chained as above), every
 * transfer is set up and the batch runs with one hx_perform_many(): in the
 * server, on the host's executor; elsewhere, on a curl multi of its own.
 * Each transfer holds its own easy handle, so the free-list keeps up to
 * FREE_MAX of them for the next batch and cleans up the rest. More than
 * MANY_WAVE refs go in waves of MANY_WAVE, which bounds the connections
 * (descriptors) open at once.
 *
 * Streams (events, stats_stream) are synchronous: curl_easy_perform() on
 * the caller's thread, meant for the collector's own thread, and refused
 * inside a request coroutine, where they would hold a worker for as long
 * as the stream lasts. The write callback buffers the body, splits it on
 * newlines (a JSON value may be split across writes or several merged in
 * one) and hands each decoded value to the Lua callback through lua_pcall,
 * so no Lua error ever longjmps across curl: an error, or the callback's
 * `false`, only makes the write callback stop the transfer; the error is
 * raised again once curl has returned. opts:
 *   stall     seconds without a byte before the stream fails with kind
 *             "timeout" (0: none, the default; /events is silent while
 *             nothing happens); checked about once a second
 *   max_line  longest line accepted (1 MiB); more fails with kind "limit"
 * events() also takes filters (a table, sent as JSON, or a JSON string),
 * since and until (Unix seconds, a number, or a string Docker accepts);
 * with `until` the daemon ends the stream by itself: "ended".
 */
#include "async.h"
#include "aux.h"
#include "jsonconv.h"

#include <curl/curl.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CLIENT_MT "horcrux.docker.client"
#define REQUEST_MT "horcrux.docker.request"

/* The newest API version we speak. Negotiation takes the lower of this and
 * the daemon's; engines keep serving older versions, so a newer engine
 * works, and an older one is spoken to in its own version. */
#define MAX_API "1.51"

#define REF_MAX 255          /* longest container name or id accepted */
#define PATH_MAX_LEN 1024    /* longest request() path */
#define HEAD_MAX (64 * 1024) /* reply headers cap */
#define ERR_TEXT_MAX 200     /* how much of a non-JSON error body to quote */

/* Idle easy handles a client keeps: enough for a stats_many batch of a
 * usual host to find its handles ready; a bigger batch cleans up the rest. */
#define FREE_MAX 32
/* Transfers of a stats_many batch that run at once: each is a connection
 * (a descriptor here, and a slot of the daemon's listen backlog). */
#define MANY_WAVE 128
/* Refs in one stats_many call: the waves of a batch nest in C when they do
 * not yield. */
#define MANY_MAX (1 << 16)
#define LINE_MAX_DEFAULT (1 << 20) /* a stream's max_line */

/* curl_global_init is process-wide and, in older curls, not thread-safe:
 * several Lua states (threads of the host) may load this module at once. */
static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void) {
  curl_init_rc = curl_global_init(CURL_GLOBAL_ALL);
}

/* ---- client ---------------------------------------------------------- */

typedef struct client {
  int closed;
  char *host;            /* as configured, for messages */
  char *base;            /* "http://localhost", "https://h:2376" */
  char *sock;            /* unix socket path, or NULL */
  char *ca, *cert, *key; /* TLS files, or NULL */
  char version[24];      /* "1.41"; "" until negotiated */
  long timeout_ms, connect_timeout_ms;
  size_t max_response;
  lua_Integer connects; /* new connections, summed over transfers */
  int nfree;
  CURL *free[FREE_MAX];
} client;

static void client_release(client *c) {
  for (int i = 0; i < c->nfree; i++)
    curl_easy_cleanup(c->free[i]);
  c->nfree = 0;
  free(c->host);
  free(c->base);
  free(c->sock);
  free(c->ca);
  free(c->cert);
  free(c->key);
  c->host = c->base = c->sock = c->ca = c->cert = c->key = NULL;
  c->closed = 1;
}

/* Handles in flight belong to their requests; they come back (or are
 * cleaned up, once the client is closed) through client_give. */
static CURL *client_take(client *c) {
  return c->nfree > 0 ? c->free[--c->nfree] : curl_easy_init();
}

static void client_give(client *c, CURL *easy) {
  if (!c->closed && c->nfree < FREE_MAX)
    c->free[c->nfree++] = easy;
  else
    curl_easy_cleanup(easy);
}

static client *check_client(lua_State *L) {
  client *c = luaL_checkudata(L, 1, CLIENT_MT);
  if (c->closed)
    luaL_error(L, "attempt to use a closed docker client");
  return c;
}

static int l_close(lua_State *L) {
  client *c = luaL_checkudata(L, 1, CLIENT_MT);
  client_release(c);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_tostring(lua_State *L) {
  client *c = luaL_checkudata(L, 1, CLIENT_MT);
  if (c->closed)
    lua_pushliteral(L, "horcrux.docker.client (closed)");
  else
    lua_pushfstring(L, "horcrux.docker.client (%s)", c->host);
  return 1;
}

static int l_api_version(lua_State *L) {
  client *c = check_client(L);
  if (c->version[0] == '\0')
    lua_pushnil(L);
  else
    lua_pushstring(L, c->version);
  return 1;
}

static int l_connections(lua_State *L) {
  client *c = check_client(L);
  lua_pushinteger(L, c->connects);
  return 1;
}

/* ---- API versions ---------------------------------------------------- */

/* "1.41" -> 1041; -1 when s is not MAJOR.MINOR. */
static long version_num(const char *s) {
  long major = 0, minor = 0;
  int nd = 0;
  for (; *s >= '0' && *s <= '9'; s++, nd++)
    if ((major = major * 10 + (*s - '0')) > 999)
      return -1;
  if (nd == 0 || *s++ != '.')
    return -1;
  for (nd = 0; *s >= '0' && *s <= '9'; s++, nd++)
    if ((minor = minor * 10 + (*s - '0')) > 999)
      return -1;
  return (nd == 0 || *s != '\0') ? -1 : major * 1000 + minor;
}

static void set_version(client *c, long v) {
  snprintf(c->version, sizeof c->version, "%d.%d", (int)(v / 1000),
           (int)(v % 1000));
}

/* Negotiates from the decoded GET /version reply on top of the stack: the
 * lower of the daemon's ApiVersion and ours. 0 when it has none. */
static int negotiate(lua_State *L, client *c) {
  long v = -1, max = version_num(MAX_API);
  if (lua_istable(L, -1)) {
    if (lua_getfield(L, -1, "ApiVersion") == LUA_TSTRING)
      v = version_num(lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  if (v <= 0)
    return 0;
  set_version(c, v < max ? v : max);
  return 1;
}

/* ---- refs and paths -------------------------------------------------- */

static int is_alnum(int ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
         (ch >= '0' && ch <= '9');
}

static int is_hex(const char *s, size_t n) {
  return n <= 64 && hx_is_lower_hex(s, n);
}

/* Docker's name grammar, [a-zA-Z0-9][a-zA-Z0-9_.-]*, with one leading "/"
 * allowed and stripped. Hex ids and prefixes are names by this grammar. On
 * success sets *s and *n to the stripped ref. */
static int ref_ok(const char **s, size_t *n) {
  const char *p = *s;
  size_t len = *n;
  if (len > 0 && p[0] == '/')
    p++, len--;
  if (len == 0 || len > REF_MAX || !is_alnum((unsigned char)p[0]))
    return 0;
  for (size_t i = 1; i < len; i++) {
    int ch = (unsigned char)p[i];
    if (!is_alnum(ch) && ch != '_' && ch != '.' && ch != '-')
      return 0;
  }
  *s = p;
  *n = len;
  return 1;
}

/* A request() path: absolute, printable ASCII, and nothing that could
 * leave the versioned API tree or smuggle in a query or fragment. */
static int path_ok(const char *s, size_t n) {
  if (n == 0 || n > PATH_MAX_LEN || s[0] != '/')
    return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch <= ' ' || ch >= 0x7f || ch == '%' || ch == '?' || ch == '#' ||
        ch == '\\')
      return 0;
    if (ch == '.' && i + 1 < n && s[i + 1] == '.')
      return 0;
  }
  return 1;
}

static int l_valid_id(lua_State *L) {
  size_t n;
  const char *s = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &n) : 0;
  lua_pushboolean(L, s != NULL && is_hex(s, n));
  return 1;
}

static int l_valid_name(lua_State *L) {
  size_t n;
  const char *s = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &n) : 0;
  lua_pushboolean(L, s != NULL && ref_ok(&s, &n));
  return 1;
}

/* Pushes s quoted for a message: printable ASCII as is, the rest as \xHH,
 * at most 40 bytes of it. */
static const char *push_quoted(lua_State *L, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addchar(&b, '"');
  for (size_t i = 0; i < n && i < 40; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch >= ' ' && ch < 0x7f && ch != '"' && ch != '\\') {
      luaL_addchar(&b, (char)ch);
    } else {
      luaL_addstring(&b, "\\x");
      luaL_addchar(&b, hex[ch >> 4]);
      luaL_addchar(&b, hex[ch & 15]);
    }
  }
  luaL_addstring(&b, n > 40 ? "\"..." : "\"");
  luaL_pushresult(&b);
  return lua_tostring(L, -1);
}

/* The ref at idx, checked; pushes nil, msg, kind and returns NULL when it
 * is no name or id. */
static const char *check_ref(lua_State *L, int idx, size_t *n) {
  const char *s = luaL_checklstring(L, idx, n);
  if (!ref_ok(&s, n)) {
    hx_fail(L, HX_BAD_REQUEST,
            "docker: invalid container name or id: %s (%d bytes)",
            push_quoted(L, s, *n), (int)*n);
    return NULL;
  }
  return s;
}

static int l_ref(lua_State *L) {
  size_t n;
  const char *s = check_ref(L, 1, &n);
  if (s == NULL)
    return 3;
  lua_pushlstring(L, s, n);
  return 1;
}

/* ---- queries --------------------------------------------------------- */

/* Percent-encodes like curl_easy_escape (RFC 3986 unreserved characters
 * pass), but into a Lua buffer, so no C allocation can be leaked by a
 * memory error midway. */
static void add_escaped(luaL_Buffer *b, const char *s, size_t n) {
  static const char hex[] = "0123456789ABCDEF";
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (is_alnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~') {
      luaL_addchar(b, (char)ch);
    } else {
      luaL_addchar(b, '%');
      luaL_addchar(b, hex[ch >> 4]);
      luaL_addchar(b, hex[ch & 15]);
    }
  }
}

/* Pushes the query string form of the value at idx: booleans are 1/0,
 * tables (filters) JSON. Raises for other types: a caller's mistake. */
static void push_query_value(lua_State *L, int idx, const char *key) {
  switch (lua_type(L, idx)) {
  case LUA_TSTRING:
    lua_pushvalue(L, idx);
    break;
  case LUA_TNUMBER:
    luaL_tolstring(L, idx, NULL);
    break;
  case LUA_TBOOLEAN:
    lua_pushstring(L, lua_toboolean(L, idx) ? "1" : "0");
    break;
  case LUA_TTABLE:
    if (!hx_json_encode(L, idx, HX_JSON_DEFAULT_DEPTH, 0))
      luaL_error(L, "query '%s': %s", key, lua_tostring(L, -1));
    break;
  default:
    luaL_error(L,
               "query '%s': string, number, boolean or table expected, "
               "got %s",
               key, luaL_typename(L, idx));
  }
}

/* [key value] -> [key value piece], piece = sep .. key=value, encoded. */
static void push_query_pair(lua_State *L, char sep) {
  int k = lua_absindex(L, -2);
  size_t kn, vn;
  const char *ks = lua_tolstring(L, k, &kn);
  push_query_value(L, k + 1, ks);
  const char *vs = lua_tolstring(L, -1, &vn);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addchar(&b, sep);
  add_escaped(&b, ks, kn);
  luaL_addchar(&b, '=');
  add_escaped(&b, vs, vn);
  luaL_pushresult(&b);
  lua_remove(L, -2); /* the value's string form */
}

/* Pushes "" or "?k=v&..." from the query table at t (none or nil: ""). */
static void push_query(lua_State *L, int t) {
  int n = 0;
  t = lua_absindex(L, t);
  if (!lua_isnoneornil(L, t)) {
    luaL_checktype(L, t, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, t)) {
      if (lua_type(L, -2) != LUA_TSTRING)
        luaL_error(L, "query keys must be strings, got %s",
                   luaL_typename(L, -2));
      luaL_checkstack(L, 8, "query too large");
      push_query_pair(L, n == 0 ? '?' : '&');
      lua_insert(L, -3); /* [piece key value] */
      lua_pop(L, 1);
      n++;
    }
  }
  lua_concat(L, n); /* n == 0 pushes "" */
}

/* ---- requests -------------------------------------------------------- */

typedef struct buf {
  char *p;
  size_t len, cap;
} buf;

/* 0 on success, 1 when the cap would be passed, 2 when out of memory. */
static int buf_add(buf *b, const char *p, size_t n, size_t cap_max) {
  if (n > cap_max - b->len)
    return 1;
  if (b->len + n > b->cap) {
    size_t want = b->len + n, cap = b->cap ? b->cap : 4096;
    while (cap < want)
      cap = cap > SIZE_MAX / 2 ? want : cap * 2;
    if (cap > cap_max)
      cap = cap_max;
    char *q = realloc(b->p, cap);
    if (q == NULL)
      return 2;
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->len, p, n);
  b->len += n;
  return 0;
}

static void buf_free(buf *b) {
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

enum reply {
  R_VALUE,   /* the decoded JSON value */
  R_TRUE,    /* true (ping) */
  R_VERSION, /* the decoded value; negotiates when not done yet */
  R_RAW      /* status, body, headers: request() */
};

/* User values of a request. */
enum { UV_CLIENT = 1, UV_TARGET, UV_BODY, UV_CTYPE, UV_N = UV_CTYPE };

/* Why a stream ended early; set by its callbacks. */
enum stream_end {
  S_RUN,     /* not yet: the daemon ends it, or the transfer fails */
  S_STOPPED, /* the Lua callback returned false */
  S_RAISED,  /* the Lua callback raised: the error is on the stack */
  S_BADJSON, /* a line is not JSON: the message is on the stack */
  S_LIMIT,   /* a line passed max_line */
  S_STALLED  /* no data for `stall` ms */
};

/* The state of a stream (events, stats_stream); zero for other requests.
 * Streams are synchronous, so L is the caller's state, in stream_run. */
typedef struct stream {
  lua_State *L;
  int cb; /* the callback's index on L's stack */
  size_t max_line;
  size_t done; /* bytes of the body buffer already delivered */
  long stall_ms;
  int64_t last_ms; /* when the last byte came (monotonic) */
  int http;        /* 0: unknown yet, 1: 2xx (deliver), 2: an error reply */
  int end;         /* enum stream_end */
} stream;

typedef struct request {
  CURL *easy; /* NULL when not holding one */
  client *cl; /* alive: the client is user value UV_CLIENT */
  struct curl_slist *headers;
  buf body, head; /* the reply */
  size_t max_response;
  int overflow; /* 1: max_response passed, 2: out of memory */
  int reply;    /* enum reply */
  int versioned;
  char method[16];
  /* Filled when a transfer ends, before its handle is given back. */
  long status;
  long os_errno;
  int json;
  char err[CURL_ERROR_SIZE];
  stream st;
} request;

static void request_drop_easy(request *r) {
  if (r->easy != NULL) {
    client_give(r->cl, r->easy);
    r->easy = NULL;
  }
}

static int request_gc(lua_State *L) {
  request *r = luaL_checkudata(L, 1, REQUEST_MT);
  request_drop_easy(r);
  curl_slist_free_all(r->headers);
  r->headers = NULL;
  buf_free(&r->body);
  buf_free(&r->head);
  return 0;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  request *r = ud;
  int e = buf_add(&r->body, p, size * n, r->max_response);
  if (e != 0) {
    r->overflow = e;
    return 0; /* curl fails the transfer with CURLE_WRITE_ERROR */
  }
  return size * n;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
  request *r = ud;
  if (size * n >= 5 && memcmp(p, "HTTP/", 5) == 0)
    r->head.len = 0; /* a new response (after 100 Continue) */
  int e = buf_add(&r->head, p, size * n, HEAD_MAX);
  if (e != 0) {
    r->overflow = e;
    return 0;
  }
  return size * n;
}

/* Pushes a new request for the client at index 1. */
static request *push_request(lua_State *L, const char *method, int reply,
                             int versioned) {
  client *c = check_client(L);
  request *r = lua_newuserdatauv(L, sizeof *r, UV_N);
  memset(r, 0, sizeof *r);
  luaL_setmetatable(L, REQUEST_MT);
  r->cl = c;
  r->reply = reply;
  r->versioned = versioned;
  r->max_response = c->max_response;
  snprintf(r->method, sizeof r->method, "%s", method);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, UV_CLIENT);
  return r;
}

#define SETOPT(opt, val)                                                       \
  do {                                                                         \
    if (rc == CURLE_OK)                                                        \
      rc = curl_easy_setopt(e, opt, val);                                      \
  } while (0)

/* Sets r's handle up for one transfer: the real one, or GET /version when
 * `negotiate`. The URL string is pushed and popped here; the body and
 * target stay anchored in the user values until the transfer ends. */
static CURLcode setup(lua_State *L, int ridx, request *r, int negotiate) {
  client *c = r->cl;
  CURL *e;
  CURLcode rc = CURLE_OK;
  size_t blen = 0;
  const char *body = NULL, *method = negotiate ? "GET" : r->method;

  if (r->easy == NULL && (r->easy = client_take(c)) == NULL)
    return CURLE_OUT_OF_MEMORY;
  e = r->easy;
  curl_easy_reset(e); /* keeps the live connection */
  buf_free(&r->body);
  buf_free(&r->head);
  curl_slist_free_all(r->headers);
  r->headers = NULL;
  r->overflow = 0;
  r->status = r->os_errno = 0;
  r->err[0] = '\0';

  if (negotiate) {
    lua_pushfstring(L, "%s/version", c->base);
  } else {
    lua_getiuservalue(L, ridx, UV_TARGET);
    if (r->versioned)
      lua_pushfstring(L, "%s/v%s%s", c->base, c->version, lua_tostring(L, -1));
    else
      lua_pushfstring(L, "%s%s", c->base, lua_tostring(L, -1));
    lua_remove(L, -2);
    if (lua_getiuservalue(L, ridx, UV_BODY) == LUA_TSTRING)
      body = lua_tolstring(L, -1, &blen);
    lua_pop(L, 1); /* still anchored as a user value */
  }
  SETOPT(CURLOPT_URL, lua_tostring(L, -1));
  lua_pop(L, 1);

  SETOPT(CURLOPT_NOSIGNAL, 1L);
  SETOPT(CURLOPT_ERRORBUFFER, r->err);
  SETOPT(CURLOPT_WRITEFUNCTION, on_body);
  SETOPT(CURLOPT_WRITEDATA, r);
  SETOPT(CURLOPT_HEADERFUNCTION, on_header);
  SETOPT(CURLOPT_HEADERDATA, r);
  SETOPT(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)r->max_response);
  SETOPT(CURLOPT_TIMEOUT_MS, c->timeout_ms);
  SETOPT(CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
  SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
  SETOPT(CURLOPT_USERAGENT, "horcrux");
#if LIBCURL_VERSION_NUM >= 0x075500
  SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
#endif
  if (c->sock != NULL)
    SETOPT(CURLOPT_UNIX_SOCKET_PATH, c->sock);
  if (c->ca != NULL) {
    SETOPT(CURLOPT_CAINFO, c->ca);
    SETOPT(CURLOPT_SSLCERT, c->cert);
    SETOPT(CURLOPT_SSLKEY, c->key);
  }

  if (strcmp(method, "GET") == 0 && body == NULL)
    SETOPT(CURLOPT_HTTPGET, 1L);
  else if (strcmp(method, "HEAD") == 0)
    SETOPT(CURLOPT_NOBODY, 1L);
  else if (strcmp(method, "POST") != 0)
    SETOPT(CURLOPT_CUSTOMREQUEST, method);
  if (body != NULL || strcmp(method, "POST") == 0) {
    SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
    SETOPT(CURLOPT_POSTFIELDS, body != NULL ? body : "");
  }

  struct curl_slist *h = curl_slist_append(NULL, "Expect:");
  if (h != NULL && body != NULL) {
    lua_getiuservalue(L, ridx, UV_CTYPE);
    const char *ct =
        lua_isstring(L, -1) ? lua_tostring(L, -1) : "application/json";
    lua_pushfstring(L, "Content-Type: %s", ct);
    struct curl_slist *h2 = curl_slist_append(h, lua_tostring(L, -1));
    lua_pop(L, 2);
    if (h2 == NULL) {
      curl_slist_free_all(h);
      h = NULL;
    }
  }
  if (h == NULL)
    return CURLE_OUT_OF_MEMORY;
  r->headers = h;
  SETOPT(CURLOPT_HTTPHEADER, h);
  return rc;
}

/* Records what the continuation needs from the handle, then gives the
 * handle back to the client. */
static void finish(request *r) {
  CURL *e = r->easy;
  long n = 0;
  char *ct = NULL;
  if (e == NULL)
    return;
  curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &r->status);
  curl_easy_getinfo(e, CURLINFO_OS_ERRNO, &r->os_errno);
  if (curl_easy_getinfo(e, CURLINFO_NUM_CONNECTS, &n) == CURLE_OK)
    r->cl->connects += n;
  if (curl_easy_getinfo(e, CURLINFO_CONTENT_TYPE, &ct) == CURLE_OK &&
      ct != NULL)
    r->json = strncmp(ct, "application/json", 16) == 0;
  else
    r->json = 0;
  curl_slist_free_all(r->headers);
  r->headers = NULL;
  request_drop_easy(r);
}

/* ---- results ----------------------------------------------------------- */

static const char *curl_kind(CURLcode rc, int overflow) {
  switch (rc) {
  case CURLE_OPERATION_TIMEDOUT:
    return HX_TIMEOUT;
  case CURLE_FILESIZE_EXCEEDED:
    return HX_LIMIT;
  case CURLE_WRITE_ERROR:
    return overflow ? HX_LIMIT : HX_PROTOCOL;
  case CURLE_GOT_NOTHING:
  case CURLE_PARTIAL_FILE:
  case CURLE_WEIRD_SERVER_REPLY:
  case CURLE_UNSUPPORTED_PROTOCOL:
  case CURLE_BAD_CONTENT_ENCODING:
  case CURLE_HTTP2:
  case CURLE_HTTP2_STREAM:
  case CURLE_RANGE_ERROR:
    return HX_PROTOCOL;
  default: /* connect, resolve, TLS, send/receive errors */
    return HX_UNAVAILABLE;
  }
}

static int fail_transfer(lua_State *L, request *r, CURLcode rc) {
  const char *kind = curl_kind(rc, r->overflow);
  client *c = r->cl;
  const char *host = c->closed ? "(closed client)" : c->host;
  if (r->overflow == 2)
    return hx_fail(L, kind, "docker: out of memory reading the reply");
  if (r->overflow == 1 || rc == CURLE_FILESIZE_EXCEEDED)
    return hx_fail(L, kind, "docker: reply larger than max_response (%s bytes)",
                   lua_pushfstring(L, "%I", (LUAI_UACINT)r->max_response));
  if (rc == CURLE_ABORTED_BY_CALLBACK) /* the host is stopping */
    return hx_fail(L, kind, "docker: %s: transfer aborted", host);
  if (rc == CURLE_COULDNT_CONNECT && r->os_errno != 0)
    return hx_fail(L, kind, "docker: cannot connect to %s: %s", host,
                   strerror((int)r->os_errno));
  return hx_fail(L, kind, "docker: %s: %s", host,
                 r->err[0] ? r->err : curl_easy_strerror(rc));
}

/* Decodes the reply body: pushes the value and returns 1, or pushes a
 * message and returns 0. The room reserved first works around Lua 5.4.4's
 * lua_settop, which can leave a dangling stack pointer when closing a
 * to-be-closed slot makes the stack grow (fixed in 5.4.5); the decoder
 * closes one. */
static int decode_body(lua_State *L, request *r) {
  luaL_checkstack(L, 64, "decoding a reply");
  return hx_json_decode(L, r->body.p, r->body.len, HX_JSON_DEFAULT_DEPTH);
}

/* The error for a non-2xx reply, with the daemon's own message. */
static int fail_http(lua_State *L, request *r) {
  long s = r->status;
  const char *kind = s == 404              ? HX_NOT_FOUND
                     : s == 409            ? HX_CONFLICT
                     : s >= 400 && s < 500 ? HX_BAD_REQUEST
                     : s >= 500 && s < 600 ? HX_SERVER
                                           : HX_PROTOCOL;
  const char *msg = NULL;
  if (r->body.len > 0 && decode_body(L, r)) {
    if (lua_istable(L, -1) && lua_getfield(L, -1, "message") == LUA_TSTRING)
      msg = lua_tostring(L, -1); /* anchored on the stack until return */
  } else if (r->body.len > 0) {
    /* A plain-text error: quote its first line. */
    size_t n = 0;
    while (n < r->body.len && n < ERR_TEXT_MAX && r->body.p[n] != '\n' &&
           r->body.p[n] != '\r')
      n++;
    msg = lua_pushlstring(L, r->body.p, n);
  }
  if (msg != NULL && msg[0] != '\0')
    return hx_fail(L, kind, "docker: %s", msg);
  return hx_fail(L, kind, "docker: %s replied HTTP %d", r->method, (int)s);
}

/* Pushes the decoded body, or nil, msg, "protocol"; returns 1 or 3. */
static int push_decoded(lua_State *L, request *r) {
  if (r->body.len == 0)
    return hx_fail(L, HX_PROTOCOL, "docker: empty reply (HTTP %d)",
                   (int)r->status);
  if (!decode_body(L, r))
    return hx_fail(L, HX_PROTOCOL, "docker: bad JSON in reply: %s",
                   lua_tostring(L, -1));
  return 1;
}

/* Pushes the reply headers as a table of lower-case names; repeated
 * headers are joined with ", ". */
static void push_headers(lua_State *L, const buf *h) {
  size_t i = 0;
  luaL_checkstack(L, 8, "reply headers");
  lua_newtable(L);
  while (i < h->len && h->p[i] != '\n') /* the status line */
    i++;
  while (++i < h->len) {
    size_t start = i, colon = 0;
    while (i < h->len && h->p[i] != '\n') {
      if (colon == 0 && h->p[i] == ':')
        colon = i;
      i++;
    }
    size_t end = i;
    while (end > start && (h->p[end - 1] == '\r' || h->p[end - 1] == ' '))
      end--;
    if (colon == 0 || colon >= end)
      continue;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (size_t j = start; j < colon; j++) {
      char ch = h->p[j];
      luaL_addchar(&b, ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
    }
    luaL_pushresult(&b);
    size_t v = colon + 1;
    while (v < end && (h->p[v] == ' ' || h->p[v] == '\t'))
      v++;
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) == LUA_TSTRING) {
      lua_pushliteral(L, ", ");
      lua_pushlstring(L, h->p + v, end - v);
      lua_concat(L, 3);
    } else {
      lua_pop(L, 1);
      lua_pushlstring(L, h->p + v, end - v);
    }
    lua_rawset(L, -3);
  }
}

static int send_request(lua_State *L, int ridx);

static int k_done(lua_State *L, int status, lua_KContext ctx) {
  int ridx = (int)ctx, ok;
  request *r = lua_touserdata(L, ridx);
  CURLcode rc = (CURLcode)lua_tointeger(L, -1);
  (void)status;
  lua_pop(L, 1);
  finish(r);
  if (rc != CURLE_OK)
    return fail_transfer(L, r, rc);
  ok = r->status >= 200 && r->status < 300;
  switch (r->reply) {
  case R_RAW:
    lua_pushinteger(L, r->status);
    if (r->json && r->body.len > 0) {
      if (push_decoded(L, r) != 1)
        return 3;
    } else {
      lua_pushlstring(L, r->body.p ? r->body.p : "", r->body.len);
    }
    push_headers(L, &r->head);
    return 3;
  case R_TRUE:
    if (!ok)
      return fail_http(L, r);
    lua_pushboolean(L, 1);
    return 1;
  default:
    if (!ok)
      return fail_http(L, r);
    if (push_decoded(L, r) != 1)
      return 3;
    /* GET /version is the negotiation itself. */
    if (r->reply == R_VERSION && r->cl->version[0] == '\0' && !r->cl->closed)
      negotiate(L, r->cl);
    return 1;
  }
}

static int k_negotiated(lua_State *L, int status, lua_KContext ctx) {
  int ridx = (int)ctx;
  request *r = lua_touserdata(L, ridx);
  CURLcode rc = (CURLcode)lua_tointeger(L, -1);
  (void)status;
  lua_pop(L, 1);
  finish(r);
  if (rc != CURLE_OK)
    return fail_transfer(L, r, rc);
  if (r->status != 200)
    return fail_http(L, r);
  if (push_decoded(L, r) != 1)
    return 3;
  if (r->cl->closed)
    return hx_fail(L, HX_UNAVAILABLE, "docker: client closed");
  /* Another coroutine may have negotiated meanwhile: same answer. */
  if (!negotiate(L, r->cl))
    return hx_fail(L, HX_PROTOCOL, "docker: GET /version: no ApiVersion");
  lua_pop(L, 1);
  return send_request(L, ridx);
}

/* Runs the request at ridx: GET /version first when the client has no API
 * version yet and the target needs one. */
static int send_request(lua_State *L, int ridx) {
  request *r = lua_touserdata(L, ridx);
  int negotiate = r->versioned && r->cl->version[0] == '\0';
  CURLcode rc = setup(L, ridx, r, negotiate);
  if (rc != CURLE_OK) {
    finish(r);
    return hx_fail(L, HX_UNAVAILABLE, "docker: cannot set up a transfer: %s",
                   curl_easy_strerror(rc));
  }
  return hx_perform(L, r->easy, ridx, negotiate ? k_negotiated : k_done);
}

/* Pushes a request with target = the string on top (popped), runs it. */
static int run(lua_State *L, const char *method, int reply, int versioned) {
  push_request(L, method, reply, versioned);
  lua_insert(L, -2);
  lua_setiuservalue(L, -2, UV_TARGET);
  return send_request(L, lua_gettop(L));
}

/* ---- methods --------------------------------------------------------- */

static int l_version(lua_State *L) {
  check_client(L);
  lua_pushliteral(L, "/version");
  return run(L, "GET", R_VERSION, 0);
}

static int l_ping(lua_State *L) {
  check_client(L);
  lua_pushliteral(L, "/_ping");
  return run(L, "GET", R_TRUE, 0);
}

static int l_containers(lua_State *L) {
  check_client(L);
  lua_settop(L, 2);
  lua_newtable(L); /* 3: the query */
  if (hx_opt_boolean(L, 2, "all", 0))
    lua_pushboolean(L, 1), lua_setfield(L, 3, "all");
  if (hx_opt_boolean(L, 2, "size", 0))
    lua_pushboolean(L, 1), lua_setfield(L, 3, "size");
  lua_Integer limit = hx_opt_integer(L, 2, "limit", -1);
  if (limit >= 0)
    lua_pushinteger(L, limit), lua_setfield(L, 3, "limit");
  if (!lua_isnil(L, 2)) {
    int t = lua_getfield(L, 2, "filters");
    if (t != LUA_TNIL && t != LUA_TTABLE && t != LUA_TSTRING)
      luaL_error(L, "option 'filters': table or string expected, got %s",
                 luaL_typename(L, -1));
    lua_setfield(L, 3, "filters");
  }
  lua_pushliteral(L, "/containers/json");
  push_query(L, 3);
  lua_concat(L, 2);
  return run(L, "GET", R_VALUE, 1);
}

static int l_inspect(lua_State *L) {
  size_t n;
  check_client(L);
  const char *id = check_ref(L, 2, &n);
  if (id == NULL)
    return 3;
  int size = hx_opt_boolean(L, 3, "size", 0);
  lua_pushliteral(L, "/containers/");
  lua_pushlstring(L, id, n);
  lua_pushstring(L, size ? "/json?size=1" : "/json");
  lua_concat(L, 3);
  return run(L, "GET", R_VALUE, 1);
}

static int l_stats(lua_State *L) {
  size_t n;
  check_client(L);
  const char *id = check_ref(L, 2, &n);
  if (id == NULL)
    return 3;
  lua_pushliteral(L, "/containers/");
  lua_pushlstring(L, id, n);
  lua_pushliteral(L, "/stats?stream=0&one-shot=1");
  lua_concat(L, 3);
  return run(L, "GET", R_VALUE, 1);
}

static int l_request(lua_State *L) {
  size_t mlen, plen;
  check_client(L);
  const char *method = luaL_checklstring(L, 2, &mlen);
  const char *path = luaL_checklstring(L, 3, &plen);
  int ok = mlen > 0 && mlen < 16;
  for (size_t i = 0; ok && i < mlen; i++)
    ok = method[i] >= 'A' && method[i] <= 'Z';
  luaL_argcheck(L, ok, 2, "HTTP method expected (GET, POST, ...)");
  if (!lua_isnoneornil(L, 4))
    luaL_checktype(L, 4, LUA_TTABLE);
  int bt = lua_type(L, 5);
  luaL_argexpected(L, bt <= LUA_TNIL || bt == LUA_TSTRING || bt == LUA_TTABLE,
                   5, "string or table");
  luaL_optstring(L, 6, NULL);
  lua_settop(L, 6);
  if (!path_ok(path, plen)) {
    return hx_fail(L, HX_BAD_REQUEST, "docker: invalid path: %s",
                   push_quoted(L, path, plen));
  }
  if (bt == LUA_TTABLE && !hx_json_encode(L, 5, HX_JSON_DEFAULT_DEPTH, 0))
    return luaL_argerror(L, 5, lua_tostring(L, -1));
  if (bt == LUA_TTABLE)
    lua_replace(L, 5);
  lua_pushvalue(L, 3);
  push_query(L, 4);
  lua_concat(L, 2);
  push_request(L, method, R_RAW, 1);
  lua_insert(L, -2);
  lua_setiuservalue(L, -2, UV_TARGET);
  lua_pushvalue(L, 5);
  lua_setiuservalue(L, -2, UV_BODY);
  lua_pushvalue(L, 6);
  lua_setiuservalue(L, -2, UV_CTYPE);
  return send_request(L, lua_gettop(L));
}

/* ---- many at once ---------------------------------------------------- */

/* results[i] = {value = v} when nret is 1 (v on top), or {error = msg,
 * kind = kind} when it is 3 (nil, msg, kind on top). */
static void set_element(lua_State *L, int results, lua_Integer i, int nret) {
  lua_createtable(L, 0, 2);
  if (nret == 1) {
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "value");
  } else {
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "error");
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "kind");
  }
  lua_rawseti(L, results, i);
}

/* A stats_many batch, at stack index 4 across the yields; the requests are
 * at 5, by slot, and the results at 3. The arrays live in the same
 * userdata, after the struct: easy, pos, rc, slot. */
typedef struct batch {
  int n;            /* requests (one per valid ref) */
  int next;         /* the first request not sent yet */
  int wave;         /* transfers in the current wave */
  CURL **easy;      /* [MANY_WAVE] the wave's handles, for hx_perform_many */
  CURLcode *rc;     /* [MANY_WAVE] and their results */
  int *slot;        /* [MANY_WAVE] transfer -> request slot */
  lua_Integer *pos; /* [n] request slot -> index in refs */
} batch;

enum { B_RESULTS = 3, B_BATCH, B_REQUESTS, B_VERSION };

/* Every request from slot `from` on fails with the nil, msg, kind on top;
 * returns the results. */
static int many_fail_all(lua_State *L, int from) {
  batch *b = lua_touserdata(L, B_BATCH);
  int top = lua_gettop(L);
  for (int j = from; j < b->n; j++) {
    lua_pushnil(L);
    lua_pushvalue(L, top - 1);
    lua_pushvalue(L, top);
    set_element(L, B_RESULTS, b->pos[j], 3);
    lua_settop(L, top);
  }
  lua_settop(L, B_RESULTS);
  return 1;
}

static int many_send(lua_State *L);

static int k_many_done(lua_State *L, int status, lua_KContext ctx) {
  batch *b = lua_touserdata(L, B_BATCH);
  (void)status, (void)ctx;
  lua_settop(L, B_REQUESTS); /* pops the 0 */
  for (int t = 0; t < b->wave; t++) {
    int j = b->slot[t], nret;
    lua_rawgeti(L, B_REQUESTS, j + 1);
    request *r = lua_touserdata(L, -1);
    finish(r);
    if (b->rc[t] != CURLE_OK)
      nret = fail_transfer(L, r, b->rc[t]);
    else if (r->status < 200 || r->status >= 300)
      nret = fail_http(L, r);
    else
      nret = push_decoded(L, r);
    set_element(L, B_RESULTS, b->pos[j], nret);
    buf_free(&r->body); /* the next waves need not carry this one's */
    buf_free(&r->head);
    lua_settop(L, B_REQUESTS);
  }
  b->wave = 0;
  if (b->next < b->n)
    return many_send(L);
  lua_settop(L, B_RESULTS);
  return 1;
}

/* Sets up the next wave of transfers and runs it as one batch. */
static int many_send(lua_State *L) {
  batch *b = lua_touserdata(L, B_BATCH);
  client *c = lua_touserdata(L, 1);
  if (c->closed) {
    hx_fail(L, HX_UNAVAILABLE, "docker: client closed");
    return many_fail_all(L, b->next);
  }
  while (b->next < b->n && b->wave < MANY_WAVE) {
    int j = b->next++;
    lua_rawgeti(L, B_REQUESTS, j + 1);
    request *r = lua_touserdata(L, -1);
    CURLcode rc = setup(L, lua_gettop(L), r, 0);
    if (rc == CURLE_OK) {
      b->easy[b->wave] = r->easy;
      b->rc[b->wave] = CURLE_FAILED_INIT;
      b->slot[b->wave++] = j;
    } else {
      finish(r);
      set_element(L, B_RESULTS, b->pos[j],
                  hx_fail(L, HX_UNAVAILABLE,
                          "docker: cannot set up a transfer: %s",
                          curl_easy_strerror(rc)));
    }
    lua_settop(L, B_REQUESTS);
  }
  return hx_perform_many(L, b->easy, b->rc, b->wave, 0, k_many_done);
}

static int k_many_version(lua_State *L, int status, lua_KContext ctx) {
  request *r = lua_touserdata(L, B_VERSION);
  CURLcode rc = (CURLcode)lua_tointeger(L, -1);
  int nret;
  (void)status, (void)ctx;
  lua_pop(L, 1);
  finish(r);
  if (rc != CURLE_OK)
    nret = fail_transfer(L, r, rc);
  else if (r->status != 200)
    nret = fail_http(L, r);
  else if ((nret = push_decoded(L, r)) == 1) {
    if (r->cl->closed)
      nret = hx_fail(L, HX_UNAVAILABLE, "docker: client closed");
    else if (!negotiate(L, r->cl))
      nret = hx_fail(L, HX_PROTOCOL, "docker: GET /version: no ApiVersion");
  }
  if (nret == 3)
    return many_fail_all(L, 0);
  lua_settop(L, B_REQUESTS);
  return many_send(L);
}

/* Pushes the batch userdata for n requests. */
static batch *push_batch(lua_State *L, lua_Integer n) {
  size_t w = n < MANY_WAVE ? (size_t)n : MANY_WAVE;
  batch *b = lua_newuserdatauv(
      L,
      sizeof *b + w * (sizeof(CURL *) + sizeof(CURLcode) + sizeof(int)) +
          (size_t)n * sizeof(lua_Integer),
      0);
  memset(b, 0, sizeof *b);
  b->easy = (CURL **)(b + 1);
  b->pos = (lua_Integer *)(b->easy + w);
  b->rc = (CURLcode *)(b->pos + n);
  b->slot = (int *)(b->rc + w);
  return b;
}

static int l_stats_many(lua_State *L) {
  client *c = check_client(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  lua_Integer n = luaL_len(L, 2);
  luaL_argcheck(L, n >= 0 && n <= MANY_MAX, 2, "too many refs");
  lua_createtable(L, (int)n, 0); /* B_RESULTS */
  hx_json_push_array_mt(L);
  lua_setmetatable(L, B_RESULTS);
  batch *b = push_batch(L, n);   /* B_BATCH */
  lua_createtable(L, (int)n, 0); /* B_REQUESTS */
  for (lua_Integer i = 1; i <= n; i++) {
    size_t len;
    if (lua_geti(L, 2, i) != LUA_TSTRING)
      return luaL_error(L, "stats_many: refs[%I]: string expected, got %s",
                        (LUAI_UACINT)i, luaL_typename(L, -1));
    const char *id = check_ref(L, -1, &len);
    if (id == NULL) { /* refused here: nothing is sent for it */
      set_element(L, B_RESULTS, i, 3);
      lua_settop(L, B_REQUESTS);
      continue;
    }
    lua_pushliteral(L, "/containers/");
    lua_pushlstring(L, id, len);
    lua_pushliteral(L, "/stats?stream=0&one-shot=1");
    lua_concat(L, 3);
    push_request(L, "GET", R_VALUE, 1);
    lua_insert(L, -2);
    lua_setiuservalue(L, -2, UV_TARGET);
    b->pos[b->n++] = i;
    lua_rawseti(L, B_REQUESTS, b->n);
    lua_settop(L, B_REQUESTS);
  }
  if (b->n == 0) {
    lua_settop(L, B_RESULTS);
    return 1;
  }
  if (c->version[0] != '\0')
    return many_send(L);
  request *r = push_request(L, "GET", R_VERSION, 0); /* B_VERSION */
  CURLcode rc = setup(L, B_VERSION, r, 1);
  if (rc != CURLE_OK) {
    finish(r);
    hx_fail(L, HX_UNAVAILABLE, "docker: cannot set up a transfer: %s",
            curl_easy_strerror(rc));
    return many_fail_all(L, 0);
  }
  return hx_perform(L, r->easy, 0, k_many_version);
}

/* ---- streams --------------------------------------------------------- */

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int blank(const char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r')
      return 0;
  return 1;
}

/* Protected, called by run_deliver: [callback request final] -> hands each
 * complete line of the buffer (with `final`, the rest too) to the callback,
 * decoded. Returns the stream_end, then the message for S_BADJSON. */
static int deliver(lua_State *L) {
  request *r = lua_touserdata(L, 2);
  stream *s = &r->st;
  int final = lua_toboolean(L, 3);
  while (s->done < r->body.len) {
    const char *p = r->body.p + s->done;
    size_t left = r->body.len - s->done;
    const char *nl = memchr(p, '\n', left);
    size_t len = nl != NULL ? (size_t)(nl - p) : left;
    if (len > s->max_line) {
      lua_pushinteger(L, S_LIMIT);
      return 1;
    }
    if (nl == NULL && !final)
      break; /* the rest comes with the next write */
    s->done += nl != NULL ? len + 1 : len;
    if (blank(p, len))
      continue;
    luaL_checkstack(L, 64, "decoding a stream"); /* see decode_body */
    if (!hx_json_decode(L, p, len, HX_JSON_DEFAULT_DEPTH)) {
      lua_pushinteger(L, S_BADJSON);
      lua_insert(L, -2);
      return 2;
    }
    lua_pushvalue(L, 1);
    lua_insert(L, -2);
    lua_call(L, 1, 1);
    int stop = lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (stop) {
      lua_pushinteger(L, S_STOPPED);
      return 1;
    }
  }
  lua_pushinteger(L, S_RUN);
  return 1;
}

/* Runs deliver() under lua_pcall, from inside curl: nothing here may raise
 * (the stack room was reserved before the transfer). An early end leaves
 * the error object or message on the stack for stream_run. */
static void run_deliver(request *r, int final) {
  lua_State *L = r->st.L;
  lua_pushcfunction(L, deliver);
  lua_pushvalue(L, r->st.cb);
  lua_pushlightuserdata(L, r);
  lua_pushboolean(L, final);
  if (lua_pcall(L, 3, 2, 0) != LUA_OK) {
    r->st.end = S_RAISED;
    return;
  }
  r->st.end = (int)lua_tointeger(L, -2);
  if (r->st.end == S_BADJSON)
    lua_remove(L, -2);
  else
    lua_pop(L, 2);
}

static size_t on_stream(char *p, size_t size, size_t n, void *ud) {
  request *r = ud;
  stream *s = &r->st;
  s->last_ms = now_ms();
  if (s->http == 0) {
    long code = 0;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
    s->http = code >= 200 && code < 300 ? 1 : 2;
  }
  if (s->http == 2)
    return on_body(p, size, n, ud); /* an error reply, for fail_http */
  if (s->done > 0) {                /* drop what was delivered */
    memmove(r->body.p, r->body.p + s->done, r->body.len - s->done);
    r->body.len -= s->done;
    s->done = 0;
  }
  /* Bounded: deliver() fails a line longer than max_line at once. */
  int e = buf_add(&r->body, p, size * n, SIZE_MAX);
  if (e != 0) {
    r->overflow = e;
    return 0;
  }
  run_deliver(r, 0);
  return s->end == S_RUN ? size * n : 0; /* 0 stops the transfer */
}

static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut,
                       curl_off_t un) {
  request *r = ud;
  (void)dt, (void)dn, (void)ut, (void)un;
  if (r->st.stall_ms > 0 && now_ms() - r->st.last_ms >= r->st.stall_ms) {
    r->st.end = S_STALLED;
    return 1;
  }
  return 0;
}

/* The stream options at idx (none or nil: the defaults). */
static void stream_opts(lua_State *L, int idx, stream *s) {
  lua_Number stall = hx_opt_number(L, idx, "stall", 0);
  lua_Integer max = hx_opt_integer(L, idx, "max_line", LINE_MAX_DEFAULT);
  luaL_argcheck(L, stall >= 0 && stall <= 86400, idx,
                "stall out of range 0..86400 (0: none)");
  luaL_argcheck(L, max > 0, idx, "max_line must be positive");
  memset(s, 0, sizeof *s);
  s->stall_ms = (long)ceil(stall * 1000);
  s->max_line = (size_t)max;
}

/* Streams are synchronous: the API version is negotiated now if needed.
 * Returns 0, or 3 with nil, msg, kind on top. */
static int negotiate_now(lua_State *L) {
  client *c = check_client(L);
  if (c->version[0] != '\0')
    return 0;
  int top = lua_gettop(L);
  lua_pushliteral(L, "/version");
  if (run(L, "GET", R_VERSION, 0) != 1) /* not yielded: see stream_run */
    return 3;
  if (c->version[0] == '\0')
    return hx_fail(L, HX_PROTOCOL, "docker: GET /version: no ApiVersion");
  lua_settop(L, top);
  return 0;
}

/* Runs GET <target on top> as a stream, with its settings in *opt and the
 * callback at cb, to its end; returns the method's results. The caller has
 * checked that it does not run in a request coroutine, so hx_perform and
 * the transfer below run here, synchronously. */
static int stream_run(lua_State *L, int cb, const stream *opt) {
  int tidx = lua_gettop(L), nret;
  if ((nret = negotiate_now(L)) != 0)
    return nret;
  lua_settop(L, tidx);
  request *r = push_request(L, "GET", R_VALUE, 1);
  lua_pushvalue(L, tidx);
  lua_setiuservalue(L, -2, UV_TARGET);
  CURLcode rc = setup(L, lua_gettop(L), r, 0);
  CURL *e = r->easy;
  SETOPT(CURLOPT_WRITEFUNCTION, on_stream);
  SETOPT(CURLOPT_TIMEOUT_MS, 0L); /* the stall timeout instead */
  SETOPT(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)0);
  if (opt->stall_ms > 0) {
    SETOPT(CURLOPT_NOPROGRESS, 0L);
    SETOPT(CURLOPT_XFERINFOFUNCTION, on_progress);
    SETOPT(CURLOPT_XFERINFODATA, r);
  }
  if (rc != CURLE_OK) {
    finish(r);
    return hx_fail(L, HX_UNAVAILABLE, "docker: cannot set up a transfer: %s",
                   curl_easy_strerror(rc));
  }
  r->st = *opt;
  r->st.L = L;
  r->st.cb = cb;
  r->st.last_ms = now_ms();
  luaL_checkstack(L, 16, "running a stream"); /* for run_deliver */
  rc = curl_easy_perform(e);
  if (rc == CURLE_OK && r->st.end == S_RUN && r->st.http == 1)
    run_deliver(r, 1); /* a last line without its newline */
  finish(r);
  r->st.L = NULL;
  switch (r->st.end) {
  case S_RAISED:
    buf_free(&r->body);
    return lua_error(L);
  case S_STOPPED:
    lua_pushboolean(L, 1);
    lua_pushliteral(L, "stopped");
    return 2;
  case S_BADJSON:
    return hx_fail(L, HX_PROTOCOL, "docker: bad JSON in a stream: %s",
                   lua_tostring(L, -1));
  case S_LIMIT:
    return hx_fail(L, HX_LIMIT,
                   "docker: a stream line is longer than max_line (%I bytes)",
                   (LUAI_UACINT)r->st.max_line);
  case S_STALLED:
    return hx_fail(L, HX_TIMEOUT, "docker: %s: no data for %I ms (stall)",
                   r->cl->closed ? "(closed client)" : r->cl->host,
                   (LUAI_UACINT)r->st.stall_ms);
  }
  if (rc != CURLE_OK)
    return fail_transfer(L, r, rc);
  if (r->status < 200 || r->status >= 300)
    return fail_http(L, r);
  lua_pushboolean(L, 1);
  lua_pushliteral(L, "ended");
  return 2;
}

/* c:events([opts,] cb) and c:stats_stream(ref[, opts], cb): the callback
 * may come without the options. */
static void opts_optional(lua_State *L, int opts) {
  if (lua_type(L, opts) == LUA_TFUNCTION && lua_isnone(L, opts + 1)) {
    lua_pushnil(L);
    lua_insert(L, opts);
  }
  if (!lua_isnoneornil(L, opts))
    luaL_checktype(L, opts, LUA_TTABLE);
  luaL_checktype(L, opts + 1, LUA_TFUNCTION);
  lua_settop(L, opts + 1);
}

/* q.field = opts.field as a Docker timestamp: Unix seconds (a float keeps
 * its fraction, to the nanosecond), or a string Docker parses itself. */
static void opt_time(lua_State *L, int opts, const char *field, int q) {
  int t = lua_isnil(L, opts) ? LUA_TNIL : lua_getfield(L, opts, field);
  if (t == LUA_TNIL)
    return;
  if (t == LUA_TNUMBER && !lua_isinteger(L, -1)) {
    char num[64];
    double x = (double)lua_tonumber(L, -1);
    if (!isfinite(x) || fabs(x) > 1e15)
      luaL_error(L, "option '%s': a time in Unix seconds expected", field);
    snprintf(num, sizeof num, "%.9f", x);
    lua_pushstring(L, num);
  } else if (t != LUA_TNUMBER && t != LUA_TSTRING) {
    luaL_error(L, "option '%s': number or string expected, got %s", field,
               luaL_typename(L, -1));
  } else {
    lua_pushvalue(L, -1);
  }
  lua_setfield(L, q, field);
  lua_pop(L, 1);
}

static int l_events(lua_State *L) {
  stream opt;
  check_client(L);
  opts_optional(L, 2);
  stream_opts(L, 2, &opt);
  lua_newtable(L); /* 4: the query */
  if (!lua_isnil(L, 2)) {
    int t = lua_getfield(L, 2, "filters");
    if (t != LUA_TNIL && t != LUA_TTABLE && t != LUA_TSTRING)
      luaL_error(L, "option 'filters': table or string expected, got %s",
                 luaL_typename(L, -1));
    lua_setfield(L, 4, "filters");
  }
  opt_time(L, 2, "since", 4);
  opt_time(L, 2, "until", 4);
  if (hx_can_yield(L))
    return hx_fail(L, HX_BAD_REQUEST,
                   "events: streaming is not available inside an HTTP route");
  lua_pushliteral(L, "/events");
  push_query(L, 4);
  lua_concat(L, 2);
  return stream_run(L, 3, &opt);
}

static int l_stats_stream(lua_State *L) {
  size_t n;
  stream opt;
  check_client(L);
  luaL_checkstring(L, 2);
  opts_optional(L, 3);
  stream_opts(L, 3, &opt);
  if (hx_can_yield(L))
    return hx_fail(
        L, HX_BAD_REQUEST,
        "stats_stream: streaming is not available inside an HTTP route");
  const char *id = check_ref(L, 2, &n);
  if (id == NULL)
    return 3;
  lua_pushliteral(L, "/containers/");
  lua_pushlstring(L, id, n);
  lua_pushliteral(L, "/stats?stream=1");
  lua_concat(L, 3);
  return stream_run(L, 4, &opt);
}

/* ---- connect --------------------------------------------------------- */

static char *dup_or_raise(lua_State *L, const char *s) {
  char *d = strdup(s);
  if (d == NULL)
    luaL_error(L, "not enough memory");
  return d;
}

/* Where the TLS files are: opts.cert_path, DOCKER_CERT_PATH, ~/.docker. */
static int set_tls(lua_State *L, client *c, int opts) {
  const char *dir = hx_opt_string(L, opts, "cert_path", NULL);
  if (dir == NULL || dir[0] == '\0')
    dir = getenv("DOCKER_CERT_PATH");
  if (dir == NULL || dir[0] == '\0') {
    const char *home = getenv("HOME");
    if (home == NULL || home[0] == '\0')
      return hx_fail(L, HX_BAD_REQUEST,
                     "docker: TLS: no DOCKER_CERT_PATH and no HOME");
    dir = lua_pushfstring(L, "%s/.docker", home);
  }
  c->ca = dup_or_raise(L, lua_pushfstring(L, "%s/ca.pem", dir));
  c->cert = dup_or_raise(L, lua_pushfstring(L, "%s/cert.pem", dir));
  c->key = dup_or_raise(L, lua_pushfstring(L, "%s/key.pem", dir));
  return 0;
}

/* Parses host into c; returns 0, or pushes nil, msg, kind and returns 3. */
static int set_host(lua_State *L, client *c, const char *host, int opts) {
  c->host = dup_or_raise(L, host);
  if (strncmp(host, "unix://", 7) == 0) {
    const char *path = host + 7;
    if (path[0] == '\0' || strlen(path) >= 108)
      return hx_fail(L, HX_BAD_REQUEST, "docker: bad socket path in %s", host);
    c->sock = dup_or_raise(L, path);
    c->base = dup_or_raise(L, "http://localhost");
    return 0;
  }
  if (strncmp(host, "tcp://", 6) == 0) {
    const char *auth = host + 6, *end = auth + strcspn(auth, "/");
    const char *v = getenv("DOCKER_TLS_VERIFY");
    int tls = hx_opt_boolean(L, opts, "tls_verify", v != NULL && v[0] != '\0');
    const char *bracket = memchr(auth, ']', (size_t)(end - auth));
    const char *colon = memchr(bracket ? bracket : auth, ':',
                               (size_t)(end - (bracket ? bracket : auth)));
    if (end == auth || (end[0] == '/' && end[1] != '\0'))
      return hx_fail(L, HX_BAD_REQUEST, "docker: bad DOCKER_HOST: %s", host);
    c->base = dup_or_raise(
        L, lua_pushfstring(L, "%s://%s%s", tls ? "https" : "http",
                           lua_pushlstring(L, auth, (size_t)(end - auth)),
                           colon ? ""
                           : tls ? ":2376"
                                 : ":2375"));
    return tls ? set_tls(L, c, opts) : 0;
  }
  if (strncmp(host, "npipe://", 8) == 0)
    return hx_fail(L, HX_UNAVAILABLE,
                   "docker: %s: named pipes (npipe://) are Windows only, not "
                   "supported here",
                   host);
  if (strncmp(host, "ssh://", 6) == 0)
    return hx_fail(L, HX_UNAVAILABLE,
                   "docker: %s: ssh:// is not supported here; use unix:// or "
                   "tcp://",
                   host);
  return hx_fail(L, HX_BAD_REQUEST,
                 "docker: bad DOCKER_HOST %s (unix:// or tcp:// expected)",
                 host);
}

static int l_connect(lua_State *L) {
  lua_settop(L, 1);
  if (!lua_isnil(L, 1))
    luaL_checktype(L, 1, LUA_TTABLE);
  const char *host = hx_opt_string(L, 1, "host", NULL);
  const char *api = hx_opt_string(L, 1, "api_version", NULL);
  lua_Number timeout = hx_opt_number(L, 1, "timeout", 30);
  lua_Number ctimeout = hx_opt_number(L, 1, "connect_timeout", 5);
  lua_Integer max = hx_opt_integer(L, 1, "max_response", 64 << 20);
  luaL_argcheck(L, timeout >= 0 && timeout <= 86400, 1,
                "timeout out of range 0..86400 (0: none)");
  luaL_argcheck(L, ctimeout >= 0 && ctimeout <= 86400, 1,
                "connect_timeout out of range 0..86400");
  luaL_argcheck(L, max > 0, 1, "max_response must be positive");
  luaL_argcheck(L, api == NULL || version_num(api) > 0, 1,
                "api_version: MAJOR.MINOR expected");
  if (host == NULL || host[0] == '\0')
    host = getenv("DOCKER_HOST");
  if (host == NULL || host[0] == '\0')
    host = "unix:///var/run/docker.sock";
  if (api == NULL || api[0] == '\0') {
    api = getenv("DOCKER_API_VERSION");
    if (api != NULL && api[0] != '\0' && version_num(api) <= 0)
      return hx_fail(L, HX_BAD_REQUEST, "docker: bad DOCKER_API_VERSION: %s",
                     api);
  }

  pthread_once(&curl_once, curl_init);
  if (curl_init_rc != CURLE_OK)
    return hx_fail(L, HX_UNAVAILABLE, "docker: curl_global_init: %s",
                   curl_easy_strerror(curl_init_rc));

  client *c = lua_newuserdatauv(L, sizeof *c, 0);
  memset(c, 0, sizeof *c);
  luaL_setmetatable(L, CLIENT_MT); /* from here on, __gc frees c's strings */
  int cidx = lua_gettop(L);
  c->timeout_ms = (long)(timeout * 1000);
  c->connect_timeout_ms = (long)(ctimeout * 1000);
  c->max_response = (size_t)max;
  if (api != NULL && api[0] != '\0')
    set_version(c, version_num(api));
  if (set_host(L, c, host, 1) != 0) {
    client_release(c);
    return 3;
  }
  lua_settop(L, cidx);
  return 1;
}

/* ---- registration ---------------------------------------------------- */

static const luaL_Reg client_methods[] = {{"version", l_version},
                                          {"ping", l_ping},
                                          {"containers", l_containers},
                                          {"inspect", l_inspect},
                                          {"stats", l_stats},
                                          {"stats_many", l_stats_many},
                                          {"events", l_events},
                                          {"stats_stream", l_stats_stream},
                                          {"request", l_request},
                                          {"api_version", l_api_version},
                                          {"connections", l_connections},
                                          {"close", l_close},
                                          {NULL, NULL}};

static const luaL_Reg client_meta[] = {{"__gc", l_close},
                                       {"__close", l_close},
                                       {"__tostring", l_tostring},
                                       {"__index", NULL},
                                       {NULL, NULL}};

static const luaL_Reg funcs[] = {{"connect", l_connect},
                                 {"valid_id", l_valid_id},
                                 {"valid_name", l_valid_name},
                                 {"ref", l_ref},
                                 {NULL, NULL}};

HX_EXPORT int luaopen_horcrux_docker(lua_State *L) {
  if (luaL_newmetatable(L, CLIENT_MT)) {
    luaL_setfuncs(L, client_meta, 0);
    luaL_newlib(L, client_methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, REQUEST_MT)) {
    lua_pushcfunction(L, request_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  lua_pushliteral(L, MAX_API);
  lua_setfield(L, -2, "max_api_version");
  return 1;
}
