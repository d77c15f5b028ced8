/*
 * stream.c - a route's hub.stream{} answered on its connection (stream.h).
 *
 * SSE and NDJSON. The response is an MHD callback response of unknown size
 * (chunked). Its reader copies the subscriber's messages into MHD's buffer,
 * a message at a time (a large one over several calls); with nothing queued
 * it suspends the connection and returns 0, and the hub's wake resumes it
 * (a wake that comes before the suspend cancels it: MHD then calls the
 * reader again at once). Its free callback, run when MHD is done with the
 * response, unsubscribes.
 *
 * WebSocket. MHD answers 101 and hands us the socket; one thread of ours
 * (epoll: the sockets and an eventfd the hub's wake writes) frames each
 * message as a text frame with libwslay, answers pings and the close
 * handshake, and hands the socket back to MHD (MHD_UPGRADE_ACTION_CLOSE)
 * when the stream ends.
 *
 * The fan-out's pace. A round wakes every SSE subscriber at once; resumed
 * together, a thousand of them made each MHD worker write for tens of
 * milliseconds in one go (and MHD scans its whole suspended list for each
 * wake it sees), while a /healthz on that worker waited behind them. So a
 * wake only queues its connection (the `pace` list; the first one kicks
 * the WebSocket thread), and that thread resumes them PACE_SLICE at a time,
 * one slice a millisecond: each worker's loop then writes a slice and
 * serves whatever else came between two. A connection on the list is
 * always suspended (a reader that returns bytes disarms its subscriber:
 * only a suspended one is armed), so MHD cannot free it before its resume.
 *
 * Kernel buffers are part of a subscriber's cost: a stream's socket gets a
 * send buffer of SNDBUF bytes (Linux's autotuning would let a slow reader
 * hold megabytes there before its queue ever filled).
 */
#include "stream.h"

#include "aux.h"
#include "cors.h"
#include "exec_resize.h"
#include "follow.h"
#include "server.h"
#include "winsize.h"
#include "wsproto.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>
#include <wslay/wslay.h>

#define SNDBUF (64 * 1024)
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define CLOSE_WAIT_NS (2LL * 1000000000) /* for the client's close */
#define SSE_FIRST "retry: 2000\n\n"      /* EventSource's reconnect delay */

enum format { SSE, NDJSON };

/* The subscriber of spec for a consumer: a topic's, or a log follow's
 * (fed by its own transfer). Either is closed with hx_sub_close. */
static hx_sub *subscribe(const hx_stream_spec *spec, hx_wake_fn wake,
                         void *ud) {
  if (spec->ep != NULL)
    return hx_follow_open(spec, wake, ud);
  return hx_hub_subscribe(spec, wake, ud);
}

/* ---- SSE and NDJSON ---------------------------------------------------- */

typedef struct sse_conn {
  hx_sub *sub;
  struct sse_conn *pace_next; /* on pace.list */
  int paced;                  /* on pace.list */
  struct MHD_Connection *conn;
  int format;
  hx_msg *cur; /* the message being written, from byte off */
  size_t off;
  size_t first; /* bytes of SSE_FIRST written */
} sse_conn;

#define PACE_SLICE 64

static struct {
  pthread_mutex_t mu; /* under the hub's lock (wake), never the reverse */
  sse_conn *head, *tail;
  int on; /* the WebSocket thread paces; else resume at once */
} pace = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void kick(void);

static void sse_wake(void *ud) {
  sse_conn *c = ud;
  pthread_mutex_lock(&pace.mu);
  if (!pace.on) {
    pthread_mutex_unlock(&pace.mu);
    MHD_resume_connection(c->conn);
    return;
  }
  int first = pace.head == NULL;
  if (!c->paced) {
    c->paced = 1;
    c->pace_next = NULL;
    if (pace.tail != NULL)
      pace.tail->pace_next = c;
    else
      pace.head = c;
    pace.tail = c;
  }
  pthread_mutex_unlock(&pace.mu);
  if (first)
    kick();
}

/* Resumes up to max paced connections (all: max < 0); returns how many are
 * left. The connections are suspended: taken off the list, they stay
 * valid until their resume. */
static int pace_step(int max) {
  sse_conn *got[PACE_SLICE];
  int n = 0, left;
  do {
    pthread_mutex_lock(&pace.mu);
    n = 0;
    while (pace.head != NULL && n < PACE_SLICE) {
      sse_conn *c = pace.head;
      pace.head = c->pace_next;
      c->paced = 0;
      got[n++] = c;
    }
    if (pace.head == NULL)
      pace.tail = NULL;
    left = pace.head != NULL;
    pthread_mutex_unlock(&pace.mu);
    for (int i = 0; i < n; i++)
      MHD_resume_connection(got[i]->conn);
  } while (max < 0 && left);
  return left;
}

/* The bytes of m for format: SSE its frame; NDJSON its data and a newline
 * (a keep-alive: nothing). *nl: a newline follows the bytes. */
static const char *bytes_of(const hx_msg *m, int format, size_t *len, int *nl) {
  *nl = 0;
  if (format == SSE) {
    *len = m->sse_len;
    return m->sse;
  }
  if (m->kind == HX_MSG_KEEPALIVE) {
    *len = 0;
    return "";
  }
  *len = m->len;
  *nl = 1;
  return m->data;
}

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max) {
  (void)pos;
  sse_conn *c = cls;
  size_t n = 0;
  if (c->format == SSE && c->first < sizeof SSE_FIRST - 1) {
    size_t k = sizeof SSE_FIRST - 1 - c->first;
    k = k < max ? k : max;
    memcpy(buf, SSE_FIRST + c->first, k);
    c->first += k;
    n += k;
  }
  while (n < max) {
    if (c->cur == NULL) {
      hx_msg *m;
      int r = hx_sub_next(c->sub, &m);
      if (r == HX_SUB_END)
        return n > 0 ? (ssize_t)n : MHD_CONTENT_READER_END_OF_STREAM;
      if (r == HX_SUB_EMPTY) {
        if (n > 0) { /* MHD calls again after writing these */
          hx_sub_disarm(c->sub);
          return (ssize_t)n;
        }
        MHD_suspend_connection(c->conn);
        return 0;
      }
      c->cur = m;
      c->off = 0;
    }
    int nl;
    size_t len;
    const char *src = bytes_of(c->cur, c->format, &len, &nl);
    size_t total = len + (size_t)nl;
    size_t k = total - c->off < max - n ? total - c->off : max - n;
    size_t from_src = c->off < len ? (k < len - c->off ? k : len - c->off) : 0;
    memcpy(buf + n, src + c->off, from_src);
    if (from_src < k)
      buf[n + from_src] = '\n';
    n += k;
    c->off += k;
    if (c->off == total) {
      hx_msg_unref(c->cur);
      c->cur = NULL;
    }
  }
  return (ssize_t)n;
}

static void sse_free(void *cls) {
  sse_conn *c = cls;
  hx_sub_close(c->sub);
  hx_msg_unref(c->cur);
  free(c);
}

static void small_sndbuf(struct MHD_Connection *conn) {
  const union MHD_ConnectionInfo *ci =
      MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
  int size = SNDBUF;
  if (ci != NULL)
    setsockopt(ci->connect_fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
}

static enum MHD_Result queue_error(struct MHD_Connection *conn, const char *id,
                                   int status, const char *code,
                                   const char *message, int *out) {
  char body[512];
  int n = snprintf(body, sizeof body,
                   "{\"error\":{\"code\":\"%s\",\"message\":\"%s\","
                   "\"request_id\":\"%s\"}}",
                   code, message, id);
  struct MHD_Response *r =
      MHD_create_response_from_buffer((size_t)n, body, MHD_RESPMEM_MUST_COPY);
  if (r == NULL)
    return MHD_NO;
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
  MHD_add_response_header(r, "X-Request-Id", id);
  hx_cors_headers(r, conn);
  *out = status;
  enum MHD_Result ret = MHD_queue_response(conn, (unsigned)status, r);
  MHD_destroy_response(r);
  return ret;
}

static int accepts_ndjson(struct MHD_Connection *conn) {
  const char *a = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                              MHD_HTTP_HEADER_ACCEPT);
  return a != NULL && strstr(a, "application/x-ndjson") != NULL;
}

static enum MHD_Result sse_respond(struct MHD_Connection *conn, const char *id,
                                   const hx_stream_spec *spec, int head,
                                   int *status) {
  int format = accepts_ndjson(conn) ? NDJSON : SSE;
  const char *ctype = format == SSE ? "text/event-stream; charset=utf-8"
                                    : "application/x-ndjson";
  struct MHD_Response *r;
  if (head) {
    r = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
  } else {
    sse_conn *c = calloc(1, sizeof *c);
    if (c == NULL)
      return MHD_NO;
    c->conn = conn;
    c->format = format;
    hx_stream_spec sp = *spec; /* the transport, for GET /metrics */
    sp.via = format == SSE ? HX_VIA_SSE : HX_VIA_NDJSON;
    c->sub = subscribe(&sp, sse_wake, c);
    if (c->sub == NULL) {
      free(c);
      return queue_error(conn, id, 503, "unavailable", "the server is stopping",
                         status);
    }
    r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, sse_read,
                                          c, sse_free);
    if (r == NULL) {
      sse_free(c);
      return MHD_NO;
    }
    small_sndbuf(conn);
  }
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
  MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
  MHD_add_response_header(r, "X-Accel-Buffering", "no");
  MHD_add_response_header(r, "X-Request-Id", id);
  hx_cors_headers(r, conn);
  *status = 200;
  enum MHD_Result ret = MHD_queue_response(conn, 200, r);
  MHD_destroy_response(r);
  return ret;
}

/* ---- WebSocket ----------------------------------------------------------
 *
 * The thread's lock (ws.mu) guards the list of connections to pump (the
 * hub's wake adds to it, under the hub's lock: the order is always hub,
 * then ws.mu) and the count. Everything else of a connection is touched by
 * the thread only, once the upgrade handler has handed it over. */

typedef struct ws_conn {
  int fd;
  struct MHD_UpgradeResponseHandle *urh;
  wslay_event_context_ptr ctx;
  hx_sub *sub;
  hx_stream_spec spec;
  struct ws_conn *ready_next;
  struct ws_conn *all_next, *all_prev; /* ws.all */
  int ready;                           /* in ws.ready */
  int last;                            /* the final message is taken */
  int64_t ending_ns;                   /* when the close frame was queued */
  struct ws_conn *reap_next;
  uint32_t events;
  struct ws_exec *x; /* an exec's bytes (below, "exec"), or NULL */
  int dead;          /* destroyed: freed at the end of the loop's turn */
} ws_conn;

static struct {
  pthread_mutex_t mu;
  pthread_t thread;
  int started;
  int epfd, evfd;
  atomic_int stop;
  ws_conn *ready;
  ws_conn *all; /* every open one: closed at the stop */
  atomic_int count;
  ws_conn *graves;     /* destroyed this turn (the thread's only) */
  atomic_int retrying; /* execs waiting to ask for their exit code again */
} ws = {.mu = PTHREAD_MUTEX_INITIALIZER, .epfd = -1, .evfd = -1};

static void kick(void) {
  uint64_t one = 1;
  ssize_t w = write(ws.evfd, &one, sizeof one);
  (void)w; /* a full counter already wakes the thread */
}

static void ws_wake(void *ud) {
  ws_conn *c = ud;
  pthread_mutex_lock(&ws.mu);
  if (!c->ready) {
    c->ready = 1;
    c->ready_next = ws.ready;
    ws.ready = c;
  }
  pthread_mutex_unlock(&ws.mu);
  kick();
}

/* The exec side (below): a connection's bytes to and from an exec. */
typedef struct ws_exec ws_exec;
static int exec_begin(ws_conn *c);
static void exec_take(ws_conn *c, const uint8_t *p, size_t n);
static int exec_pump(ws_conn *c);
static void exec_step(ws_conn *c, uint32_t ev);
static void exec_free(ws_conn *c);
static int exec_want_client(const ws_conn *c);
static void exec_retries(void);

static ssize_t ws_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
                       int flags, void *ud) {
  (void)flags;
  ws_conn *c = ud;
  ssize_t r = recv(c->fd, buf, len, 0);
  if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
    wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    return -1;
  }
  if (r <= 0) {
    wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
  }
  return r;
}

static ssize_t ws_send(wslay_event_context_ptr ctx, const uint8_t *data,
                       size_t len, int flags, void *ud) {
  (void)flags;
  ws_conn *c = ud;
  ssize_t r = send(c->fd, data, len, MSG_NOSIGNAL);
  if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
    wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    return -1;
  }
  if (r < 0) {
    wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
  }
  return r;
}

/* A stream's client's messages are not commands: pings and closes wslay
 * answers itself; anything else is ignored. An exec's client's text and
 * binary messages are its terminal's input. */
static void ws_on_msg(wslay_event_context_ptr ctx,
                      const struct wslay_event_on_msg_recv_arg *arg, void *ud) {
  (void)ctx;
  ws_conn *c = ud;
  if (c->x != NULL &&
      (arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME))
    exec_take(c, arg->msg, arg->msg_length);
}

static const struct wslay_event_callbacks ws_callbacks = {
    ws_recv, ws_send, NULL, NULL, NULL, NULL, ws_on_msg};

/* Closes c now; its memory goes at the end of the loop's turn (an event
 * of the same turn may still name it: an exec has two descriptors). */
static void ws_destroy(ws_conn *c) {
  if (c->dead)
    return;
  c->dead = 1;
  exec_free(c);
  hx_sub_close(c->sub); /* no wake after this */
  pthread_mutex_lock(&ws.mu);
  if (c->ready) {
    for (ws_conn **pp = &ws.ready; *pp != NULL; pp = &(*pp)->ready_next)
      if (*pp == c) {
        *pp = c->ready_next;
        break;
      }
  }
  if (c->all_prev != NULL)
    c->all_prev->all_next = c->all_next;
  else
    ws.all = c->all_next;
  if (c->all_next != NULL)
    c->all_next->all_prev = c->all_prev;
  pthread_mutex_unlock(&ws.mu);
  epoll_ctl(ws.epfd, EPOLL_CTL_DEL, c->fd, NULL);
  wslay_event_context_free(c->ctx);
  MHD_upgrade_action(c->urh, MHD_UPGRADE_ACTION_CLOSE);
  atomic_fetch_sub(&ws.count, 1);
  c->reap_next = ws.graves;
  ws.graves = c;
}

static void ws_bury(void) {
  while (ws.graves != NULL) {
    ws_conn *c = ws.graves;
    ws.graves = c->reap_next;
    free(c);
  }
}

/* Queues the subscriber's messages while wslay has none waiting (the hub's
 * queue is the buffer: its bound holds) and sends them; after the final
 * one, the close frame (only once the messages before it went: wslay sends
 * control frames first and nothing after a close). Returns 0 while the
 * connection lives. */
static int ws_pump(ws_conn *c) {
  if (c->spec.exec[0] != '\0' && exec_pump(c) != 0)
    return -1;
  /* the rest of a message the socket took only part of, first: the hub
   * wakes a subscriber only after hx_sub_next found its queue empty, so
   * the messages after that one are taken here once it went */
  if (wslay_event_get_queued_msg_count(c->ctx) > 0 &&
      wslay_event_send(c->ctx) != 0)
    return -1;
  while (c->spec.exec[0] == '\0' && !c->last &&
         wslay_event_get_queued_msg_count(c->ctx) == 0) {
    hx_msg *m;
    int r = hx_sub_next(c->sub, &m);
    if (r == HX_SUB_EMPTY)
      break;
    if (r == HX_SUB_END) {
      c->last = 1;
      break;
    }
    struct wslay_event_msg wm = {WSLAY_TEXT_FRAME, (const uint8_t *)m->data,
                                 m->len};
    if (m->kind == HX_MSG_KEEPALIVE)
      wm = (struct wslay_event_msg){WSLAY_PING, NULL, 0};
    c->last = m->kind == HX_MSG_FINAL;
    int rc = wslay_event_queue_msg(c->ctx, &wm); /* copies the bytes */
    hx_msg_unref(m);
    if (rc != 0 || wslay_event_send(c->ctx) != 0)
      return -1;
  }
  if (c->last && c->ending_ns == 0 &&
      wslay_event_get_queued_msg_count(c->ctx) == 0) {
    wslay_event_queue_close(c->ctx,
                            c->spec.exec[0] ? WSLAY_CODE_NORMAL_CLOSURE
                                            : WSLAY_CODE_GOING_AWAY,
                            NULL, 0);
    c->ending_ns = hx_mono_ns();
  }
  if (wslay_event_send(c->ctx) != 0)
    return -1;
  if (!wslay_event_want_read(c->ctx) && !wslay_event_want_write(c->ctx))
    return -1;
  uint32_t ev =
      (wslay_event_want_read(c->ctx) && exec_want_client(c) ? EPOLLIN : 0) |
      (wslay_event_want_write(c->ctx) ? EPOLLOUT : 0);
  if (ev != c->events) {
    struct epoll_event e = {.events = ev, .data.ptr = c};
    epoll_ctl(ws.epfd, EPOLL_CTL_MOD, c->fd, &e);
    c->events = ev;
  }
  return 0;
}

/* Connections whose close frame went CLOSE_WAIT_NS ago without the
 * client's answer: closed all the same. */
static void ws_reap(void) {
  int64_t now = hx_mono_ns();
  ws_conn *gone = NULL;
  pthread_mutex_lock(&ws.mu); /* an upgrade may add to ws.all meanwhile */
  for (ws_conn *c = ws.all; c != NULL; c = c->all_next)
    if (c->ending_ns != 0 && now - c->ending_ns > CLOSE_WAIT_NS) {
      c->reap_next = gone;
      gone = c;
    }
  pthread_mutex_unlock(&ws.mu);
  while (gone != NULL) {
    ws_conn *next = gone->reap_next;
    ws_destroy(gone);
    gone = next;
  }
}

static void ws_step(ws_conn *c, uint32_t ev) {
  if ((ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) && wslay_event_recv(c->ctx) != 0) {
    ws_destroy(c);
    return;
  }
  if (ws_pump(c) != 0)
    ws_destroy(c);
}

static void *ws_main(void *arg) {
  (void)arg;
  struct epoll_event evs[64];
  int paced = 0;
  while (!atomic_load(&ws.stop)) {
    int n = epoll_wait(ws.epfd, evs, 64,
                       paced                       ? 1
                       : atomic_load(&ws.retrying) ? 20
                                                   : 500);
    for (int i = 0; i < n; i++) {
      if (evs[i].data.ptr == NULL) {
        uint64_t v;
        ssize_t r = read(ws.evfd, &v, sizeof v);
        (void)r;
        continue;
      }
      /* an exec's daemon side is its connection's address + 1 */
      uintptr_t p = (uintptr_t)evs[i].data.ptr;
      ws_conn *c = (ws_conn *)(p & ~(uintptr_t)1);
      if (c->dead)
        continue;
      if (p & 1)
        exec_step(c, evs[i].events);
      else
        ws_step(c, evs[i].events);
    }
    /* after the eventfd was read: a wake that kicks from now on is seen by
     * the next epoll_wait */
    paced = pace_step(PACE_SLICE);
    for (;;) { /* the woken ones */
      pthread_mutex_lock(&ws.mu);
      ws_conn *c = ws.ready;
      if (c != NULL) {
        ws.ready = c->ready_next;
        c->ready = 0;
      }
      pthread_mutex_unlock(&ws.mu);
      if (c == NULL)
        break;
      ws_step(c, 0);
    }
    ws_reap();
    exec_retries();
    ws_bury();
  }
  return NULL;
}

/* Called by MHD (its worker thread) once the 101 went out. */
static void ws_upgraded(void *cls, struct MHD_Connection *conn, void *con_cls,
                        const char *extra, size_t extra_size, MHD_socket sock,
                        struct MHD_UpgradeResponseHandle *urh) {
  (void)conn, (void)con_cls, (void)extra, (void)extra_size;
  ws_conn *c = cls;
  c->fd = sock;
  c->urh = urh;
  int flags = fcntl(sock, F_GETFL);
  fcntl(sock, F_SETFL, flags | O_NONBLOCK);
  int size = SNDBUF;
  setsockopt(sock, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  atomic_fetch_add(&ws.count, 1);
  if (wslay_event_context_server_init(&c->ctx, &ws_callbacks, c) != 0) {
    c->ctx = NULL;
    atomic_fetch_sub(&ws.count, 1);
    MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
    free(c);
    return;
  }
  wslay_event_config_set_max_recv_msg_length(c->ctx, 4096);
  if (c->spec.exec[0] != '\0') {
    if (exec_begin(c) != 0)
      c->last = 1; /* exec_begin queued the error message */
  } else {
    c->sub = subscribe(&c->spec, ws_wake, c);
    if (c->sub == NULL)
      c->last = 1; /* the server is stopping: a close frame at once */
  }
  c->events = EPOLLIN;
  struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
  epoll_ctl(ws.epfd, EPOLL_CTL_ADD, sock, &e);
  pthread_mutex_lock(&ws.mu); /* the thread pumps it first */
  c->all_next = ws.all;
  if (ws.all != NULL)
    ws.all->all_prev = c;
  ws.all = c;
  c->ready = 1;
  c->ready_next = ws.ready;
  ws.ready = c;
  pthread_mutex_unlock(&ws.mu);
  kick();
}

/* Sec-WebSocket-Accept for key: base64(SHA-1(key GUID)). */
static int ws_accept(const char *key, char out[32]) {
  char buf[128];
  size_t n = strlen(key);
  if (n == 0 || n > 64)
    return -1;
  memcpy(buf, key, n);
  memcpy(buf + n, WS_GUID, sizeof WS_GUID - 1);
  unsigned char md[SHA_DIGEST_LENGTH];
  SHA1((const unsigned char *)buf, n + sizeof WS_GUID - 1, md);
  EVP_EncodeBlock((unsigned char *)out, md, SHA_DIGEST_LENGTH);
  return 0;
}

int hx_stream_wants_websocket(struct MHD_Connection *conn) {
  const char *up = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                               MHD_HTTP_HEADER_UPGRADE);
  const char *co = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                               MHD_HTTP_HEADER_CONNECTION);
  return up != NULL && hx_list_has(up, "websocket", 1) &&
         hx_list_has(co, "upgrade", 1);
}

static enum MHD_Result ws_respond(struct MHD_Connection *conn, const char *id,
                                  const hx_stream_spec *spec, int *status) {
  const char *key =
      MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Sec-WebSocket-Key");
  const char *ver = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                "Sec-WebSocket-Version");
  char accept[32];
  if (key == NULL || ver == NULL || strcmp(ver, "13") != 0 ||
      ws_accept(key, accept) != 0)
    return queue_error(conn, id, 400, "bad_request",
                       "a WebSocket upgrade needs Sec-WebSocket-Key and "
                       "Sec-WebSocket-Version: 13",
                       status);
  if (!ws.started)
    return queue_error(conn, id, 503, "unavailable",
                       "WebSocket is not available", status);
  ws_conn *c = calloc(1, sizeof *c);
  if (c == NULL)
    return MHD_NO;
  c->fd = -1;
  c->spec = *spec;
  c->spec.via = HX_VIA_WEBSOCKET;
  /* c is freed by the upgrade handler, or lost if the client goes before
   * the 101 was written (MHD has no callback for that) */
  struct MHD_Response *r = MHD_create_response_for_upgrade(ws_upgraded, c);
  if (r == NULL) {
    free(c);
    return MHD_NO;
  }
  MHD_add_response_header(r, MHD_HTTP_HEADER_UPGRADE, "websocket");
  MHD_add_response_header(r, "Sec-WebSocket-Accept", accept);
  /* a page that sent its token in its protocols (wsproto.h) */
  if (hx_list_has(MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                              "Sec-WebSocket-Protocol"),
                  HX_WS_PROTOCOL, 0))
    MHD_add_response_header(r, "Sec-WebSocket-Protocol", HX_WS_PROTOCOL);
  MHD_add_response_header(r, "X-Request-Id", id);
  *status = 101;
  enum MHD_Result ret =
      MHD_queue_response(conn, MHD_HTTP_SWITCHING_PROTOCOLS, r);
  MHD_destroy_response(r);
  return ret;
}

int hx_ws_start(void) {
  ws.epfd = epoll_create1(EPOLL_CLOEXEC);
  ws.evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (ws.epfd < 0 || ws.evfd < 0)
    return -1;
  struct epoll_event e = {.events = EPOLLIN, .data.ptr = NULL};
  if (epoll_ctl(ws.epfd, EPOLL_CTL_ADD, ws.evfd, &e) != 0)
    return -1;
  if (pthread_create(&ws.thread, NULL, ws_main, NULL) != 0)
    return -1;
  ws.started = 1;
  pthread_mutex_lock(&pace.mu);
  pace.on = 1;
  pthread_mutex_unlock(&pace.mu);
  return 0;
}

int hx_ws_count(void) { return atomic_load(&ws.count); }

void hx_ws_stop(unsigned grace) {
  hx_follow_stop(); /* every stream had its last message: no more lines */
  if (!ws.started)
    return;
  for (unsigned i = 0; i < grace * 50 && hx_ws_count() > 0; i++)
    usleep(20 * 1000);
  atomic_store(&ws.stop, 1);
  kick();
  pthread_join(ws.thread, NULL);
  ws.started = 0;
  pthread_mutex_lock(&pace.mu);
  pace.on = 0; /* later wakes resume at once */
  pthread_mutex_unlock(&pace.mu);
  pace_step(-1); /* and those waiting go now */
  if (hx_ws_count() > 0)
    hx_log("warn", "%d WebSocket streams did not close in time", hx_ws_count());
  while (ws.all != NULL) /* the thread is gone: this one may */
    ws_destroy(ws.all);
  ws_bury();
  close(ws.evfd);
  close(ws.epfd);
}

/* ---- exec ---------------------------------------------------------------
 *
 * GET /api/containers/:id/exec/ws: the route created the exec (with a TTY)
 * once policy.lua allowed it, and its hub.stream{exec = ...} brings the
 * upgraded connection here. This thread connects to the daemon's unix
 * socket itself and writes POST /exec/{id}/start with Upgrade: tcp (Docker's
 * hijacked connection); once the daemon answers 101 it pumps raw bytes:
 * the client's text and binary messages to the daemon (the terminal's
 * input), the daemon's bytes to the client as binary messages. When the
 * daemon ends the stream (the command exited), GET /exec/{id}/json on a
 * second connection (HTTP/1.0: no chunks) gives the exit code, sent as a
 * last text message {"event":"exit","exit_code":N}, then the close frame.
 * A client that goes away closes the daemon's connection with it (the
 * TTY hangs up).
 *
 * The TTY's size: the route's rows and cols (the spec's exec_rows and
 * exec_cols) once the start is answered, then each client message that is
 * exactly xterm's `ESC [ 8 ; ROWS ; COLS t` (winsize.h), set on the
 * executor (exec_resize.h); the input that follows waits for it, so that
 * the command sees the new size before its next bytes.
 *
 * Why our own socket rather than curl's CONNECT_ONLY: the bytes must be
 * pumped here, in this epoll thread, and curl would only have made the
 * connection (the HTTP exchange and its 101 would be ours all the same),
 * at the cost of an easy handle per terminal. The price: the daemon must
 * be on a unix socket (the route refuses a tcp:// DOCKER_HOST). */

#define X_IN_MAX (256 * 1024) /* client bytes the daemon has not taken */
#define X_HEAD_MAX 8192       /* the reply's head; inspect's whole reply */
#define X_QUEUED_MAX 16       /* messages for the client: stop reading */
#define X_READ 16384
#define X_TRIES 50 /* inspects, 20 ms apart, while the exec still runs */

enum { X_START, X_REFUSED, X_PUMP, X_INSPECT, X_DONE };

struct ws_exec {
  int fd;          /* the daemon's connection, or -1 */
  int state;       /* X_* */
  uint32_t events; /* what fd is registered for (0: not) */
  char req[512];   /* the request, from req_off */
  size_t req_len, req_off;
  char *in; /* the client's bytes for the daemon */
  size_t in_len, in_cap;
  char head[X_HEAD_MAX]; /* the reply so far */
  size_t head_len;
  int tries;
  int64_t retry_ns; /* when to inspect again (0: not waiting) */
  hx_resize *rs;
  unsigned rows, cols; /* the size to set once started (0: none) */
};

static void x_send_text(ws_conn *c, const char *text) {
  struct wslay_event_msg m = {WSLAY_TEXT_FRAME, (const uint8_t *)text,
                              strlen(text)};
  wslay_event_queue_msg(c->ctx, &m);
}

static void x_close_fd(ws_conn *c) {
  ws_exec *x = c->x;
  if (x->fd >= 0) {
    if (x->events != 0)
      epoll_ctl(ws.epfd, EPOLL_CTL_DEL, x->fd, NULL);
    close(x->fd);
  }
  x->fd = -1;
  x->events = 0;
}

/* The last message: {"event":"error","error":{"code","message"}}. */
static void x_fail(ws_conn *c, const char *kind, const char *message) {
  cJSON *o = cJSON_CreateObject(), *e = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "event", "error");
  cJSON_AddStringToObject(e, "code", kind);
  cJSON_AddStringToObject(e, "message", message);
  cJSON_AddItemToObject(o, "error", e);
  char *text = cJSON_PrintUnformatted(o);
  x_send_text(c, text != NULL ? text : "{\"event\":\"error\"}");
  free(text);
  cJSON_Delete(o);
  x_close_fd(c);
  c->x->state = X_DONE;
  c->last = 1;
}

static int x_connect(ws_conn *c, const char *fmt, const char *method) {
  ws_exec *x = c->x;
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  memcpy(sa.sun_path, c->spec.exec_sock, strlen(c->spec.exec_sock) + 1);
  x->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (x->fd < 0 || connect(x->fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    char msg[300];
    snprintf(msg, sizeof msg, "docker: cannot connect to %s: %s",
             c->spec.exec_sock, strerror(errno));
    x_fail(c, "unavailable", msg);
    return -1;
  }
  char ver[24] = "";
  if (c->spec.exec_api[0] != '\0')
    snprintf(ver, sizeof ver, "/v%s", c->spec.exec_api);
  int n = snprintf(x->req, sizeof x->req, fmt, method, ver, c->spec.exec);
  x->req_len = n > 0 && (size_t)n < sizeof x->req ? (size_t)n : 0;
  x->req_off = 0;
  x->head_len = 0;
  return 0;
}

#define X_START_REQ                                                            \
  "%s %s/exec/%s/start HTTP/1.1\r\nHost: docker\r\nUser-Agent: horcrux\r\n"    \
  "Content-Type: application/json\r\nConnection: Upgrade\r\n"                  \
  "Upgrade: tcp\r\nContent-Length: 27\r\n\r\n{\"Detach\":false,\"Tty\":true}"
#define X_INSPECT_REQ                                                          \
  "%s %s/exec/%s/json HTTP/1.0\r\nHost: docker\r\nUser-Agent: horcrux\r\n\r\n"

/* On the MHD thread, before the connection is this thread's: nothing is
 * registered yet (the first pump does it). */
static int exec_begin(ws_conn *c) {
  c->x = calloc(1, sizeof *c->x);
  if (c->x == NULL)
    return -1;
  c->x->fd = -1;
  c->x->state = X_START;
  c->x->rs = hx_resize_open(c->spec.exec_sock, c->spec.exec_api, c->spec.exec,
                            ws_wake, c);
  c->x->rows = c->spec.exec_rows;
  c->x->cols = c->spec.exec_cols;
  return x_connect(c, X_START_REQ, "POST");
}

static void exec_take(ws_conn *c, const uint8_t *p, size_t n) {
  ws_exec *x = c->x;
  unsigned rows, cols;
  if (x->state > X_PUMP)
    return; /* the command has ended: its input goes nowhere */
  if (hx_winsize_seq(p, n, &rows, &cols)) {
    if (x->state == X_PUMP)
      hx_resize_want(x->rs, rows, cols);
    else /* once the start is answered */
      x->rows = rows, x->cols = cols;
    return;
  }
  if (x->in_len + n > x->in_cap) {
    size_t cap = x->in_cap ? x->in_cap * 2 : 4096;
    while (cap < x->in_len + n)
      cap *= 2;
    char *b = realloc(x->in, cap);
    if (b == NULL)
      return;
    x->in = b;
    x->in_cap = cap;
  }
  memcpy(x->in + x->in_len, p, n);
  x->in_len += n;
}

/* Whether to read the client: not while the daemon has not taken the
 * terminal's earlier input (wslay then stops reading, and TCP pushes
 * back). */
static int exec_want_client(const ws_conn *c) {
  return c->x == NULL || c->x->in_len < X_IN_MAX;
}

/* Writes what is pending to the daemon: the request, then (pumping) the
 * client's bytes. 0, or -1 when the daemon's connection failed. */
static int x_flush(ws_conn *c) {
  ws_exec *x = c->x;
  while (x->fd >= 0 && x->req_off < x->req_len) {
    ssize_t w =
        send(x->fd, x->req + x->req_off, x->req_len - x->req_off, MSG_NOSIGNAL);
    if (w < 0)
      return errno == EAGAIN || errno == EINTR ? 0 : -1;
    x->req_off += (size_t)w;
  }
  while (x->fd >= 0 && x->state == X_PUMP && x->in_len > 0 &&
         !hx_resize_busy(x->rs)) {
    ssize_t w = send(x->fd, x->in, x->in_len, MSG_NOSIGNAL);
    if (w < 0)
      return errno == EAGAIN || errno == EINTR ? 0 : -1;
    memmove(x->in, x->in + w, x->in_len - (size_t)w);
    x->in_len -= (size_t)w;
  }
  return 0;
}

/* The exit code: {"event":"exit","exit_code":N} and the close, or another
 * look in 20 ms while the daemon still says it runs. */
static void x_inspected(ws_conn *c) {
  ws_exec *x = c->x;
  x_close_fd(c);
  x->head[x->head_len < X_HEAD_MAX ? x->head_len : X_HEAD_MAX - 1] = '\0';
  const char *body = strstr(x->head, "\r\n\r\n");
  cJSON *o = body != NULL ? cJSON_Parse(body + 4) : NULL;
  const cJSON *running = cJSON_GetObjectItemCaseSensitive(o, "Running");
  const cJSON *code = cJSON_GetObjectItemCaseSensitive(o, "ExitCode");
  if (cJSON_IsTrue(running) && ++x->tries < X_TRIES) {
    cJSON_Delete(o);
    x->retry_ns = hx_mono_ns() + 20 * 1000000LL;
    atomic_fetch_add(&ws.retrying, 1);
    return;
  }
  char text[96];
  if (cJSON_IsNumber(code) && !cJSON_IsTrue(running))
    snprintf(text, sizeof text, "{\"event\":\"exit\",\"exit_code\":%d}",
             code->valueint);
  else
    snprintf(text, sizeof text, "{\"event\":\"exit\",\"exit_code\":null}");
  cJSON_Delete(o);
  x_send_text(c, text);
  x->state = X_DONE;
  c->last = 1;
}

static void x_inspect(ws_conn *c) {
  c->x->state = X_INSPECT;
  x_close_fd(c);
  x_connect(c, X_INSPECT_REQ, "GET");
}

/* The daemon's answer to the start: 101 (or 200) and the first bytes, or
 * its refusal, read to its end. */
static void x_head(ws_conn *c) {
  ws_exec *x = c->x;
  x->head[x->head_len] = '\0'; /* room kept for it */
  char *end = strstr(x->head, "\r\n\r\n");
  if (end == NULL)
    return;
  int status = 0;
  sscanf(x->head, "HTTP/%*d.%*d %d", &status);
  if (status == 101 || status == 200) {
    size_t off = (size_t)(end + 4 - x->head);
    x->state = X_PUMP;
    hx_resize_want(x->rs, x->rows, x->cols); /* none: 0 x 0 */
    if (off < x->head_len) {
      struct wslay_event_msg m = {WSLAY_BINARY_FRAME,
                                  (const uint8_t *)x->head + off,
                                  x->head_len - off};
      wslay_event_queue_msg(c->ctx, &m);
    }
    return;
  }
  x->state = X_REFUSED;
}

static void x_refused(ws_conn *c) {
  ws_exec *x = c->x;
  int status = 0;
  char msg[512] = "the daemon refused to start the exec";
  x->head[x->head_len < X_HEAD_MAX ? x->head_len : X_HEAD_MAX - 1] = '\0';
  sscanf(x->head, "HTTP/%*d.%*d %d", &status);
  const char *body = strstr(x->head, "\r\n\r\n");
  cJSON *o = body != NULL ? cJSON_Parse(body + 4) : NULL;
  const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, "message");
  if (cJSON_IsString(m))
    snprintf(msg, sizeof msg, "docker: %s", m->valuestring);
  cJSON_Delete(o);
  x_fail(c,
         status == 404   ? "not_found"
         : status == 409 ? "conflict"
                         : "server",
         msg);
}

/* Reads what the daemon has for the state the exec is in. */
static void x_read(ws_conn *c) {
  ws_exec *x = c->x;
  for (;;) {
    if (x->fd < 0)
      return;
    if (x->state == X_PUMP) {
      if (wslay_event_get_queued_msg_count(c->ctx) >= X_QUEUED_MAX)
        return; /* the client is slow: the daemon waits (TCP) */
      uint8_t buf[X_READ];
      ssize_t r = recv(x->fd, buf, sizeof buf, 0);
      if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return;
      if (r <= 0) { /* the command ended (or the daemon went) */
        x_inspect(c);
        continue;
      }
      struct wslay_event_msg m = {WSLAY_BINARY_FRAME, buf, (size_t)r};
      wslay_event_queue_msg(c->ctx, &m); /* copies */
      continue;
    }
    size_t room = X_HEAD_MAX - 1 - x->head_len;
    ssize_t r = room > 0 ? recv(x->fd, x->head + x->head_len, room, 0) : 0;
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
      return;
    if (r > 0)
      x->head_len += (size_t)r;
    if (x->state == X_START) {
      if (r <= 0) {
        x_fail(c, "protocol", "docker: the exec's start was not answered");
        return;
      }
      x_head(c);
      continue;
    }
    if (r > 0)
      continue;
    if (x->state == X_REFUSED)
      x_refused(c);
    else if (x->state == X_INSPECT)
      x_inspected(c);
    return;
  }
}

/* Registers fd for what it waits on now. */
static void x_register(ws_conn *c) {
  ws_exec *x = c->x;
  if (x->fd < 0)
    return;
  uint32_t ev = 0;
  if (x->state != X_PUMP ||
      wslay_event_get_queued_msg_count(c->ctx) < X_QUEUED_MAX)
    ev |= EPOLLIN;
  if (x->req_off < x->req_len ||
      (x->state == X_PUMP && x->in_len > 0 && !hx_resize_busy(x->rs)))
    ev |= EPOLLOUT;
  if (ev == x->events)
    return;
  struct epoll_event e = {.events = ev, .data.ptr = (void *)((uintptr_t)c | 1)};
  epoll_ctl(ws.epfd, x->events == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, x->fd, &e);
  x->events = ev;
}

/* Called by ws_pump (this thread): the daemon's side moved on. */
static int exec_pump(ws_conn *c) {
  ws_exec *x = c->x;
  if (x == NULL)
    return -1;
  if (x->retry_ns != 0 && hx_mono_ns() >= x->retry_ns) {
    x->retry_ns = 0;
    atomic_fetch_sub(&ws.retrying, 1);
    x_inspect(c);
  }
  if (x_flush(c) != 0) {
    if (x->state == X_PUMP)
      x_inspect(c);
    else if (x->state != X_DONE)
      x_fail(c, "unavailable", "docker: the connection to the daemon failed");
  }
  x_read(c); /* what the client's pace now lets through */
  x_register(c);
  /* sent now, so that ws_pump finds the last message gone and closes */
  return wslay_event_send(c->ctx) != 0 ? -1 : 0;
}

static void exec_step(ws_conn *c, uint32_t ev) {
  (void)ev; /* what is ready is found by trying */
  if (ws_pump(c) != 0)
    ws_destroy(c);
}

static void exec_retries(void) {
  if (atomic_load(&ws.retrying) == 0)
    return;
  int64_t now = hx_mono_ns();
  ws_conn *due = NULL;
  pthread_mutex_lock(&ws.mu);
  for (ws_conn *c = ws.all; c != NULL; c = c->all_next)
    if (c->x != NULL && c->x->retry_ns != 0 && now >= c->x->retry_ns) {
      c->reap_next = due;
      due = c;
    }
  pthread_mutex_unlock(&ws.mu);
  while (due != NULL) {
    ws_conn *next = due->reap_next;
    ws_step(due, 0);
    due = next;
  }
}

/* The client went while the command runs: the daemon does not end an exec
 * whose connection closed (its TTY stays open in the shim), so it gets the
 * SIGHUP a terminal's hangup sends. Its host pid comes from the daemon
 * (exec inspect, asked here with a 500 ms bound: the only wait of this
 * thread, on a client's going only) and is signalled only while its
 * cgroup still names the container (a pid reused since is left alone).
 * Without the right to signal it (horcrux not root), it lingers as a
 * `docker exec` whose client was killed does. */
static void x_hangup(ws_conn *c) {
  char req[256], buf[X_HEAD_MAX], ver[24] = "";
  if (c->spec.exec_api[0] != '\0')
    snprintf(ver, sizeof ver, "/v%s", c->spec.exec_api);
  int n = snprintf(req, sizeof req, X_INSPECT_REQ, "GET", ver, c->spec.exec);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  memcpy(sa.sun_path, c->spec.exec_sock, strlen(c->spec.exec_sock) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct timeval tv = {0, 500 * 1000};
  size_t got = 0;
  if (fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0 &&
      setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) == 0 &&
      connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
      send(fd, req, (size_t)n, MSG_NOSIGNAL) == n) {
    ssize_t r;
    while (got < sizeof buf - 1 &&
           (r = recv(fd, buf + got, sizeof buf - 1 - got, 0)) > 0)
      got += (size_t)r;
  }
  if (fd >= 0)
    close(fd);
  buf[got] = '\0';
  const char *body = strstr(buf, "\r\n\r\n");
  cJSON *o = body != NULL ? cJSON_Parse(body + 4) : NULL;
  const cJSON *pid = cJSON_GetObjectItemCaseSensitive(o, "Pid");
  const cJSON *cid = cJSON_GetObjectItemCaseSensitive(o, "ContainerID");
  if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "Running")) &&
      cJSON_IsNumber(pid) && pid->valueint > 1 && cJSON_IsString(cid)) {
    char path[64], cg[4096];
    snprintf(path, sizeof path, "/proc/%d/cgroup", pid->valueint);
    int cfd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t k = cfd >= 0 ? read(cfd, cg, sizeof cg - 1) : -1;
    if (cfd >= 0)
      close(cfd);
    if (k > 0) {
      cg[k] = '\0';
      if (strstr(cg, cid->valuestring) != NULL)
        kill(pid->valueint, SIGHUP);
    }
  }
  cJSON_Delete(o);
}

static void exec_free(ws_conn *c) {
  ws_exec *x = c->x;
  if (x == NULL)
    return;
  if (x->state == X_PUMP)
    x_hangup(c);
  if (x->retry_ns != 0)
    atomic_fetch_sub(&ws.retrying, 1);
  hx_resize_close(x->rs); /* no wake after this */
  x_close_fd(c);
  free(x->in);
  free(x);
  c->x = NULL;
}

/* ---- the answer ------------------------------------------------------- */

enum MHD_Result hx_stream_respond(struct MHD_Connection *conn, const char *id,
                                  const hx_stream_spec *spec, int head,
                                  int *status) {
  if (!head && hx_stream_wants_websocket(conn))
    return ws_respond(conn, id, spec, status);
  if (spec->exec[0] != '\0')
    return queue_error(conn, id, 400, "bad_request",
                       "an exec's terminal needs a WebSocket upgrade", status);
  return sse_respond(conn, id, spec, head, status);
}
