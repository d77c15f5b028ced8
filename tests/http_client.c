/*
 * tests/http_client.c - hxtest_http, the specs' HTTP client (tests/http.lua):
 * one request with libcurl in the spec's own process, as the curl program
 * would send it (the same library, the same defaults: HTTP/1.1, no
 * redirects followed, a new connection each time, libcurl's Accept, the
 * curl User-Agent, a body's form Content-Type unless one is given).
 *
 * The specs made every request with the curl program: 4,600 of them in a
 * whole suite, at about 20 ms of CPU each for starting curl and its
 * libraries, on a 2-core machine that the suite keeps busy. Test code
 * only: never installed, never in the host.
 *
 *   hxtest_http.request(method, url, headers, body, timeout, max_bytes)
 *     -> status, head, body, seconds
 *     -> nil, code, message        (code: curl's exit code, as the program's)
 *
 * headers is a list of "Name: value" lines; body a string or nil; timeout
 * in seconds (the whole transfer); max_bytes the most body kept (a longer
 * answer fails with code 23). head is the final answer's status line and
 * header lines (a 100 Continue before it is dropped), CRLF-separated.
 */
#include <curl/curl.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  char *p;
  size_t n, cap, max;
} buf;

/* Appends len bytes; 0 when that would pass b->max or memory runs out. */
static int buf_add(buf *b, const char *s, size_t len) {
  if (len > b->max - b->n)
    return 0;
  if (b->n + len + 1 > b->cap) {
    size_t want = b->n + len + 1, cap = b->cap ? b->cap : 1024;
    while (cap < want)
      cap = cap > SIZE_MAX / 2 ? want : cap * 2;
    char *p = realloc(b->p, cap);
    if (p == NULL)
      return 0;
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->n, s, len);
  b->n += len;
  b->p[b->n] = '\0';
  return 1;
}

static size_t on_body(char *s, size_t size, size_t n, void *ud) {
  return buf_add(ud, s, size * n) ? size * n : 0;
}

/* Header lines: a status line starts the block again, so that only the
 * final answer's remains (as a 100 Continue's would otherwise). */
static size_t on_header(char *s, size_t size, size_t n, void *ud) {
  buf *h = ud;
  if (size * n >= 5 && memcmp(s, "HTTP/", 5) == 0)
    h->n = 0;
  return buf_add(h, s, size * n) ? size * n : 0;
}

/* The easy handle's options for one request; 0 when one was refused. */
static int set_options(CURL *c, const char *method, const char *url,
                       struct curl_slist *hdrs, const char *body,
                       size_t body_len, double timeout, buf *head, buf *out,
                       char *err) {
  char agent[64]; /* libcurl copies it */
  snprintf(agent, sizeof agent, "curl/%s",
           curl_version_info(CURLVERSION_NOW)->version);
  int bad = 0;
  bad |= curl_easy_setopt(c, CURLOPT_URL, url) != CURLE_OK;
  bad |= curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
  bad |= curl_easy_setopt(c, CURLOPT_FORBID_REUSE, 1L) != CURLE_OK;
  bad |= curl_easy_setopt(c, CURLOPT_USERAGENT, agent) != CURLE_OK;
  bad |= curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs) != CURLE_OK;
  bad |= curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)(timeout * 1000)) !=
         CURLE_OK;
  bad |= curl_easy_setopt(c, CURLOPT_ERRORBUFFER, err) != CURLE_OK;
  bad |= curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK;
  bad |= curl_easy_setopt(c, CURLOPT_WRITEDATA, out) != CURLE_OK;
  bad |= curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header) != CURLE_OK;
  bad |= curl_easy_setopt(c, CURLOPT_HEADERDATA, head) != CURLE_OK;
  if (body != NULL) {
    bad |= curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
                            (curl_off_t)body_len) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_POSTFIELDS, body) != CURLE_OK;
  }
  if (strcmp(method, "HEAD") == 0)
    bad |= curl_easy_setopt(c, CURLOPT_NOBODY, 1L) != CURLE_OK;
  else if (strcmp(method, body != NULL ? "POST" : "GET") != 0)
    bad |= curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method) != CURLE_OK;
  return !bad;
}

static int l_request(lua_State *L) {
  const char *method = luaL_checkstring(L, 1);
  const char *url = luaL_checkstring(L, 2);
  luaL_checktype(L, 3, LUA_TTABLE);
  size_t body_len = 0;
  const char *body = luaL_optlstring(L, 4, NULL, &body_len);
  double timeout = luaL_checknumber(L, 5);
  lua_Integer max = luaL_checkinteger(L, 6);
  luaL_argcheck(L, timeout > 0 && timeout < 86400, 5, "0 < timeout < 86400");
  luaL_argcheck(L, max >= 0, 6, "max_bytes >= 0");
  lua_Integer nh = luaL_len(L, 3);
  for (lua_Integer i = 1; i <= nh; i++) /* checked before anything is held */
    luaL_argcheck(L, lua_geti(L, 3, i) == LUA_TSTRING, 3,
                  "a list of header lines");
  lua_settop(L, 6 + (int)nh); /* the lines stay on the stack, referenced */

  struct curl_slist *hdrs = NULL;
  int ok = 1;
  for (lua_Integer i = 1; i <= nh && ok; i++) {
    struct curl_slist *next =
        curl_slist_append(hdrs, lua_tostring(L, 6 + (int)i));
    ok = next != NULL;
    hdrs = next != NULL ? next : hdrs;
  }
  buf head = {.max = 1 << 20}, out = {.max = (size_t)max};
  char err[CURL_ERROR_SIZE] = "";
  CURL *c = ok ? curl_easy_init() : NULL;
  CURLcode rc = CURLE_OUT_OF_MEMORY;
  long status = 0;
  double secs = 0;
  if (c != NULL && set_options(c, method, url, hdrs, body, body_len, timeout,
                               &head, &out, err))
    rc = curl_easy_perform(c);
  if (rc == CURLE_OK) {
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(c, CURLINFO_TOTAL_TIME, &secs);
  }
  curl_easy_cleanup(c);
  curl_slist_free_all(hdrs);
  int nret;
  if (rc != CURLE_OK) {
    lua_pushnil(L);
    lua_pushinteger(L, rc);
    lua_pushfstring(L, "curl: (%d) %s", (int)rc,
                    err[0] ? err : curl_easy_strerror(rc));
    nret = 3;
  } else {
    lua_pushinteger(L, status);
    lua_pushlstring(L, head.p ? head.p : "", head.n);
    lua_pushlstring(L, out.p ? out.p : "", out.n);
    lua_pushnumber(L, secs);
    nret = 4;
  }
  free(head.p);
  free(out.p);
  return nret;
}

__attribute__((visibility("default"))) int luaopen_hxtest_http(lua_State *L) {
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
    return luaL_error(L, "hxtest_http: curl_global_init failed");
  static const luaL_Reg fns[] = {{"request", l_request}, {NULL, NULL}};
  luaL_newlib(L, fns);
  return 1;
}
