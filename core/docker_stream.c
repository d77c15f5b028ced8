/*
 * docker_stream.c - horcrux.docker, the streams: events and stats_stream
 * (docker.c holds the methods, docker_transfer.c the requests they use).
 *
 * Streams are synchronous: run on the caller's thread (hx_perform_now), meant
 * for the collector's own thread (docker.c refuses them inside a request
 * coroutine, where they would hold a worker for as long as the stream
 * lasts). Before it starts, a stream passes what every request passes
 * (hxd_ready): the request's deadline, the breaker (its probe when one is
 * due) and the API version. Its own transfer has no total timeout -- a
 * stall timeout instead -- unless a request's deadline is running (a
 * coroutine a route made for itself): then it ends by the deadline.
 *
 * The write callback buffers the body, splits it on newlines (a JSON value
 * may be split across writes or several merged in one) and hands each
 * decoded value to the Lua callback through lua_pcall, so no Lua error ever
 * longjmps across curl: an error, or the callback's `false`, only makes the
 * write callback stop the transfer; the error is raised again once curl
 * has returned.
 *
 * For the breaker, a stream that got its reply's headers was answered; one
 * that stalled before any byte came, or could not connect, was not.
 */
#include "async.h"
#include "aux.h"
#include "docker_private.h"
#include "jsonconv.h"

#include <curl/curl.h>
#include <stdint.h>
#include <string.h>

/* Why a stream ended early; set by its callbacks. */
enum stream_end {
  S_RUN,     /* not yet: the daemon ends it, or the transfer fails */
  S_STOPPED, /* the Lua callback returned false */
  S_RAISED,  /* the Lua callback raised: the error is on the stack */
  S_BADJSON, /* a line is not JSON: the message is on the stack */
  S_LIMIT,   /* a line passed max_line */
  S_STALLED  /* no data for `stall` ms */
};

/* The state of a stream, on hxd_stream's C stack: nothing of it must
 * outlive the synchronous transfer, and it owns no memory. */
typedef struct stream {
  hxd_request *r;
  lua_State *L;
  int cb; /* the callback's index on L's stack */
  hxd_stream_opts opt;
  size_t done;     /* bytes of the body buffer already delivered */
  int64_t last_ms; /* when the last byte came (monotonic) */
  int http;        /* 0: unknown yet, 1: 2xx (deliver), 2: an error reply */
  int end;         /* enum stream_end */
} stream;

static int64_t now_ms(void) { return hx_mono_ns() / 1000000; }

/* Protected, called by run_deliver: [callback stream final] -> hands each
 * complete line of the buffer (with `final`, the rest too) to the callback,
 * decoded. Returns the stream_end, then the message for S_BADJSON. */
static int deliver(lua_State *L) {
  stream *s = lua_touserdata(L, 2);
  hxd_request *r = s->r;
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
    if (hxd_blank(p, len))
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
static void run_deliver(stream *s, int final) {
  lua_State *L = s->L;
  lua_pushcfunction(L, deliver);
  lua_pushvalue(L, s->cb);
  lua_pushlightuserdata(L, s);
  lua_pushboolean(L, final);
  if (lua_pcall(L, 3, 2, 0) != LUA_OK) {
    s->end = S_RAISED;
    return;
  }
  s->end = (int)lua_tointeger(L, -2);
  if (s->end == S_BADJSON)
    lua_remove(L, -2);
  else
    lua_pop(L, 2);
}

static size_t on_stream(char *p, size_t size, size_t n, void *ud) {
  stream *s = ud;
  hxd_request *r = s->r;
  s->last_ms = now_ms();
  if (s->http == 0) {
    long code = 0;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
    s->http = code >= 200 && code < 300 ? 1 : 2;
  }
  if (s->http == 2)
    return hxd_on_body(p, size, n, r); /* an error reply, for fail_http */
  if (s->done > 0) {                   /* drop what was delivered */
    memmove(r->body.p, r->body.p + s->done, r->body.len - s->done);
    r->body.len -= s->done;
    s->done = 0;
  }
  /* Bounded: deliver() fails a line longer than max_line at once. */
  int e = hxd_buf_add(&r->body, p, size * n, SIZE_MAX);
  if (e != 0) {
    r->overflow = e;
    return 0;
  }
  run_deliver(s, 0);
  return s->end == S_RUN ? size * n : 0; /* 0 stops the transfer */
}

/* The headers came: the daemon answered (for the breaker). */
static size_t on_stream_header(char *p, size_t size, size_t n, void *ud) {
  stream *s = ud;
  (void)p;
  s->last_ms = now_ms();
  if (s->http == 0 && size * n == 2) { /* the blank line after them */
    long code = 0;
    curl_easy_getinfo(s->r->easy, CURLINFO_RESPONSE_CODE, &code);
    if (code >= 200)
      s->http = code < 300 ? 1 : 2;
  }
  return size * n;
}

static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut,
                       curl_off_t un) {
  stream *s = ud;
  (void)dt, (void)dn, (void)ut, (void)un;
  if (s->opt.stall_ms > 0 && now_ms() - s->last_ms >= s->opt.stall_ms) {
    s->end = S_STALLED;
    return 1;
  }
  return 0;
}

#define SETOPT(opt, val)                                                       \
  do {                                                                         \
    if (rc == CURLE_OK)                                                        \
      rc = curl_easy_setopt(e, opt, val);                                      \
  } while (0)

/* Turns the request's handle into a stream's: its own callbacks, the stall
 * timeout instead of a total one (the deadline's stays), no size cap. */
static CURLcode setup_stream(stream *s) {
  CURL *e = s->r->easy;
  CURLcode rc = CURLE_OK;
  SETOPT(CURLOPT_WRITEFUNCTION, on_stream);
  SETOPT(CURLOPT_WRITEDATA, s);
  SETOPT(CURLOPT_HEADERFUNCTION, on_stream_header);
  SETOPT(CURLOPT_HEADERDATA, s);
  SETOPT(CURLOPT_TIMEOUT_MS, s->r->capped ? s->r->timeout_ms : 0L);
  SETOPT(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)0);
  if (s->opt.stall_ms > 0) {
    SETOPT(CURLOPT_NOPROGRESS, 0L);
    SETOPT(CURLOPT_XFERINFOFUNCTION, on_progress);
    SETOPT(CURLOPT_XFERINFODATA, s);
  }
  return rc;
}

/* The results of a stream that curl has finished with. */
static int stream_results(lua_State *L, stream *s, CURLcode rc) {
  hxd_request *r = s->r;
  switch (s->end) {
  case S_RAISED:
    hxd_reply_free(r);
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
                   (LUAI_UACINT)s->opt.max_line);
  case S_STALLED:
    hx_fail(L, HX_TIMEOUT, "docker: %s: no data for %I ms (stall)",
            r->cl->closed ? "(closed client)" : r->cl->host,
            (LUAI_UACINT)s->opt.stall_ms);
    if (s->http == 0) /* not a byte of an answer */
      hxd_breaker_fail(r->cl->breaker, 0, HX_TIMEOUT, lua_tostring(L, -2),
                       r->started);
    return 3;
  }
  if (rc != CURLE_OK)
    return hxd_fail_transfer(L, r, rc);
  if (r->status < 200 || r->status >= 300)
    return hxd_fail_http(L, r);
  lua_pushboolean(L, 1);
  lua_pushliteral(L, "ended");
  return 2;
}

int hxd_stream(lua_State *L, int cb, const hxd_stream_opts *opt) {
  int tidx = lua_gettop(L), nret;
  hxd_request *r = hxd_push_request(L, "GET", HXD_STREAM, 1);
  int ridx = lua_gettop(L);
  lua_pushvalue(L, tidx);
  lua_setiuservalue(L, ridx, HXD_UV_TARGET);
  if ((nret = hxd_ready(L, ridx)) != 0) /* not yielded: see docker.c */
    return nret;
  stream s = {r, L, cb, *opt, 0, now_ms(), 0, S_RUN};
  CURLcode rc = hxd_setup(L, ridx, r, HXD_T_REAL);
  if (rc == CURLE_OK)
    rc = setup_stream(&s);
  if (rc != CURLE_OK) {
    hxd_finish(r, rc);
    return hx_fail(L, HX_UNAVAILABLE, "docker: cannot set up a transfer: %s",
                   curl_easy_strerror(rc));
  }
  luaL_checkstack(L, 16, "running a stream"); /* for run_deliver */
  rc = hx_perform_now(&r->cl->sync, r->easy);
  if (rc == CURLE_OK && s.end == S_RUN && s.http == 1)
    run_deliver(&s, 1); /* a last line without its newline */
  hxd_finish(r, s.http != 0 ? CURLE_OK : rc);
  nret = stream_results(L, &s, rc);
  hxd_reply_free(r);
  return nret;
}
