/* deadline.c - the current request's deadline (see deadline.h). */
#include "deadline.h"

#include "aux.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

/* The deadline of the request this thread is running. Thread-local, not
 * global: each worker thread runs its own requests, and the value must be
 * out of reach of Lua code. */
static _Thread_local hx_deadline *current;

void hx_deadline_enter(hx_deadline *d) { current = d; }

void hx_deadline_leave(void) { current = NULL; }

const hx_deadline *hx_deadline_current(void) {
  return current != NULL && current->at_ns != 0 ? current : NULL;
}

long hx_deadline_left_ms(void) {
  const hx_deadline *d = hx_deadline_current();
  if (d == NULL)
    return LONG_MAX;
  int64_t left = d->at_ns - hx_mono_ns();
  /* Rounded up: 0.4 ms left is still time, not a passed deadline. */
  return left <= 0 ? (long)(left / 1000000) : (long)((left + 999999) / 1000000);
}

long hx_deadline_cap(long timeout_ms, int *capped) {
  long left = hx_deadline_left_ms();
  int cut = left != LONG_MAX && (timeout_ms <= 0 || left < timeout_ms);
  if (capped != NULL)
    *capped = cut;
  if (!cut)
    return timeout_ms;
  return left > 0 ? left : -1;
}

void hx_deadline_note(const char *what) {
  if (current != NULL && current->note[0] == '\0' && what != NULL)
    snprintf(current->note, sizeof current->note, "%s", what);
}

const char *hx_deadline_message(char *buf, size_t n) {
  const hx_deadline *d = hx_deadline_current();
  long ms = d != NULL ? d->ms : 0;
  if (ms % 1000 == 0)
    snprintf(buf, n, "the request's deadline (%ld s)", ms / 1000);
  else
    snprintf(buf, n, "the request's deadline (%.3g s)", (double)ms / 1000);
  return buf;
}
