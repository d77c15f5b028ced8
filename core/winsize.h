/*
 * winsize.h - a terminal's window size as a client states it: xterm's
 * window-size sequence in a WebSocket message.
 */
#ifndef HX_WINSIZE_H
#define HX_WINSIZE_H

#include <stddef.h>

/* The largest count of rows or columns (a TTY's struct winsize holds an
 * unsigned short). */
#define HX_WINSIZE_MAX 65535

/* Whether the n bytes at p are exactly xterm's window-size sequence
 * `ESC [ 8 ; ROWS ; COLS t`, ROWS and COLS decimal 1-65535 without a
 * leading zero, and nothing else; then *rows and *cols get them. Looks at
 * no more than 16 bytes, and no byte twice. */
int hx_winsize_seq(const unsigned char *p, size_t n, unsigned *rows,
                   unsigned *cols);

#endif
