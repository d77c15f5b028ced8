/* cors.c - --cors: Access-Control-* headers, preflights, and the Origin
 * of WebSocket upgrades (see cors.h). */
#include "cors.h"

#include "stream.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const *cors_origins;
static size_t cors_n;

/* What a page of a listed origin may read beyond the safelisted headers. */
#define EXPOSED                                                                \
  "X-Request-Id, X-Horcrux-Source, X-Horcrux-Truncated, Retry-After"

static int host_char(int c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.';
}

/* The port after ':' at p (to the end): 1-65535, no leading zero; the
 * scheme's default is refused (a browser leaves it out). */
static const char *bad_port(const char *p, int https) {
  size_t n = strspn(p, "0123456789");
  if (n == 0 || n > 5 || p[n] != '\0' || p[0] == '0')
    return "the port must be 1-65535, and nothing may follow it (no path, "
           "no trailing slash)";
  long v = strtol(p, NULL, 10);
  if (v > 65535)
    return "the port must be 1-65535";
  if (v == (https ? 443 : 80))
    return "leave out the scheme's default port: a browser sends the "
           "origin without it";
  return NULL;
}

const char *hx_cors_invalid(const char *s) {
  if (strcmp(s, "*") == 0)
    return "'*' is not taken: list each origin (a wildcard would let every "
           "site's pages read the API)";
  if (strcmp(s, "null") == 0)
    return "'null' is not taken: it is the origin of sandboxed frames and "
           "files, any page can send it";
  int https = strncmp(s, "https://", 8) == 0;
  if (!https && strncmp(s, "http://", 7) != 0)
    return "expected http://HOST[:PORT] or https://HOST[:PORT]";
  const char *h = s + (https ? 8 : 7), *p = h;
  if (*p == '[') {
    p++;
    size_t n = strspn(p, "0123456789abcdef:.");
    if (n < 2 || p[n] != ']')
      return "an IPv6 address goes in brackets, in lower case: "
             "http://[::1]:8081";
    p += n + 1;
  } else {
    while (host_char((unsigned char)*p))
      p++;
    if (isupper((unsigned char)*p))
      return "write the host in lower case, as a browser sends it";
    if (p == h || *h == '.' || *h == '-' || p[-1] == '.' || p - h > 253)
      return "expected a host name or address after the scheme";
  }
  if (*p == ':')
    return bad_port(p + 1, https);
  if (*p == '\0')
    return NULL;
  return "an origin is scheme://host[:port], with nothing after (no path, "
         "no trailing slash, no user)";
}

void hx_cors_configure(const char *const *origins, size_t n) {
  cors_origins = origins;
  cors_n = n;
}

static const char *origin_of(struct MHD_Connection *conn) {
  return MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Origin");
}

static int listed(const char *origin) {
  for (size_t i = 0; origin != NULL && i < cors_n; i++)
    if (strcmp(origin, cors_origins[i]) == 0)
      return 1;
  return 0;
}

void hx_cors_headers(struct MHD_Response *r, struct MHD_Connection *conn) {
  if (cors_n == 0)
    return;
  MHD_add_response_header(r, MHD_HTTP_HEADER_VARY, "Origin");
  const char *origin = origin_of(conn);
  if (!listed(origin))
    return;
  MHD_add_response_header(r, "Access-Control-Allow-Origin", origin);
  MHD_add_response_header(r, "Access-Control-Expose-Headers", EXPOSED);
}

int hx_cors_is_preflight(struct MHD_Connection *conn, const char *method) {
  return cors_n > 0 && strcmp(method, "OPTIONS") == 0 &&
         origin_of(conn) != NULL &&
         MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                     "Access-Control-Request-Method") != NULL;
}

int hx_cors_preflight(struct MHD_Connection *conn, const char *request_id,
                      int read_only, enum MHD_Result *ret, int *status) {
  const char *origin = origin_of(conn);
  if (!listed(origin))
    return 0;
  struct MHD_Response *r =
      MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
  if (r == NULL) {
    *ret = MHD_NO;
    return 1;
  }
  MHD_add_response_header(r, MHD_HTTP_HEADER_VARY, "Origin");
  MHD_add_response_header(r, "Access-Control-Allow-Origin", origin);
  MHD_add_response_header(r, "Access-Control-Allow-Methods",
                          read_only ? "GET, HEAD"
                                    : "GET, HEAD, POST, PUT, PATCH, DELETE");
  MHD_add_response_header(r, "Access-Control-Allow-Headers",
                          "Authorization, Content-Type, Accept, "
                          "Last-Event-ID");
  MHD_add_response_header(r, "Access-Control-Max-Age", "600");
  MHD_add_response_header(r, "X-Request-Id", request_id);
  *status = MHD_HTTP_NO_CONTENT;
  *ret = MHD_queue_response(conn, MHD_HTTP_NO_CONTENT, r);
  MHD_destroy_response(r);
  return 1;
}

const char *hx_cors_ws_refusal(struct MHD_Connection *conn) {
  const char *origin = origin_of(conn);
  if (origin == NULL || listed(origin) || !hx_stream_wants_websocket(conn))
    return NULL;
  const char *host =
      MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
  const char *rest = strstr(origin, "://");
  if (host != NULL && rest != NULL && strcasecmp(rest + 3, host) == 0)
    return NULL; /* the server's own page */
  return "a WebSocket from a page of another origin: only the server's own "
         "pages and those of --cors origins may open one";
}
