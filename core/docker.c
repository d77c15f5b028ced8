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
 *   c:call(method, template, params, query, body[, content_type])
 *                                   -> value, status | nil, msg, kind, status
 *   c:request(method, path[, query[, body[, content_type]]])
 *                                   -> status, body, headers | nil, msg, kind
 *   c:api_version()                 -> "1.41" | nil before negotiation
 *   c:breaker()                     -> its daemon's breaker (below) | nil
 *   c:admit()                       -> true | nil, msg, "unavailable" while
 *                                      the breaker is not closed
 *   docker.breaker([host])          -> the breaker of host (default
 *                                      DOCKER_HOST), a table
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
 *   breaker          false: this client ignores its daemon's breaker
 *                    (default true)
 *
 * The breaker (docker_breaker.c) is the process's memory of each daemon,
 * shared by every client and every Lua state of the process: after
 * failures to get any answer it fails calls at once with kind
 * "unavailable", until a probe is answered. Its table: {host, state =
 * "closed" | "open" | "probing", failures, opened_count, last_error,
 * last_kind, and while not closed: message, opened, next_probe (RFC 3339),
 * next_probe_in (s)}. Inside `horcrux serve` every transfer also ends by
 * the request's deadline (docker_private.h).
 *
 * Kinds (aux.h): unavailable (connect, TLS, socket errors), timeout,
 * unauthorized (401), forbidden (403), not_found (404), conflict (409),
 * bad_request (other 4xx, and a bad ref, path or placeholder value, refused
 * before any request), server (5xx), protocol (bad or truncated JSON, not
 * HTTP, another status, and the daemon's 400 for an API version it does
 * not serve: our configuration, not the caller's request), limit
 * (max_response). request() returns any HTTP status as an answer; it fails
 * only where no answer came.
 *
 * call() fills its template's {placeholders} from params, each checked
 * against Docker's grammar for its name (see `placeholders` below):
 *   {id} {ref} {container}  a container name, id or id prefix ("/" dropped)
 *   {image}                 a reference [host[:port]/]path[:tag][@digest],
 *                           into the path as it is
 *   {exec}                  hex
 *   any other               a name or id [a-zA-Z0-9][a-zA-Z0-9_.-]*
 * It answers value, status for 2xx and 304 (decoded JSON for a JSON reply,
 * a sequence for JSON lines, the body otherwise, true for an empty one), or
 * nil, msg, kind, status (status nil when no HTTP answer came).
 *
 * This file holds the client, connect, the grammar of what goes into a
 * path, and the methods, each of which builds a target (path and query)
 * and hands it to hxd_send (docker_transfer.c, which also holds stats_many
 * and the streams). Stream options (events, stats_stream):
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
#include "docker_private.h"
#include "jsonconv.h"

#include <curl/curl.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REF_MAX 255                /* longest name or id accepted */
#define IMAGE_MAX 512              /* longest image reference accepted */
#define PATH_MAX_LEN 1024          /* longest request() path */
#define LINE_MAX_DEFAULT (1 << 20) /* a stream's max_line */

/* curl_global_init is process-wide and, in older curls, not thread-safe:
 * several Lua states (threads of the host) may load this module at once. */
static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void) {
  curl_init_rc = curl_global_init(CURL_GLOBAL_ALL);
}

/* ---- client ---------------------------------------------------------- */

static void client_release(hxd_client *c) {
  if (c->sync != NULL)
    curl_multi_cleanup(c->sync);
  c->sync = NULL;
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
  hxd_breaker_release(c->breaker);
  c->breaker = NULL;
  c->closed = 1;
}

CURL *hxd_client_take(hxd_client *c) {
  if (c->nfree == 0)
    return curl_easy_init();
  return c->free[--c->nfree];
}

void hxd_client_give(hxd_client *c, CURL *easy) {
  if (!c->closed && c->nfree < HXD_FREE_MAX) {
    c->free[c->nfree++] = easy;
  } else {
    curl_easy_cleanup(easy);
  }
}

hxd_client *hxd_check_client(lua_State *L) {
  hxd_client *c = luaL_checkudata(L, 1, HXD_CLIENT_MT);
  if (c->closed)
    luaL_error(L, "attempt to use a closed docker client");
  return c;
}

static int l_close(lua_State *L) {
  hxd_client *c = luaL_checkudata(L, 1, HXD_CLIENT_MT);
  client_release(c);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_tostring(lua_State *L) {
  hxd_client *c = luaL_checkudata(L, 1, HXD_CLIENT_MT);
  if (c->closed)
    lua_pushliteral(L, "horcrux.docker.client (closed)");
  else
    lua_pushfstring(L, "horcrux.docker.client (%s)", c->host);
  return 1;
}

static int l_api_version(lua_State *L) {
  hxd_client *c = hxd_check_client(L);
  if (c->version[0] == '\0')
    lua_pushnil(L);
  else
    lua_pushstring(L, c->version);
  return 1;
}

static int l_breaker(lua_State *L) {
  hxd_client *c = hxd_check_client(L);
  if (c->breaker == NULL)
    lua_pushnil(L);
  else
    hxd_breaker_push(L, c->breaker);
  return 1;
}

static int l_admit(lua_State *L) {
  char why[600];
  hxd_client *c = hxd_check_client(L);
  if (!hxd_breaker_admits(c->breaker, why, sizeof why))
    return hx_fail(L, HX_UNAVAILABLE, "%s", why);
  lua_pushboolean(L, 1);
  return 1;
}

/* docker.breaker([host]): host as connect() takes it. */
static int l_module_breaker(lua_State *L) {
  const char *host = luaL_optstring(L, 1, NULL);
  if (host == NULL || host[0] == '\0')
    host = getenv("DOCKER_HOST");
  if (host == NULL || host[0] == '\0')
    host = "unix:///var/run/docker.sock";
  hxd_breaker_push_host(L, host);
  return 1;
}

static int l_connections(lua_State *L) {
  hxd_client *c = hxd_check_client(L);
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

static void set_version(hxd_client *c, long v) {
  snprintf(c->version, sizeof c->version, "%d.%d", (int)(v / 1000),
           (int)(v % 1000));
}

int hxd_negotiate(hxd_client *c, const char *s, size_t n) {
  char text[16];
  long v, max = version_num(HXD_MAX_API);
  if (n >= sizeof text)
    return 0;
  memcpy(text, s, n);
  text[n] = '\0';
  if ((v = version_num(text)) <= 0)
    return 0;
  set_version(c, v < max ? v : max);
  return 1;
}

int hxd_negotiate_reply(lua_State *L, hxd_client *c) {
  int ok = 0;
  if (lua_istable(L, -1)) {
    size_t n;
    if (lua_getfield(L, -1, "ApiVersion") == LUA_TSTRING) {
      const char *s = lua_tolstring(L, -1, &n);
      ok = hxd_negotiate(c, s, n);
    }
    lua_pop(L, 1);
  }
  return ok;
}

/* ---- refs and paths -------------------------------------------------- */

static int is_alnum(int ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
         (ch >= '0' && ch <= '9');
}

static int is_hex(const char *s, size_t n) {
  return n <= 64 && hx_is_lower_hex(s, n);
}

/* What a value must be (a call placeholder's, by its name; a ref's). */
enum grammar { G_NAME, G_CONTAINER, G_IMAGE, G_EXEC };

/* Each grammar said in words, for the refusal of a value not of it. */
static const char *const grammar_rule[] = {
    [G_NAME] = "a name is letters, digits and _ . - (starting with a letter "
               "or digit)",
    [G_CONTAINER] = "a name is letters, digits and _ . - (starting with a "
                    "letter or digit), an id is hex",
    [G_IMAGE] = "an image reference is [host[:port]/]path[:tag][@digest] of "
                "letters, digits and . _ / : @ - (no empty, . or .. part)",
    [G_EXEC] = "an exec id is lowercase hex",
};

/* Docker's name grammar, [a-zA-Z0-9][a-zA-Z0-9_.-]*: container, network,
 * volume... names. Hex ids and prefixes are names by this grammar. */
static int name_ok(const char *p, size_t len) {
  if (len == 0 || len > REF_MAX || !is_alnum((unsigned char)p[0]))
    return 0;
  for (size_t i = 1; i < len; i++) {
    int ch = (unsigned char)p[i];
    if (!is_alnum(ch) && ch != '_' && ch != '.' && ch != '-')
      return 0;
  }
  return 1;
}

/* A container ref: a name, id or id prefix, with one leading "/" allowed
 * and stripped. On success sets *s and *n to the stripped ref. */
static int ref_ok(const char **s, size_t *n) {
  const char *p = *s;
  size_t len = *n;
  if (len > 0 && p[0] == '/')
    p++, len--;
  if (!name_ok(p, len))
    return 0;
  *s = p;
  *n = len;
  return 1;
}

/* True when s[0..n) is "." or "..": a segment that curl (and the daemon's
 * router) would resolve, changing the path. A name with ".." inside it
 * ("a..b", valid for Docker) is no such segment. */
static int dot_segment(const char *s, size_t n) {
  return (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.');
}

/* An image reference, [host[:port]/]path[:tag][@digest], as it goes into
 * a path (/images/127.0.0.1:5000/team/app:1.2/push, the daemon's router
 * takes the rest of the path as the name): [a-zA-Z0-9._/:@-], no empty,
 * "." or ".." segment. */
static int image_ok(const char *s, size_t n) {
  size_t seg = 0;
  if (n == 0 || n > IMAGE_MAX)
    return 0;
  for (size_t i = 0; i <= n; i++) {
    int ch = i < n ? (unsigned char)s[i] : '/';
    if (ch == '/') {
      if (i == seg || dot_segment(s + seg, i - seg))
        return 0;
      seg = i + 1;
    } else if (!is_alnum(ch) && ch != '.' && ch != '_' && ch != ':' &&
               ch != '@' && ch != '-') {
      return 0;
    }
  }
  return 1;
}

/* A request() path: absolute, printable ASCII, and nothing that could
 * leave the versioned API tree (no "." or ".." segment) or smuggle in a
 * query or fragment. */
static int path_ok(const char *s, size_t n) {
  size_t seg = 1; /* where the current segment starts */
  if (n == 0 || n > PATH_MAX_LEN || s[0] != '/')
    return 0;
  for (size_t i = 1; i <= n; i++) {
    unsigned char ch = i < n ? (unsigned char)s[i] : '/';
    if (ch == '/') {
      if (dot_segment(s + seg, i - seg))
        return 0;
      seg = i + 1;
    } else if (ch <= ' ' || ch >= 0x7f || ch == '%' || ch == '?' || ch == '#' ||
               ch == '\\') {
      return 0;
    }
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

/* Pushes nil, msg, "bad_request" for s[0..n), a `what` not of grammar g,
 * and returns 3: one wording for every refusal of a ref, a name or an
 * image, saying the length when that is what is wrong. */
static int refuse_value(lua_State *L, int g, const char *what, const char *s,
                        size_t n) {
  size_t len = g == G_CONTAINER && n > 0 && s[0] == '/' ? n - 1 : n;
  size_t max = g == G_IMAGE ? IMAGE_MAX : g == G_EXEC ? 64 : REF_MAX;
  const char *quoted = push_quoted(L, s, n);
  if (len > max)
    return hx_fail(L, HX_BAD_REQUEST,
                   "docker: invalid %s: %s (%d bytes): longer than %d bytes",
                   what, quoted, (int)n, (int)max);
  return hx_fail(L, HX_BAD_REQUEST, "docker: invalid %s: %s (%d bytes): %s",
                 what, quoted, (int)n, grammar_rule[g]);
}

/* The ref at idx, checked; pushes nil, msg, kind and returns NULL when it
 * is no name or id. */
const char *hxd_check_ref(lua_State *L, int idx, size_t *n) {
  const char *s = luaL_checklstring(L, idx, n);
  if (!ref_ok(&s, n)) {
    refuse_value(L, G_CONTAINER, "container name or id", s, *n);
    return NULL;
  }
  return s;
}

static int l_ref(lua_State *L) {
  size_t n;
  const char *s = hxd_check_ref(L, 1, &n);
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

/* ---- methods --------------------------------------------------------- */

/* Sends GET to the target on top, with the reply kind given. */
static int get(lua_State *L, int reply, int versioned) {
  return hxd_send(L, "GET", reply, versioned, 0, 0);
}

static int l_version(lua_State *L) {
  hxd_check_client(L);
  lua_pushliteral(L, "/version");
  return get(L, HXD_VERSION, 0);
}

static int l_ping(lua_State *L) {
  hxd_check_client(L);
  lua_pushliteral(L, "/_ping");
  return get(L, HXD_TRUE, 0);
}

static int l_containers(lua_State *L) {
  hxd_check_client(L);
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
  return get(L, HXD_VALUE, 1);
}

static int l_inspect(lua_State *L) {
  size_t n;
  hxd_check_client(L);
  const char *id = hxd_check_ref(L, 2, &n);
  if (id == NULL)
    return 3;
  int size = hx_opt_boolean(L, 3, "size", 0);
  lua_pushliteral(L, "/containers/");
  lua_pushlstring(L, id, n);
  lua_pushstring(L, size ? "/json?size=1" : "/json");
  lua_concat(L, 3);
  return get(L, HXD_VALUE, 1);
}

static int l_stats(lua_State *L) {
  size_t n;
  hxd_check_client(L);
  const char *id = hxd_check_ref(L, 2, &n);
  if (id == NULL)
    return 3;
  lua_pushliteral(L, "/containers/");
  lua_pushlstring(L, id, n);
  lua_pushliteral(L, "/stats?stream=0&one-shot=1");
  lua_concat(L, 3);
  return get(L, HXD_VALUE, 1);
}

/* The HTTP method at idx: upper-case letters; raises otherwise. */
static const char *check_method(lua_State *L, int idx) {
  size_t n;
  const char *m = luaL_checklstring(L, idx, &n);
  int ok = n > 0 && n < 16;
  for (size_t i = 0; ok && i < n; i++)
    ok = m[i] >= 'A' && m[i] <= 'Z';
  luaL_argcheck(L, ok, idx, "HTTP method expected (GET, POST, ...)");
  return m;
}

/* The arguments after the path: the query at q (nil or a table), the body
 * at q + 1 (nil, a string, or a table: replaced by its JSON here) and its
 * content type at q + 2 (nil or a string). Misuse raises. */
static void check_payload(lua_State *L, int q) {
  if (!lua_isnoneornil(L, q))
    luaL_checktype(L, q, LUA_TTABLE);
  int bt = lua_type(L, q + 1);
  luaL_argexpected(L, bt <= LUA_TNIL || bt == LUA_TSTRING || bt == LUA_TTABLE,
                   q + 1, "string or table");
  if (!lua_isnoneornil(L, q + 2))
    luaL_checktype(L, q + 2, LUA_TSTRING);
  lua_settop(L, q + 2);
  if (bt == LUA_TTABLE) {
    if (!hx_json_encode(L, q + 1, HX_JSON_DEFAULT_DEPTH, 0))
      luaL_argerror(L, q + 1, lua_tostring(L, -1));
    lua_replace(L, q + 1);
  }
}

static int l_request(lua_State *L) {
  size_t plen;
  hxd_check_client(L);
  const char *method = check_method(L, 2);
  const char *path = luaL_checklstring(L, 3, &plen);
  check_payload(L, 4);
  if (!path_ok(path, plen))
    return hx_fail(L, HX_BAD_REQUEST, "docker: invalid path: %s",
                   push_quoted(L, path, plen));
  lua_pushvalue(L, 3);
  push_query(L, 4);
  lua_concat(L, 2);
  return hxd_send(L, method, HXD_RAW, 1, 5, 6);
}

/* ---- call: templates ------------------------------------------------ */

static const struct {
  const char *name;
  int grammar;
  const char *what; /* for messages */
} placeholders[] = {
    {"id", G_CONTAINER, "container name or id"},
    {"ref", G_CONTAINER, "container name or id"},
    {"container", G_CONTAINER, "container name or id"},
    {"image", G_IMAGE, "image reference"},
    {"exec", G_EXEC, "exec id"},
    {NULL, G_NAME, NULL}, /* any other name: network, volume, node... */
};

/* A placeholder's name: [a-zA-Z_][a-zA-Z0-9_]*, at most 32 bytes. */
static int param_name_ok(const char *s, size_t n) {
  if (n == 0 || n > 32 || (s[0] >= '0' && s[0] <= '9'))
    return 0;
  for (size_t i = 0; i < n; i++)
    if (!is_alnum((unsigned char)s[i]) && s[i] != '_')
      return 0;
  return 1;
}

/* Raises unless the template at t is an absolute API path (as request()
 * takes) whose braces enclose placeholder names: it is the script's own
 * text, so a bad one is a mistake to fix, not a client's bad request. */
static void check_template(lua_State *L, int t) {
  size_t n;
  const char *s = lua_tolstring(L, t, &n), *open = NULL;
  luaL_argcheck(L, path_ok(s, n), t,
                "template: an absolute API path expected (no '.' or '..' "
                "segment, no '%', '?', '#' or space)");
  for (const char *p = s; p < s + n; p++) {
    if (*p == '{') {
      luaL_argcheck(L, open == NULL, t, "template: '{' inside a placeholder");
      open = p;
    } else if (*p == '}') {
      luaL_argcheck(L, open != NULL, t, "template: '}' without '{'");
      luaL_argcheck(L, param_name_ok(open + 1, (size_t)(p - open - 1)), t,
                    "template: a placeholder is {name}, name "
                    "[a-zA-Z_][a-zA-Z0-9_]*");
      open = NULL;
    }
  }
  luaL_argcheck(L, open == NULL, t, "template: '{' without '}'");
}

/* True when v[0..n) (a container ref: its leading "/" dropped in *v, *n)
 * follows the grammar g. */
static int value_ok(int g, const char **v, size_t *n) {
  switch (g) {
  case G_CONTAINER:
    return ref_ok(v, n);
  case G_IMAGE:
    return image_ok(*v, *n);
  case G_EXEC:
    return is_hex(*v, *n);
  default:
    return name_ok(*v, *n);
  }
}

/* Pushes params[name] checked against the grammar of `name` and returns 1,
 * or pushes nil, msg, "bad_request" and returns 3. */
static int fill_placeholder(lua_State *L, int p, const char *name, size_t nl) {
  size_t n, k = 0;
  const char *pn = lua_pushlstring(L, name, nl);
  int t = LUA_TNIL;
  if (!lua_isnil(L, p)) {
    lua_pushvalue(L, -1);
    t = lua_gettable(L, p);
  }
  if (t == LUA_TNIL)
    return hx_fail(L, HX_BAD_REQUEST, "docker: parameter {%s}: missing", pn);
  if (t != LUA_TSTRING)
    return hx_fail(L, HX_BAD_REQUEST,
                   "docker: parameter {%s}: string expected, got %s", pn,
                   luaL_typename(L, -1));
  while (placeholders[k].name != NULL && strcmp(placeholders[k].name, pn) != 0)
    k++;
  const char *v = lua_tolstring(L, -1, &n), *given = v;
  size_t given_n = n;
  if (!value_ok(placeholders[k].grammar, &v, &n))
    return refuse_value(L, placeholders[k].grammar,
                        placeholders[k].what != NULL ? placeholders[k].what
                        : strcmp(pn, "name") == 0 /* not "name name" */
                            ? "name or id"
                            : lua_pushfstring(L, "%s name or id", pn),
                        given, given_n);
  lua_pushlstring(L, v, n); /* a container ref without its "/" */
  lua_replace(L, -3);
  lua_pop(L, 1);
  return 1;
}

/* Pushes the path that the template at t (checked) gives with the params
 * at p, and returns 1; or pushes nil, msg, "bad_request" and returns 3. */
static int fill_template(lua_State *L, int t, int p) {
  size_t n, i = 0, plen;
  const char *s = lua_tolstring(L, t, &n);
  int pieces = 0;
  while (i < n) {
    const char *open = memchr(s + i, '{', n - i);
    size_t j = open != NULL ? (size_t)(open - s) : n;
    luaL_checkstack(L, 4, "call template");
    if (j > i) {
      lua_pushlstring(L, s + i, j - i);
      pieces++;
    }
    if (j == n)
      break;
    size_t k = (size_t)((const char *)memchr(s + j, '}', n - j) - s);
    if (fill_placeholder(L, p, s + j + 1, k - j - 1) != 1)
      return 3;
    pieces++;
    i = k + 1;
  }
  lua_concat(L, pieces);
  const char *path = lua_tolstring(L, -1, &plen);
  if (!path_ok(path, plen)) /* only its length can be wrong now */
    return hx_fail(L, HX_BAD_REQUEST, "docker: invalid path: %s",
                   push_quoted(L, path, plen));
  return 1;
}

/* True when the template names an endpoint that answers a stream of JSON
 * progress messages, one per line, even when there is only one: call
 * returns their sequence, so a caller meets one shape. */
static int progress_stream(const char *t) {
  size_t n = strlen(t);
#define ENDS(s) (n > sizeof s - 1 && strcmp(t + n - (sizeof s - 1), s) == 0)
  if (strcmp(t, "/build") == 0 || strcmp(t, "/images/create") == 0 ||
      strcmp(t, "/images/load") == 0 || strcmp(t, "/plugins/pull") == 0)
    return 1;
  if (strncmp(t, "/images/", 8) == 0)
    return ENDS("/push");
  if (strncmp(t, "/plugins/", 9) == 0)
    return ENDS("/push") || ENDS("/upgrade");
  return 0;
#undef ENDS
}

/* c:call(method, template, params, query, body [, content_type]): value,
 * status | nil, msg, kind, status (nil when no HTTP answer came). */
static int l_call(lua_State *L) {
  hxd_check_client(L);
  const char *method = check_method(L, 2);
  luaL_checkstring(L, 3);
  if (!lua_isnoneornil(L, 4))
    luaL_checktype(L, 4, LUA_TTABLE);
  check_payload(L, 5);
  check_template(L, 3);
  if (fill_template(L, 3, 4) != 1) {
    lua_pushnil(L); /* no status: nothing was sent */
    return 4;
  }
  push_query(L, 5);
  lua_concat(L, 2);
  return hxd_send(
      L, method,
      progress_stream(lua_tostring(L, 3)) ? HXD_CALL_LINES : HXD_CALL, 1, 6, 7);
}

/* ---- streams --------------------------------------------------------- */

/* The stream options at idx (none or nil: the defaults). */
static void stream_opts(lua_State *L, int idx, hxd_stream_opts *o) {
  lua_Number stall = hx_opt_number(L, idx, "stall", 0);
  lua_Integer max = hx_opt_integer(L, idx, "max_line", LINE_MAX_DEFAULT);
  luaL_argcheck(L, stall >= 0 && stall <= 86400, idx,
                "stall out of range 0..86400 (0: none)");
  luaL_argcheck(L, max > 0, idx, "max_line must be positive");
  o->stall_ms = (long)ceil(stall * 1000);
  o->max_line = (size_t)max;
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
  hxd_stream_opts opt;
  hxd_check_client(L);
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
  return hxd_stream(L, 3, &opt);
}

static int l_stats_stream(lua_State *L) {
  size_t n;
  hxd_stream_opts opt;
  hxd_check_client(L);
  luaL_checkstring(L, 2);
  opts_optional(L, 3);
  stream_opts(L, 3, &opt);
  if (hx_can_yield(L))
    return hx_fail(
        L, HX_BAD_REQUEST,
        "stats_stream: streaming is not available inside an HTTP route");
  const char *id = hxd_check_ref(L, 2, &n);
  if (id == NULL)
    return 3;
  lua_pushliteral(L, "/containers/");
  lua_pushlstring(L, id, n);
  lua_pushliteral(L, "/stats?stream=1");
  lua_concat(L, 3);
  return hxd_stream(L, 4, &opt);
}

/* ---- connect --------------------------------------------------------- */

static char *dup_or_raise(lua_State *L, const char *s) {
  char *d = strdup(s);
  if (d == NULL)
    luaL_error(L, "not enough memory");
  return d;
}

/* Where the TLS files are: opts.cert_path, DOCKER_CERT_PATH, ~/.docker. */
static int set_tls(lua_State *L, hxd_client *c, int opts) {
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
static int set_host(lua_State *L, hxd_client *c, const char *host, int opts) {
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
  int use_breaker = hx_opt_boolean(L, 1, "breaker", 1);
  luaL_argcheck(L, timeout >= 0 && timeout <= 86400, 1,
                "timeout out of range 0..86400 (0: none)");
  luaL_argcheck(L, ctimeout >= 0 && ctimeout <= 86400, 1,
                "connect_timeout out of range 0..86400");
  luaL_argcheck(L, max > 0, 1, "max_response must be positive");
  if (host == NULL || host[0] == '\0')
    host = getenv("DOCKER_HOST");
  if (host == NULL || host[0] == '\0')
    host = "unix:///var/run/docker.sock";
  /* A version that is none is refused here, where the configuration is
   * read: the daemon would refuse every call with a message that names
   * neither the setting nor its value. */
  const char *from = "api_version";
  if (api == NULL || api[0] == '\0') {
    api = getenv("DOCKER_API_VERSION");
    from = "DOCKER_API_VERSION";
  }
  if (api != NULL && api[0] != '\0' && version_num(api) <= 0)
    return hx_fail(L, HX_BAD_REQUEST,
                   "docker: bad %s: %s (MAJOR.MINOR expected, as 1.41)", from,
                   api);

  pthread_once(&curl_once, curl_init);
  if (curl_init_rc != CURLE_OK)
    return hx_fail(L, HX_UNAVAILABLE, "docker: curl_global_init: %s",
                   curl_easy_strerror(curl_init_rc));

  hxd_client *c = lua_newuserdatauv(L, sizeof *c, 0);
  memset(c, 0, sizeof *c);
  /* From here on, __gc frees c's strings. */
  luaL_setmetatable(L, HXD_CLIENT_MT);
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
  if (use_breaker)
    c->breaker = hxd_breaker_for(c->host);
  lua_settop(L, cidx);
  return 1;
}

/* ---- registration ---------------------------------------------------- */

static const luaL_Reg client_methods[] = {{"version", l_version},
                                          {"ping", l_ping},
                                          {"containers", l_containers},
                                          {"inspect", l_inspect},
                                          {"stats", l_stats},
                                          {"stats_many", hxd_stats_many},
                                          {"events", l_events},
                                          {"stats_stream", l_stats_stream},
                                          {"request", l_request},
                                          {"call", l_call},
                                          {"relay", hxd_relay},
                                          {"api_version", l_api_version},
                                          {"connections", l_connections},
                                          {"breaker", l_breaker},
                                          {"admit", l_admit},
                                          {"close", l_close},
                                          {NULL, NULL}};

static const luaL_Reg client_meta[] = {{"__gc", l_close},
                                       {"__close", l_close},
                                       {"__tostring", l_tostring},
                                       {"__index", NULL},
                                       {NULL, NULL}};

static const luaL_Reg funcs[] = {
    {"connect", l_connect},        {"valid_id", l_valid_id},
    {"valid_name", l_valid_name},  {"ref", l_ref},
    {"breaker", l_module_breaker}, {NULL, NULL}};

HX_EXPORT int luaopen_horcrux_docker(lua_State *L) {
  if (luaL_newmetatable(L, HXD_CLIENT_MT)) {
    luaL_setfuncs(L, client_meta, 0);
    luaL_newlib(L, client_methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  hxd_open_requests(L);
  luaL_newlib(L, funcs);
  lua_pushliteral(L, HXD_MAX_API);
  lua_setfield(L, -2, "max_api_version");
  return 1;
}
