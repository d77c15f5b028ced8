/*
 * deadline.h - the deadline of the request being run, for C code that waits.
 *
 * `horcrux serve` gives every request a deadline (--deadline, default 10 s):
 * a wait that a route starts (a curl transfer, a sleep, a program) may last
 * no longer than the time left, and once the deadline has passed it fails
 * at once with kind "timeout" (504).
 *
 * How it reaches C code. The host keeps an hx_deadline in each request and
 * makes it the current one of its worker thread around every lua_resume of
 * the route's coroutine (hx_deadline_enter / hx_deadline_leave). Code that
 * runs inside that resume -- a module's function, its continuation after a
 * yield, or a coroutine the script made for itself, which runs its
 * transfers synchronously -- reads it with hx_deadline_cap(). It is a C
 * value of the worker thread: no Lua code (an operator's script, a library
 * module) sets it or can change it; scripts may only read what is left
 * (clock.time_left()).
 *
 * Outside a request (stock lua5.4, `horcrux run`, the collector's thread)
 * there is none, and every function below says so: waits keep their own
 * timeouts.
 *
 * How a module uses it, before it waits `timeout_ms` (0: no limit of its
 * own):
 *
 *   int capped;
 *   long ms = hx_deadline_cap(timeout_ms, &capped);
 *   if (ms < 0)   ... the deadline has passed: fail with kind "timeout",
 *                 nothing started; hx_deadline_note() what was not done
 *   else          ... wait at most ms (0: no limit, only when timeout_ms
 *                 was 0 and there is no deadline); when `capped` and the
 *                 wait times out, the deadline cut it: say so in the
 *                 message (hx_deadline_message) and hx_deadline_note() it
 *
 * The host answers a request whose route ends after its deadline with 504,
 * whatever the route returned, and names what the deadline cut first (the
 * note) in the message.
 */
#ifndef HORCRUX_DEADLINE_H
#define HORCRUX_DEADLINE_H

#include <stddef.h>
#include <stdint.h>

typedef struct hx_deadline {
  int64_t at_ns;  /* CLOCK_MONOTONIC (hx_mono_ns); 0: none */
  long ms;        /* the deadline as configured, for messages */
  char note[160]; /* what the deadline cut or refused first; "" if nothing */
} hx_deadline;

/* The host: makes d the current deadline of this thread (NULL: none) until
 * hx_deadline_leave(). Not nested: a worker runs one coroutine at a time. */
void hx_deadline_enter(hx_deadline *d);
void hx_deadline_leave(void);

/* The current deadline, or NULL (none, or outside a request). */
const hx_deadline *hx_deadline_current(void);

/* The milliseconds a wait of timeout_ms (0: no limit of its own) may last:
 * timeout_ms itself when there is no deadline or it ends first; else the
 * time left (at least 1), with *capped set; -1 when the deadline has
 * passed (*capped set too). `capped` may be NULL. */
long hx_deadline_cap(long timeout_ms, int *capped);

/* Milliseconds left (may be <= 0), or LONG_MAX when there is no deadline. */
long hx_deadline_left_ms(void);

/* Records what the deadline cut (the first note of a request is kept). */
void hx_deadline_note(const char *what);

/* "the request's deadline (10 s)" into buf, for messages. */
const char *hx_deadline_message(char *buf, size_t n);

#endif
