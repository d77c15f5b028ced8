/*
 * cors.h - --cors ORIGIN: the pages served from elsewhere that may read and
 * drive the API from a browser (Cross-Origin Resource Sharing).
 *
 * Without --cors nothing changes: no CORS header is sent, a browser keeps
 * every other origin's page from reading an answer. With it:
 *
 * - every answer of a route, a stream or a refusal of the host carries
 *   `Vary: Origin`, and, when the request's Origin is one of the list,
 *   `Access-Control-Allow-Origin: <that origin>` (never `*`) and the
 *   headers a page may read (X-Request-Id, ...). No
 *   Access-Control-Allow-Credentials: the page sends the token in
 *   Authorization, never a cookie;
 * - a preflight (OPTIONS with Origin and Access-Control-Request-Method)
 *   is answered by the host after the Host check and before the token
 *   rule (a browser never sends Authorization on a preflight): 204 with
 *   the methods (GET and HEAD only in --read-only mode), the request
 *   headers Authorization, Content-Type, Accept, Last-Event-ID, and
 *   Access-Control-Max-Age: 600; for an origin not on the list, 403.
 *
 * WebSocket, which CORS does not cover (a browser opens one to any
 * server and lets the page read it): an upgrade whose Origin is neither
 * the server's own (the Host it was sent to) nor on the list is refused
 * 403, with or without --cors, so no page of another site reads the
 * streams of a server that answers reads without the token (loopback).
 *
 * The list is set once at start, before any thread serves.
 */
#ifndef HORCRUX_CORS_H
#define HORCRUX_CORS_H

#include <microhttpd.h>
#include <stddef.h>

/* NULL when s is an origin as a browser sends it: "http" or "https",
 * "://", a lower-case host name, IPv4 or [IPv6] address, an optional
 * non-default port, nothing after; else why not. */
const char *hx_cors_invalid(const char *s);

/* The list (pointers kept; they must outlive the server). */
void hx_cors_configure(const char *const *origins, size_t n);

/* Adds Vary and, for a listed Origin of conn's request, the
 * Access-Control-* headers to r. Nothing without --cors. */
void hx_cors_headers(struct MHD_Response *r, struct MHD_Connection *conn);

/* Whether the request is a CORS preflight the host answers (--cors given,
 * OPTIONS with Origin and Access-Control-Request-Method). */
int hx_cors_is_preflight(struct MHD_Connection *conn, const char *method);

/* The preflight's answer: queues 204 with the Access-Control-* headers and
 * returns 1, or returns 0 when the origin is not listed (the caller
 * refuses it). *status gets the status queued. */
int hx_cors_preflight(struct MHD_Connection *conn, const char *request_id,
                      int read_only, enum MHD_Result *ret, int *status);

/* NULL when the request is no WebSocket upgrade, or its Origin is absent,
 * the server's own or listed; else the message of a 403. */
const char *hx_cors_ws_refusal(struct MHD_Connection *conn);

#endif
