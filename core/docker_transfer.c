/*
 * docker_transfer.c - horcrux.docker, second half: how a request is sent and
 * its reply turned into results (docker.c holds the client and the methods;
 * docker_private.h what the two share).
 *
 * How a request flows. Everything a transfer needs lives in a request
 * userdata ("horcrux.docker.request") that hxd_send pushes on the method's
 * own stack: the easy handle, the reply buffers, the header list, and as
 * user values the client, the target (path and query, without the version
 * prefix) and the body. Its stack index is the continuation context.
 *
 *   hxd_send   pushes the request, calls send_request()
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
 * HXD_FREE_MAX of them for the next batch and cleans up the rest. More than
 * MANY_WAVE refs go in waves of MANY_WAVE, which bounds the connections
 * (descriptors) open at once.
 *
 * Streams (events, stats_stream) are synchronous: curl_easy_perform() on
 * the caller's thread, meant for the collector's own thread (docker.c
 * refuses them inside a request coroutine, where they would hold a worker
 * for as long as the stream lasts). The write callback buffers the body,
 * splits it on newlines (a JSON value may be split across writes or
 * several merged in one) and hands each decoded value to the Lua callback
 * through lua_pcall, so no Lua error ever longjmps across curl: an error,
 * or the callback's `false`, only makes the write callback stop the
 * transfer; the error is raised again once curl has returned.
 */
#include "async.h"
#include "aux.h"
#include "docker_private.h"
#include "jsonconv.h"

#include <curl/curl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define HEAD_MAX (64 * 1024) /* reply headers cap */
#define ERR_TEXT_MAX 200     /* how much of a non-JSON error body to quote */

/* Transfers of a stats_many batch that run at once: each is a connection
 * (a descriptor here, and a slot of the daemon's listen backlog). */
#define MANY_WAVE 128
/* Refs in one stats_many call: the waves of a batch nest in C when they do
 * not yield. */
#define MANY_MAX (1 << 16)

/* ---- reply buffers --------------------------------------------------- */

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

/* ---- requests -------------------------------------------------------- */

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
 * Streams are synchronous, so L is the caller's state, in hxd_stream. */
typedef struct stream {
  lua_State *L;
  int cb; /* the callback's index on L's stack */
  hxd_stream_opts opt;
  size_t done;     /* bytes of the body buffer already delivered */
  int64_t last_ms; /* when the last byte came (monotonic) */
  int http;        /* 0: unknown yet, 1: 2xx (deliver), 2: an error reply */
  int end;         /* enum stream_end */
} stream;

typedef struct request {
  CURL *easy;     /* NULL when not holding one */
  hxd_client *cl; /* alive: the client is user value UV_CLIENT */
  struct curl_slist *headers;
  buf body, head; /* the reply */
  size_t max_response;
  int overflow; /* 1: max_response passed, 2: out of memory */
  int reply;    /* enum hxd_reply */
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
    hxd_client_give(r->cl, r->easy);
    r->easy = NULL;
  }
}

static int request_gc(lua_State *L) {
  request *r = luaL_checkudata(L, 1, HXD_REQUEST_MT);
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
  hxd_client *c = hxd_check_client(L);
  request *r = lua_newuserdatauv(L, sizeof *r, UV_N);
  memset(r, 0, sizeof *r);
  luaL_setmetatable(L, HXD_REQUEST_MT);
  r->cl = c;
  r->reply = reply;
  r->versioned = versioned;
  r->max_response = c->max_response;
  snprintf(r->method, sizeof r->method, "%s", method);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, UV_CLIENT);
  return r;
}

void hxd_open_requests(lua_State *L) {
  if (luaL_newmetatable(L, HXD_REQUEST_MT)) {
    lua_pushcfunction(L, request_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
}

/* ---- setting a transfer up -------------------------------------------- */

#define SETOPT(opt, val)                                                       \
  do {                                                                         \
    if (rc == CURLE_OK)                                                        \
      rc = curl_easy_setopt(e, opt, val);                                      \
  } while (0)

/* Sets the URL: the real target, or GET /version when `negotiate`. The URL
 * string is pushed and popped here (curl copies it); the body stays
 * anchored in its user value until the transfer ends. */
static CURLcode setup_url(lua_State *L, int ridx, request *r, int negotiate,
                          const char **body, size_t *blen) {
  hxd_client *c = r->cl;
  CURL *e = r->easy;
  CURLcode rc = CURLE_OK;
  *body = NULL;
  *blen = 0;
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
      *body = lua_tolstring(L, -1, blen);
    lua_pop(L, 1); /* still anchored as a user value */
  }
  SETOPT(CURLOPT_URL, lua_tostring(L, -1));
  lua_pop(L, 1);
  return rc;
}

/* What every transfer of the client shares: callbacks, limits, where. */
static CURLcode setup_common(request *r) {
  hxd_client *c = r->cl;
  CURL *e = r->easy;
  CURLcode rc = CURLE_OK;
  SETOPT(CURLOPT_NOSIGNAL, 1L);
  SETOPT(CURLOPT_OPENSOCKETFUNCTION, hx_open_socket); /* close-on-exec */
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
  return rc;
}

static CURLcode setup_method(request *r, const char *method, const char *body,
                             size_t blen) {
  CURL *e = r->easy;
  CURLcode rc = CURLE_OK;
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
  return rc;
}

/* No "Expect: 100-continue"; the body's Content-Type (JSON unless the
 * request says). The list hangs off the request until the transfer ends. */
static CURLcode setup_headers(lua_State *L, int ridx, request *r,
                              int has_body) {
  CURL *e = r->easy;
  CURLcode rc = CURLE_OK;
  struct curl_slist *h = curl_slist_append(NULL, "Expect:");
  if (h != NULL && has_body) {
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

/* Sets r's handle up for one transfer: the real one, or GET /version when
 * `negotiate`. */
static CURLcode setup(lua_State *L, int ridx, request *r, int negotiate) {
  CURLcode rc;
  const char *body;
  size_t blen;
  if (r->easy == NULL && (r->easy = hxd_client_take(r->cl)) == NULL)
    return CURLE_OUT_OF_MEMORY;
  curl_easy_reset(r->easy); /* keeps the live connection */
  buf_free(&r->body);
  buf_free(&r->head);
  curl_slist_free_all(r->headers);
  r->headers = NULL;
  r->overflow = 0;
  r->status = r->os_errno = 0;
  r->err[0] = '\0';
  rc = setup_url(L, ridx, r, negotiate, &body, &blen);
  if (rc == CURLE_OK)
    rc = setup_common(r);
  if (rc == CURLE_OK)
    rc = setup_method(r, negotiate ? "GET" : r->method, body, blen);
  if (rc == CURLE_OK)
    rc = setup_headers(L, ridx, r, body != NULL);
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
  hxd_client *c = r->cl;
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

static int blank(const char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r')
      return 0;
  return 1;
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

/* The kind of a non-2xx reply: the one place where an HTTP status becomes
 * a kind (every method, stats_many, the streams and call come through
 * fail_http). A daemon that refuses our API version ("client version X is
 * too new", or too old: a 400 for every call) is not the caller's bad
 * request but our configuration's fault: protocol, a 502 to clients. */
static const char *status_kind(long s, const char *msg) {
  if (s == 400 && msg != NULL && strncmp(msg, "client version ", 15) == 0 &&
      (strstr(msg, " is too new") != NULL ||
       strstr(msg, " is too old") != NULL))
    return HX_PROTOCOL;
  switch (s) {
  case 401:
    return HX_UNAUTHORIZED;
  case 403:
    return HX_FORBIDDEN;
  case 404:
    return HX_NOT_FOUND;
  case 409:
    return HX_CONFLICT;
  }
  if (s >= 400 && s < 500)
    return HX_BAD_REQUEST;
  return s >= 500 && s < 600 ? HX_SERVER : HX_PROTOCOL;
}

/* Pushes the daemon's message of an error reply (the JSON "message", or
 * the first line of a text body), or returns NULL. */
static const char *push_daemon_message(lua_State *L, request *r) {
  size_t n = 0;
  if (r->body.len == 0)
    return NULL;
  if (decode_body(L, r)) {
    if (lua_istable(L, -1) && lua_getfield(L, -1, "message") == LUA_TSTRING)
      return lua_tostring(L, -1); /* anchored on the stack */
    return NULL;
  }
  while (n < r->body.len && n < ERR_TEXT_MAX && r->body.p[n] != '\n' &&
         r->body.p[n] != '\r')
    n++;
  return lua_pushlstring(L, r->body.p, n);
}

/* The error for a non-2xx reply, with the daemon's own message. */
static int fail_http(lua_State *L, request *r) {
  const char *msg = push_daemon_message(L, r);
  const char *kind = status_kind(r->status, msg);
  if (msg == NULL || msg[0] == '\0')
    return hx_fail(L, kind, "docker: %s replied HTTP %d", r->method,
                   (int)r->status);
  if (r->status == 400 && strcmp(kind, HX_PROTOCOL) == 0)
    return hx_fail(L, kind,
                   "docker: %s (the API version comes from DOCKER_API_VERSION "
                   "or the api_version option)",
                   msg);
  return hx_fail(L, kind, "docker: %s", msg);
}

/* A JSON reply of values one per line (Docker's progress streams: pull,
 * push, build, load answer so): pushes the sequence of the values and
 * returns 1, or pushes the message of the first bad line and returns 0. */
static int decode_lines(lua_State *L, request *r) {
  int top = lua_gettop(L);
  lua_Integer k = 0;
  lua_newtable(L);
  hx_json_push_array_mt(L);
  lua_setmetatable(L, -2);
  for (size_t i = 0; i < r->body.len;) {
    const char *p = r->body.p + i, *nl = memchr(p, '\n', r->body.len - i);
    size_t n = nl != NULL ? (size_t)(nl - p) : r->body.len - i;
    i += n + (nl != NULL);
    if (blank(p, n))
      continue;
    luaL_checkstack(L, 64, "decoding a reply"); /* see decode_body */
    if (!hx_json_decode(L, p, n, HX_JSON_DEFAULT_DEPTH)) {
      lua_replace(L, top + 1);
      return 0;
    }
    lua_rawseti(L, -2, ++k);
  }
  return 1;
}

/* Decodes a JSON reply for call: pushes the value and returns 1, or pushes
 * a message and returns 0. */
static int decode_call(lua_State *L, request *r) {
  if (r->reply == HXD_CALL_LINES)
    return decode_lines(L, r);
  if (decode_body(L, r))
    return 1;
  /* Lines from a stream endpoint that docker.c does not know as one. */
  if (memchr(r->body.p, '\n', r->body.len) == NULL)
    return 0;
  if (decode_lines(L, r))
    return 1;
  lua_pop(L, 1); /* a line's message: the body's says more */
  return 0;
}

/* c:call's results: value, status for 2xx and 304 (the decoded JSON of a
 * JSON reply, the body of another, true for none); else nil, msg, kind,
 * status. */
static int call_results(lua_State *L, request *r) {
  long s = r->status;
  if ((s < 200 || s >= 300) && s != 304) {
    fail_http(L, r);
    lua_pushinteger(L, s);
    return 4;
  }
  if (blank(r->body.p, r->body.len)) {
    lua_pushboolean(L, 1);
  } else if (!r->json) {
    lua_pushlstring(L, r->body.p, r->body.len);
  } else if (!decode_call(L, r)) {
    hx_fail(L, HX_PROTOCOL, "docker: bad JSON in reply: %s",
            lua_tostring(L, -1));
    lua_pushinteger(L, s);
    return 4;
  }
  lua_pushinteger(L, s);
  return 2;
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

/* One header line of a reply: name[0..nlen), value[0..vlen) (trimmed). */
typedef struct header {
  const char *name, *value;
  size_t nlen, vlen;
} header;

/* Walks the headers of h after its status line: *pos starts at 0. Sets *out
 * to the next header and returns 1, or returns 0 at the end. */
static int next_header(const buf *h, size_t *pos, header *out) {
  size_t i = *pos;
  if (i == 0)
    while (i < h->len && h->p[i] != '\n') /* the status line */
      i++;
  while (++i < h->len) {
    size_t start = i, colon = 0, end;
    while (i < h->len && h->p[i] != '\n') {
      if (colon == 0 && h->p[i] == ':')
        colon = i;
      i++;
    }
    for (end = i;
         end > start && (h->p[end - 1] == '\r' || h->p[end - 1] == ' ');)
      end--;
    if (colon == 0 || colon >= end)
      continue;
    size_t v = colon + 1;
    while (v < end && (h->p[v] == ' ' || h->p[v] == '\t'))
      v++;
    *out = (header){h->p + start, h->p + v, colon - start, end - v};
    *pos = i;
    return 1;
  }
  *pos = h->len;
  return 0;
}

/* Pushes the reply headers as a table of lower-case names; repeated
 * headers are joined with ", ". */
static void push_headers(lua_State *L, const buf *h) {
  size_t pos = 0;
  header hd;
  luaL_checkstack(L, 8, "reply headers");
  lua_newtable(L);
  while (next_header(h, &pos, &hd)) {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (size_t j = 0; j < hd.nlen; j++) {
      char ch = hd.name[j];
      luaL_addchar(&b, ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
    }
    luaL_pushresult(&b);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) == LUA_TSTRING) {
      lua_pushliteral(L, ", ");
      lua_pushlstring(L, hd.value, hd.vlen);
      lua_concat(L, 3);
    } else {
      lua_pop(L, 1);
      lua_pushlstring(L, hd.value, hd.vlen);
    }
    lua_rawset(L, -3);
  }
}

/* Negotiates from a reply's API-Version header (the daemon sends it with
 * every answer; /_ping is how Docker's own clients learn it). */
static void negotiate_from_header(request *r) {
  size_t pos = 0;
  header hd;
  if (r->cl->closed || r->cl->version[0] != '\0')
    return;
  while (next_header(&r->head, &pos, &hd))
    if (hd.nlen == 11 && strncasecmp(hd.name, "API-Version", 11) == 0) {
      hxd_negotiate(r->cl, hd.value, hd.vlen);
      return;
    }
}

/* The results of a finished transfer, as its reply kind wants them. */
static int push_results(lua_State *L, request *r, CURLcode rc) {
  int ok = r->status >= 200 && r->status < 300;
  if (rc != CURLE_OK) {
    fail_transfer(L, r, rc);
    if (r->reply != HXD_CALL && r->reply != HXD_CALL_LINES)
      return 3;
    lua_pushnil(L); /* call: no status, no HTTP answer came */
    return 4;
  }
  switch (r->reply) {
  case HXD_CALL:
  case HXD_CALL_LINES:
    return call_results(L, r);
  case HXD_RAW:
    lua_pushinteger(L, r->status);
    if (r->json && r->body.len > 0) {
      if (push_decoded(L, r) != 1)
        return 3;
    } else {
      lua_pushlstring(L, r->body.p ? r->body.p : "", r->body.len);
    }
    push_headers(L, &r->head);
    return 3;
  case HXD_TRUE:
    if (!ok)
      return fail_http(L, r);
    negotiate_from_header(r);
    lua_pushboolean(L, 1);
    return 1;
  default:
    if (!ok)
      return fail_http(L, r);
    if (push_decoded(L, r) != 1)
      return 3;
    /* GET /version is the negotiation itself. */
    if (r->reply == HXD_VERSION && r->cl->version[0] == '\0' && !r->cl->closed)
      hxd_negotiate_reply(L, r->cl);
    return 1;
  }
}

static int send_request(lua_State *L, int ridx);

/* Frees a finished transfer's reply as soon as its results are pushed: a
 * failed one may have buffered up to max_response, and Lua's collector,
 * which sees only the small userdata, would free it at no predictable time
 * (issue 8 #7). */
static void reply_free(request *r) {
  buf_free(&r->body);
  buf_free(&r->head);
}

static int k_done(lua_State *L, int status, lua_KContext ctx) {
  int ridx = (int)ctx;
  request *r = lua_touserdata(L, ridx);
  CURLcode rc = (CURLcode)lua_tointeger(L, -1);
  (void)status;
  lua_pop(L, 1);
  finish(r);
  int nret = push_results(L, r, rc);
  reply_free(r);
  return nret;
}

/* After GET /version for negotiation (r finished): 0 when the client now
 * has its version, or 3 with nil, msg, kind on top. Another coroutine may
 * have negotiated meanwhile: the same answer. */
static int negotiated(lua_State *L, request *r, CURLcode rc) {
  int nret;
  if (rc != CURLE_OK)
    nret = fail_transfer(L, r, rc);
  else if (r->status != 200)
    nret = fail_http(L, r);
  else if ((nret = push_decoded(L, r)) == 1) {
    if (r->cl->closed)
      nret = hx_fail(L, HX_UNAVAILABLE, "docker: client closed");
    else if (!hxd_negotiate_reply(L, r->cl))
      nret = hx_fail(L, HX_PROTOCOL, "docker: GET /version: no ApiVersion");
    else {
      lua_pop(L, 1); /* the decoded reply */
      nret = 0;
    }
  }
  reply_free(r);
  return nret;
}

static int k_negotiated(lua_State *L, int status, lua_KContext ctx) {
  int ridx = (int)ctx, nret;
  request *r = lua_touserdata(L, ridx);
  CURLcode rc = (CURLcode)lua_tointeger(L, -1);
  (void)status;
  lua_pop(L, 1);
  finish(r);
  nret = negotiated(L, r, rc);
  return nret != 0 ? nret : send_request(L, ridx);
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
  return hx_perform(L, &r->cl->sync, r->easy, ridx,
                    negotiate ? k_negotiated : k_done);
}

int hxd_send(lua_State *L, const char *method, int reply, int versioned,
             int body, int ctype) {
  body = body != 0 ? lua_absindex(L, body) : 0;
  ctype = ctype != 0 ? lua_absindex(L, ctype) : 0;
  push_request(L, method, reply, versioned);
  lua_insert(L, -2);
  lua_setiuservalue(L, -2, UV_TARGET);
  if (body != 0) {
    lua_pushvalue(L, body);
    lua_setiuservalue(L, -2, UV_BODY);
  }
  if (ctype != 0) {
    lua_pushvalue(L, ctype);
    lua_setiuservalue(L, -2, UV_CTYPE);
  }
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
    reply_free(r); /* the next waves need not carry this one's */
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
  hxd_client *c = lua_touserdata(L, 1);
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
  return hx_perform_many(L, &c->sync, b->easy, b->rc, b->wave, 0, k_many_done);
}

static int k_many_version(lua_State *L, int status, lua_KContext ctx) {
  request *r = lua_touserdata(L, B_VERSION);
  CURLcode rc = (CURLcode)lua_tointeger(L, -1);
  (void)status, (void)ctx;
  lua_pop(L, 1);
  finish(r);
  if (negotiated(L, r, rc) != 0)
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

/* Pushes a request for refs[i] into the batch, or its refusal into the
 * results: nothing is sent for a ref that is no name or id. */
static void many_add(lua_State *L, batch *b, lua_Integer i) {
  size_t len;
  if (lua_geti(L, 2, i) != LUA_TSTRING)
    luaL_error(L, "stats_many: refs[%I]: string expected, got %s",
               (LUAI_UACINT)i, luaL_typename(L, -1));
  const char *id = hxd_check_ref(L, -1, &len);
  if (id == NULL) {
    set_element(L, B_RESULTS, i, 3);
  } else {
    lua_pushliteral(L, "/containers/");
    lua_pushlstring(L, id, len);
    lua_pushliteral(L, "/stats?stream=0&one-shot=1");
    lua_concat(L, 3);
    push_request(L, "GET", HXD_VALUE, 1);
    lua_insert(L, -2);
    lua_setiuservalue(L, -2, UV_TARGET);
    b->pos[b->n++] = i;
    lua_rawseti(L, B_REQUESTS, b->n);
  }
  lua_settop(L, B_REQUESTS);
}

int hxd_stats_many(lua_State *L) {
  hxd_client *c = hxd_check_client(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  lua_Integer n = luaL_len(L, 2);
  luaL_argcheck(L, n >= 0 && n <= MANY_MAX, 2, "too many refs");
  lua_createtable(L, (int)n, 0); /* B_RESULTS */
  hx_json_push_array_mt(L);
  lua_setmetatable(L, B_RESULTS);
  batch *b = push_batch(L, n);   /* B_BATCH */
  lua_createtable(L, (int)n, 0); /* B_REQUESTS */
  for (lua_Integer i = 1; i <= n; i++)
    many_add(L, b, i);
  if (b->n == 0) {
    lua_settop(L, B_RESULTS);
    return 1;
  }
  if (c->version[0] != '\0')
    return many_send(L);
  request *r = push_request(L, "GET", HXD_VERSION, 0); /* B_VERSION */
  CURLcode rc = setup(L, B_VERSION, r, 1);
  if (rc != CURLE_OK) {
    finish(r);
    hx_fail(L, HX_UNAVAILABLE, "docker: cannot set up a transfer: %s",
            curl_easy_strerror(rc));
    return many_fail_all(L, 0);
  }
  return hx_perform(L, &c->sync, r->easy, 0, k_many_version);
}

/* ---- streams --------------------------------------------------------- */

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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
    if (len > s->opt.max_line) {
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
 * the error object or message on the stack for hxd_stream. */
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
  if (r->st.opt.stall_ms > 0 &&
      now_ms() - r->st.last_ms >= r->st.opt.stall_ms) {
    r->st.end = S_STALLED;
    return 1;
  }
  return 0;
}

/* Streams are synchronous: the API version is negotiated now if needed.
 * Returns 0, or 3 with nil, msg, kind on top. */
static int negotiate_now(lua_State *L) {
  hxd_client *c = hxd_check_client(L);
  if (c->version[0] != '\0')
    return 0;
  int top = lua_gettop(L);
  lua_pushliteral(L, "/version");
  /* Not yielded: the caller runs outside any request coroutine. */
  if (hxd_send(L, "GET", HXD_VERSION, 0, 0, 0) != 1)
    return 3;
  if (c->version[0] == '\0')
    return hx_fail(L, HX_PROTOCOL, "docker: GET /version: no ApiVersion");
  lua_settop(L, top);
  return 0;
}

/* Turns the stream's handle into a stream's: its own write callback, no
 * total timeout (the stall timeout instead), no size cap. */
static CURLcode setup_stream(request *r) {
  CURL *e = r->easy;
  CURLcode rc = CURLE_OK;
  SETOPT(CURLOPT_WRITEFUNCTION, on_stream);
  SETOPT(CURLOPT_TIMEOUT_MS, 0L);
  SETOPT(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)0);
  if (r->st.opt.stall_ms > 0) {
    SETOPT(CURLOPT_NOPROGRESS, 0L);
    SETOPT(CURLOPT_XFERINFOFUNCTION, on_progress);
    SETOPT(CURLOPT_XFERINFODATA, r);
  }
  return rc;
}

/* The results of a stream that curl has finished with. */
static int stream_results(lua_State *L, request *r, CURLcode rc) {
  switch (r->st.end) {
  case S_RAISED:
    reply_free(r);
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
                   (LUAI_UACINT)r->st.opt.max_line);
  case S_STALLED:
    return hx_fail(L, HX_TIMEOUT, "docker: %s: no data for %I ms (stall)",
                   r->cl->closed ? "(closed client)" : r->cl->host,
                   (LUAI_UACINT)r->st.opt.stall_ms);
  }
  if (rc != CURLE_OK)
    return fail_transfer(L, r, rc);
  if (r->status < 200 || r->status >= 300)
    return fail_http(L, r);
  lua_pushboolean(L, 1);
  lua_pushliteral(L, "ended");
  return 2;
}

int hxd_stream(lua_State *L, int cb, const hxd_stream_opts *opt) {
  int tidx = lua_gettop(L), nret;
  if ((nret = negotiate_now(L)) != 0)
    return nret;
  lua_settop(L, tidx);
  request *r = push_request(L, "GET", HXD_VALUE, 1);
  lua_pushvalue(L, tidx);
  lua_setiuservalue(L, -2, UV_TARGET);
  r->st.opt = *opt;
  CURLcode rc = setup(L, lua_gettop(L), r, 0);
  if (rc == CURLE_OK)
    rc = setup_stream(r);
  if (rc != CURLE_OK) {
    finish(r);
    return hx_fail(L, HX_UNAVAILABLE, "docker: cannot set up a transfer: %s",
                   curl_easy_strerror(rc));
  }
  r->st.L = L;
  r->st.cb = cb;
  r->st.last_ms = now_ms();
  luaL_checkstack(L, 16, "running a stream"); /* for run_deliver */
  rc = hx_perform_now(&r->cl->sync, r->easy);
  if (rc == CURLE_OK && r->st.end == S_RUN && r->st.http == 1)
    run_deliver(r, 1); /* a last line without its newline */
  finish(r);
  r->st.L = NULL;
  nret = stream_results(L, r, rc);
  reply_free(r);
  return nret;
}
