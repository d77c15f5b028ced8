/* server.h - `horcrux serve`: libmicrohttpd in front of the Lua routes. */
#ifndef HORCRUX_SERVER_H
#define HORCRUX_SERVER_H

#include "states.h"

typedef struct hx_server_config {
  const char *listen;       /* "ADDR:PORT", "[ADDR]:PORT" */
  unsigned workers;         /* MHD threads, one Lua state each */
  unsigned conn_timeout;    /* seconds a connection may sit idle */
  unsigned max_connections; /* in total; 0: 1024, or what fits (guard.h) */
  unsigned max_per_ip;      /* per client address */
  size_t body_max;          /* request body bytes (413 beyond) */
  unsigned max_inflight;    /* requests in flight per worker (429 beyond) */
  unsigned grace;           /* seconds to finish requests on SIGTERM */
  unsigned deadline;        /* seconds a request may take; 0 = none */
  int access_log;           /* one line per request on stderr */
  double interval;          /* collector period in seconds; 0 = none */
  double history;           /* seconds of history a container keeps */
  const char *token;        /* bearer token, or NULL: no mutating routes */
  int require_token;        /* every route needs the token */
  const char *const *allow_hosts; /* Host names served beyond the defaults */
  size_t n_allow_hosts;
  const char *const *cors; /* --cors origins (cors.h) */
  size_t n_cors;
  int read_only;         /* refuse every mutating request */
  const char *state_dir; /* the webhooks' queues: DIR/hooks/<name> */
  int64_t started_ns;    /* wall clock when serve began (hx_serve sets it) */
  const char *web_dir;   /* the dashboard's files (static.h), or NULL */
  unsigned stream_queue; /* messages a stream subscriber may have queued */
  size_t stream_bytes;   /* bytes likewise */
  unsigned events_ring;  /* container events kept for GET /api/events */
  hx_states_config lua;  /* the Lua states */
} hx_server_config;

/* Serves until SIGTERM or SIGINT; SIGHUP reloads the scripts. Returns the
 * process exit status. */
int hx_serve(const hx_server_config *cfg);

/* One log line on stderr: "<RFC 3339 time> <level> <message>". */
void hx_log(const char *level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
