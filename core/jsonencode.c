/*
 * jsonencode.c - Lua values to JSON text (see jsonconv.h), shared by
 * horcrux.json and the host; jsondecode.c goes the other way.
 *
 * Encoding prints straight from the Lua values into a growable buffer, one
 * per state, allocated with the state's allocator (so it counts toward a
 * capped allocator's limit). The walk calls no metamethods and nothing in it
 * can raise (lua_checkstack reports failure instead), so the buffer is
 * never longjmp'd over; only pushing the finished text can raise. Tables are
 * read raw: one tagged with the array metatable is an array of t[1..#t]
 * (a nil hole is null, other keys are ignored); otherwise keys 1..n (n > 0)
 * make an array, string keys an object, an empty table is {}, and anything
 * else (mixed or sparse keys, other key types) is an error. Integers print
 * exactly; floats print as the shortest of 15, 16 or 17 significant digits
 * that reads back to the same double, laid out as %g does; NaN and infinities
 * are errors. Strings are escaped per RFC 8259 ("\0" -> "\u0000"); bytes that
 * are not valid UTF-8 become U+FFFD, as Go's encoder does, so the output is
 * always valid JSON.
 */
#include "jsonconv.h"

#include "aux.h"

#include <lauxlib.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------
 * Encoding
 * ------------------------------------------------------------------------ */

/* The output buffer of a state, reused by every encode: memory of the
 * state's allocator, owned by a userdata in the registry. Encoding never
 * runs Lua code, so two encodes never share it at once. */
#define BUF_MT "horcrux.json.buffer"
#define BUF_KEEP (256 * 1024) /* a larger buffer is freed after use */

typedef struct outbuf {
  char *p;
  size_t n, cap;
  lua_Alloc f;
  void *ud;
  const void *array_mt; /* the state's array metatable (it never changes) */
} outbuf;

static const char buf_key = 0; /* its address keys the registry */

static void outbuf_release(outbuf *b) {
  if (b->p != NULL)
    b->f(b->ud, b->p, b->cap, 0);
  b->p = NULL;
  b->n = b->cap = 0;
}

static int outbuf_gc(lua_State *L) {
  outbuf *b = lua_touserdata(L, 1);
  if (b != NULL)
    outbuf_release(b);
  return 0;
}

static outbuf *get_outbuf(lua_State *L) {
  outbuf *b;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &buf_key) == LUA_TUSERDATA) {
    b = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return b;
  }
  lua_pop(L, 1);
  b = lua_newuserdatauv(L, sizeof *b, 0);
  b->p = NULL;
  b->n = b->cap = 0;
  b->f = lua_getallocf(L, &b->ud);
  hx_json_push_array_mt(L);
  b->array_mt = lua_topointer(L, -1);
  lua_pop(L, 1);
  if (luaL_newmetatable(L, BUF_MT)) {
    lua_pushcfunction(L, outbuf_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &buf_key);
  return b;
}

/* Where a value sits, for error messages: a chain up to the root. */
typedef struct seg {
  const struct seg *up;
  const char *key; /* NULL: an array element */
  size_t klen;
  lua_Integer index;
} seg;

typedef struct enc {
  lua_State *L;
  outbuf *b;
  int max_depth, pretty, sort;
  const void *mt; /* the array metatable */
  int oom;
  char msg[256];
} enc;

static int grow(enc *e, size_t need) {
  outbuf *b = e->b;
  size_t cap = b->cap != 0 ? b->cap : 1024;
  char *p;
  while (cap - b->n < need) {
    if (cap > SIZE_MAX / 2)
      goto oom;
    cap *= 2;
  }
  p = b->f(b->ud, b->p, b->cap, cap);
  if (p == NULL)
    goto oom;
  b->p = p;
  b->cap = cap;
  return 1;
oom:
  e->oom = 1;
  return 0;
}

static inline int reserve(enc *e, size_t need) {
  return e->b->cap - e->b->n >= need || grow(e, need);
}

static inline int put(enc *e, const void *s, size_t n) {
  if (!reserve(e, n))
    return 0;
  memcpy(e->b->p + e->b->n, s, n);
  e->b->n += n;
  return 1;
}

static inline int put_char(enc *e, char c) {
  if (!reserve(e, 1))
    return 0;
  e->b->p[e->b->n++] = c;
  return 1;
}

#define PUT_LIT(e, s) put((e), (s), sizeof(s) - 1)

static void path_append(char *out, size_t cap, size_t *n, const char *s,
                        size_t len) {
  while (len-- > 0 && *n + 1 < cap)
    out[(*n)++] = *s++;
  out[*n] = '\0';
}

static int is_ident(const char *k, size_t n) {
  if (n == 0 || (k[0] >= '0' && k[0] <= '9'))
    return 0;
  for (size_t i = 0; i < n; i++) {
    char c = k[i];
    if (!(c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9')))
      return 0;
  }
  return 1;
}

/* Writes the path of s as $.key[3]["odd key"] (Lua indices, from 1). */
static void path_format(char *out, size_t cap, size_t *n, const seg *s) {
  char tmp[48];
  if (s == NULL) {
    path_append(out, cap, n, "$", 1);
    return;
  }
  path_format(out, cap, n, s->up);
  if (s->key == NULL) {
    int k = snprintf(tmp, sizeof tmp, "[%lld]", (long long)s->index);
    path_append(out, cap, n, tmp, (size_t)k);
  } else if (is_ident(s->key, s->klen) && s->klen <= 40) {
    path_append(out, cap, n, ".", 1);
    path_append(out, cap, n, s->key, s->klen);
  } else {
    size_t k = 0;
    tmp[k++] = '[';
    tmp[k++] = '"';
    for (size_t i = 0; i < s->klen && k < 40; i++) {
      unsigned char c = (unsigned char)s->key[i];
      tmp[k++] = c >= 0x20 && c < 0x7F && c != '"' ? (char)c : '?';
    }
    if (k - 2 < s->klen)
      tmp[k - 1] = '~'; /* cut short */
    tmp[k++] = '"';
    tmp[k++] = ']';
    path_append(out, cap, n, tmp, k);
  }
}

static int enc_fail(enc *e, const seg *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int enc_fail(enc *e, const seg *at, const char *fmt, ...) {
  va_list ap;
  int k = snprintf(e->msg, sizeof e->msg, "cannot encode to JSON: ");
  size_t n = (size_t)k;
  va_start(ap, fmt);
  k = vsnprintf(e->msg + n, sizeof e->msg - n, fmt, ap);
  va_end(ap);
  n += (size_t)k;
  if (n >= sizeof e->msg)
    return 0;
  if (at != NULL) {
    path_append(e->msg, sizeof e->msg, &n, " at ", 4);
    path_format(e->msg, sizeof e->msg, &n, at);
    if (n + 1 == sizeof e->msg) /* cut short (a cycle, say) */
      memcpy(e->msg + n - 3, "...", 3);
  }
  return 0;
}

static int put_integer(enc *e, lua_Integer i) {
  char tmp[24], *q = tmp + sizeof tmp;
  unsigned long long u =
      i < 0 ? 0ULL - (unsigned long long)i : (unsigned long long)i;
  do {
    *--q = (char)('0' + u % 10);
    u /= 10;
  } while (u != 0);
  if (i < 0)
    *--q = '-';
  return put(e, q, (size_t)(tmp + sizeof tmp - q));
}

/* Writes significand digits d[0..k) (no trailing zeros) with decimal
 * exponent x (of the first digit) as %g would: fixed notation when
 * -4 <= x < prec, else d.ddde+XX. Returns the length. */
static int format_digits(char *out, int neg, const char *d, int k, int x,
                         int prec) {
  int n = 0;
  if (neg)
    out[n++] = '-';
  if (x < -4 || x >= prec) {
    out[n++] = d[0];
    if (k > 1) {
      out[n++] = '.';
      memcpy(out + n, d + 1, (size_t)k - 1);
      n += k - 1;
    }
    n += snprintf(out + n, 8, "e%c%02d", x < 0 ? '-' : '+', x < 0 ? -x : x);
  } else if (x < 0) {
    out[n++] = '0';
    out[n++] = '.';
    for (int i = -1; i > x; i--)
      out[n++] = '0';
    memcpy(out + n, d, (size_t)k);
    n += k;
  } else {
    for (int i = 0; i <= x; i++)
      out[n++] = i < k ? d[i] : '0';
    if (k > x + 1) {
      out[n++] = '.';
      memcpy(out + n, d + x + 1, (size_t)(k - x - 1));
      n += k - x - 1;
    }
  }
  out[n] = '\0';
  return n;
}

#define FLOAT_DIGITS 21 /* printed once; 15 to 17 are rounded from them */

/* Rounds the digits d to prec digits, down or up, and formats them into out;
 * returns the length if that reads back as v, else 0. */
static int try_digits(char *out, double v, int neg, const char *d, int x,
                      int prec, int up) {
  char r[FLOAT_DIGITS];
  int k, n;
  memcpy(r, d, (size_t)prec);
  if (up) {
    int i = prec - 1;
    while (i >= 0 && r[i] == '9')
      r[i--] = '0';
    if (i >= 0) {
      r[i]++;
    } else { /* 99..9 became 100..0 */
      r[0] = '1';
      x++;
    }
  }
  for (k = prec; k > 1 && r[k - 1] == '0'; k--)
    ;
  n = format_digits(out, neg, r, k, x, prec);
  return strtod(out, NULL) == v ? n : 0;
}

/* The shortest of 15, 16 and 17 significant digits that reads back to the
 * same double (17 always does), in %g's layout. One snprintf gives 21
 * correctly rounded digits; the shorter forms are rounded from them and
 * checked with strtod. Where what is cut off reads exactly 5000..., the
 * 21 digits cannot tell which way to round, so both ways are tried, the
 * even one first as printf does. horcrux never sets LC_NUMERIC; under a
 * locale whose decimal point is not '.', the checks fail and every float
 * comes out as %.17g, with the point put back to '.'. */
size_t hx_json_format_double(char *out, double v) {
  char tmp[48], d[FLOAT_DIGITS];
  int neg, x, n = 0;
  if (!isfinite(v))
    return 0;
  if (v == 0) {
    size_t z = 0;
    if (signbit(v))
      out[z++] = '-';
    out[z++] = '0';
    out[z] = '\0';
    return z;
  }
  /* [-]d.dddd...e[+-]x; the point may be a locale's. */
  snprintf(tmp, sizeof tmp, "%.*e", FLOAT_DIGITS - 1, v);
  neg = tmp[0] == '-';
  d[0] = tmp[neg];
  memcpy(d + 1, tmp + neg + 2, FLOAT_DIGITS - 1);
  x = atoi(tmp + neg + FLOAT_DIGITS + 2);
  for (int prec = 15; prec <= 17 && n == 0; prec++) {
    int tie = d[prec] == '5';
    for (int i = prec + 1; tie && i < FLOAT_DIGITS; i++)
      tie = d[i] == '0';
    if (tie) { /* the even neighbour first, as printf does */
      int odd = (d[prec - 1] - '0') & 1;
      n = try_digits(out, v, neg, d, x, prec, odd);
      if (n == 0)
        n = try_digits(out, v, neg, d, x, prec, !odd);
    } else {
      n = try_digits(out, v, neg, d, x, prec, d[prec] >= '5');
    }
  }
  if (n == 0) { /* not expected: let the C library do it */
    n = snprintf(out, 48, "%.17g", v);
    for (int i = 0; i < n; i++)
      if (!strchr("0123456789+-.eE", out[i])) /* a locale's decimal mark */
        out[i] = '.';
  }
  return (size_t)n;
}

static int put_float(enc *e, double v, const seg *at) {
  char out[48];
  size_t n = hx_json_format_double(out, v);
  if (n == 0)
    return enc_fail(e, at, "%s", isnan(v) ? "NaN" : "infinity");
  return put(e, out, n);
}

static int is_cont(unsigned char c) { return (c & 0xC0) == 0x80; }

/* Length of the well-formed UTF-8 sequence at p (Unicode table 3-7: no
 * overlong forms, surrogates or code points past U+10FFFF), or 0. */
static size_t utf8_len(const unsigned char *p, const unsigned char *e) {
  size_t avail = (size_t)(e - p);
  unsigned char c = p[0];
  if (c < 0x80)
    return 1;
  if (c < 0xC2)
    return 0;
  if (c < 0xE0)
    return avail >= 2 && is_cont(p[1]) ? 2 : 0;
  if (c < 0xF0) {
    if (avail < 3 || !is_cont(p[1]) || !is_cont(p[2]))
      return 0;
    if ((c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] > 0x9F))
      return 0;
    return 3;
  }
  if (c < 0xF5) {
    if (avail < 4 || !is_cont(p[1]) || !is_cont(p[2]) || !is_cont(p[3]))
      return 0;
    if ((c == 0xF0 && p[1] < 0x90) || (c == 0xF4 && p[1] > 0x8F))
      return 0;
    return 4;
  }
  return 0;
}

/* Bytes that go out as they are: printable ASCII but '"' and '\'. */
static inline int is_plain(unsigned char c) {
  return c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
}

/* A byte that is not plain: RFC 8259's two-character escape where there is
 * one, \u00XX for the other control characters. */
static int put_escape(enc *e, unsigned char c) {
  static const char hex[] = "0123456789abcdef";
  static const char short_form[0x60] = {
      ['"'] = '"',  ['\\'] = '\\', ['\b'] = 'b', ['\f'] = 'f',
      ['\n'] = 'n', ['\r'] = 'r',  ['\t'] = 't'};
  char t[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
  if (c < sizeof short_form && short_form[c]) {
    t[1] = short_form[c];
    return put(e, t, 2);
  }
  return put(e, t, 6);
}

static int put_string(enc *e, const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s, *end = p + len;
  if (!put_char(e, '"'))
    return 0;
  while (p < end) {
    /* The longest stretch that goes out as it is, valid UTF-8 included. */
    const unsigned char *run = p;
    for (;;) {
      size_t n;
      while (p < end && is_plain(*p))
        p++;
      if (p == end || *p < 0x80 || (n = utf8_len(p, end)) == 0)
        break;
      p += n;
    }
    if (p > run && !put(e, run, (size_t)(p - run)))
      return 0;
    if (p == end)
      break;
    /* Each byte that is not part of a well-formed sequence: U+FFFD. */
    if (!(*p >= 0x80 ? PUT_LIT(e, "\\ufffd") : put_escape(e, *p)))
      return 0;
    p++;
  }
  return put_char(e, '"');
}

size_t hx_json_quote(char *out, const char *s, size_t n) {
  /* put_string into the caller's buffer: 6 * n + 2 bytes never grow */
  outbuf b = {out, 0, 6 * n + 2, NULL, NULL, NULL};
  enc e;
  memset(&e, 0, sizeof e);
  e.b = &b;
  put_string(&e, s, n);
  return b.n;
}

/* In pretty mode, a new line indented to depth. */
static int newline(enc *e, int depth) {
  size_t n = 1 + 2 * (size_t)depth;
  if (!e->pretty)
    return 1;
  if (!reserve(e, n))
    return 0;
  e->b->p[e->b->n] = '\n';
  memset(e->b->p + e->b->n + 1, ' ', n - 1);
  e->b->n += n;
  return 1;
}

static int enc_value(enc *e, int idx, int depth, const seg *at);

/* Writes the value on top of the stack (an element or a member's value)
 * and pops it. */
static int enc_top(enc *e, int depth, const seg *s) {
  if (!enc_value(e, lua_gettop(e->L), depth, s))
    return 0;
  lua_pop(e->L, 1);
  return 1;
}

/* Ends an array or object of a non-zero size: its own line when pretty. */
static int close_with(enc *e, int depth, char c) {
  return newline(e, depth - 1) && put_char(e, c);
}

/* What goes before an element: a comma unless it is the first, then its
 * own line when pretty. */
static int next_item(enc *e, int first, int depth) {
  return (first || put_char(e, ',')) && newline(e, depth);
}

/* What goes before a member's value: next_item, its key and a colon. */
static int put_key(enc *e, int first, int depth, const seg *s) {
  return next_item(e, first, depth) && put_string(e, s->key, s->klen) &&
         (e->pretty ? PUT_LIT(e, ": ") : put_char(e, ':'));
}

/* t[1..n], raw; depth is the array's own. */
static int enc_array(enc *e, int t, lua_Integer n, int depth, const seg *at) {
  seg s = {at, NULL, 0, 0};
  if (!put_char(e, '['))
    return 0;
  for (lua_Integer i = 1; i <= n; i++) {
    if (!next_item(e, i == 1, depth))
      return 0;
    lua_rawgeti(e->L, t, i);
    s.index = i;
    if (!enc_top(e, depth, &s))
      return 0;
  }
  return n > 0 ? close_with(e, depth, ']') : put_char(e, ']');
}

static int bad_key(enc *e, const seg *at) {
  lua_State *L = e->L;
  if (lua_type(L, -2) == LUA_TNUMBER) /* a float: integers are handled */
    return enc_fail(e, at, "table key %.14g is not an integer",
                    lua_tonumber(L, -2));
  return enc_fail(e, at, "table key of type %s", luaL_typename(L, -2));
}

static int mixed_keys(enc *e, const seg *at) {
  return enc_fail(e, at, "table mixes array and object keys");
}

/* Decides on the whole table t whether it is an array, and encodes it. */
static int enc_checked_array(enc *e, int t, int depth, const seg *at) {
  lua_State *L = e->L;
  lua_Integer count = 0, max = 0;
  int strings = 0, nonpositive = 0;
  lua_pushnil(L);
  while (lua_next(L, t)) {
    if (lua_isinteger(L, -2)) {
      lua_Integer k = lua_tointeger(L, -2);
      if (k < 1)
        nonpositive = 1;
      else if (k > max)
        max = k;
      count++;
    } else if (lua_type(L, -2) == LUA_TSTRING) {
      strings = 1;
    } else {
      return bad_key(e, at);
    }
    lua_pop(L, 1);
  }
  if (strings)
    return mixed_keys(e, at);
  if (nonpositive || count != max)
    return enc_fail(e, at, "sparse array (integer keys are not 1..n)");
  return enc_array(e, t, max, depth, at);
}

/* An array whose first pair (integer key) is on the stack: prints while the
 * keys come as 1, 2, 3...; if they stop doing so, starts over from start
 * with a check of the whole table. */
static int enc_sequence(enc *e, int t, size_t start, int depth, const seg *at) {
  lua_State *L = e->L;
  seg s = {at, NULL, 0, 1};
  if (!put_char(e, '['))
    return 0;
  for (;; s.index++) {
    if (!lua_isinteger(L, -2) || lua_tointeger(L, -2) != s.index) {
      lua_pop(L, 2);
      e->b->n = start; /* not a sequence after all */
      return enc_checked_array(e, t, depth, at);
    }
    if (!next_item(e, s.index == 1, depth) || !enc_top(e, depth, &s))
      return 0;
    if (!lua_next(L, t))
      return close_with(e, depth, ']');
  }
}

/* An object whose first pair (string key) is on the stack. */
static int enc_object(enc *e, int t, int depth, const seg *at) {
  lua_State *L = e->L;
  seg s = {at, NULL, 0, 0};
  int first = 1;
  if (!put_char(e, '{'))
    return 0;
  do {
    if (lua_type(L, -2) != LUA_TSTRING)
      return lua_isinteger(L, -2) ? mixed_keys(e, at) : bad_key(e, at);
    s.key = lua_tolstring(L, -2, &s.klen);
    if (!put_key(e, first, depth, &s) || !enc_top(e, depth, &s))
      return 0;
    first = 0;
  } while (lua_next(L, t));
  return close_with(e, depth, '}');
}

/* Orders idx[0..n) by the strings at those stack slots (byte order). A
 * merge sort: qsort has no context argument in C11. */
static int key_less(lua_State *L, int a, int b) {
  size_t la, lb;
  const char *sa = lua_tolstring(L, a, &la), *sb = lua_tolstring(L, b, &lb);
  int c = memcmp(sa, sb, la < lb ? la : lb);
  return c < 0 || (c == 0 && la < lb);
}

static void sort_keys(lua_State *L, int *idx, int *tmp, int n) {
  if (n < 2)
    return;
  int h = n / 2;
  sort_keys(L, idx, tmp, h);
  sort_keys(L, idx + h, tmp, n - h);
  int i = 0, j = h, k = 0;
  while (i < h && j < n)
    tmp[k++] = key_less(L, idx[j], idx[i]) ? idx[j++] : idx[i++];
  while (i < h)
    tmp[k++] = idx[i++];
  while (j < n)
    tmp[k++] = idx[j++];
  memcpy(idx, tmp, (size_t)n * sizeof *idx);
}

#define SORT_ON_STACK 64 /* keys of an object sorted without malloc */

/* An object whose first pair (string key) is on the stack, printed with
 * its keys in byte order: every pair is copied onto the stack first. */
static int enc_sorted_object(enc *e, int t, int depth, const seg *at) {
  lua_State *L = e->L;
  int base = lua_gettop(L) - 2, n = 0;
  seg s = {at, NULL, 0, 0};
  do {
    if (lua_type(L, -2) != LUA_TSTRING)
      return lua_isinteger(L, -2) ? mixed_keys(e, at) : bad_key(e, at);
    n++;
    if (!lua_checkstack(L, 3))
      return enc_fail(e, at, "object too large to sort its keys");
    lua_pushvalue(L, -2); /* the key, for lua_next */
  } while (lua_next(L, t));
  /* Objects of a route's answer are small: their order fits on the C
   * stack, so the common one costs no malloc. */
  int small[2 * SORT_ON_STACK];
  int *idx = n <= SORT_ON_STACK ? small : malloc(2 * (size_t)n * sizeof *idx);
  if (idx == NULL) {
    e->oom = 1;
    return 0;
  }
  for (int i = 0; i < n; i++)
    idx[i] = base + 1 + 2 * i;
  sort_keys(L, idx, idx + n, n);
  int ok = put_char(e, '{');
  for (int i = 0; ok && i < n; i++) {
    s.key = lua_tolstring(L, idx[i], &s.klen);
    ok = put_key(e, i == 0, depth, &s) && enc_value(e, idx[i] + 1, depth, &s);
  }
  if (idx != small)
    free(idx);
  if (!ok || !close_with(e, depth, '}'))
    return 0;
  lua_settop(L, base);
  return 1;
}

/* The table at t, whose own depth is depth. */
static int enc_table(enc *e, int t, int depth, const seg *at) {
  lua_State *L = e->L;
  size_t start = e->b->n;
  if (depth > e->max_depth)
    return enc_fail(e, at, "nested deeper than %d levels (a cycle?)",
                    e->max_depth);
  if (!lua_checkstack(L, 3))
    return enc_fail(e, at, "nested too deeply for the Lua stack");
  if (lua_getmetatable(L, t)) {
    int tagged = lua_topointer(L, -1) == e->mt;
    lua_pop(L, 1);
    if (tagged)
      return enc_array(e, t, (lua_Integer)lua_rawlen(L, t), depth, at);
  }
  lua_pushnil(L);
  if (!lua_next(L, t))
    return PUT_LIT(e, "{}");
  if (lua_type(L, -2) == LUA_TSTRING)
    return e->sort ? enc_sorted_object(e, t, depth, at)
                   : enc_object(e, t, depth, at);
  if (lua_isinteger(L, -2))
    return enc_sequence(e, t, start, depth, at);
  return bad_key(e, at);
}

/* Appends the value at idx (absolute); returns 0 with e->msg set or e->oom.
 * The stack may then hold leftovers, which the caller drops. */
static int enc_value(enc *e, int idx, int depth, const seg *at) {
  lua_State *L = e->L;
  switch (lua_type(L, idx)) {
  case LUA_TNIL:
    return PUT_LIT(e, "null");
  case LUA_TBOOLEAN:
    return lua_toboolean(L, idx) ? PUT_LIT(e, "true") : PUT_LIT(e, "false");
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx))
      return put_integer(e, lua_tointeger(L, idx));
    return put_float(e, lua_tonumber(L, idx), at);
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    return put_string(e, s, len);
  }
  case LUA_TTABLE:
    return enc_table(e, idx, depth + 1, at);
  case LUA_TLIGHTUSERDATA:
    if (lua_touserdata(L, idx) == NULL) /* json.null */
      return PUT_LIT(e, "null");
    /* fall through */
  default:
    return enc_fail(e, at, "a value of type %s", luaL_typename(L, idx));
  }
}

int hx_json_encode(lua_State *L, int idx, int max_depth, int flags) {
  int base, ok;
  enc e;

  idx = lua_absindex(L, idx);
  /* Everything that may raise comes before the walk. */
  luaL_checkstack(L, 4, "JSON encode");
  e.b = get_outbuf(L);
  base = lua_gettop(L);
  e.L = L;
  e.mt = e.b->array_mt;
  e.max_depth = hx_json_clamp_depth(max_depth);
  e.pretty = (flags & HX_JSON_PRETTY) != 0;
  e.sort = (flags & HX_JSON_SORT_KEYS) != 0;
  e.oom = 0;
  e.msg[0] = '\0';
  e.b->n = 0;

  ok = enc_value(&e, idx, 0, NULL);
  lua_settop(L, base);
  if (ok) {
    /* Copies the text before it can trigger a collection. */
    lua_pushlstring(L, e.b->p != NULL ? e.b->p : "", e.b->n);
  } else if (e.oom) {
    outbuf_release(e.b);
    return luaL_error(L, "JSON encode: not enough memory");
  } else {
    lua_pushstring(L, e.msg);
  }
  if (e.b->cap > BUF_KEEP)
    outbuf_release(e.b);
  return ok;
}
