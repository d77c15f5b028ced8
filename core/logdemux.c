/* logdemux.c - a log stream split into lines as it arrives (logdemux.h). */
#include "logdemux.h"

#include <stdlib.h>
#include <string.h>

static const char *const STREAM_NAME[HX_LOG_STREAMS] = {"stdin", "stdout",
                                                        "stderr", "system"};

void hx_demux_init(hx_demux *d, int tty, int timestamps, size_t max_line,
                   hx_line_fn fn, void *ud) {
  memset(d, 0, sizeof *d);
  d->tty = tty;
  d->timestamps = timestamps;
  d->max_line = max_line > 0 ? max_line : 1;
  d->fn = fn;
  d->ud = ud;
}

void hx_demux_free(hx_demux *d) {
  for (int i = 0; i < HX_LOG_STREAMS; i++) {
    free(d->line[i].p);
    d->line[i].p = NULL;
  }
}

/* logs.lua's time pattern: ^%d%d%d%d%-%d%d%-%d%dT[%d:.]+Z$ */
static int is_time(const char *s, size_t n) {
  static const char shape[] = "dddd-dd-ddT";
  if (n < sizeof shape + 1) /* the shape, one of [%d:.], Z */
    return 0;
  for (size_t i = 0; i < sizeof shape - 1; i++) {
    int digit = s[i] >= '0' && s[i] <= '9';
    if (shape[i] == 'd' ? !digit : s[i] != shape[i])
      return 0;
  }
  for (size_t i = sizeof shape - 1; i + 1 < n; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || s[i] == ':' || s[i] == '.'))
      return 0;
  return s[n - 1] == 'Z';
}

/* logs.lua's split_time over the first bytes of a payload, h[0..n), the
 * whole payload when whole: the length of the time and its space to skip
 * (the time is h[0..len)), or 0 when there is none. *t gets the time. */
static size_t split_time(const char *h, size_t n, int whole,
                         char t[HX_LOG_TIME_MAX + 1]) {
  const char *sp = memchr(h, ' ', n < HX_LOG_TIME_MAX ? n : HX_LOG_TIME_MAX);
  size_t len;
  if (sp != NULL)
    len = (size_t)(sp - h);
  else if (whole && n <= HX_LOG_TIME_MAX)
    len = n;
  else
    return 0;
  if (!is_time(h, len))
    return 0;
  memcpy(t, h, len);
  t[len] = '\0';
  return sp != NULL ? len + 1 : len;
}

/* Appends p[0..n) to the open line of l (cut at max_line). */
static int line_add(hx_demux *d, hx_line_buf *l, const char *p, size_t n) {
  l->open = 1;
  if (l->len + n > d->max_line) {
    n = d->max_line - l->len;
    l->truncated = 1;
  }
  if (n == 0)
    return 0;
  if (l->len + n > l->cap) {
    size_t cap = l->cap ? l->cap : 256;
    while (cap < l->len + n)
      cap *= 2;
    char *q = realloc(l->p, cap);
    if (q == NULL)
      return -2;
    l->p = q;
    l->cap = cap;
  }
  memcpy(l->p + l->len, p, n);
  l->len += n;
  return 0;
}

/* The line of stream s is complete: handed to the callback with time t
 * (NULL or "": none), then emptied. */
static int line_end(hx_demux *d, int s, const char *t) {
  hx_line_buf *l = &d->line[s];
  size_t n = l->len;
  if (n > 0 && l->p[n - 1] == '\r' && !l->truncated)
    n--;
  if (l->time[0] != '\0')
    t = l->time;
  int stop = d->fn(d->ud, STREAM_NAME[s], l->p != NULL ? l->p : "", n,
                   t != NULL && t[0] != '\0' ? t : NULL, l->truncated);
  l->len = 0;
  l->open = 0;
  l->truncated = 0;
  l->time[0] = '\0';
  if (l->cap > 64 * 1024) { /* a long line's buffer is not kept */
    free(l->p);
    l->p = NULL;
    l->cap = 0;
  }
  return stop ? 1 : 0;
}

/* A TTY's line with timestamps is complete: its own time split off. */
static int tty_line_end(hx_demux *d, int s) {
  hx_line_buf *l = &d->line[s];
  char t[HX_LOG_TIME_MAX + 1];
  size_t skip = split_time(l->p != NULL ? l->p : "", l->len, 1, t);
  if (skip > 0) {
    memmove(l->p, l->p + skip, l->len - skip);
    l->len -= skip;
  }
  return line_end(d, s, skip > 0 ? t : NULL);
}

/* Payload bytes of the current frame (or of the TTY stream), after its
 * time: lines end at each newline. In a frame, only the first line gets the
 * frame's time; a TTY's lines are split for their time when they end. */
static int payload(hx_demux *d, const char *p, size_t n) {
  int s = d->tty ? 1 : d->stream;
  hx_line_buf *l = &d->line[s];
  while (n > 0) {
    const char *nl = memchr(p, '\n', n);
    size_t k = nl != NULL ? (size_t)(nl - p) : n;
    int rc = line_add(d, l, p, k);
    if (rc != 0)
      return rc;
    if (nl == NULL)
      break;
    if (d->tty && d->timestamps) {
      rc = tty_line_end(d, s);
    } else {
      rc = line_end(d, s, d->ftime);
      d->ftime[0] = '\0';
    }
    if (rc != 0)
      return rc;
    p += k + 1;
    n -= k + 1;
  }
  return 0;
}

/* The start of a frame's payload with timestamps: held in d->head until its
 * time is decided (a space within 40 bytes, 40 bytes, or the whole
 * payload); then the time is split off and the rest goes on. `whole`: the
 * stream ended, what came is the payload. Returns the bytes of p taken. */
static size_t frame_head(hx_demux *d, const char *p, size_t n, int whole,
                         int *rc) {
  size_t want =
      d->frame_len < HX_LOG_TIME_MAX ? (size_t)d->frame_len : HX_LOG_TIME_MAX;
  size_t took = 0;
  while (took < n && d->head_n < want) {
    char c = p[took++];
    d->head[d->head_n++] = c;
    if (c == ' ')
      break;
  }
  int space = d->head_n > 0 && d->head[d->head_n - 1] == ' ';
  if (!space && d->head_n < want && !whole)
    return took; /* undecided: more bytes are needed */
  d->head_done = 1;
  char t[HX_LOG_TIME_MAX + 1];
  size_t skip =
      split_time(d->head, d->head_n, whole || d->head_n == d->frame_len, t);
  /* a continuation (its stream's line is open) drops the time it had */
  if (skip > 0 && !d->line[d->stream].open)
    memcpy(d->ftime, t, sizeof t);
  *rc = payload(d, d->head + skip, d->head_n - skip);
  return took;
}

/* The current frame has ended: an open line of its stream keeps the time
 * it started with (logs.lua's ptime). */
static void frame_end(hx_demux *d) {
  hx_line_buf *l = &d->line[d->stream];
  if (l->open && l->time[0] == '\0' && d->ftime[0] != '\0')
    memcpy(l->time, d->ftime, sizeof l->time);
  d->ftime[0] = '\0';
  d->in_frame = 0;
}

static int header(hx_demux *d) {
  const unsigned char *h = d->hdr;
  d->hdr_n = 0;
  if (h[0] > 3 || h[1] != 0 || h[2] != 0 || h[3] != 0) {
    d->bad = 1;
    return -1;
  }
  d->stream = h[0];
  d->frame_len = d->left =
      (uint64_t)h[4] << 24 | (uint64_t)h[5] << 16 | (uint64_t)h[6] << 8 | h[7];
  d->in_frame = 1;
  d->head_n = 0;
  d->head_done = !d->timestamps;
  d->ftime[0] = '\0';
  if (!d->head_done && d->frame_len == 0)
    d->head_done = 1;
  if (d->left == 0)
    frame_end(d);
  return 0;
}

int hx_demux_feed(hx_demux *d, const char *p, size_t n) {
  if (d->bad)
    return -1;
  if (d->tty)
    return payload(d, p, n);
  while (n > 0) {
    if (!d->in_frame) {
      size_t k = 8 - d->hdr_n < n ? 8 - d->hdr_n : n;
      memcpy(d->hdr + d->hdr_n, p, k);
      d->hdr_n += k;
      p += k, n -= k;
      if (d->hdr_n == 8 && header(d) != 0)
        return -1;
      continue;
    }
    size_t k = d->left < n ? (size_t)d->left : n;
    int rc = 0;
    size_t took = 0;
    if (!d->head_done)
      took = frame_head(d, p, k, 0, &rc);
    if (rc == 0 && k > took)
      rc = payload(d, p + took, k - took);
    p += k, n -= k;
    d->left -= k;
    if (d->left == 0)
      frame_end(d);
    if (rc != 0)
      return rc;
  }
  return 0;
}

int hx_demux_finish(hx_demux *d) {
  int rc = 0;
  if (!d->tty && d->in_frame) { /* cut short: as far as it went */
    if (!d->head_done)
      frame_head(d, "", 0, 1, &rc);
    frame_end(d);
  }
  if (!d->tty && d->hdr_n > 0) /* a header cut short */
    d->bad = 1;
  d->hdr_n = 0;
  for (int s = 0; s < HX_LOG_STREAMS && rc == 0; s++) {
    hx_line_buf *l = &d->line[s];
    if (!l->open)
      continue;
    rc = d->tty && d->timestamps ? tty_line_end(d, s) : line_end(d, s, NULL);
  }
  if (rc == 0 && d->bad)
    rc = -1;
  return rc;
}
