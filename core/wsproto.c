/*
 * wsproto.c - the comma-separated header lists of a WebSocket upgrade, and
 * the token a browser's WebSocket sends in its protocols (wsproto.h). No
 * dependency: the server and the fuzz target (tests/fuzz/wsproto_target.c)
 * link it alike.
 */
#include "wsproto.h"

#include <string.h>
#include <strings.h>

/* The next element of a comma-separated list at *p, trimmed: its start in
 * *e and length in *n; 0 at the end. */
static int next_element(const char **p, const char **e, size_t *n) {
  const char *v = *p;
  while (*v == ' ' || *v == '\t' || *v == ',')
    v++;
  if (*v == '\0')
    return 0;
  size_t len = strcspn(v, ",");
  *p = v + len;
  while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
    len--;
  *e = v, *n = len;
  return 1;
}

int hx_list_has(const char *list, const char *name, int any_case) {
  const char *e;
  size_t n, len = strlen(name);
  while (list != NULL && next_element(&list, &e, &n))
    if (n == len &&
        (any_case ? strncasecmp(e, name, n) : memcmp(e, name, n)) == 0)
      return 1;
  return 0;
}

static int b64url_value(unsigned char c) {
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  return c == '-' ? 62 : c == '_' ? 63 : -1;
}

/* Decodes n base64url characters (no padding) into out (cap bytes, NUL
 * added); the length, or -1. */
static long b64url_decode(const char *in, size_t n, char *out, size_t cap) {
  size_t len = 0;
  unsigned acc = 0;
  int bits = 0;
  if (n % 4 == 1)
    return -1; /* no whole byte in its last character */
  for (size_t i = 0; i < n; i++) {
    int v = b64url_value((unsigned char)in[i]);
    if (v < 0)
      return -1;
    acc = (acc << 6 | (unsigned)v) & 0xffffff;
    if ((bits += 6) >= 8) {
      bits -= 8;
      unsigned char byte = (unsigned char)(acc >> bits);
      if (byte == 0 || len + 1 >= cap)
        return -1;
      out[len++] = (char)byte;
    }
  }
  out[len] = '\0';
  return (long)len;
}

int hx_ws_bearer(const char *list, char *out, size_t size) {
  static const char bearer[] = "Bearer ";
  const size_t plen = sizeof HX_WS_BEARER_PREFIX - 1, blen = sizeof bearer - 1;
  const char *e;
  size_t n;
  while (list != NULL && next_element(&list, &e, &n)) {
    if (n < plen || memcmp(e, HX_WS_BEARER_PREFIX, plen) != 0)
      continue;
    if (size <= blen + 1 ||
        b64url_decode(e + plen, n - plen, out + blen, size - blen) <= 0)
      return -1;
    memcpy(out, bearer, blen);
    return 1;
  }
  return 0;
}
