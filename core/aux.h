/*
 * aux.h - helpers shared by every horcrux C module.
 *
 * Error convention (STYLE.md): misuse by the caller raises; a failure of the
 * world returns `nil, message, kind`, where kind is one of the fixed words
 * below, so scripts can branch on it.
 */
#ifndef HORCRUX_AUX_H
#define HORCRUX_AUX_H

#include <lauxlib.h>
#include <lua.h>
#include <stddef.h>
#include <stdint.h>

/* The only symbols a module exports are its luaopen_ functions. */
#define HX_EXPORT __attribute__((visibility("default")))

/* The fixed error kinds, defined once. */
#define HX_UNAVAILABLE "unavailable" /* no socket, refused, permission */
#define HX_TIMEOUT "timeout"
#define HX_UNAUTHORIZED "unauthorized" /* 401 */
#define HX_FORBIDDEN "forbidden"       /* 403 */
#define HX_NOT_FOUND "not_found"
#define HX_CONFLICT "conflict"
#define HX_BAD_REQUEST "bad_request"
#define HX_SERVER "server"     /* the daemon answered 5xx */
#define HX_PROTOCOL "protocol" /* bad or truncated JSON, unexpected reply */
#define HX_IO "io"             /* a file could not be read */
#define HX_LIMIT "limit"       /* a size or output cap was hit */

/* Pushes nil, a formatted message and kind; returns 3 for `return hx_fail()`.
 * The format is lua_pushfstring's, not printf's: only %s %d %I %f %p %c %U
 * and %% (so no printf format attribute: the compiler would accept %zu,
 * which Lua rejects at run time). */
int hx_fail(lua_State *L, const char *kind, const char *fmt, ...);

/* Pushes the pending hx_fail-style triple from errno: "<what>: strerror". */
int hx_fail_errno(lua_State *L, const char *kind, const char *what, int err);

/* Option tables: fields of the table at idx (which may be none or nil).
 * A field of the wrong type raises, naming the field. */
lua_Integer hx_opt_integer(lua_State *L, int idx, const char *field,
                           lua_Integer def);
lua_Number hx_opt_number(lua_State *L, int idx, const char *field,
                         lua_Number def);
int hx_opt_boolean(lua_State *L, int idx, const char *field, int def);
/* The returned string lives as long as the option table does. */
const char *hx_opt_string(lua_State *L, int idx, const char *field,
                          const char *def);

/* CLOCK_MONOTONIC and CLOCK_REALTIME in ns. */
int64_t hx_mono_ns(void);
int64_t hx_real_ns(void);

/* FNV-1a of s[0..n): the stores' bucket hash. */
uint32_t hx_fnv1a(const char *s, size_t n);

/* The value of a hex digit (either case), or -1. */
int hx_hexval(char c);

/* True when s[0..n) is one or more lowercase hex digits: Docker's ids. */
int hx_is_lower_hex(const char *s, size_t n);

/* Sets t[name] = f for each entry of a luaL_Reg-like list of integer
 * constants at the table on top of the stack. */
typedef struct hx_const {
  const char *name;
  lua_Integer value;
} hx_const;
void hx_set_consts(lua_State *L, const hx_const *c);

/* The shortest %g text (15 to 17 digits) that reads back as v: what
 * Prometheus and people read. Returns its length (snprintf's). */
int hx_shortest(char *buf, size_t cap, double v);

#endif
