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
 * The breaker and the deadline. Before its first transfer a request asks
 * its daemon's breaker (docker_breaker.c): refused, it fails at once with
 * the breaker's message; told to probe, it sends GET /_ping first (k_probed)
 * and goes on only when that is answered. Every transfer is set up with
 * min(the client's timeout, the time left before the request's deadline,
 * deadline.h); past the deadline nothing is sent. The end of every transfer
 * is reported to the breaker: an answer closes it, no answer (kind
 * unavailable or timeout) counts against it.
 *
 * Streams (events, stats_stream) are in docker_stream.c.
 */
#include "async.h"
#include "aux.h"
#include "deadline.h"
#include "docker_private.h"
#include "jsonconv.h"

#include <curl/curl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HEAD_MAX (64 * 1024) /* reply headers cap */
#define ERR_TEXT_MAX 200     /* how much of a non-JSON error body to quote */

/* Transfers of a stats_many batch that run at once: each is a connection
 * (a descriptor here, and a slot of the daemon's listen backlog). */
#define MANY_WAVE 128
/* Refs in one stats_many call: the waves of a batch nest in C when they do
 * not yield. */
#define MANY_MAX (1 << 16)

/* ---- reply buffers --------------------------------------------------- */

int hxd_buf_add(hxd_buf *b, const char *p, size_t n, size_t cap_max) {
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

static void buf_free(hxd_buf *b) {
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

/* ---- requests -------------------------------------------------------- */

static void request_drop_easy(hxd_request *r) {
  if (r->easy != NULL) {
    hxd_client_give(r->cl, r->easy);
    r->easy = NULL;
  }
}

static int request_gc(lua_State *L) {
  hxd_request *r = luaL_checkudata(L, 1, HXD_REQUEST_MT);
  request_drop_easy(r);
  curl_slist_free_all(r->headers);
  r->headers = NULL;
  buf_free(&r->body);
  buf_free(&r->head);
  return 0;
}

size_t hxd_on_body(char *p, size_t size, size_t n, void *ud) {
  hxd_request *r = ud;
  int e = hxd_buf_add(&r->body, p, size * n, r->max_response);
  if (e != 0) {
    r->overflow = e;
    return 0; /* curl fails the transfer with CURLE_WRITE_ERROR */
  }
  return size * n;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
  hxd_request *r = ud;
  if (size * n >= 5 && memcmp(p, "HTTP/", 5) == 0)
    r->head.len = 0; /* a new response (after 100 Continue) */
  int e = hxd_buf_add(&r->head, p, size * n, HEAD_MAX);
  if (e != 0) {
    r->overflow = e;
    return 0;
  }
  return size * n;
}

/* Pushes a new request for the client at index 1. */
hxd_request *hxd_push_request(lua_State *L, const char *method, int reply,
                              int versioned) {
  hxd_client *c = hxd_check_client(L);
  hxd_request *r = lua_newuserdatauv(L, sizeof *r, HXD_UV_CTYPE);
  memset(r, 0, sizeof *r);
  luaL_setmetatable(L, HXD_REQUEST_MT);
  r->cl = c;
  r->reply = reply;
  r->versioned = versioned;
  r->max_response = c->max_response;
  snprintf(r->method, sizeof r->method, "%s", method);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, HXD_UV_CLIENT);
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

/* Sets the URL: the real target, GET /version or GET /_ping (`what`). The
 * URL string is pushed and popped here (curl copies it); the body and the
 * target stay anchored in their user values until the transfer ends. */
static CURLcode setup_url(lua_State *L, int ridx, hxd_request *r, int what,
                          const char **body, size_t *blen) {
  hxd_client *c = r->cl;
  CURL *e = r->easy;
  CURLcode rc = CURLE_OK;
  *body = NULL;
  *blen = 0;
  if (what != HXD_T_REAL) {
    r->target = what == HXD_T_PING ? "/_ping" : "/version";
    lua_pushfstring(L, "%s%s", c->base, r->target);
  } else {
    lua_getiuservalue(L, ridx, HXD_UV_TARGET);
    r->target = lua_tostring(L, -1);
    if (r->versioned)
      lua_pushfstring(L, "%s/v%s%s", c->base, c->version, lua_tostring(L, -1));
    else
      lua_pushfstring(L, "%s%s", c->base, lua_tostring(L, -1));
    lua_remove(L, -2);
    if (lua_getiuservalue(L, ridx, HXD_UV_BODY) == LUA_TSTRING)
      *body = lua_tolstring(L, -1, blen);
    lua_pop(L, 1); /* still anchored as a user value */
  }
  SETOPT(CURLOPT_URL, lua_tostring(L, -1));
  lua_pop(L, 1);
  return rc;
}

/* The transfer's timeouts: the client's (the probe's own), capped by the
 * request's deadline; the caller has checked that it has not passed. */
static void set_timeouts(hxd_request *r, long *connect_ms) {
  hxd_client *c = r->cl;
  long own = r->probe ? HXD_PROBE_MS : c->timeout_ms;
  long ms = hx_deadline_cap(own, &r->capped);
  r->timeout_ms = ms < 0 ? 1 : ms;
  *connect_ms = c->connect_timeout_ms;
  if (r->probe && *connect_ms > HXD_PROBE_MS)
    *connect_ms = HXD_PROBE_MS;
}

/* What every transfer of the client shares: callbacks, limits, where. */
static CURLcode setup_common(hxd_request *r) {
  hxd_client *c = r->cl;
  CURL *e = r->easy;
  CURLcode rc = CURLE_OK;
  long connect_ms;
  set_timeouts(r, &connect_ms);
  SETOPT(CURLOPT_NOSIGNAL, 1L);
  SETOPT(CURLOPT_OPENSOCKETFUNCTION, hx_open_socket); /* close-on-exec */
  SETOPT(CURLOPT_ERRORBUFFER, r->err);
  SETOPT(CURLOPT_WRITEFUNCTION, hxd_on_body);
  SETOPT(CURLOPT_WRITEDATA, r);
  SETOPT(CURLOPT_HEADERFUNCTION, on_header);
  SETOPT(CURLOPT_HEADERDATA, r);
  SETOPT(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)r->max_response);
  SETOPT(CURLOPT_TIMEOUT_MS, r->timeout_ms);
  SETOPT(CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
  SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
  return rc == CURLE_OK ? hxd_setup_where(e, c) : rc;
}

CURLcode hxd_setup_where(CURL *e, const hxd_client *c) {
  CURLcode rc = CURLE_OK;
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

static CURLcode setup_method(hxd_request *r, const char *method,
                             const char *body, size_t blen) {
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
static CURLcode setup_headers(lua_State *L, int ridx, hxd_request *r,
                              int has_body) {
  CURL *e = r->easy;
  CURLcode rc = CURLE_OK;
  struct curl_slist *h = curl_slist_append(NULL, "Expect:");
  if (h != NULL && has_body) {
    lua_getiuservalue(L, ridx, HXD_UV_CTYPE);
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

CURLcode hxd_setup(lua_State *L, int ridx, hxd_request *r, int what) {
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
  r->probe = what == HXD_T_PING;
  r->started = hx_mono_ns();
  rc = setup_url(L, ridx, r, what, &body, &blen);
  if (rc == CURLE_OK)
    rc = setup_common(r);
  if (rc == CURLE_OK)
    rc = setup_method(r, what != HXD_T_REAL ? "GET" : r->method, body, blen);
  if (rc == CURLE_OK)
    rc = setup_headers(L, ridx, r, body != NULL);
  return rc;
}

void hxd_finish(hxd_request *r, CURLcode rc) {
  CURL *e = r->easy;
  long n = 0;
  char *ct = NULL;
  if (e == NULL)
    return;
  if (rc == CURLE_OK)
    hxd_breaker_ok(r->cl->breaker);
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

/* The message of a transfer that got no answer (kind is curl_kind's). */
static void push_transfer_message(lua_State *L, hxd_request *r, CURLcode rc,
                                  const char *kind) {
  hxd_client *c = r->cl;
  const char *host = c->closed ? "(closed client)" : c->host;
  char dl[64];
  if (r->overflow == 2)
    hx_fail(L, kind, "docker: out of memory reading the reply");
  else if (r->overflow == 1 || rc == CURLE_FILESIZE_EXCEEDED)
    hx_fail(L, kind, "docker: reply larger than max_response (%s bytes)",
            lua_pushfstring(L, "%I", (LUAI_UACINT)r->max_response));
  else if (rc == CURLE_ABORTED_BY_CALLBACK) /* the host is stopping */
    hx_fail(L, kind, "docker: %s: transfer aborted", host);
  else if (rc == CURLE_OPERATION_TIMEDOUT && r->capped)
    hx_fail(L, kind, "docker: %s did not answer %s %s within %s", host,
            r->probe ? "GET" : r->method, r->target,
            hx_deadline_message(dl, sizeof dl));
  else if (rc == CURLE_COULDNT_CONNECT && r->os_errno != 0)
    hx_fail(L, kind, "docker: cannot connect to %s: %s", host,
            strerror((int)r->os_errno));
  else
    hx_fail(L, kind, "docker: %s: %s", host,
            r->err[0] ? r->err : curl_easy_strerror(rc));
}

int hxd_fail_transfer(lua_State *L, hxd_request *r, CURLcode rc) {
  const char *kind = curl_kind(rc, r->overflow);
  push_transfer_message(L, r, rc, kind);
  const char *msg = lua_tostring(L, -2);
  if (rc == CURLE_OPERATION_TIMEDOUT && r->capped) {
    char note[160];
    snprintf(note, sizeof note, "the daemon at %s did not answer %s %s",
             r->cl->closed ? "(closed client)" : r->cl->host,
             r->probe ? "GET" : r->method, r->target);
    hx_deadline_note(note);
  }
  /* No answer from the daemon counts against its breaker; the host
   * stopping (aborted) says nothing about the daemon. */
  if ((strcmp(kind, HX_UNAVAILABLE) == 0 || strcmp(kind, HX_TIMEOUT) == 0) &&
      rc != CURLE_ABORTED_BY_CALLBACK)
    hxd_breaker_fail(r->cl->breaker, r->probe, kind, msg, r->started);
  return 3;
}

int hxd_blank(const char *p, size_t n) {
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
static int decode_body(lua_State *L, hxd_request *r) {
  luaL_checkstack(L, 64, "decoding a reply");
  return hx_json_decode(L, r->body.p, r->body.len, HX_JSON_DEFAULT_DEPTH);
}

/* The id prefix of the daemon's refusal of an ambiguous one, or NULL. It
 * answers 500 "Multiple IDs found with provided prefix: 8" (Docker 20.10,
 * API 1.41), though the fault is the caller's ref, as the view and the
 * cgroup source say of their own lookups. */
static const char *ambiguous_prefix(const char *msg) {
  static const char said[] = "Multiple IDs found with provided prefix: ";
  if (msg == NULL || strncmp(msg, said, sizeof said - 1) != 0)
    return NULL;
  return msg + sizeof said - 1;
}

/* The kind of a non-2xx reply: the one place where an HTTP status becomes
 * a kind (every method, stats_many, the streams and call come through
 * fail_http). A daemon that refuses our API version ("client version X is
 * too new", or too old: a 400 for every call) is not the caller's bad
 * request but our configuration's fault: protocol, a 502 to clients. An
 * ambiguous id prefix is the caller's: bad_request, whatever the status. */
static const char *status_kind(long s, const char *msg) {
  if (s == 400 && msg != NULL && strncmp(msg, "client version ", 15) == 0 &&
      (strstr(msg, " is too new") != NULL ||
       strstr(msg, " is too old") != NULL))
    return HX_PROTOCOL;
  if (s >= 400 && ambiguous_prefix(msg) != NULL)
    return HX_BAD_REQUEST;
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

const char *hxd_status_kind(long s, const char *msg) {
  return status_kind(s, msg);
}

const char *hxd_curl_kind(CURLcode rc) { return curl_kind(rc, 0); }

/* Pushes the daemon's message of an error reply (the JSON "message", or
 * the first line of a text body), or returns NULL. */
static const char *push_daemon_message(lua_State *L, hxd_request *r) {
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
int hxd_fail_http(lua_State *L, hxd_request *r) {
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
  if (ambiguous_prefix(msg) != NULL)
    return hx_fail(L, kind,
                   "docker: id prefix '%s' is ambiguous (more than one id "
                   "starts with it)",
                   ambiguous_prefix(msg));
  return hx_fail(L, kind, "docker: %s", msg);
}

/* A JSON reply of values one per line (Docker's progress streams: pull,
 * push, build, load answer so): pushes the sequence of the values and
 * returns 1, or pushes the message of the first bad line and returns 0. */
static int decode_lines(lua_State *L, hxd_request *r) {
  int top = lua_gettop(L);
  lua_Integer k = 0;
  lua_newtable(L);
  hx_json_push_array_mt(L);
  lua_setmetatable(L, -2);
  for (size_t i = 0; i < r->body.len;) {
    const char *p = r->body.p + i, *nl = memchr(p, '\n', r->body.len - i);
    size_t n = nl != NULL ? (size_t)(nl - p) : r->body.len - i;
    i += n + (nl != NULL);
    if (hxd_blank(p, n))
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
static int decode_call(lua_State *L, hxd_request *r) {
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
static int call_results(lua_State *L, hxd_request *r) {
  long s = r->status;
  if ((s < 200 || s >= 300) && s != 304) {
    hxd_fail_http(L, r);
    lua_pushinteger(L, s);
    return 4;
  }
  if (hxd_blank(r->body.p, r->body.len)) {
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
static int push_decoded(lua_State *L, hxd_request *r) {
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
static int next_header(const hxd_buf *h, size_t *pos, header *out) {
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
static void push_headers(lua_State *L, const hxd_buf *h) {
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
static void negotiate_from_header(hxd_request *r) {
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
static int push_results(lua_State *L, hxd_request *r, CURLcode rc) {
  int ok = r->status >= 200 && r->status < 300;
  if (rc != CURLE_OK) {
    hxd_fail_transfer(L, r, rc);
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
      return hxd_fail_http(L, r);
    negotiate_from_header(r);
    lua_pushboolean(L, 1);
    return 1;
  default:
    if (!ok)
      return hxd_fail_http(L, r);
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
void hxd_reply_free(hxd_request *r) {
  buf_free(&r->body);
  buf_free(&r->head);
}

/* A failure of nil, msg, kind on top as r's results: call()'s carry a 4th
 * value, the status (none: no HTTP answer came). */
static int fail_results(lua_State *L, hxd_request *r) {
  if (r->reply != HXD_CALL && r->reply != HXD_CALL_LINES)
    return 3;
  lua_pushnil(L);
  return 4;
}

/* Pushes nil, msg, "timeout" for `method target` not sent because the
 * request's deadline has passed; returns 3. */
static int fail_deadline(lua_State *L, const char *method, const char *target) {
  char dl[64];
  hx_fail(L, HX_TIMEOUT, "docker: %s %s not sent: %s has passed", method,
          target != NULL ? target : "", hx_deadline_message(dl, sizeof dl));
  hx_deadline_note(lua_tostring(L, -2) + 8); /* without "docker: " */
  return 3;
}

static int k_done(lua_State *L, int status, lua_KContext ctx) {
  int ridx = (int)ctx;
  hxd_request *r = lua_touserdata(L, ridx);
  CURLcode rc = (CURLcode)lua_tointeger(L, -1);
  (void)status;
  lua_pop(L, 1);
  hxd_finish(r, rc);
  int nret = push_results(L, r, rc);
  hxd_reply_free(r);
  return nret;
}

/* After GET /version for negotiation (r finished): 0 when the client now
 * has its version, or 3 with nil, msg, kind on top. Another coroutine may
 * have negotiated meanwhile: the same answer. */
static int negotiated(lua_State *L, hxd_request *r, CURLcode rc) {
  int nret;
  if (rc != CURLE_OK)
    nret = hxd_fail_transfer(L, r, rc);
  else if (r->status != 200)
    nret = hxd_fail_http(L, r);
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
  hxd_reply_free(r);
  return nret;
}

static int k_negotiated(lua_State *L, int status, lua_KContext ctx) {
  int ridx = (int)ctx, nret;
  hxd_request *r = lua_touserdata(L, ridx);
  CURLcode rc = (CURLcode)lua_tointeger(L, -1);
  (void)status;
  lua_pop(L, 1);
  hxd_finish(r, rc);
  nret = negotiated(L, r, rc);
  return nret != 0 ? fail_results(L, r) : send_request(L, ridx);
}

/* After the breaker's probe (r finished): 0 when it was answered (the
 * breaker is closed), or 3 with the breaker's refusal on top. */
static int probed(lua_State *L, hxd_request *r, CURLcode rc) {
  hxd_finish(r, rc);
  hxd_reply_free(r);
  if (rc == CURLE_OK)
    return 0;
  hxd_fail_transfer(L, r, rc); /* reopens the breaker */
  lua_pop(L, 3);
  return hxd_breaker_refusal(L, r->cl->breaker);
}

static int k_probed(lua_State *L, int status, lua_KContext ctx) {
  int ridx = (int)ctx;
  hxd_request *r = lua_touserdata(L, ridx);
  CURLcode rc = (CURLcode)lua_tointeger(L, -1);
  (void)status;
  lua_pop(L, 1);
  if (probed(L, r, rc) != 0)
    return fail_results(L, r);
  return send_request(L, ridx);
}

/* Which transfer the request at ridx sends next: the breaker's probe when
 * one is due, GET /version when the client has no API version yet and the
 * target needs one, else its own. -1 with nil, msg, kind on top when the
 * breaker refuses it or the request's deadline has passed. */
static int next_transfer(lua_State *L, int ridx, hxd_request *r) {
  int what = HXD_T_REAL;
  lua_getiuservalue(L, ridx, HXD_UV_TARGET);
  r->target = lua_tostring(L, -1); /* anchored as the user value */
  lua_pop(L, 1);
  if (r->cl->closed)
    return hx_fail(L, HX_UNAVAILABLE, "docker: client closed"), -1;
  if (hx_deadline_left_ms() <= 0) /* before the breaker: no probe claimed */
    return fail_deadline(L, r->method, r->target), -1;
  if (!r->admitted) {
    char why[600];
    int gate = hxd_breaker_gate(r->cl->breaker, why, sizeof why);
    if (gate == HXD_REFUSED)
      return hx_fail(L, HX_UNAVAILABLE, "%s", why), -1;
    r->admitted = 1;
    if (gate == HXD_PROBE)
      what = HXD_T_PING;
  }
  if (what == HXD_T_REAL && r->versioned && r->cl->version[0] == '\0')
    what = HXD_T_VERSION;
  return what;
}

/* Runs the request at ridx, its probe and negotiation chained before it;
 * a stream (HXD_STREAM) returns 0 when its own transfer may start. */
static int send_request(lua_State *L, int ridx) {
  hxd_request *r = lua_touserdata(L, ridx);
  int what = next_transfer(L, ridx, r);
  if (what < 0)
    return fail_results(L, r);
  if (what == HXD_T_REAL && r->reply == HXD_STREAM)
    return 0;
  CURLcode rc = hxd_setup(L, ridx, r, what);
  if (rc != CURLE_OK) {
    hxd_finish(r, rc);
    hx_fail(L, HX_UNAVAILABLE, "docker: cannot set up a transfer: %s",
            curl_easy_strerror(rc));
    return fail_results(L, r);
  }
  return hx_perform(L, &r->cl->sync, r->easy, ridx,
                    what == HXD_T_PING      ? k_probed
                    : what == HXD_T_VERSION ? k_negotiated
                                            : k_done);
}

int hxd_ready(lua_State *L, int ridx) { return send_request(L, ridx); }

int hxd_send(lua_State *L, const char *method, int reply, int versioned,
             int body, int ctype) {
  body = body != 0 ? lua_absindex(L, body) : 0;
  ctype = ctype != 0 ? lua_absindex(L, ctype) : 0;
  hxd_push_request(L, method, reply, versioned);
  lua_insert(L, -2);
  lua_setiuservalue(L, -2, HXD_UV_TARGET);
  if (body != 0) {
    lua_pushvalue(L, body);
    lua_setiuservalue(L, -2, HXD_UV_BODY);
  }
  if (ctype != 0) {
    lua_pushvalue(L, ctype);
    lua_setiuservalue(L, -2, HXD_UV_CTYPE);
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

enum { B_RESULTS = 3, B_BATCH, B_REQUESTS, B_PRE };

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
  /* Every handle first: the answers reach the breaker before the failures
   * of the same wave, which then are no stall (the daemon answered). */
  for (int t = 0; t < b->wave; t++) {
    lua_rawgeti(L, B_REQUESTS, b->slot[t] + 1);
    hxd_finish(lua_touserdata(L, -1), b->rc[t]);
    lua_pop(L, 1);
  }
  for (int t = 0; t < b->wave; t++) {
    int j = b->slot[t], nret;
    lua_rawgeti(L, B_REQUESTS, j + 1);
    hxd_request *r = lua_touserdata(L, -1);
    if (b->rc[t] != CURLE_OK)
      nret = hxd_fail_transfer(L, r, b->rc[t]);
    else if (r->status < 200 || r->status >= 300)
      nret = hxd_fail_http(L, r);
    else
      nret = push_decoded(L, r);
    set_element(L, B_RESULTS, b->pos[j], nret);
    hxd_reply_free(r); /* the next waves need not carry this one's */
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
  if (hx_deadline_left_ms() <= 0) {
    fail_deadline(L, "GET", "/containers/{id}/stats");
    return many_fail_all(L, b->next);
  }
  while (b->next < b->n && b->wave < MANY_WAVE) {
    int j = b->next++;
    lua_rawgeti(L, B_REQUESTS, j + 1);
    hxd_request *r = lua_touserdata(L, -1);
    CURLcode rc = hxd_setup(L, lua_gettop(L), r, HXD_T_REAL);
    if (rc == CURLE_OK) {
      b->easy[b->wave] = r->easy;
      b->rc[b->wave] = CURLE_FAILED_INIT;
      b->slot[b->wave++] = j;
    } else {
      hxd_finish(r, rc);
      set_element(L, B_RESULTS, b->pos[j],
                  hx_fail(L, HX_UNAVAILABLE,
                          "docker: cannot set up a transfer: %s",
                          curl_easy_strerror(rc)));
    }
    lua_settop(L, B_REQUESTS);
  }
  return hx_perform_many(L, &c->sync, b->easy, b->rc, b->wave, 0, k_many_done);
}

/* Runs the request on top (at B_PRE: the probe or GET /version) with k. */
static int many_pre(lua_State *L, int what, lua_KFunction k) {
  hxd_request *r = lua_touserdata(L, B_PRE);
  CURLcode rc = hxd_setup(L, B_PRE, r, what);
  if (rc != CURLE_OK) {
    hxd_finish(r, rc);
    hx_fail(L, HX_UNAVAILABLE, "docker: cannot set up a transfer: %s",
            curl_easy_strerror(rc));
    return many_fail_all(L, 0);
  }
  return hx_perform(L, &r->cl->sync, r->easy, 0, k);
}

static int k_many_version(lua_State *L, int status, lua_KContext ctx) {
  hxd_request *r = lua_touserdata(L, B_PRE);
  CURLcode rc = (CURLcode)lua_tointeger(L, -1);
  (void)status, (void)ctx;
  lua_pop(L, 1);
  hxd_finish(r, rc);
  if (negotiated(L, r, rc) != 0)
    return many_fail_all(L, 0);
  lua_settop(L, B_REQUESTS);
  return many_send(L);
}

/* After the breaker: GET /version when needed, then the waves. */
static int many_version(lua_State *L) {
  hxd_client *c = lua_touserdata(L, 1);
  lua_settop(L, B_REQUESTS);
  if (c->version[0] != '\0')
    return many_send(L);
  hxd_push_request(L, "GET", HXD_VERSION, 0); /* B_PRE */
  return many_pre(L, HXD_T_VERSION, k_many_version);
}

static int k_many_probed(lua_State *L, int status, lua_KContext ctx) {
  hxd_request *r = lua_touserdata(L, B_PRE);
  CURLcode rc = (CURLcode)lua_tointeger(L, -1);
  (void)status, (void)ctx;
  lua_pop(L, 1);
  if (probed(L, r, rc) != 0)
    return many_fail_all(L, 0);
  return many_version(L);
}

/* The batch asks the breaker once, for all its transfers. */
static int many_start(lua_State *L) {
  hxd_client *c = lua_touserdata(L, 1);
  char why[600];
  if (hx_deadline_left_ms() <= 0) {
    fail_deadline(L, "GET", "/containers/{id}/stats");
    return many_fail_all(L, 0);
  }
  int gate = hxd_breaker_gate(c->breaker, why, sizeof why);
  if (gate == HXD_REFUSED) {
    hx_fail(L, HX_UNAVAILABLE, "%s", why);
    return many_fail_all(L, 0);
  }
  if (gate == HXD_GO)
    return many_version(L);
  hxd_push_request(L, "GET", HXD_TRUE, 0); /* B_PRE */
  return many_pre(L, HXD_T_PING, k_many_probed);
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
    hxd_push_request(L, "GET", HXD_VALUE, 1);
    lua_insert(L, -2);
    lua_setiuservalue(L, -2, HXD_UV_TARGET);
    b->pos[b->n++] = i;
    lua_rawseti(L, B_REQUESTS, b->n);
  }
  lua_settop(L, B_REQUESTS);
}

int hxd_stats_many(lua_State *L) {
  hxd_check_client(L);
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
  return many_start(L);
}
