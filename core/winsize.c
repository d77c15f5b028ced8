/*
 * winsize.c - a terminal's window size as a client states it (winsize.h).
 * No dependency: the server and the fuzz target (tests/fuzz/
 * wsproto_target.c) link it alike.
 *
 * One pass, left to right, each byte looked at once: a message that
 * strays from the grammar is refused at that byte, and one longer than
 * the longest sequence (16 bytes) before any is read.
 */
#include "winsize.h"

#define SEQ_MAX 16 /* ESC [ 8 ; 65535 ; 65535 t */

/* A count at p[*i] (up to n): 1-5 digits, no leading zero, 1-65535;
 * *i moves past it. 0 when there is none. */
static unsigned count(const unsigned char *p, size_t n, size_t *i) {
  size_t at = *i;
  unsigned v = 0;
  if (at >= n || p[at] < '1' || p[at] > '9')
    return 0;
  while (at < n && p[at] >= '0' && p[at] <= '9' && at - *i < 5)
    v = v * 10 + (unsigned)(p[at++] - '0');
  if (v > HX_WINSIZE_MAX)
    return 0;
  *i = at; /* a sixth digit is refused by the byte that must follow */
  return v;
}

/* ROWS ; COLS at p[*i], then *i past it: 1, or 0. */
static int pair(const unsigned char *p, size_t n, size_t *i, unsigned *rows,
                unsigned *cols) {
  unsigned r = count(p, n, i);
  if (r == 0 || *i >= n || p[*i] != ';')
    return 0;
  (*i)++;
  unsigned c = count(p, n, i);
  if (c == 0)
    return 0;
  *rows = r, *cols = c;
  return 1;
}

int hx_winsize_seq(const unsigned char *p, size_t n, unsigned *rows,
                   unsigned *cols) {
  size_t i = 4;
  unsigned r, c;
  if (n < 8 || n > SEQ_MAX || p[0] != 0x1b || p[1] != '[' || p[2] != '8' ||
      p[3] != ';')
    return 0;
  if (!pair(p, n, &i, &r, &c) || i + 1 != n || p[i] != 't')
    return 0;
  *rows = r, *cols = c;
  return 1;
}
