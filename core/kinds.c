/* kinds.c - the error kinds and the error answer (see kinds.h). */
#include "kinds.h"

#include <stdio.h>
#include <string.h>

/* Keep in step with the README's table (tests/errors_spec.lua checks). */
const hx_kind hx_kinds[] = {
    {"bad_request", 400, "the request is malformed or names a bad value"},
    {"unauthorized", 401, "no bearer token, or none configured"},
    {"forbidden", 403, "refused: wrong token, read-only mode or policy"},
    {"not_found", 404, "no such container, object or route"},
    {"method_not_allowed", 405, "the path exists with other methods"},
    {"conflict", 409, "the object is in a state that forbids it"},
    {"too_large", 413, "the request body is over the limit"},
    {"unsupported_media_type", 415, "the body is not of the type expected"},
    {"too_many_requests", 429, "too many requests in flight"},
    {"internal", 500, "a route failed; the log has the details"},
    {"unsupported", 501, "nothing here can answer this"},
    {"server", 502, "the daemon failed (it answered 5xx)"},
    {"protocol", 502, "the daemon's answer was malformed or unexpected"},
    {"limit", 502, "an answer was larger than horcrux accepts"},
    {"unavailable", 503, "the daemon (or a file) cannot be reached"},
    {"metrics_unavailable", 503, "no metric source could answer"},
    {"io", 503, "a file could not be read"},
    {"timeout", 504, "the daemon did not answer in time"},
    {NULL, 0, NULL},
};

int hx_kind_status(const char *kind) {
  for (const hx_kind *k = hx_kinds; kind != NULL && k->kind != NULL; k++)
    if (strcmp(k->kind, kind) == 0)
      return k->status;
  return 500;
}

typedef struct out {
  char *p;
  size_t n, cap;
  int full;
} out;

static void put(out *o, const char *s, size_t n) {
  if (o->full || o->n + n >= o->cap) {
    o->full = 1;
    return;
  }
  memcpy(o->p + o->n, s, n);
  o->n += n;
}

/* A JSON string: quotes, backslashes and control bytes escaped; other
 * bytes (UTF-8) as they are. */
static void put_string(out *o, const char *s) {
  put(o, "\"", 1);
  for (; *s != '\0'; s++) {
    unsigned char c = (unsigned char)*s;
    char esc[8];
    if (c == '"' || c == '\\') {
      esc[0] = '\\';
      esc[1] = (char)c;
      put(o, esc, 2);
    } else if (c < 0x20 || c == 0x7f) {
      snprintf(esc, sizeof esc, "\\u%04x", c);
      put(o, esc, 6);
    } else {
      put(o, (const char *)&c, 1);
    }
  }
  put(o, "\"", 1);
}

size_t hx_error_json(char *buf, size_t cap, const char *kind,
                     const char *message, const char *request_id) {
  out o = {buf, 0, cap, 0};
  if (cap == 0)
    return 0;
  put(&o, "{\"error\":{\"code\":", 17);
  put_string(&o, kind != NULL ? kind : "internal");
  put(&o, ",\"message\":", 11);
  put_string(&o, message != NULL ? message : "");
  if (request_id != NULL) {
    put(&o, ",\"request_id\":", 14);
    put_string(&o, request_id);
  }
  put(&o, "}}", 2);
  if (o.full) {
    buf[0] = '\0';
    return 0;
  }
  buf[o.n] = '\0';
  return o.n;
}
