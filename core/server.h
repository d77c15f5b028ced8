/* server.h - `horcrux serve`: libmicrohttpd in front of the Lua routes. */
#ifndef HORCRUX_SERVER_H
#define HORCRUX_SERVER_H

#include "states.h"

typedef struct hx_server_config {
  const char *listen;       /* "ADDR:PORT", "[ADDR]:PORT" */
  unsigned workers;         /* MHD threads, one Lua state each */
  unsigned conn_timeout;    /* seconds a connection may sit idle */
  unsigned max_connections; /* in total */
  unsigned max_per_ip;      /* per client address */
  size_t body_max;          /* request body bytes (413 beyond) */
  unsigned grace;           /* seconds to finish requests on SIGTERM */
  int access_log;           /* one line per request on stderr */
  double interval;          /* collector period in seconds; 0 = none */
  const char *token;        /* bearer token, or NULL: no mutating routes */
  int read_only;            /* refuse every mutating request */
  hx_states_config lua;     /* the Lua states */
} hx_server_config;

/* Serves until SIGTERM or SIGINT; SIGHUP reloads the scripts. Returns the
 * process exit status. */
int hx_serve(const hx_server_config *cfg);

/* One log line on stderr: "<RFC 3339 time> <level> <message>". */
void hx_log(const char *level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
