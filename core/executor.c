/* executor.c - the host's curl-multi thread (see executor.h). */
#include "executor.h"

#include "async.h"

#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

typedef struct job {
  CURL *easy;    /* a transfer, or NULL */
  hx_task *task; /* a task (async.h), or NULL; neither: a timer */
  hx_exec_done done;
  void *ud;
  long long due_ms;      /* timers, tasks: CLOCK_MONOTONIC time to step */
  unsigned long long id; /* transfers: for hx_executor_cancel */
  int first, nfd;        /* tasks: its descriptors in the wait list */
  struct job *next;
} job;

struct hx_executor {
  pthread_t thread;
  pthread_mutex_t mu; /* guards queue, timers, pending, stopping, aborting */
  CURLM *multi;
  job *queue;               /* submitted transfers and tasks not yet taken */
  job *timers;              /* pending timers, unordered (few at a time) */
  job *running;             /* transfers in the multi; executor thread only */
  job *tasks;               /* tasks being run; executor thread only */
  struct curl_waitfd *wait; /* the tasks' descriptors; executor thread */
  int nwait, wait_cap;
  int pending;
  int stopping;
  int aborting;
  unsigned long long next_id;  /* the id the next transfer gets */
  unsigned long long *cancels; /* ids to end, taken by the thread */
  int ncancel, cancel_cap;
};

hx_executor *hx_executor_host;

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

/* Takes the queued transfers, the due timers and the cancels (into *cancels,
 * *ncancel: the thread's own array, swapped with the shared one); returns
 * the poll timeout. */
static int take_work(hx_executor *ex, job **added, job **fired, int *abort_now,
                     int *stop_now, unsigned long long **cancels, int *ncancel,
                     int *cancel_cap) {
  long long now = now_ms(), next = now + 1000;
  pthread_mutex_lock(&ex->mu);
  *added = ex->queue;
  ex->queue = NULL;
  unsigned long long *mine = *cancels;
  int mine_cap = *cancel_cap;
  *cancels = ex->cancels;
  *ncancel = ex->ncancel;
  *cancel_cap = ex->cancel_cap;
  ex->cancels = mine;
  ex->ncancel = 0;
  ex->cancel_cap = mine_cap;
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

/* Room in ex->wait for n descriptors; 0, or -1 out of memory. */
static int wait_room(hx_executor *ex, int n) {
  if (ex->nwait + n <= ex->wait_cap)
    return 0;
  int cap = ex->wait_cap ? ex->wait_cap * 2 : 16 * HX_TASK_FDS;
  while (cap < ex->nwait + n)
    cap *= 2;
  struct curl_waitfd *w = realloc(ex->wait, (size_t)cap * sizeof *w);
  if (w == NULL)
    return -1;
  ex->wait = w;
  ex->wait_cap = cap;
  return 0;
}

/* Steps each task that is due or has a descriptor the last poll found
 * ready, finishes those that are done, and lists the descriptors of the
 * others for the next poll. Returns the poll timeout, at most `timeout`. */
static int step_tasks(hx_executor *ex, int timeout) {
  long long now = now_ms();
  for (job **pp = &ex->tasks; *pp != NULL;) {
    job *j = *pp;
    int ready = j->due_ms <= now;
    for (int i = 0; i < j->nfd && !ready; i++)
      ready = ex->wait[j->first + i].revents != 0;
    if (ready) {
      long ms = j->task->step(j->task);
      if (ms == HX_TASK_DONE) {
        *pp = j->next;
        finish(ex, j, CURLE_OK);
        continue;
      }
      j->due_ms = ms < 0 ? LLONG_MAX : now + ms;
    }
    pp = &j->next;
  }
  ex->nwait = 0;
  for (job *j = ex->tasks; j != NULL; j = j->next) {
    j->first = ex->nwait;
    j->nfd = 0;
    if (wait_room(ex, HX_TASK_FDS) == 0)
      j->nfd = j->task->fds(j->task, ex->wait + ex->nwait);
    else if (j->due_ms > now + 10)
      j->due_ms = now + 10; /* no room to wait on its descriptors: look */
    for (int i = 0; i < j->nfd; i++)
      ex->wait[j->first + i].revents = 0;
    ex->nwait += j->nfd;
    if (j->due_ms - now < timeout)
      timeout = j->due_ms > now ? (int)(j->due_ms - now) : 0;
  }
  return timeout;
}

/* Takes what was submitted: transfers into the multi, tasks into the list
 * (stepped at once); all refused when aborting. */
static void add_work(hx_executor *ex, job *added, int abort_now) {
  while (added != NULL) {
    job *j = added;
    added = j->next;
    if (j->task != NULL && !abort_now) {
      j->due_ms = 0;
      j->nfd = 0;
      j->next = ex->tasks;
      ex->tasks = j;
      continue;
    }
    if (abort_now || j->task != NULL ||
        curl_multi_add_handle(ex->multi, j->easy) != CURLM_OK) {
      j->easy = NULL; /* not in the multi */
      finish(ex, j, CURLE_ABORTED_BY_CALLBACK);
      continue;
    }
    j->next = ex->running;
    ex->running = j;
  }
}

/* Ends the running transfers whose ids were cancelled (those that already
 * ended are not found). */
static void cancel_ids(hx_executor *ex, const unsigned long long *ids, int n) {
  for (int i = 0; i < n; i++) {
    for (job **pp = &ex->running; *pp != NULL; pp = &(*pp)->next) {
      if ((*pp)->id == ids[i]) {
        job *j = *pp;
        *pp = j->next;
        finish(ex, j, CURLE_ABORTED_BY_CALLBACK);
        break;
      }
    }
  }
}

/* Ends every job of a list at once (hx_executor_abort). */
static void abort_list(hx_executor *ex, job **list) {
  while (*list != NULL) {
    job *j = *list;
    *list = j->next;
    finish(ex, j, CURLE_ABORTED_BY_CALLBACK);
  }
}

static void *run(void *arg) {
  hx_executor *ex = arg;
  unsigned long long *cancels = NULL;
  int ncancel = 0, cancel_cap = 0;
  for (;;) {
    job *added = NULL, *fired = NULL;
    int abort_now, stop_now, still;
    int timeout = take_work(ex, &added, &fired, &abort_now, &stop_now, &cancels,
                            &ncancel, &cancel_cap);
    add_work(ex, added, abort_now);
    cancel_ids(ex, cancels, ncancel); /* after add_work: they are running */
    while (fired != NULL) {
      job *t = fired;
      fired = t->next;
      finish(ex, t, abort_now ? CURLE_ABORTED_BY_CALLBACK : CURLE_OK);
    }
    if (abort_now) {
      abort_list(ex, &ex->running);
      abort_list(ex, &ex->tasks);
    }
    if (stop_now)
      break;
    curl_multi_perform(ex->multi, &still);
    collect_done(ex);
    timeout = step_tasks(ex, timeout);
    curl_multi_poll(ex->multi, ex->wait, (unsigned)ex->nwait,
                    timeout > 0 ? timeout : 0, NULL);
  }
  free(cancels);
  return NULL;
}

hx_executor *hx_executor_start(long max_idle) {
  hx_executor *ex = calloc(1, sizeof *ex);
  if (ex == NULL)
    return NULL;
  ex->multi = curl_multi_init();
  if (ex->multi == NULL) {
    free(ex);
    return NULL;
  }
  curl_multi_setopt(ex->multi, CURLMOPT_MAXCONNECTS,
                    max_idle > 0 ? max_idle : 1);
  pthread_mutex_init(&ex->mu, NULL);
  if (pthread_create(&ex->thread, NULL, run, ex) != 0) {
    curl_multi_cleanup(ex->multi);
    pthread_mutex_destroy(&ex->mu);
    free(ex);
    return NULL;
  }
  return ex;
}

/* Queues j; a transfer gets its id (into *id when id is not NULL). */
static int enqueue(hx_executor *ex, job *j, unsigned long long *id) {
  pthread_mutex_lock(&ex->mu);
  if (ex->stopping || ex->aborting) {
    pthread_mutex_unlock(&ex->mu);
    free(j);
    return -1;
  }
  if (j->easy != NULL)
    j->id = ++ex->next_id;
  if (id != NULL)
    *id = j->id;
  if (j->easy != NULL || j->task != NULL) {
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
  unsigned long long id;
  return hx_executor_submit_id(ex, easy, done, ud, &id);
}

int hx_executor_submit_id(hx_executor *ex, CURL *easy, hx_exec_done done,
                          void *ud, unsigned long long *id) {
  job *j = calloc(1, sizeof *j);
  if (j == NULL || easy == NULL) {
    free(j);
    return -1;
  }
  j->easy = easy;
  j->done = done;
  j->ud = ud;
  return enqueue(ex, j, id);
}

void hx_executor_cancel(hx_executor *ex, unsigned long long id) {
  pthread_mutex_lock(&ex->mu);
  if (id == 0 || id > ex->next_id || ex->stopping) {
    pthread_mutex_unlock(&ex->mu);
    return;
  }
  if (ex->ncancel == ex->cancel_cap) {
    int cap = ex->cancel_cap ? ex->cancel_cap * 2 : 16;
    unsigned long long *c = realloc(ex->cancels, (size_t)cap * sizeof *c);
    if (c == NULL) { /* the transfer runs on until its own end */
      pthread_mutex_unlock(&ex->mu);
      return;
    }
    ex->cancels = c;
    ex->cancel_cap = cap;
  }
  ex->cancels[ex->ncancel++] = id;
  pthread_mutex_unlock(&ex->mu);
  curl_multi_wakeup(ex->multi);
}

int hx_executor_task(hx_executor *ex, hx_task *task, hx_exec_done done,
                     void *ud) {
  job *j = calloc(1, sizeof *j);
  if (j == NULL || task == NULL) {
    free(j);
    return -1;
  }
  j->task = task;
  j->done = done;
  j->ud = ud;
  return enqueue(ex, j, NULL);
}

int hx_executor_timer(hx_executor *ex, long ms, hx_exec_done done, void *ud) {
  job *j = calloc(1, sizeof *j);
  if (j == NULL)
    return -1;
  j->done = done;
  j->ud = ud;
  j->due_ms = now_ms() + (ms > 0 ? ms : 0);
  return enqueue(ex, j, NULL);
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
  free(ex->wait);
  free(ex->cancels);
  free(ex);
}
