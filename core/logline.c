/* logline.c - the server's log lines, escaped (see logline.h). */
#include "logline.h"

#include "server.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int plain(unsigned char c) { return c >= 0x20 && c < 0x7f && c != '\\'; }

/* The escape of c into e (at most 4 bytes); returns its length. */
static size_t escape_byte(unsigned char c, char *e) {
  static const char hex[] = "0123456789abcdef";
  e[0] = '\\';
  switch (c) {
  case '\n':
    e[1] = 'n';
    return 2;
  case '\r':
    e[1] = 'r';
    return 2;
  case '\t':
    e[1] = 't';
    return 2;
  case '\\':
    e[1] = '\\';
    return 2;
  default:
    e[1] = 'x';
    e[2] = hex[c >> 4];
    e[3] = hex[c & 15];
    return 4;
  }
}

size_t hx_log_escape(char *out, size_t cap, const char *s, size_t n,
                     size_t *used) {
  size_t w = 0, r = 0;
  for (; r < n; r++) {
    unsigned char c = (unsigned char)s[r];
    if (plain(c)) {
      if (w >= cap)
        break;
      out[w++] = (char)c;
      continue;
    }
    char e[4];
    size_t k = escape_byte(c, e);
    if (cap - w < k)
      break;
    memcpy(out + w, e, k);
    w += k;
  }
  if (used != NULL)
    *used = r;
  return w;
}

/* A message longer than this is cut (escaped, it may take four times as
 * much room in the line). */
#define MESSAGE_MAX 4096

void hx_logv(const char *level, const char *fmt, va_list ap) {
  char msg[MESSAGE_MAX], line[4 * MESSAGE_MAX + 128], ts[32];
  struct timespec now;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &now);
  gmtime_r(&now.tv_sec, &tm);
  strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
  int m = vsnprintf(msg, sizeof msg, fmt, ap); /* truncates */
  size_t n = m < 0 ? 0 : (size_t)m < sizeof msg ? (size_t)m : sizeof msg - 1;
  while (n > 0 && msg[n - 1] == '\n')
    n--;
  int h = snprintf(line, sizeof line, "%s.%03ldZ %s ", ts,
                   now.tv_nsec / 1000000, level);
  size_t len = h < 0 ? 0 : (size_t)h;
  len += hx_log_escape(line + len, sizeof line - len - 1, msg, n, NULL);
  line[len++] = '\n';
  /* One write: lines of concurrent threads never interleave. */
  ssize_t wr = write(STDERR_FILENO, line, len);
  (void)wr;
}

void hx_log(const char *level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  hx_logv(level, fmt, ap);
  va_end(ap);
}
