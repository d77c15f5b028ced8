/*
 * logline.h - the server's log lines, one per event on stderr:
 * "<RFC 3339 time> <level> <message>".
 *
 * Every byte a line carries that is not printable ASCII is escaped, and so
 * is the backslash, so that nothing a client sends (a decoded %0d%0a in a
 * path, a header, an error message quoting it) can start a line of its
 * own or drive the terminal that shows the log: "\n", "\r", "\t", "\\",
 * and "\xHH" for any other byte below 0x20 or from 0x7f up (as nginx
 * writes its access log). horcrux.log (lua/horcrux/log.lua) escapes the
 * same way.
 */
#ifndef HORCRUX_LOGLINE_H
#define HORCRUX_LOGLINE_H

#include <stdarg.h>
#include <stddef.h>

/* Writes s[0..n) escaped into out[0..cap): never an escape cut in two.
 * Returns the bytes written; *used (may be NULL) gets how many bytes of s
 * they stand for (less than n when out was too small). */
size_t hx_log_escape(char *out, size_t cap, const char *s, size_t n,
                     size_t *used);

/* hx_log (server.h) with a va_list. A trailing newline of the message is
 * dropped (libmicrohttpd ends its messages with one). */
void hx_logv(const char *level, const char *fmt, va_list ap);

#endif
