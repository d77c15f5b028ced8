/*
 * wsproto_target.c - libFuzzer target "wsproto": the Sec-WebSocket-Protocol
 * parsers of core/wsproto.c (hx_list_has, hx_ws_bearer) on any bytes.
 *
 * The first byte sets the size of the output buffer (0-255); the rest is
 * the header value, NUL-terminated in a buffer of exactly its size, so ASan
 * sees any read past the end. Checked: hx_ws_bearer returns -1, 0 or 1;
 * 0 exactly when no element starts with horcrux.bearer.; on 1 the output
 * is "Bearer " and at least one byte, NUL-terminated within the buffer,
 * and the token base64url-encoded again is the element's text (up to the
 * bits of its last character that no byte holds); hx_list_has agrees
 * with a plain scan, exact and in any case. A failed check prints what differs
 * and aborts.
 *
 * The same bytes (after the first) as a terminal's message, for
 * core/winsize.c: hx_winsize_seq reads them where they lie (ASan sees a read
 * past the end) and says 1 exactly when printing the size it found as
 * `ESC [ 8 ; ROWS ; COLS t` gives them back byte for byte, both within
 * 1-65535.
 */
#include "winsize.h"
#include "wsproto.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CHECK(cond, ...)                                                       \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "\nfuzz wsproto: invariant: " __VA_ARGS__);              \
      fprintf(stderr, "\n");                                                   \
      abort();                                                                 \
    }                                                                          \
  } while (0)

static const char B64URL[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* The elements of list, trimmed, as the parser splits them: calls f for
 * each; stops when f returns nonzero. */
static int each(const char *list, int (*f)(const char *, size_t, void *),
                void *arg) {
  const char *p = list;
  for (;;) {
    while (*p == ' ' || *p == '\t' || *p == ',')
      p++;
    if (*p == '\0')
      return 0;
    size_t n = strcspn(p, ","), m = n;
    while (m > 0 && (p[m - 1] == ' ' || p[m - 1] == '\t'))
      m--;
    if (f(p, m, arg))
      return 1;
    p += n;
  }
}

static int is_horcrux(const char *e, size_t n, void *arg) {
  (void)arg;
  return n == 7 && memcmp(e, "horcrux", 7) == 0;
}

static int is_websocket(const char *e, size_t n, void *arg) {
  (void)arg;
  return n == 9 && strncasecmp(e, "websocket", 9) == 0;
}

static int first_bearer(const char *e, size_t n, void *arg) {
  size_t plen = strlen(HX_WS_BEARER_PREFIX);
  if (n < plen || memcmp(e, HX_WS_BEARER_PREFIX, plen) != 0)
    return 0;
  const char **out = arg;
  out[0] = e + plen;
  out[1] = e + n;
  return 1;
}

/* The token's base64url (no padding) against the element's text: equal
 * but for the last character's bits that hold no byte. */
static void check_roundtrip(const char *tok, size_t len, const char *b,
                            const char *e) {
  size_t n = (size_t)(e - b);
  CHECK(n == (len * 4 + 2) / 3, "%zu characters for %zu bytes", n, len);
  for (size_t i = 0; i < n; i++) {
    size_t bit = i * 6;
    unsigned v = 0;
    for (int k = 0; k < 6; k++, bit++) {
      unsigned byte = bit / 8 < len ? (unsigned char)tok[bit / 8] : 0;
      v = v << 1 | ((byte >> (7 - bit % 8)) & 1);
    }
    const char *at = strchr(B64URL, b[i]);
    CHECK(at != NULL, "a character %d not base64url", b[i]);
    unsigned got = (unsigned)(at - B64URL);
    unsigned keep =
        i + 1 == n && (len * 8) % 6 ? 0x3fu << (6 - (len * 8) % 6) : 0x3fu;
    CHECK((got & keep & 0x3f) == (v & keep & 0x3f),
          "character %zu: %u, the token gives %u", i, got, v);
  }
}

/* Whether the n bytes at p print as fmt with some rows and cols: the two
 * numbers read by strtoul past the skip bytes of fmt's prefix, then printed
 * again. */
static int prints_as(const char *p, size_t n, const char *fmt, size_t skip,
                     char sep) {
  char buf[32], out[32];
  if (n == 0 || n >= sizeof buf)
    return 0;
  memcpy(buf, p, n);
  buf[n] = '\0';
  if (n <= skip)
    return 0;
  const char *d = buf + skip;
  char *e1, *e2;
  unsigned long r = strtoul(d, &e1, 10);
  if (*e1 != sep)
    return 0;
  unsigned long c = strtoul(e1 + 1, &e2, 10);
  if (r < 1 || r > 65535 || c < 1 || c > 65535)
    return 0;
  int k = snprintf(out, sizeof out, fmt, r, c);
  return k > 0 && (size_t)k == n && memcmp(out, buf, n) == 0;
}

static void check_winsize(const uint8_t *msg, size_t n) {
  unsigned rows = 0, cols = 0;
  int r = hx_winsize_seq(msg, n, &rows, &cols);
  CHECK(r == prints_as((const char *)msg, n, "\x1b[8;%lu;%lut", 4, ';'),
        "hx_winsize_seq says %d", r);
  if (r) {
    char out[32];
    int k = snprintf(out, sizeof out, "\x1b[8;%u;%ut", rows, cols);
    CHECK((size_t)k == n && memcmp(out, msg, n) == 0, "%u x %u", rows, cols);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  size_t cap = data[0];
  char *list = malloc(size);
  char *out = malloc(cap ? cap : 1);
  if (list == NULL || out == NULL) {
    free(list);
    free(out);
    return 0;
  }
  memcpy(list, data + 1, size - 1);
  list[size - 1] = '\0';
  check_winsize(data + 1, size - 1);

  CHECK(hx_list_has(list, HX_WS_PROTOCOL, 0) == each(list, is_horcrux, NULL),
        "hx_list_has disagrees with a plain scan");
  CHECK(hx_list_has(list, "websocket", 1) == each(list, is_websocket, NULL),
        "hx_list_has in any case disagrees with a plain scan");
  const char *el[2] = {NULL, NULL};
  int has = each(list, first_bearer, el);
  int r = hx_ws_bearer(list, out, cap);
  CHECK(r >= -1 && r <= 1, "hx_ws_bearer returned %d", r);
  CHECK((r == 0) == !has, "returned %d, an element %s", r,
        has ? "found" : "not found");
  if (r == 1) {
    size_t n = strnlen(out, cap);
    CHECK(n < cap, "no NUL within %zu bytes", cap);
    CHECK(n > 7 && memcmp(out, "Bearer ", 7) == 0, "out is not Bearer <token>");
    check_roundtrip(out + 7, n - 7, el[0], el[1]);
  }
  free(list);
  free(out);
  return 0;
}
