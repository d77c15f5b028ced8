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
  /* a fed subscriber's message takes more lines while it waits at the end
   * of its queue (hx_sub_push_framed): the room of its two regions; 0: a
   * message that never changes */
  size_t data_cap, sse_cap;
  char buf[];
} hx_msg;

void hx_msg_unref(hx_msg *m);

/* How a subscriber is served: the host (core/stream.c) says so in its
 * spec before subscribing; GET /metrics counts subscribers by it. */
enum hx_via { HX_VIA_OTHER, HX_VIA_SSE, HX_VIA_NDJSON, HX_VIA_WEBSOCKET };

/* Where a log follow reaches the daemon: a client's settings, interned by
 * the hub (a process has a few) and never freed, so a stream spec may
 * point to one after the Lua state that made it is gone. */
typedef struct hx_endpoint {
  const char *sock;            /* unix socket path, or NULL */
  const char *base;            /* "http://localhost", "https://h:2376" */
  const char *ca, *cert, *key; /* TLS files, or NULL */
  long connect_timeout_ms;
} hx_endpoint;

/* What a route asks for: hub.stream{topic =, interval =, last_id =}, or
 * hub.follow{} (a log follow: ep is set; its subscriber, on topic
 * "logs/<id>", is fed by a transfer of its own, core/follow.c). With
 * exec = {id =, socket =, api = [, rows =, cols =]}: no topic is read; the
 * WebSocket carries the bytes of that exec (created with Tty), started by
 * the host over the daemon's unix socket (core/stream.c, "exec"), its TTY
 * rows x cols once started when both are given. */
typedef struct hx_stream_spec {
  int64_t interval_ns; /* 0: every message */
  long long last_id;   /* resume after this id; -1: live only */
  char topic[HX_TOPIC_MAX];
  int via;                 /* enum hx_via: set by the host, not by the route */
  const hx_endpoint *ep;   /* a log follow's daemon, or NULL */
  int tty, timestamps;     /* a log follow's stream */
  char path[HX_TOPIC_MAX]; /* its request: path and query */
  char exec[72];           /* the exec's id (64 hex: every URL built from
                            * it relies on that), or "" */
  char exec_sock[108];     /* the daemon's unix socket */
  char exec_api[16];       /* "1.41", or "": unversioned */
  unsigned exec_rows, exec_cols; /* the TTY's first size; 0: none */
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

/* The consumer will call hx_sub_next again by itself (it has bytes to
 * write): s is no longer armed, no wake comes. */
void hx_sub_disarm(hx_sub *s);

/* Unsubscribes s and frees it (its queued messages dropped) once its
 * producer, if it has one, has let it go too. */
void hx_sub_close(hx_sub *s);

/* A subscriber fed by one producer of its own (a log follow's transfer)
 * rather than by publishers of its topic: as hx_hub_subscribe, and the
 * producer holds a reference it gives back with hx_sub_release. When the
 * consumer closes it, closed(producer id) is called (not under the hub's
 * lock) so that the producer stops; hx_sub_set_producer sets the id. */
typedef void (*hx_closed_fn)(unsigned long long producer);
hx_sub *hx_hub_subscribe_fed(const hx_stream_spec *spec, hx_wake_fn wake,
                             void *ud, hx_closed_fn closed);
void hx_sub_set_producer(hx_sub *s, unsigned long long id);
void hx_sub_release(hx_sub *s);

/* The producer's message for s alone: data[0..len) under event (a JSON
 * payload); final: the last one (`end`). Queued as a publish would be: a
 * full queue ends s with `overflow`. Returns 0 while s takes more, -1 once
 * it has ended (overflow, closed by its consumer, the server stopping). */
int hx_sub_push(hx_sub *s, const char *event, const char *data, size_t len,
                int final);

/* One event of a fed subscriber, framed by its producer: data its payload
 * (one line of JSON), sse its SSE frame. While the reader has not taken
 * the last message queued, events join it (up to 256 KiB: then one more
 * message), so a burst of lines is not a burst of queue slots; such a
 * message's data is its payloads as JSON lines (NDJSON, and one WebSocket
 * text message). Returns as hx_sub_push. */
int hx_sub_push_framed(hx_sub *s, const char *data, size_t len, const char *sse,
                       size_t sse_len);

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

/* The host's count of log follows' transfers under way (hx_follow_count),
 * read by hub.follows() for GET /metrics. */
void hx_hub_count_follows(int (*count)(void));

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

/* hub_demux.c: sets hub.demux in the module table on top of L's stack. */
void hx_hub_demux_open(lua_State *L);

#endif
