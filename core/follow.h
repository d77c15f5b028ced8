/*
 * follow.h - log follow: a route returned hub.follow{} (GET
 * /api/containers/:id/logs?follow=1), and its connection's subscriber is
 * fed by a transfer of its own rather than by a topic's publishers.
 *
 * The transfer (GET /containers/<id>/logs?follow=1 on the daemon) runs on
 * an executor of the streams' own (core/executor.c: one thread, one curl
 * multi, started with the first follow), so no worker thread and no Lua
 * state waits for a log line, and request transfers never queue behind
 * follows. Its bytes are split into lines in C (logdemux.h) and each line
 * is one message `log`: {"line", "stream"[, "time"][, "truncated"]}. When
 * the daemon ends the stream (the container stopped) a final `end` says
 * why; a reader that falls behind gets `overflow` and the transfer stops;
 * a client that goes cancels the transfer (hx_executor_cancel).
 */
#ifndef HORCRUX_FOLLOW_H
#define HORCRUX_FOLLOW_H

#include "hub.h"

/* The longest line sent whole; a longer one is cut here ("truncated"). */
#define HX_FOLLOW_MAX_LINE (64 * 1024)

/* Starts spec's log follow (spec->ep set) for a consumer that wake(ud)
 * resumes; returns its subscriber (closed with hx_sub_close as any other,
 * which stops the transfer), or NULL when the server is stopping or the
 * transfer cannot start. */
hx_sub *hx_follow_open(const hx_stream_spec *spec, hx_wake_fn wake, void *ud);

/* How many follows' transfers are under way. */
int hx_follow_count(void);

/* At the server's stop, once every stream got its final message: ends the
 * transfers and the thread. Later hx_follow_open calls fail. */
void hx_follow_stop(void);

#endif
