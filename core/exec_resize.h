/*
 * exec_resize.h - the window size of an exec's TTY (a terminal of
 * core/stream.c), set with the daemon's POST /exec/{id}/resize?h=&w= on
 * the server's executor, so that the WebSocket thread never waits for it.
 */
#ifndef HORCRUX_EXEC_RESIZE_H
#define HORCRUX_EXEC_RESIZE_H

typedef struct hx_resize hx_resize;

/* The resizer of exec `id` on the daemon's unix socket `sock` (API `api`,
 * "" for unversioned), or NULL out of memory. wake(ud) is called on the
 * executor's thread when a call ended, until hx_resize_close: it must only
 * signal. An id that is not 64 hex digits never goes into a URL: each
 * resize then fails. */
hx_resize *hx_resize_open(const char *sock, const char *api, const char *id,
                          void (*wake)(void *), void *ud);

/* Sets the TTY to rows x cols: at once when no call is in flight, else
 * once it ended (at most one per terminal; the latest size wins). The
 * first failure of a terminal is logged (a warn line), the others not. */
void hx_resize_want(hx_resize *r, unsigned rows, unsigned cols);

/* Whether a size is yet to be set (a call in flight). The terminal's
 * input that follows a resize waits for it. */
int hx_resize_busy(hx_resize *r);

/* The terminal is done with r: no wake after this returns; a call in
 * flight ends on its own and frees it. NULL: nothing. */
void hx_resize_close(hx_resize *r);

#endif
