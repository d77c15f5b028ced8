/*
 * hub.h - the process-wide publish/subscribe hub behind the streams
 * (horcrux.hub in Lua; core/stream.c serves its subscribers over HTTP).
 *
 * A topic is a name ("stats", "events", "stats/<id>"). A message is an
 * immutable, reference-counted byte string encoded once: its JSON payload
 * and, beside it, its whole Server-Sent Events frame, so every subscriber is
 * handed the same bytes. A topic may keep a ring of its last messages, each
 * with an id one more than the previous one ("events"): a subscriber may
 * start after a given id and read the ring before the live messages.
 *
 * A subscriber is a bounded queue of message references (of a ring topic:
 * a cursor into the ring). Publishing never blocks and never waits for a
 * subscriber: a queue that is full (a cursor the ring overwrote) takes one
 * final `overflow` message and ends. The consumer takes messages with
 * hx_sub_next(); when there are none it is "armed", and the next message
 * (from any thread) calls its wake function once.
 */
#ifndef HORCRUX_HUB_H
#define HORCRUX_HUB_H

#include <lua.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define HX_TOPIC_MAX 256

enum hx_msg_kind {
  HX_MSG_DATA,      /* a message of the topic */
  HX_MSG_FINAL,     /* overflow, gap-less end, shutdown: the last one */
  HX_MSG_KEEPALIVE, /* nothing to say: SSE comment, WebSocket ping */
};

typedef struct hx_msg {
  atomic_int refs;
  int kind;         /* enum hx_msg_kind */
  long long id;     /* the ring's id, or 0 */
  const char *data; /* the payload (JSON), NUL-terminated */
  size_t len;
  const char *sse; /* the whole SSE frame, ending in a blank line */
  size_t sse_len;
  char buf[];
} hx_msg;

void hx_msg_unref(hx_msg *m);

/* How a subscriber is served: the host (core/stream.c) says so in its
 * spec before subscribing; GET /metrics counts subscribers by it. */
enum hx_via { HX_VIA_OTHER, HX_VIA_SSE, HX_VIA_NDJSON, HX_VIA_WEBSOCKET };

/* What a route asks for: hub.stream{topic =, interval =, last_id =}.
 * With exec = {id =, socket =, api =}: no topic is read; the WebSocket
 * carries the bytes of that exec (created with Tty), started by the host
 * over the daemon's unix socket (core/stream.c, "exec"). */
typedef struct hx_stream_spec {
  int64_t interval_ns; /* 0: every message */
  long long last_id;   /* resume after this id; -1: live only */
  char topic[HX_TOPIC_MAX];
  int via;             /* enum hx_via: set by the host, not by the route */
  char exec[72];       /* the exec's id, or "" */
  char exec_sock[108]; /* the daemon's unix socket */
  char exec_api[16];   /* "1.41", or "": unversioned */
} hx_stream_spec;

/* The stream object at idx (a hub.stream{} userdata), or NULL. */
const hx_stream_spec *hx_stream_test(lua_State *L, int idx);

typedef struct hx_sub hx_sub;
typedef void (*hx_wake_fn)(void *ud);

/* A new subscriber of spec's topic, or NULL when the hub is closing (or
 * out of memory). wake(ud) is called (under the hub's lock: it must only
 * signal) when a message arrives while the subscriber is armed. */
hx_sub *hx_hub_subscribe(const hx_stream_spec *spec, hx_wake_fn wake, void *ud);

enum { HX_SUB_MSG, HX_SUB_EMPTY, HX_SUB_END };

/* HX_SUB_MSG with *m (a reference the caller unrefs); HX_SUB_EMPTY: none
 * now, the subscriber is armed; HX_SUB_END: the final message was taken. */
int hx_sub_next(hx_sub *s, hx_msg **m);

/* Unsubscribes and frees s (its queued messages dropped). */
void hx_sub_close(hx_sub *s);

/* Every subscriber gets a final `close` message (reason) and ends; new
 * subscriptions are refused from now on. */
void hx_hub_close_all(const char *reason);

/* For publishers in C (horcrux.docker's relay, on the executor thread):
 * data[0..len) to every subscriber of topic, as hub.publish does for a
 * topic without a ring; `final`: as their last message (HX_MSG_FINAL),
 * after which each ends. Returns how many subscribers it reached; 0, and
 * nothing allocated, when there are none. Never blocks. */
int hx_hub_publish(const char *topic, const char *event, const char *data,
                   size_t len, int final);

/* How many subscribers topic has now. */
unsigned hx_hub_subscribers(const char *topic);

/* The bounds: messages and bytes per subscriber queue, and the size of the
 * events ring. 0 keeps a value. */
void hx_hub_configure(unsigned queue, size_t bytes, unsigned events_ring);

/* Parses an event id (Last-Event-ID: decimal digits, at most 18) into *id;
 * 0 when it is one, -1 otherwise. */
int hx_parse_event_id(const char *s, size_t n, long long *id);

/* The SSE frame of a message: writes at most cap bytes of it to out and
 * returns its full length (test and fuzz entry). */
size_t hx_sse_frame(char *out, size_t cap, long long id, const char *event,
                    const char *data, size_t len);

#endif
