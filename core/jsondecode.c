/*
 * jsondecode.c - JSON text to Lua values (see jsonconv.h), shared by
 * horcrux.json and horcrux.docker; jsonencode.c goes the other way.
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

int hx_json_clamp_depth(int d) {
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

  max_depth = hx_json_clamp_depth(max_depth);
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
