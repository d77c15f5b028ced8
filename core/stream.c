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
#include "follow.h"
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
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

/* A client's messages are not commands: pings and closes wslay answers
 * itself; anything else is ignored. */
static void ws_on_msg(wslay_event_context_ptr ctx,
                      const struct wslay_event_on_msg_recv_arg *arg, void *ud) {
  (void)ctx, (void)arg, (void)ud;
}

static const struct wslay_event_callbacks ws_callbacks = {
    ws_recv, ws_send, NULL, NULL, NULL, NULL, ws_on_msg};

static void ws_destroy(ws_conn *c) {
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
  free(c);
}

/* Queues the subscriber's messages while wslay has none waiting (the hub's
 * queue is the buffer: its bound holds) and sends them; after the final
 * one, the close frame (only once the messages before it went: wslay sends
 * control frames first and nothing after a close). Returns 0 while the
 * connection lives. */
static int ws_pump(ws_conn *c) {
  while (!c->last && wslay_event_get_queued_msg_count(c->ctx) == 0) {
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
    wslay_event_queue_close(c->ctx, WSLAY_CODE_GOING_AWAY, NULL, 0);
    c->ending_ns = hx_mono_ns();
  }
  if (wslay_event_send(c->ctx) != 0)
    return -1;
  if (!wslay_event_want_read(c->ctx) && !wslay_event_want_write(c->ctx))
    return -1;
  uint32_t ev = (wslay_event_want_read(c->ctx) ? EPOLLIN : 0) |
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
    int n = epoll_wait(ws.epfd, evs, 64, paced ? 1 : 500);
    for (int i = 0; i < n; i++) {
      if (evs[i].data.ptr == NULL) {
        uint64_t v;
        ssize_t r = read(ws.evfd, &v, sizeof v);
        (void)r;
        continue;
      }
      ws_step(evs[i].data.ptr, evs[i].events);
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
  c->sub = subscribe(&c->spec, ws_wake, c);
  if (c->sub == NULL)
    c->last = 1; /* the server is stopping: a close frame at once */
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

/* Whether the comma-separated header value has token (any case). */
static int has_token(const char *v, const char *token) {
  size_t tn = strlen(token);
  while (v != NULL && *v != '\0') {
    while (*v == ' ' || *v == '\t' || *v == ',')
      v++;
    size_t n = strcspn(v, ",");
    size_t m = n;
    while (m > 0 && (v[m - 1] == ' ' || v[m - 1] == '\t'))
      m--;
    if (m == tn && strncasecmp(v, token, tn) == 0)
      return 1;
    v += n;
  }
  return 0;
}

int hx_stream_wants_websocket(struct MHD_Connection *conn) {
  const char *up = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                               MHD_HTTP_HEADER_UPGRADE);
  const char *co = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                               MHD_HTTP_HEADER_CONNECTION);
  return up != NULL && has_token(up, "websocket") && has_token(co, "upgrade");
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
  close(ws.evfd);
  close(ws.epfd);
}

/* ---- the answer ------------------------------------------------------- */

enum MHD_Result hx_stream_respond(struct MHD_Connection *conn, const char *id,
                                  const hx_stream_spec *spec, int head,
                                  int *status) {
  if (!head && hx_stream_wants_websocket(conn))
    return ws_respond(conn, id, spec, status);
  return sse_respond(conn, id, spec, head, status);
}
