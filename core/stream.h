/*
 * stream.h - the host's side of the hub's streams: a route returned a
 * hub.stream{} object, and its connection becomes a subscriber.
 *
 * Server-Sent Events (or NDJSON, for Accept: application/x-ndjson) go out
 * through an MHD callback response whose reader takes the subscriber's
 * messages and suspends the connection when there are none; the hub's
 * wake resumes it. WebSocket (an Upgrade request) goes through MHD's
 * upgrade support to one thread of our own that frames with libwslay. A
 * stream holds no Lua state and no worker thread: only its queue, its
 * connection's buffers and a small struct.
 */
#ifndef HORCRUX_STREAM_H
#define HORCRUX_STREAM_H

#include "hub.h"

#include <microhttpd.h>

/* Answers conn with spec's stream; *status gets the HTTP status queued.
 * `id` is the request id (X-Request-Id); `head`: a HEAD request (headers
 * only). On a refusal (the hub closing, a bad upgrade) an error answer is
 * queued instead. */
enum MHD_Result hx_stream_respond(struct MHD_Connection *conn, const char *id,
                                  const hx_stream_spec *spec, int head,
                                  int *status);

/* Whether the request asks for a WebSocket (Upgrade: websocket,
 * Connection: upgrade). */
int hx_stream_wants_websocket(struct MHD_Connection *conn);

/* The WebSocket thread: started with the server, stopped after
 * hx_hub_close_all() once every WebSocket has sent its last message (or
 * after `grace` seconds). 0 on success. */
int hx_ws_start(void);
void hx_ws_stop(unsigned grace);

/* How many WebSocket connections are open. */
int hx_ws_count(void);

#endif
