/*
 * guard.h - what `horcrux serve` refuses before any route runs, and the
 * limits it sets on connections.
 *
 * Hosts. A browser that an attacker's page drives can be pointed at the
 * server under the attacker's own name (DNS rebinding): the request then
 * carries that name in Host. Only the names of the allow-list are served:
 * localhost, 127.0.0.1, [::1], the host part of --listen, and each
 * --allow-host; a name matches with any port, a NAME:PORT only with that
 * port. An IP address (192.0.2.2, [2001:db8::1]) is always served: a page
 * that sends one as Host was loaded from that address, so no rebinding
 * is involved (the address of a server on 0.0.0.0 need not be listed). A
 * request without Host is served only over HTTP/1.0 (which has no Host);
 * HTTP/1.1 requires exactly one (RFC 9112, 3.2).
 *
 * Addresses. --max-per-ip counts connections per client address, where
 * all of 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104 are one address (every
 * local process can bind any 127.x source) and an IPv4-mapped IPv6
 * address is its IPv4 address. The count is kept here, through
 * libmicrohttpd's accept-policy and connection callbacks.
 *
 * Descriptors. The soft RLIMIT_NOFILE is raised to the hard limit, and
 * the connections are kept below it with a reserve for everything else
 * the process opens, the live view's kept cgroup files included
 * (hx_fd_plan).
 */
#ifndef HORCRUX_GUARD_H
#define HORCRUX_GUARD_H

#include "server.h"

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

/* ---- the token ---- */

/* The start checks: beyond loopback (open), or with --require-token,
 * every route needs the token, so there must be one. Returns 0, or -1
 * (logged). */
int hx_check_access(const hx_server_config *cfg, int open);

/* The token rule and --read-only for one request: NULL when it may go on;
 * else the kind of the refusal, its message in *msg. `everywhere`: every
 * route needs the token (beyond loopback, --require-token); else only
 * those that change state (POST, PUT, PATCH, DELETE). auth is the
 * Authorization header or NULL; *authenticated is set when it carries the
 * token (compared in time that does not depend on where they differ). */
const char *hx_token_check(const hx_server_config *cfg, int everywhere,
                           const char *method, const char *auth,
                           int *authenticated, const char **msg);

/* ---- addresses ---- */

/* Whether sa is a loopback address: 127.0.0.0/8, ::1, ::ffff:127.x. */
int hx_is_loopback(const struct sockaddr *sa);

/* --listen's "ADDR:PORT" or "[ADDR]:PORT" (numeric) into ss; *v6 set for
 * IPv6. Returns 0 or -1. */
int hx_parse_listen(const char *spec, struct sockaddr_storage *ss, int *v6);

/* The per-address count of --max-per-ip (1 or more). Its two callbacks go
 * to MHD_start_daemon: hx_conns_accept as the accept policy (refuses an
 * address that has `max` connections) and hx_conns_notify as
 * MHD_OPTION_NOTIFY_CONNECTION (counts a connection while it is open). */
typedef struct hx_conns hx_conns;
hx_conns *hx_conns_new(unsigned max);
void hx_conns_free(hx_conns *c);
enum MHD_Result hx_conns_accept(void *cls, const struct sockaddr *sa,
                                socklen_t len);
void hx_conns_notify(void *cls, struct MHD_Connection *conn,
                     void **socket_context,
                     enum MHD_ConnectionNotificationCode code);

/* ---- descriptors ---- */

typedef struct hx_fd_plan_t {
  unsigned long long limit;    /* the soft RLIMIT_NOFILE, once raised */
  unsigned long long reserve;  /* kept for the server itself */
  unsigned connections;        /* --max-connections */
  unsigned long long view_fds; /* the live view's max_fds */
  char why[512];               /* why it does not fit */
} hx_fd_plan_t;

/* Raises the soft RLIMIT_NOFILE to the hard limit (at most 2^20), then
 * splits it: a reserve for the server itself (192, and 36 + max_inflight
 * per worker), the connections, and the rest for the cgroup files the live
 * view keeps open (its max_fds, up to 11 a container: half the limit, as
 * the view takes by itself, or less when that does not fit). A
 * max_connections
 * of 0 takes 1024, or half of what the reserve leaves when that is less;
 * one under 16, or that leaves the view fewer than 11 x 16 descriptors, is
 * refused. Returns 0, or -1 with p->why. */
int hx_fd_plan(hx_fd_plan_t *p, unsigned workers, unsigned max_inflight,
               unsigned max_connections);

/* hx_fd_plan for cfg: sets cfg->max_connections, tells the live view how
 * many descriptors it may keep (horcrux.view's set_limits{max_fds=}), logs
 * the plan. Returns 0, or -1 (logged). */
int hx_plan_descriptors(hx_server_config *cfg);

#endif
