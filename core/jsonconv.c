/*
 * jsonconv.c - JSON <-> Lua values (see jsonconv.h), shared by horcrux.json
 * and horcrux.docker.
 *
 * Decoding: cJSON parses the text into a tree, which is then converted into
 * Lua values. The tree is held by a to-be-closed userdata while Lua builds
 * tables, so a memory error half-way frees it (STYLE.md). cJSON loses two
 * things that matter here, and a cursor over the text gets them back only
 * when needed:
 *  - the digits of a number (it keeps a double): integers of 2^53 and more
 *    are read from their text, so counters stay exact up to the int64 range;
 *  - the length of a string (its strings are NUL-terminated): when the text
 *    has a "\u0000" escape, strings are unescaped from the text, so
 *    "a\u0000b" decodes to the 3-byte Lua string "a\0b".
 * cJSON also reads a \u escape with bad hex digits as U+0000, so every \u
 * escape is checked before parsing.
 *
 * Numbers: an integral value below 2^53 in magnitude becomes a Lua integer
 * (1, 1.0 and 1e3 all give integers); from 2^53 on, only a plain integer
 * literal that fits in int64 does (9223372036854771712, -2^63); anything else
 * stays a float (18446744073709551615 -> 1.8446744073709552e19); a double is
 * never cast to an integer type outside its range. A number that overflows a
 * double (1e400) is an error.
 *
 * Leniency inherited from cJSON: control characters are accepted inside
 * strings and between tokens, and a UTF-8 BOM is skipped. Duplicate keys:
 * the last one wins. Nesting is limited to max_depth, at most
 * CJSON_NESTING_LIMIT (1000), where cJSON itself stops. Threads: every
 * cJSON parse writes cJSON's global error position, which nothing here
 * reads; otherwise this file has no global mutable state.
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

#include <cjson/cJSON.h>
#include <lauxlib.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The parser stops at CJSON_NESTING_LIMIT, and the encoder recurses in C once
 * per level, so no caller may ask for more. */
#define HARD_DEPTH CJSON_NESTING_LIMIT

#define TWO53 9007199254740992.0
#define TWO63 9223372036854775808.0

static int clamp_depth(int d) {
  if (d <= 0)
    return HX_JSON_DEFAULT_DEPTH;
  return d > HARD_DEPTH ? HARD_DEPTH : d;
}

void hx_json_push_null(lua_State *L) { lua_pushlightuserdata(L, NULL); }

void hx_json_push_array_mt(lua_State *L) {
  /* By name, so every module (each links its own copy of this file) and
   * every caller of a state shares one metatable. */
  (void)luaL_newmetatable(L, HX_JSON_ARRAY_MT);
}

/* JSON whitespace (RFC 8259), for what surrounds the value. */
static int is_ws(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int is_hex(char c) { return hx_hexval(c) >= 0; }

/* ------------------------------------------------------------------------
 * Decoding
 * ------------------------------------------------------------------------ */

/* A cursor that walks the text in document order. A preorder walk of the
 * tree visits values in the same order (a key before its value), so the k-th
 * number node of the tree is the k-th number token of the text, and likewise
 * for strings. Used only when a number or string needs its text. */
typedef struct scan {
  const char *p, *end;
  size_t nnum, nstr; /* tokens passed so far */
} scan;

static int is_numchar(char c) {
  return (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' ||
         c == 'e' || c == 'E';
}

/* End of the string whose opening quote is at p: its closing quote, or end.
 */
static const char *string_end(const char *p, const char *end) {
  for (p++; p < end && *p != '"'; p++)
    if (*p == '\\' && ++p == end)
      break;
  return p < end ? p : end;
}

/* Finds string token number `index` (want_string) or number token number
 * `index`; returns its first byte (a string's first byte after the quote) and
 * sets *tend to just past it (a string's closing quote). NULL if there is no
 * such token ahead. */
static const char *scan_to(scan *s, int want_string, size_t index,
                           const char **tend) {
  const char *p = s->p, *e = s->end;
  while (p < e) {
    if (*p == '"') {
      const char *q = string_end(p, e);
      if (s->nstr++ == index && want_string) {
        s->p = q < e ? q + 1 : e;
        *tend = q;
        return p + 1;
      }
      p = q < e ? q + 1 : e;
    } else if (*p == '-' || (*p >= '0' && *p <= '9')) {
      const char *q = p + 1;
      while (q < e && is_numchar(*q))
        q++;
      if (s->nnum++ == index && !want_string) {
        s->p = q;
        *tend = q;
        return p;
      }
      p = q;
    } else {
      p++;
    }
  }
  s->p = e;
  return NULL;
}

/* A plain integer literal [-]digits that fits in a lua_Integer. */
static int token_integer(const char *p, const char *e, lua_Integer *out) {
  int neg = p < e && *p == '-';
  unsigned long long u = 0, lim;
  if (neg)
    p++;
  if (p == e)
    return 0;
  lim = neg ? (unsigned long long)LUA_MAXINTEGER + 1 : LUA_MAXINTEGER;
  for (; p < e; p++) {
    unsigned d;
    if (*p < '0' || *p > '9')
      return 0;
    d = (unsigned)(*p - '0');
    if (u > (lim - d) / 10)
      return 0;
    u = u * 10 + d;
  }
  /* -(u - 1) - 1 reaches LUA_MININTEGER without overflowing. */
  *out = neg ? (u == 0 ? 0 : -(lua_Integer)(u - 1) - 1) : (lua_Integer)u;
  return 1;
}

typedef struct dec {
  lua_State *L;
  const char *buf;
  int max_depth;
  int mt;           /* stack index of the array metatable */
  int text_strings; /* the text has \u0000: take strings from the text */
  scan cur;
  size_t nnum, nstr; /* number and string nodes converted so far */
  char msg[192];
} dec;

static int dec_fail(dec *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int dec_fail(dec *d, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(d->msg, sizeof d->msg, fmt, ap);
  va_end(ap);
  return 0;
}

static int push_number(dec *d, double v) {
  lua_State *L = d->L;
  size_t k = d->nnum++;
  if (!isfinite(v)) {
    const char *e, *p = scan_to(&d->cur, 0, k, &e);
    return dec_fail(d, "invalid JSON: number out of range at byte offset %zu",
                    p ? (size_t)(p - d->buf) : (size_t)0);
  }
  if (v == floor(v)) {
    if (fabs(v) < TWO53) { /* exact in a double, and in range */
      lua_pushinteger(L, (lua_Integer)v);
      return 1;
    }
    if (fabs(v) <= TWO63) { /* the double may have rounded: read the text */
      const char *e, *p = scan_to(&d->cur, 0, k, &e);
      lua_Integer i;
      if (p != NULL && token_integer(p, e, &i)) {
        lua_pushinteger(L, i);
        return 1;
      }
    }
  }
  lua_pushnumber(L, v);
  return 1;
}

static void add_utf8(luaL_Buffer *b, unsigned long cp) {
  char u[4];
  size_t n;
  if (cp < 0x80) {
    u[0] = (char)cp;
    n = 1;
  } else if (cp < 0x800) {
    u[0] = (char)(0xC0 | (cp >> 6));
    u[1] = (char)(0x80 | (cp & 0x3F));
    n = 2;
  } else if (cp < 0x10000) {
    u[0] = (char)(0xE0 | (cp >> 12));
    u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    u[2] = (char)(0x80 | (cp & 0x3F));
    n = 3;
  } else {
    u[0] = (char)(0xF0 | (cp >> 18));
    u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    u[3] = (char)(0x80 | (cp & 0x3F));
    n = 4;
  }
  luaL_addlstring(b, u, n);
}

/* The 4 hex digits at p (p + 4 <= e), or -1. */
static long hex4(const char *p, const char *e) {
  long v = 0;
  if (e - p < 4)
    return -1;
  for (int i = 0; i < 4; i++) {
    int h = hx_hexval(p[i]);
    if (h < 0)
      return -1;
    v = v * 16 + h;
  }
  return v;
}

/* Pushes the string whose escaped text is [p, e). cJSON has validated it;
 * anything odd still decodes to U+FFFD rather than reading out of bounds. */
static void push_unescaped(lua_State *L, const char *p, const char *e) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  while (p < e) {
    const char *bs = memchr(p, '\\', (size_t)(e - p));
    if (bs == NULL) {
      luaL_addlstring(&b, p, (size_t)(e - p));
      break;
    }
    luaL_addlstring(&b, p, (size_t)(bs - p));
    p = bs + 1;
    if (p == e)
      break;
    switch (*p++) {
    case 'b':
      luaL_addchar(&b, '\b');
      break;
    case 'f':
      luaL_addchar(&b, '\f');
      break;
    case 'n':
      luaL_addchar(&b, '\n');
      break;
    case 'r':
      luaL_addchar(&b, '\r');
      break;
    case 't':
      luaL_addchar(&b, '\t');
      break;
    case 'u': {
      long cp = hex4(p, e);
      if (cp < 0) {
        add_utf8(&b, 0xFFFD);
        break;
      }
      p += 4;
      if (cp >= 0xD800 && cp <= 0xDBFF && e - p >= 6 && p[0] == '\\' &&
          p[1] == 'u') {
        long lo = hex4(p + 2, e);
        if (lo >= 0xDC00 && lo <= 0xDFFF) {
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          p += 6;
        }
      }
      add_utf8(&b, cp >= 0xD800 && cp <= 0xDFFF ? 0xFFFD : (unsigned long)cp);
      break;
    }
    default: /* \" \\ \/ */
      luaL_addchar(&b, p[-1]);
      break;
    }
  }
  luaL_pushresult(&b);
}

static void push_string(dec *d, const char *s) {
  size_t k = d->nstr++;
  if (d->text_strings) {
    const char *e, *p = scan_to(&d->cur, 1, k, &e);
    if (p != NULL) {
      if (memchr(p, '\\', (size_t)(e - p)) == NULL)
        lua_pushlstring(d->L, p, (size_t)(e - p));
      else
        push_unescaped(d->L, p, e);
      return;
    }
  }
  lua_pushstring(d->L, s);
}

static int to_lua(dec *d, const cJSON *item, int depth);

/* Room for a container one level deeper: the table, a key and a value. */
static int enter(dec *d, int depth) {
  if (depth > d->max_depth)
    return dec_fail(d, "invalid JSON: nested deeper than %d levels",
                    d->max_depth);
  if (!lua_checkstack(d->L, 3))
    return dec_fail(d, "invalid JSON: nested too deeply for the Lua stack");
  return 1;
}

static int count_children(const cJSON *item) {
  int n = 0;
  for (const cJSON *c = item->child; c != NULL && n < INT32_MAX; c = c->next)
    n++;
  return n;
}

static int to_array(dec *d, const cJSON *item, int depth) {
  lua_State *L = d->L;
  lua_Integer i = 0;
  if (!enter(d, depth))
    return 0;
  lua_createtable(L, count_children(item), 0);
  for (const cJSON *c = item->child; c != NULL; c = c->next) {
    if (!to_lua(d, c, depth))
      return 0;
    lua_rawseti(L, -2, ++i);
  }
  lua_pushvalue(L, d->mt);
  lua_setmetatable(L, -2);
  return 1;
}

static int to_object(dec *d, const cJSON *item, int depth) {
  lua_State *L = d->L;
  if (!enter(d, depth))
    return 0;
  lua_createtable(L, 0, count_children(item));
  for (const cJSON *c = item->child; c != NULL; c = c->next) {
    if (c->string == NULL)
      return dec_fail(d, "invalid JSON: object member without a key");
    push_string(d, c->string);
    if (!to_lua(d, c, depth))
      return 0;
    lua_rawset(L, -3);
  }
  return 1;
}

/* Pushes the value of item, or returns 0 with d->msg set (the stack then
 * holds partial values, which the caller drops). */
static int to_lua(dec *d, const cJSON *item, int depth) {
  switch (item->type & 0xFF) {
  case cJSON_NULL:
    hx_json_push_null(d->L);
    return 1;
  case cJSON_False:
    lua_pushboolean(d->L, 0);
    return 1;
  case cJSON_True:
    lua_pushboolean(d->L, 1);
    return 1;
  case cJSON_Number:
    return push_number(d, item->valuedouble);
  case cJSON_String:
    push_string(d, item->valuestring);
    return 1;
  case cJSON_Array:
    return to_array(d, item, depth + 1);
  case cJSON_Object:
    return to_object(d, item, depth + 1);
  default:
    return dec_fail(d, "invalid JSON: unexpected value");
  }
}

/* Checks every \u escape: cJSON would read bad hex digits as U+0000. Returns
 * the offset of a bad one, or len; sets *nul when there is a \u0000. A
 * backslash outside strings is left for cJSON to reject. */
static size_t check_escapes(const char *buf, size_t len, int *nul) {
  const char *p = buf, *e = buf + len;
  *nul = 0;
  while (p < e && (p = memchr(p, '\\', (size_t)(e - p))) != NULL) {
    if (e - p < 2)
      break;
    if (p[1] != 'u') {
      p += 2;
      continue;
    }
    if (e - p < 6) /* truncated: cJSON reports it */
      break;
    if (!is_hex(p[2]) || !is_hex(p[3]) || !is_hex(p[4]) || !is_hex(p[5]))
      return (size_t)(p - buf);
    if (p[2] == '0' && p[3] == '0' && p[4] == '0' && p[5] == '0')
      *nul = 1;
    p += 6;
  }
  return len;
}

/* Nesting depth just before pos, outside strings. */
static int depth_at(const char *buf, size_t pos) {
  const char *p = buf, *e = buf + pos;
  int depth = 0;
  while (p < e) {
    if (*p == '"') {
      const char *q = string_end(p, e);
      p = q < e ? q + 1 : e;
      continue;
    }
    if (*p == '[' || *p == '{')
      depth++;
    else if (*p == ']' || *p == '}')
      depth--;
    p++;
  }
  return depth;
}

/* Whether the quote at buf[q] opens a string (rather than closing one). */
static int opens_string(const char *buf, size_t len, size_t q) {
  const char *p = buf, *e = buf + len, *at = buf + q;
  while (p < at) {
    if (*p == '"') {
      const char *c = string_end(p, e);
      if (c >= at)
        return 0;
      p = c + 1;
    } else {
      p++;
    }
  }
  return 1;
}

/* Whether parsing failed at pos because the text stops too early. */
static int truncated_at(const char *buf, size_t len, size_t pos) {
  static const char *const literals[] = {"true", "false", "null"};
  size_t rest = len - pos;
  /* A string that is never closed: cJSON reports just after its quote. */
  if (pos > 0 && buf[pos - 1] == '"' &&
      string_end(buf + pos - 1, buf + len) == buf + len &&
      opens_string(buf, len, pos - 1))
    return 1;
  /* A literal cut short: cJSON reports its first byte. */
  for (int i = 0; i < 3; i++)
    if (rest < strlen(literals[i]) && memcmp(buf + pos, literals[i], rest) == 0)
      return 1;
  /* Otherwise cJSON reports the last byte both when that byte is wrong and
   * when the input ran out; parse again with one byte that cannot continue
   * any JSON text appended: running out then fails on that byte. */
  if (pos + 1 == len) {
    char *copy = malloc(len + 1);
    const char *end = NULL;
    cJSON *t;
    int out;
    if (copy == NULL)
      return 0;
    memcpy(copy, buf, len);
    copy[len] = '#';
    t = cJSON_ParseWithLengthOpts(copy, len + 1, &end, 0);
    out = t == NULL && end == copy + len;
    cJSON_Delete(t);
    free(copy);
    return out;
  }
  return 0;
}

/* Formats why cJSON failed at pos into msg. */
static void diagnose(const char *buf, size_t len, size_t pos, int max_depth,
                     char *msg, size_t cap) {
  char near[20];
  size_t n = 0;
  if (pos >= len)
    pos = len - 1;
  if ((buf[pos] == '[' || buf[pos] == '{') &&
      depth_at(buf, pos) >= HARD_DEPTH) {
    snprintf(msg, cap, "invalid JSON: nested deeper than %d levels", max_depth);
    return;
  }
  if (truncated_at(buf, len, pos)) {
    snprintf(msg, cap,
             "invalid JSON: unexpected end of input at byte offset %zu", len);
    return;
  }
  for (; n < 12 && pos + n < len; n++) {
    unsigned char c = (unsigned char)buf[pos + n];
    near[n] = c >= 0x20 && c < 0x7F && c != '\'' ? (char)c : '?';
  }
  near[n] = '\0';
  snprintf(msg, cap, "invalid JSON: syntax error at byte offset %zu near '%s'",
           pos, near);
}

/* Holds the cJSON tree while it is converted (to-be-closed, and __gc). */
#define TREE_MT "horcrux.json.tree"

typedef struct tree_box {
  cJSON *root;
} tree_box;

static int tree_free(lua_State *L) {
  tree_box *b = lua_touserdata(L, 1);
  if (b != NULL && b->root != NULL) {
    cJSON_Delete(b->root);
    b->root = NULL;
  }
  return 0;
}

static tree_box *push_tree_box(lua_State *L) {
  tree_box *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->root = NULL;
  if (luaL_newmetatable(L, TREE_MT)) {
    lua_pushcfunction(L, tree_free);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, tree_free);
    lua_setfield(L, -2, "__close");
  }
  lua_setmetatable(L, -2);
  return b;
}

int hx_json_decode(lua_State *L, const char *buf, size_t len, int max_depth) {
  int base = lua_gettop(L), ok, nul;
  const char *end = NULL;
  size_t i = 0, bad;
  tree_box *box;
  dec d;

  max_depth = clamp_depth(max_depth);
  while (i < len && is_ws(buf[i]))
    i++;
  if (i == len) {
    lua_pushliteral(L, "invalid JSON: empty input");
    return 0;
  }
  bad = check_escapes(buf, len, &nul);
  if (bad < len) {
    lua_pushfstring(L, "invalid JSON: bad \\u escape at byte offset %I",
                    (lua_Integer)bad);
    return 0;
  }

  /* Everything that may raise before the tree exists. */
  luaL_checkstack(L, 8, "JSON decode");
  lua_pushnil(L); /* base + 1: the result goes here */
  box = push_tree_box(L);
  lua_toclose(L, base + 2);
  hx_json_push_array_mt(L); /* base + 3 */

  box->root = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
  if (box->root == NULL) {
    diagnose(buf, len, end != NULL ? (size_t)(end - buf) : 0, max_depth, d.msg,
             sizeof d.msg);
    goto fail;
  }
  while (end < buf + len && is_ws(*end))
    end++;
  if (end < buf + len) {
    snprintf(d.msg, sizeof d.msg,
             "invalid JSON: trailing garbage at byte offset %zu",
             (size_t)(end - buf));
    goto fail;
  }

  d.L = L;
  d.buf = buf;
  d.max_depth = max_depth;
  d.mt = base + 3;
  d.text_strings = nul;
  d.cur.p = buf;
  d.cur.end = buf + len;
  d.cur.nnum = d.cur.nstr = 0;
  d.nnum = d.nstr = 0;
  ok = to_lua(&d, box->root, 0);
  cJSON_Delete(box->root);
  box->root = NULL;
  if (!ok)
    goto fail;
  lua_copy(L, -1, base + 1);
  /* Close the box with lua_closeslot, not lua_settop: Lua 5.4.4's settop
   * keeps a stack pointer across the __close call, which may reallocate the
   * stack (fixed in 5.4.5; Debian 12 ships 5.4.4). */
  lua_closeslot(L, base + 2);
  lua_settop(L, base + 1);
  return 1;

fail:
  lua_closeslot(L, base + 2); /* frees any tree; see above */
  lua_settop(L, base);
  lua_pushstring(L, d.msg);
  return 0;
}

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
  int mt; /* stack index of the array metatable */
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
static int put_float(enc *e, double v, const seg *at) {
  char tmp[48], out[48], d[FLOAT_DIGITS];
  int neg, x, n = 0;
  if (!isfinite(v))
    return enc_fail(e, at, "%s", isnan(v) ? "NaN" : "infinity");
  if (v == 0)
    return signbit(v) ? PUT_LIT(e, "-0") : put_char(e, '0');
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
    n = snprintf(out, sizeof out, "%.17g", v);
    for (int i = 0; i < n; i++)
      if (!is_numchar(out[i]))
        out[i] = '.';
  }
  return put(e, out, (size_t)n);
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

static int put_escape(enc *e, unsigned char c) {
  static const char hex[] = "0123456789abcdef";
  char t[6] = {'\\', 0, '0', '0', hex[c >> 4], hex[c & 15]};
  switch (c) {
  case '"':
  case '\\':
    t[1] = (char)c;
    return put(e, t, 2);
  case '\b':
    t[1] = 'b';
    return put(e, t, 2);
  case '\f':
    t[1] = 'f';
    return put(e, t, 2);
  case '\n':
    t[1] = 'n';
    return put(e, t, 2);
  case '\r':
    t[1] = 'r';
    return put(e, t, 2);
  case '\t':
    t[1] = 't';
    return put(e, t, 2);
  default: /* other control characters */
    t[1] = 'u';
    return put(e, t, 6);
  }
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

/* t[1..n], raw; depth is the array's own. */
static int enc_array(enc *e, int t, lua_Integer n, int depth, const seg *at) {
  seg s = {at, NULL, 0, 0};
  if (!put_char(e, '['))
    return 0;
  for (lua_Integer i = 1; i <= n; i++) {
    if (i > 1 && !put_char(e, ','))
      return 0;
    if (!newline(e, depth))
      return 0;
    lua_rawgeti(e->L, t, i);
    s.index = i;
    if (!enc_value(e, lua_gettop(e->L), depth, &s))
      return 0;
    lua_pop(e->L, 1);
  }
  if (n > 0 && !newline(e, depth - 1))
    return 0;
  return put_char(e, ']');
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
  seg s = {at, NULL, 0, 0};
  lua_Integer want = 1;
  if (!put_char(e, '['))
    return 0;
  do {
    if (!lua_isinteger(L, -2) || lua_tointeger(L, -2) != want) {
      lua_pop(L, 2);
      e->b->n = start;
      return enc_checked_array(e, t, depth, at);
    }
    if (want > 1 && !put_char(e, ','))
      return 0;
    if (!newline(e, depth))
      return 0;
    s.index = want++;
    if (!enc_value(e, lua_gettop(L), depth, &s))
      return 0;
    lua_pop(L, 1);
  } while (lua_next(L, t));
  if (!newline(e, depth - 1))
    return 0;
  return put_char(e, ']');
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
    if (!first && !put_char(e, ','))
      return 0;
    first = 0;
    if (!newline(e, depth) || !put_string(e, s.key, s.klen))
      return 0;
    if (!(e->pretty ? PUT_LIT(e, ": ") : put_char(e, ':')))
      return 0;
    if (!enc_value(e, lua_gettop(L), depth, &s))
      return 0;
    lua_pop(L, 1);
  } while (lua_next(L, t));
  if (!newline(e, depth - 1))
    return 0;
  return put_char(e, '}');
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
  int *idx = malloc(2 * (size_t)n * sizeof *idx);
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
    ok = (i == 0 || put_char(e, ',')) && newline(e, depth) &&
         put_string(e, s.key, s.klen) &&
         (e->pretty ? PUT_LIT(e, ": ") : put_char(e, ':')) &&
         enc_value(e, idx[i] + 1, depth, &s);
  }
  free(idx);
  if (!ok || !newline(e, depth - 1) || !put_char(e, '}'))
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
    int tagged = lua_rawequal(L, -1, e->mt);
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
  hx_json_push_array_mt(L);
  e.L = L;
  e.mt = base + 1;
  e.max_depth = clamp_depth(max_depth);
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
