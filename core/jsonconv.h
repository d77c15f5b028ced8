/*
 * jsonconv.h - JSON <-> Lua values, shared by horcrux.json and the modules
 * that decode JSON themselves (horcrux.docker): decoding in jsondecode.c,
 * encoding in jsonencode.c.
 *
 * Shapes (as lua-cjson): objects are tables; arrays are sequences whose
 * metatable is the shared array metatable, so `[]` survives a round trip;
 * null is the light userdata NULL (json.null), the same value in every
 * module and state. Integral numbers that fit in a lua_Integer come out as
 * integers.
 */
#ifndef HORCRUX_JSONCONV_H
#define HORCRUX_JSONCONV_H

#include <lua.h>
#include <stddef.h>

/* Registry name of the metatable that marks a table as a JSON array. */
#define HX_JSON_ARRAY_MT "horcrux.json.array"
#define HX_JSON_DEFAULT_DEPTH 128

/* Decodes buf[0..len) (need not be NUL-terminated). On success pushes the
 * value and returns 1; on failure pushes an error message and returns 0.
 * Never leaks the parse tree, even if Lua raises a memory error. */
int hx_json_decode(lua_State *L, const char *buf, size_t len, int max_depth);

/* Flags of hx_json_encode. */
#define HX_JSON_PRETTY 1    /* indented, one member per line */
#define HX_JSON_SORT_KEYS 2 /* object keys in byte order: stable output */

/* Encodes the value at idx. On success pushes the JSON text and returns 1;
 * on failure (cycle/too deep, NaN, a function, mixed keys) pushes an error
 * message and returns 0. */
int hx_json_encode(lua_State *L, int idx, int max_depth, int flags);

/* max_depth as the parser and the encoder take it: the default for 0 or
 * less, at most cJSON's own nesting limit. */
int hx_json_clamp_depth(int max_depth);

/* Pushes json.null. */
void hx_json_push_null(lua_State *L);

/* Pushes the array metatable, creating it once per state. */
void hx_json_push_array_mt(lua_State *L);

/* Writes s[0..n) as a JSON string (quotes included) to out, which has room
 * for 6 * n + 2 bytes; returns the length. As hx_json_encode writes a
 * string: well-formed UTF-8 as it is, each other byte >= 0x80 as \ufffd. */
size_t hx_json_quote(char *out, const char *s, size_t n);

/* Writes the finite v to out (room for 48 bytes, NUL-terminated) as
 * hx_json_encode writes a float: the shortest of 15, 16 and 17 significant
 * digits that reads back the same, in %g's layout. Returns the length; 0
 * (nothing written) for NaN and the infinities. */
size_t hx_json_format_double(char *out, double v);

#endif
