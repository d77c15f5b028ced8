/*
 * wsproto.h - the header lists of a WebSocket upgrade, and the token in
 * its protocols.
 */
#ifndef HX_WSPROTO_H
#define HX_WSPROTO_H

#include <stddef.h>

/* A browser's WebSocket cannot send Authorization, only the protocols it
 * offers (Sec-WebSocket-Protocol, a comma-separated list). A page offers
 * "horcrux" and "horcrux.bearer.<the token, base64url, no padding>"; the
 * server selects "horcrux" and never echoes the other. */
#define HX_WS_PROTOCOL "horcrux"
#define HX_WS_BEARER_PREFIX "horcrux.bearer."

/* Whether a comma-separated header value (NULL: none) holds name as one of
 * its elements (blanks around each ignored): exactly, or in any case when
 * any_case (Upgrade, Connection; protocols are case-sensitive). */
int hx_list_has(const char *list, const char *name, int any_case);

/* The token a list carries, as an Authorization value "Bearer <token>"
 * written to out (size bytes, NUL-terminated). Returns 1 when found, 0
 * when the list holds no horcrux.bearer. element, -1 when it holds one that
 * is not base64url of a token (empty, a bad character, a NUL byte, or
 * longer than out takes). */
int hx_ws_bearer(const char *list, char *out, size_t size);

#endif
