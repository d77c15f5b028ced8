/* executor.c - the host's curl-multi thread (see executor.h). */
#include "executor.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

typedef struct job {
  CURL *easy; /* NULL for a timer */
  hx_exec_done done;
  void *ud;
  long long due_ms; /* timers: CLOCK_MONOTONIC deadline */
  struct job *next;
} job;

struct hx_executor {
  pthread_t thread;
  pthread_mutex_t mu; /* guards queue, timers, pending, stopping, aborting */
  CURLM *multi;
  job *queue;   /* submitted transfers not yet added to the multi */
  job *timers;  /* pending timers, unordered (few at a time) */
  job *running; /* transfers in the multi; executor thread only */
  int pending;
  int stopping;
  int aborting;
};

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void finish(hx_executor *ex, job *j, CURLcode rc) {
  /* The callback may hand the easy handle back to its owner at once, so the
   * multi must be done with it first. */
  if (j->easy != NULL)
    curl_multi_remove_handle(ex->multi, j->easy);
  j->done(rc, j->ud);
  free(j);
  pthread_mutex_lock(&ex->mu);
  ex->pending--;
  pthread_mutex_unlock(&ex->mu);
}

/* Takes the queued transfers and the due timers; returns the poll timeout. */
static int take_work(hx_executor *ex, job **added, job **fired, int *abort_now,
                     int *stop_now) {
  long long now = now_ms(), next = now + 1000;
  pthread_mutex_lock(&ex->mu);
  *added = ex->queue;
  ex->queue = NULL;
  job **pp = &ex->timers;
  while (*pp != NULL) {
    job *t = *pp;
    if (t->due_ms <= now || ex->aborting) {
      *pp = t->next;
      t->next = *fired;
      *fired = t;
    } else {
      if (t->due_ms < next)
        next = t->due_ms;
      pp = &t->next;
    }
  }
  *abort_now = ex->aborting;
  *stop_now = ex->stopping && ex->pending == 0;
  pthread_mutex_unlock(&ex->mu);
  return (int)(next - now);
}

static void collect_done(hx_executor *ex) {
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(ex->multi, &left)) != NULL) {
    if (msg->msg != CURLMSG_DONE)
      continue;
    for (job **pp = &ex->running; *pp != NULL; pp = &(*pp)->next) {
      if ((*pp)->easy == msg->easy_handle) {
        job *j = *pp;
        CURLcode rc = msg->data.result;
        *pp = j->next;
        finish(ex, j, rc);
        break;
      }
    }
  }
}

static void *run(void *arg) {
  hx_executor *ex = arg;
  for (;;) {
    job *added = NULL, *fired = NULL;
    int abort_now, stop_now, still;
    int timeout = take_work(ex, &added, &fired, &abort_now, &stop_now);
    while (added != NULL) {
      job *j = added;
      added = j->next;
      if (abort_now || curl_multi_add_handle(ex->multi, j->easy) != CURLM_OK) {
        j->next = NULL;
        j->done(CURLE_ABORTED_BY_CALLBACK, j->ud);
        free(j);
        pthread_mutex_lock(&ex->mu);
        ex->pending--;
        pthread_mutex_unlock(&ex->mu);
        continue;
      }
      j->next = ex->running;
      ex->running = j;
    }
    while (fired != NULL) {
      job *t = fired;
      fired = t->next;
      finish(ex, t, abort_now ? CURLE_ABORTED_BY_CALLBACK : CURLE_OK);
    }
    if (abort_now) {
      while (ex->running != NULL) {
        job *j = ex->running;
        ex->running = j->next;
        finish(ex, j, CURLE_ABORTED_BY_CALLBACK);
      }
    }
    if (stop_now)
      break;
    curl_multi_perform(ex->multi, &still);
    collect_done(ex);
    curl_multi_poll(ex->multi, NULL, 0, timeout > 0 ? timeout : 0, NULL);
  }
  return NULL;
}

hx_executor *hx_executor_start(void) {
  hx_executor *ex = calloc(1, sizeof *ex);
  if (ex == NULL)
    return NULL;
  ex->multi = curl_multi_init();
  if (ex->multi == NULL) {
    free(ex);
    return NULL;
  }
  pthread_mutex_init(&ex->mu, NULL);
  if (pthread_create(&ex->thread, NULL, run, ex) != 0) {
    curl_multi_cleanup(ex->multi);
    pthread_mutex_destroy(&ex->mu);
    free(ex);
    return NULL;
  }
  return ex;
}

static int enqueue(hx_executor *ex, job *j) {
  pthread_mutex_lock(&ex->mu);
  if (ex->stopping || ex->aborting) {
    pthread_mutex_unlock(&ex->mu);
    free(j);
    return -1;
  }
  if (j->easy != NULL) {
    j->next = ex->queue;
    ex->queue = j;
  } else {
    j->next = ex->timers;
    ex->timers = j;
  }
  ex->pending++;
  pthread_mutex_unlock(&ex->mu);
  curl_multi_wakeup(ex->multi);
  return 0;
}

int hx_executor_submit(hx_executor *ex, CURL *easy, hx_exec_done done,
                       void *ud) {
  job *j = calloc(1, sizeof *j);
  if (j == NULL || easy == NULL) {
    free(j);
    return -1;
  }
  j->easy = easy;
  j->done = done;
  j->ud = ud;
  return enqueue(ex, j);
}

int hx_executor_timer(hx_executor *ex, long ms, hx_exec_done done, void *ud) {
  job *j = calloc(1, sizeof *j);
  if (j == NULL)
    return -1;
  j->done = done;
  j->ud = ud;
  j->due_ms = now_ms() + (ms > 0 ? ms : 0);
  return enqueue(ex, j);
}

int hx_executor_pending(hx_executor *ex) {
  pthread_mutex_lock(&ex->mu);
  int n = ex->pending;
  pthread_mutex_unlock(&ex->mu);
  return n;
}

void hx_executor_abort(hx_executor *ex) {
  pthread_mutex_lock(&ex->mu);
  ex->aborting = 1;
  pthread_mutex_unlock(&ex->mu);
  curl_multi_wakeup(ex->multi);
}

void hx_executor_stop(hx_executor *ex) {
  if (ex == NULL)
    return;
  pthread_mutex_lock(&ex->mu);
  ex->stopping = 1;
  pthread_mutex_unlock(&ex->mu);
  curl_multi_wakeup(ex->multi);
  pthread_join(ex->thread, NULL);
  curl_multi_cleanup(ex->multi);
  pthread_mutex_destroy(&ex->mu);
  free(ex);
}
