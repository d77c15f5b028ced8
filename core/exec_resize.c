/*
 * exec_resize.c - the window size of an exec's TTY (exec_resize.h).
 *
 * Threads. The terminal (the WebSocket thread) asks for a size; the call
 * runs on the server's executor, and its end (the executor's thread) takes
 * the size asked for meanwhile, if any, and calls again: one call in
 * flight per terminal, the latest size wins. `mu` guards the sizes and
 * the flags; the easy handle and the call's buffers belong to whoever
 * runs the call (one at a time). The resizer is freed by the last of the
 * terminal (hx_resize_close) and the call in flight.
 */
#include "exec_resize.h"

#include "executor.h"
#include "server.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TIMEOUT_MS 5000 /* the daemon answers in a millisecond */
#define BODY_MAX 200    /* bytes of a refusal kept for the log */
#define ID_LEN 64

struct hx_resize {
  pthread_mutex_t mu;
  int refs;            /* the terminal's, and the call's while one runs */
  int running;         /* a call in flight */
  unsigned rows, cols; /* the size to set next (0: none) */
  int closed;          /* the terminal is done: no wake, no next call */
  int warned;          /* a failure was logged */
  void (*wake)(void *);
  void *ud;
  /* the call's */
  CURL *easy;
  unsigned call_rows, call_cols;
  char id[ID_LEN + 1];
  char api[16];
  char url[192];
  char err[CURL_ERROR_SIZE];
  char body[BODY_MAX + 1];
  size_t body_n;
};

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud) {
  hx_resize *r = ud;
  size_t n = size * nmemb, k = BODY_MAX - r->body_n;
  k = k < n ? k : n;
  memcpy(r->body + r->body_n, p, k);
  r->body_n += k;
  return n;
}

static CURL *easy_for(hx_resize *r, const char *sock) {
  CURL *e = curl_easy_init();
  if (e == NULL)
    return NULL;
  CURLcode rc = curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, sock);
  if (rc == CURLE_OK)
    rc = curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
  if (rc == CURLE_OK)
    rc = curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, 0L);
  if (rc == CURLE_OK)
    rc = curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  if (rc == CURLE_OK)
    rc = curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)TIMEOUT_MS);
  if (rc == CURLE_OK)
    rc = curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->err);
  if (rc == CURLE_OK)
    rc = curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
  if (rc == CURLE_OK)
    rc = curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
  if (rc != CURLE_OK) {
    curl_easy_cleanup(e);
    return NULL;
  }
  return e;
}

hx_resize *hx_resize_open(const char *sock, const char *api, const char *id,
                          void (*wake)(void *), void *ud) {
  hx_resize *r = calloc(1, sizeof *r);
  if (r == NULL)
    return NULL;
  pthread_mutex_init(&r->mu, NULL);
  r->refs = 1;
  r->wake = wake;
  r->ud = ud;
  snprintf(r->id, sizeof r->id, "%s", id);
  snprintf(r->api, sizeof r->api, "%s", api);
  r->easy = easy_for(r, sock); /* id: 64 hex, as hub.stream{exec} checks */
  return r;
}

static void resize_free(hx_resize *r) {
  if (r->easy != NULL)
    curl_easy_cleanup(r->easy);
  pthread_mutex_destroy(&r->mu);
  free(r);
}

/* The size wanted becomes the call's. Under mu. */
static void take(hx_resize *r) {
  r->call_rows = r->rows, r->call_cols = r->cols;
  r->rows = r->cols = 0;
}

static void on_done(CURLcode rc, void *ud);

/* Starts the call for call_rows x call_cols: NULL, or why it could not. */
static const char *submit(hx_resize *r) {
  if (r->easy == NULL)
    return "out of memory";
  char ver[24] = "";
  if (r->api[0] != '\0')
    snprintf(ver, sizeof ver, "/v%s", r->api);
  snprintf(r->url, sizeof r->url, "http://docker%s/exec/%s/resize?h=%u&w=%u",
           ver, r->id, r->call_rows, r->call_cols);
  r->err[0] = '\0';
  r->body_n = 0;
  hx_executor *ex = hx_executor_host;
  if (curl_easy_setopt(r->easy, CURLOPT_URL, r->url) != CURLE_OK ||
      ex == NULL || hx_executor_submit(ex, r->easy, on_done, r) != 0)
    return "the server is stopping";
  return NULL;
}

static void warn(hx_resize *r, const char *why) {
  pthread_mutex_lock(&r->mu);
  int first = !r->warned && !r->closed;
  r->warned = 1;
  pthread_mutex_unlock(&r->mu);
  if (first)
    hx_log("warn", "exec %.12s: its terminal could not be set to %u x %u: %s",
           r->id, r->call_rows, r->call_cols, why);
}

/* A call ended (why: NULL, or its failure): the next one, with the size
 * wanted meanwhile, or the end of the calls, which wakes the terminal. */
static void ended(hx_resize *r, const char *why) {
  for (;;) {
    if (why != NULL)
      warn(r, why);
    pthread_mutex_lock(&r->mu);
    int next = !r->closed && r->rows != 0;
    if (next) {
      take(r);
    } else {
      r->running = 0;
      r->refs--;
      if (!r->closed && r->wake != NULL)
        r->wake(r->ud);
    }
    int gone = r->refs == 0;
    pthread_mutex_unlock(&r->mu);
    if (!next) {
      if (gone)
        resize_free(r);
      return;
    }
    if ((why = submit(r)) == NULL)
      return;
  }
}

/* The executor's thread (finish() has removed the handle from the multi:
 * it may be submitted again at once). */
static void on_done(CURLcode rc, void *ud) {
  hx_resize *r = ud;
  char why[CURL_ERROR_SIZE + BODY_MAX + 48] = "";
  long status = 0;
  curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
  if (rc == CURLE_ABORTED_BY_CALLBACK) { /* the server stops */
    pthread_mutex_lock(&r->mu);
    r->rows = r->cols = 0;
    pthread_mutex_unlock(&r->mu);
  } else if (rc != CURLE_OK) {
    snprintf(why, sizeof why, "%s",
             r->err[0] != '\0' ? r->err : curl_easy_strerror(rc));
  } else if (status < 200 || status > 299) {
    while (r->body_n > 0 &&
           (r->body[r->body_n - 1] == '\n' || r->body[r->body_n - 1] == '\r'))
      r->body_n--;
    r->body[r->body_n] = '\0';
    snprintf(why, sizeof why, "the daemon answered %ld: %s", status, r->body);
  }
  ended(r, why[0] != '\0' ? why : NULL);
}

void hx_resize_want(hx_resize *r, unsigned rows, unsigned cols) {
  if (r == NULL || rows == 0 || cols == 0)
    return;
  pthread_mutex_lock(&r->mu);
  r->rows = rows, r->cols = cols;
  int go = !r->running && !r->closed;
  if (go) {
    r->running = 1;
    r->refs++;
    take(r);
  }
  pthread_mutex_unlock(&r->mu);
  const char *why = go ? submit(r) : NULL;
  if (why != NULL)
    ended(r, why);
}

int hx_resize_busy(hx_resize *r) {
  if (r == NULL)
    return 0;
  pthread_mutex_lock(&r->mu);
  int busy = r->running;
  pthread_mutex_unlock(&r->mu);
  return busy;
}

void hx_resize_close(hx_resize *r) {
  if (r == NULL)
    return;
  pthread_mutex_lock(&r->mu);
  r->closed = 1;
  r->rows = r->cols = 0;
  int gone = --r->refs == 0;
  pthread_mutex_unlock(&r->mu);
  if (gone)
    resize_free(r);
}
