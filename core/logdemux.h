/*
 * logdemux.h - a container's log stream split into lines as it arrives:
 * lua/horcrux/logs.lua's demux, incremental and in C, for log follow
 * (core/follow.c) and the hub's test entry (hub.demux).
 *
 * Without a TTY the daemon multiplexes: each frame is an 8-byte header
 * (stream: 0 stdin, 1 stdout, 2 stderr, 3 system; three zero bytes; the
 * payload's length, big-endian) and its payload. Frames of one stream are
 * joined until a newline (a message over 16 KiB comes as several frames
 * without one); with timestamps, a frame's payload starts with the
 * daemon's RFC 3339 time and a space, and a line's time is the one of the
 * frame it started in (a second line of the same frame has none, as in
 * logs.lua). With a TTY the stream is the raw terminal output: one stream
 * (stdout), lines split at newlines, each with its own time. A trailing CR
 * is dropped from every line.
 *
 * The bytes may be cut anywhere between two feeds (a header, a time, a
 * line). Memory is bounded: a line longer than max_line is cut there and
 * flagged truncated, the rest of it up to its newline dropped.
 */
#ifndef HORCRUX_LOGDEMUX_H
#define HORCRUX_LOGDEMUX_H

#include <stddef.h>
#include <stdint.h>

#define HX_LOG_STREAMS 4
#define HX_LOG_TIME_MAX 40 /* logs.lua looks at the first 40 bytes */

/* A complete line: stream's name ("stdin", "stdout", "stderr", "system"),
 * its bytes (no newline, no trailing CR), its time (NULL: none) and
 * whether max_line cut it. Returns 0 to go on, non-zero to stop the feed
 * (hx_demux_feed then returns 1). */
typedef int (*hx_line_fn)(void *ud, const char *stream, const char *line,
                          size_t len, const char *time, int truncated);

typedef struct hx_line_buf {
  char *p;
  size_t len, cap;
  int open;                       /* bytes came since the last newline */
  int truncated;                  /* max_line cut it */
  char time[HX_LOG_TIME_MAX + 1]; /* "" when none */
} hx_line_buf;

typedef struct hx_demux {
  int tty, timestamps;
  size_t max_line;
  hx_line_fn fn;
  void *ud;
  int bad; /* not a frame header: what follows is ignored */
  unsigned char hdr[8];
  size_t hdr_n;
  uint64_t left; /* payload bytes of the current frame still to come */
  int stream;    /* the current frame's stream */
  int in_frame;  /* between a header and the end of its payload */
  /* the start of the current frame's payload, while its time is not
   * decided (timestamps only) */
  char head[HX_LOG_TIME_MAX + 1];
  size_t head_n;
  uint64_t frame_len;
  int head_done;
  char ftime[HX_LOG_TIME_MAX + 1]; /* the frame's time until its newline */
  hx_line_buf line[HX_LOG_STREAMS];
} hx_demux;

void hx_demux_init(hx_demux *d, int tty, int timestamps, size_t max_line,
                   hx_line_fn fn, void *ud);

/* Feeds p[0..n). Returns 0; 1 when the callback stopped it; -1 when the
 * bytes are not frames (d->bad: nothing more is read); -2 out of memory. */
int hx_demux_feed(hx_demux *d, const char *p, size_t n);

/* The end of the stream: a frame cut short is taken as far as it went,
 * then each stream's unfinished line (stdin, stdout, stderr, system).
 * Returns as hx_demux_feed. */
int hx_demux_finish(hx_demux *d);

void hx_demux_free(hx_demux *d);

#endif
