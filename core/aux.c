/* aux.c - helpers shared by every horcrux C module (see aux.h). */
#include "aux.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int hx_fail(lua_State *L, const char *kind, const char *fmt, ...) {
  va_list ap;
  luaL_checkstack(L, 3, "hx_fail");
  lua_pushnil(L);
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_pushstring(L, kind);
  return 3;
}

int hx_fail_errno(lua_State *L, const char *kind, const char *what, int err) {
  return hx_fail(L, kind, "%s: %s", what, strerror(err));
}

/* Pushes t[field] of the option table at idx, or nil when there is none. */
static int opt_field(lua_State *L, int idx, const char *field) {
  if (lua_isnoneornil(L, idx)) {
    lua_pushnil(L);
    return LUA_TNIL;
  }
  luaL_checktype(L, idx, LUA_TTABLE);
  return lua_getfield(L, idx, field);
}

static void opt_type_error(lua_State *L, const char *field, const char *want) {
  luaL_error(L, "option '%s': %s expected, got %s", field, want,
             luaL_typename(L, -1));
}

lua_Integer hx_opt_integer(lua_State *L, int idx, const char *field,
                           lua_Integer def) {
  idx = lua_absindex(L, idx);
  int t = opt_field(L, idx, field);
  lua_Integer v = def;
  if (t != LUA_TNIL) {
    int ok;
    v = lua_tointegerx(L, -1, &ok);
    if (!ok)
      opt_type_error(L, field, "integer");
  }
  lua_pop(L, 1);
  return v;
}

lua_Number hx_opt_number(lua_State *L, int idx, const char *field,
                         lua_Number def) {
  idx = lua_absindex(L, idx);
  int t = opt_field(L, idx, field);
  lua_Number v = def;
  if (t != LUA_TNIL) {
    int ok;
    v = lua_tonumberx(L, -1, &ok);
    if (!ok)
      opt_type_error(L, field, "number");
  }
  lua_pop(L, 1);
  return v;
}

int hx_opt_boolean(lua_State *L, int idx, const char *field, int def) {
  idx = lua_absindex(L, idx);
  int t = opt_field(L, idx, field);
  int v = def;
  if (t != LUA_TNIL) {
    if (t != LUA_TBOOLEAN)
      opt_type_error(L, field, "boolean");
    v = lua_toboolean(L, -1);
  }
  lua_pop(L, 1);
  return v;
}

const char *hx_opt_string(lua_State *L, int idx, const char *field,
                          const char *def) {
  idx = lua_absindex(L, idx);
  int t = opt_field(L, idx, field);
  const char *v = def;
  if (t != LUA_TNIL) {
    if (t != LUA_TSTRING)
      opt_type_error(L, field, "string");
    v = lua_tostring(L, -1);
  }
  /* The string stays reachable from the option table, so popping is safe. */
  lua_pop(L, 1);
  return v;
}

static int64_t clock_ns(clockid_t id) {
  struct timespec ts;
  if (clock_gettime(id, &ts) != 0)
    return 0;
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t hx_mono_ns(void) { return clock_ns(CLOCK_MONOTONIC); }

int64_t hx_real_ns(void) { return clock_ns(CLOCK_REALTIME); }

uint32_t hx_fnv1a(const char *s, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++)
    h = (h ^ (unsigned char)s[i]) * 16777619u;
  return h;
}

int hx_hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

int hx_is_lower_hex(const char *s, size_t n) {
  if (n == 0)
    return 0;
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
      return 0;
  return 1;
}

void hx_set_consts(lua_State *L, const hx_const *c) {
  for (; c->name != NULL; c++) {
    lua_pushinteger(L, c->value);
    lua_setfield(L, -2, c->name);
  }
}

int hx_shortest(char *buf, size_t cap, double v) {
  int n = 0;
  for (int prec = 15; prec <= 17; prec++) {
    n = snprintf(buf, cap, "%.*g", prec, v);
    if (strtod(buf, NULL) == v)
      break;
  }
  return n;
}
