/*
 * guard.h - what `horcrux serve` refuses before any route runs, and the
 * limits it sets on connections.
 *
 * Hosts. A browser that an attacker's page drives can be pointed at the
 * server under the attacker's own name (DNS rebinding): the request then
 * carries that name in Host. Only the names of the allow-list are served:
 * localhost, 127.0.0.1, [::1], the host part of --listen, and each
 * --allow-host; a name matches with any port, a NAME:PORT only with that
 * port. A request without Host is served only over HTTP/1.0 (which has no
 * Host); HTTP/1.1 requires exactly one (RFC 9112, 3.2).
 *
 * Addresses. --max-per-ip counts connections per client address, where
 * all of 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104 are one address (every
 * local process can bind any 127.x source) and an IPv4-mapped IPv6
 * address is its IPv4 address. The count is kept here, through
 * libmicrohttpd's accept-policy and connection callbacks.
 *
 * Descriptors. The soft RLIMIT_NOFILE is raised to the hard limit, and
 * the connections are kept below it with a reserve for everything else
 * the process opens (hx_fd_plan).
 */
#ifndef HORCRUX_GUARD_H
#define HORCRUX_GUARD_H

#include <microhttpd.h>
#include <stddef.h>
#include <sys/socket.h>

typedef struct hx_hosts hx_hosts;

/* The allow-list: the loopback names, the host part of listen ("ADDR:PORT"
 * or "[ADDR]:PORT") and names[0..n). NULL when out of memory. */
hx_hosts *hx_hosts_new(const char *listen, const char *const *names, size_t n);
void hx_hosts_free(hx_hosts *h);

/* Whether name is one --allow-host takes: NAME or NAME:PORT, NAME letters,
 * digits and "-._", or an IPv6 address in brackets. */
int hx_hosts_valid_name(const char *name);

/* NULL when the Host of conn may be served; else the kind of the refusal
 * ("bad_request": Host missing from HTTP/1.1, repeated or malformed;
 * "forbidden": not on the list) with its message in msg[0..cap). */
const char *hx_hosts_check(const hx_hosts *h, struct MHD_Connection *conn,
                           const char *version, char *msg, size_t cap);

#endif
