/*
 * kinds.h - the error kinds, their HTTP statuses and the error answer's
 * shape, defined once for the C host and for Lua (horcrux.errors).
 *
 * A failure of the world is `nil, message, kind` in Lua (STYLE.md); when it
 * reaches a client it is answered with the status of its kind and the body
 *   {"error":{"code":KIND,"message":MESSAGE[,...]}}
 * Every kind a module returns is in this table; a kind that is not (a typo,
 * an operator's own word) is answered 500.
 */
#ifndef HORCRUX_KINDS_H
#define HORCRUX_KINDS_H

#include <stddef.h>

typedef struct hx_kind {
  const char *kind;
  int status;
  const char *meaning; /* for the README and `errors.KINDS` readers */
} hx_kind;

/* The table, ending with {NULL, 0, NULL}. */
extern const hx_kind hx_kinds[];

/* The HTTP status of kind (500 when kind is NULL or not in the table). */
int hx_kind_status(const char *kind);

/* Writes the error answer of kind and message (JSON-escaped, keys in byte
 * order, as format.lua's sort_keys writes them) into out[0..cap), with
 * "request_id" when request_id is not NULL. Returns the length, or 0 when
 * it does not fit (out then holds a shorter, still valid answer only if
 * cap allows; callers size out for their own fixed messages). */
size_t hx_error_json(char *out, size_t cap, const char *kind,
                     const char *message, const char *request_id);

#endif
