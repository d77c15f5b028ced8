/*
 * follow.c - log follow (follow.h): the daemon's log stream, a transfer on
 * the streams' executor, demultiplexed into one subscriber's messages.
 *
 * Threads. The follow is made on an MHD worker thread (sse_respond, or the
 * WebSocket upgrade); from then on it belongs to the executor's thread: the
 * write callback demultiplexes and pushes lines, `done` pushes the final
 * message and frees it. The consumer only ever touches the subscriber (the
 * hub's lock); closing it calls on_closed with the transfer's id, which
 * cancels the transfer if it still runs (ids are never reused, so a late
 * cancel is harmless). `lock` guards the executor's pointer against the
 * stop.
 */
#include "follow.h"

#include "executor.h"
#include "jsonconv.h"
#include "logdemux.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define URL_MAX 1024
#define ERR_BODY 400 /* bytes of a refusal's body kept for the message */
#define IDLE 4       /* idle connections to the daemon kept */

typedef struct follow {
  hx_sub *sub; /* the producer's reference */
  CURL *easy;
  hx_demux dm;
  char *nd, *sse; /* a line's event: its JSON, its SSE frame */
  size_t nd_cap, sse_cap;
  long status;             /* the reply's, once known */
  int stopped;             /* the subscriber ended: no more lines */
  const char *bad;         /* why the stream was refused, or NULL */
  char body[ERR_BODY + 1]; /* a refusal's body */
  size_t body_n;
  char err[CURL_ERROR_SIZE];
  char url[URL_MAX];
} follow;

static struct {
  pthread_mutex_t lock;
  hx_executor *ex; /* started with the first follow; NULL once stopped */
  int stopped;
  atomic_int count;
} F = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void on_closed(unsigned long long id) {
  pthread_mutex_lock(&F.lock);
  if (F.ex != NULL)
    hx_executor_cancel(F.ex, id);
  pthread_mutex_unlock(&F.lock);
}

/* Room for n more bytes in *p (of *len, *cap); 0, or -1 out of memory. */
static int room(char **p, size_t len, size_t *cap, size_t n) {
  if (len + n <= *cap)
    return 0;
  size_t c = *cap ? *cap : 4096;
  while (c < len + n)
    c *= 2;
  char *q = realloc(*p, c);
  if (q == NULL)
    return -1;
  *p = q;
  *cap = c;
  return 0;
}

/* A line: {"line","stream"[,"time"][,"truncated"]} (keys in byte order, as
 * the non-follow route's records), one event `log` (the hub joins the
 * events its reader has not taken yet into one message). Returns 1 (stop)
 * once the subscriber has ended. */
static int on_line(void *ud, const char *stream, const char *line, size_t len,
                   const char *time, int truncated) {
  follow *f = ud;
  size_t tl = time != NULL ? strlen(time) : 0;
  size_t most = 6 * len + 6 * tl + 96;
  if (room(&f->nd, 0, &f->nd_cap, most) != 0 ||
      room(&f->sse, 0, &f->sse_cap, most + 24) != 0) {
    f->bad = "out of memory";
    return f->stopped = 1;
  }
  char *p = f->nd;
  size_t n = 0;
  memcpy(p, "{\"line\":", 8);
  n = 8;
  n += hx_json_quote(p + n, line, len);
  n += (size_t)sprintf(p + n, ",\"stream\":\"%s\"", stream);
  if (time != NULL) {
    memcpy(p + n, ",\"time\":", 8);
    n += 8;
    n += hx_json_quote(p + n, time, tl);
  }
  if (truncated) {
    memcpy(p + n, ",\"truncated\":true", 17);
    n += 17;
  }
  p[n++] = '}';
  char *q = f->sse;
  memcpy(q, "event: log\ndata: ", 17);
  memcpy(q + 17, p, n);
  memcpy(q + 17 + n, "\n\n", 2);
  if (hx_sub_push_framed(f->sub, p, n, q, n + 19) != 0)
    f->stopped = 1;
  if (f->nd_cap > 64 * 1024) { /* a long line's buffers are not kept */
    free(f->nd), free(f->sse);
    f->nd = f->sse = NULL;
    f->nd_cap = f->sse_cap = 0;
  }
  return f->stopped;
}

static size_t on_data(char *p, size_t size, size_t nmemb, void *ud) {
  follow *f = ud;
  size_t n = size * nmemb;
  if (f->status == 0)
    curl_easy_getinfo(f->easy, CURLINFO_RESPONSE_CODE, &f->status);
  if (f->status < 200 || f->status > 299) { /* the daemon's refusal */
    size_t k = ERR_BODY - f->body_n < n ? ERR_BODY - f->body_n : n;
    memcpy(f->body + f->body_n, p, k);
    f->body_n += k;
    return n;
  }
  int rc = hx_demux_feed(&f->dm, p, n);
  if (rc == -1)
    f->bad = "the daemon sent bytes that are not log frames";
  else if (rc == -2)
    f->bad = "out of memory";
  return rc == 0 ? n : 0; /* 0: the transfer ends (CURLE_WRITE_ERROR) */
}

/* The final message: why the stream ended. */
static void end_message(follow *f, CURLcode rc) {
  char msg[ERR_BODY + 64], data[8 * ERR_BODY + 256];
  const char *reason = "error";
  if (f->bad != NULL) {
    snprintf(msg, sizeof msg, "%s", f->bad);
  } else if (f->status != 0 && (f->status < 200 || f->status > 299)) {
    snprintf(msg, sizeof msg, "the daemon answered %ld: %.*s", f->status,
             (int)f->body_n, f->body);
    size_t k = strlen(msg);
    while (k > 0 && (msg[k - 1] == '\n' || msg[k - 1] == '\r'))
      msg[--k] = '\0';
  } else if (rc == CURLE_OK) {
    reason = "ended";
    snprintf(msg, sizeof msg,
             "the daemon ended the log stream (the container stopped)");
  } else {
    snprintf(msg, sizeof msg, "the transfer failed: %s",
             f->err[0] != '\0' ? f->err : curl_easy_strerror(rc));
  }
  size_t n = (size_t)snprintf(data, sizeof data,
                              "{\"event\":\"end\",\"reason\":\"%s\","
                              "\"message\":",
                              reason);
  n += hx_json_quote(data + n, msg, strlen(msg));
  data[n++] = '}';
  hx_sub_push(f->sub, "end", data, n, 1);
}

static void follow_free(follow *f) {
  if (f->easy != NULL)
    curl_easy_cleanup(f->easy);
  hx_demux_free(&f->dm);
  free(f->nd);
  free(f->sse);
  hx_sub_release(f->sub);
  free(f);
}

/* The executor's thread: the transfer ended, or was cancelled (the client
 * went, or the server stops: the subscriber has had its last message). */
static void on_done(CURLcode rc, void *ud) {
  follow *f = ud;
  if (rc != CURLE_ABORTED_BY_CALLBACK && !f->stopped) {
    if (f->bad == NULL && f->status >= 200 && f->status <= 299 &&
        hx_demux_finish(&f->dm) == -1)
      f->bad = "the daemon sent bytes that are not log frames";
    if (!f->stopped)
      end_message(f, rc);
  }
  atomic_fetch_sub(&F.count, 1);
  follow_free(f);
}

static int setup(follow *f, const hx_stream_spec *spec) {
  const hx_endpoint *ep = spec->ep;
  int n = snprintf(f->url, sizeof f->url, "%s%s", ep->base, spec->path);
  if (n < 0 || (size_t)n >= sizeof f->url)
    return -1;
  CURL *e = f->easy;
  CURLcode rc = curl_easy_setopt(e, CURLOPT_URL, f->url);
  if (rc == CURLE_OK && ep->sock != NULL)
    rc = curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, ep->sock);
  if (rc == CURLE_OK && ep->ca != NULL)
    rc = curl_easy_setopt(e, CURLOPT_CAINFO, ep->ca);
  if (rc == CURLE_OK && ep->cert != NULL)
    rc = curl_easy_setopt(e, CURLOPT_SSLCERT, ep->cert);
  if (rc == CURLE_OK && ep->key != NULL)
    rc = curl_easy_setopt(e, CURLOPT_SSLKEY, ep->key);
  if (rc == CURLE_OK && ep->connect_timeout_ms > 0)
    rc = curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, ep->connect_timeout_ms);
  if (rc == CURLE_OK)
    rc = curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  if (rc == CURLE_OK)
    rc = curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  if (rc == CURLE_OK)
    rc = curl_easy_setopt(e, CURLOPT_ERRORBUFFER, f->err);
  if (rc == CURLE_OK)
    rc = curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
  if (rc == CURLE_OK)
    rc = curl_easy_setopt(e, CURLOPT_WRITEDATA, f);
  return rc == CURLE_OK ? 0 : -1;
}

/* The executor, started with the first follow; NULL once stopped. */
static hx_executor *executor(void) {
  pthread_mutex_lock(&F.lock);
  if (F.ex == NULL && !F.stopped)
    F.ex = hx_executor_start(IDLE);
  hx_executor *ex = F.ex;
  pthread_mutex_unlock(&F.lock);
  return ex;
}

hx_sub *hx_follow_open(const hx_stream_spec *spec, hx_wake_fn wake, void *ud) {
  hx_executor *ex = executor();
  if (ex == NULL || spec->ep == NULL)
    return NULL;
  follow *f = calloc(1, sizeof *f);
  if (f == NULL)
    return NULL;
  hx_demux_init(&f->dm, spec->tty, spec->timestamps, HX_FOLLOW_MAX_LINE,
                on_line, f);
  f->easy = curl_easy_init();
  f->sub = hx_hub_subscribe_fed(spec, wake, ud, on_closed);
  if (f->easy == NULL || f->sub == NULL || setup(f, spec) != 0) {
    hx_sub *s = f->sub;
    f->sub = NULL;
    follow_free(f);
    hx_sub_close(s); /* its producer reference too: nothing will run */
    hx_sub_release(s);
    return NULL;
  }
  hx_sub *s = f->sub;
  unsigned long long id = 0;
  atomic_fetch_add(&F.count, 1);
  /* The consumer does not have s yet: nothing closes it before this
   * returns, so the id is set before any on_closed can want it. */
  if (hx_executor_submit_id(ex, f->easy, on_done, f, &id) != 0) {
    atomic_fetch_sub(&F.count, 1);
    f->sub = NULL;
    follow_free(f);
    hx_sub_close(s);
    hx_sub_release(s);
    return NULL;
  }
  hx_sub_set_producer(s, id);
  return s;
}

int hx_follow_count(void) { return atomic_load(&F.count); }

void hx_follow_stop(void) {
  pthread_mutex_lock(&F.lock);
  hx_executor *ex = F.ex;
  F.ex = NULL;
  F.stopped = 1;
  pthread_mutex_unlock(&F.lock);
  if (ex == NULL)
    return;
  hx_executor_abort(ex);
  hx_executor_stop(ex);
}
