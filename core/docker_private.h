/*
 * docker_private.h - what the files of horcrux.docker share:
 *
 *   docker.c           the client, connect, the grammar of refs, names,
 *                      images and paths, and the methods (what each asks)
 *   docker_transfer.c  the request userdata, transfers, results (the one
 *                      HTTP status -> kind mapping), the breaker's gate and
 *                      probe, the request's deadline, stats_many batches
 *                      (how it is asked and answered)
 *   docker_stream.c    the streams (events, stats_stream)
 *   docker_breaker.c   the circuit breaker of each daemon, process-wide
 *
 * Not a public header: the module's only exported symbol is still
 * luaopen_horcrux_docker (everything is built with -fvisibility=hidden).
 * The names below are global inside the horcrux binary, which links every
 * module, hence the hxd_ prefix.
 *
 * The request's deadline. Every transfer gets min(its own timeout, the time
 * left before the deadline of the request being run), read from the host
 * through deadline.h -- a C value of the worker thread that the host sets
 * around each resume of the route's coroutine; no Lua code takes part. A
 * transfer the deadline cut fails with kind "timeout" and a message that
 * says so; a call made after the deadline fails at once, nothing sent.
 */
#ifndef HORCRUX_DOCKER_PRIVATE_H
#define HORCRUX_DOCKER_PRIVATE_H

#include <curl/curl.h>
#include <lua.h>
#include <stddef.h>
#include <stdint.h>

#define HXD_CLIENT_MT "horcrux.docker.client"
#define HXD_REQUEST_MT "horcrux.docker.request"

/* The newest API version we speak. Negotiation takes the lower of this and
 * the daemon's; engines keep serving older versions, so a newer engine
 * works, and an older one is spoken to in its own version. */
#define HXD_MAX_API "1.51"

/* Idle easy handles a client keeps: enough for a stats_many batch of a
 * usual host to find its handles ready; a bigger batch cleans up the rest. */
#define HXD_FREE_MAX 32

/* The breaker's probe: GET /_ping, answered in milliseconds by a daemon
 * that runs, whatever its load. */
#define HXD_PROBE_MS 1000

/* Daemons a process keeps a breaker for (docker_breaker.c). */
#define HXD_BREAKERS 64

typedef struct hxd_breaker hxd_breaker;

typedef struct hxd_client {
  int closed;
  char *host;            /* as configured, for messages */
  char *base;            /* "http://localhost", "https://h:2376" */
  char *sock;            /* unix socket path, or NULL */
  char *ca, *cert, *key; /* TLS files, or NULL */
  char version[24];      /* "1.41"; "" until negotiated */
  long timeout_ms, connect_timeout_ms;
  size_t max_response;
  lua_Integer connects; /* new connections, summed over transfers */
  int nfree;
  CURL *free[HXD_FREE_MAX];
  hxd_breaker *breaker; /* its host's, or NULL: none */
  CURLM *sync; /* its synchronous transfers' multi (hx_perform), or NULL */
} hxd_client;

/* ---- docker.c -------------------------------------------------------- */

/* The client at stack index 1; raises when it is not one or is closed. */
hxd_client *hxd_check_client(lua_State *L);

/* An idle easy handle (or a new one); and back. Handles in flight belong to
 * their requests; they come back (or are cleaned up, once the client is
 * closed) through hxd_client_give. */
CURL *hxd_client_take(hxd_client *c);
void hxd_client_give(hxd_client *c, CURL *easy);

/* The options of every transfer to c's daemon that say where it is and
 * how to speak to it: user agent, protocols, unix socket, TLS files. */
CURLcode hxd_setup_where(CURL *e, const hxd_client *c);

/* Sets c's version to min(daemon's, ours) from the daemon's version text
 * s[0..n) ("1.41"); returns 0, changing nothing, when it is not one. */
int hxd_negotiate(hxd_client *c, const char *s, size_t n);

/* The same from a decoded GET /version reply on top of the stack (its
 * ApiVersion); 0 when it has none. */
int hxd_negotiate_reply(lua_State *L, hxd_client *c);

/* The container ref at idx, checked against Docker's grammar (a leading
 * "/" dropped): returns it and its length, or pushes nil, msg,
 * "bad_request" and returns NULL. */
const char *hxd_check_ref(lua_State *L, int idx, size_t *n);

/* ---- docker_transfer.c ----------------------------------------------- */

/* What a request's continuation makes of the reply. */
enum hxd_reply {
  HXD_VALUE,      /* the decoded JSON value; a non-2xx fails */
  HXD_TRUE,       /* true (ping); negotiates from its API-Version header */
  HXD_VERSION,    /* the decoded value; negotiates when not done yet */
  HXD_RAW,        /* status, body, headers: request() */
  HXD_CALL,       /* value, status | nil, msg, kind, status: call() */
  HXD_CALL_LINES, /* the same; a JSON reply is a sequence of JSON lines */
  HXD_STREAM      /* none: hxd_ready() returns 0 once the stream may start */
};

/* What a transfer asks. */
enum hxd_what { HXD_T_REAL, HXD_T_VERSION, HXD_T_PING };

/* User values of a request. */
enum { HXD_UV_CLIENT = 1, HXD_UV_TARGET, HXD_UV_BODY, HXD_UV_CTYPE };

typedef struct hxd_buf {
  char *p;
  size_t len, cap;
} hxd_buf;

/* The request userdata ("horcrux.docker.request"): everything a transfer
 * needs across a yield, freed by its __gc. */
typedef struct hxd_request {
  CURL *easy;     /* NULL when not holding one */
  hxd_client *cl; /* alive: the client is user value HXD_UV_CLIENT */
  struct curl_slist *headers;
  hxd_buf body, head; /* the reply */
  size_t max_response;
  int overflow; /* 1: max_response passed, 2: out of memory */
  int reply;    /* enum hxd_reply */
  int versioned;
  int admitted;       /* the breaker let it through (or probed first) */
  int probe;          /* the transfer set up is the breaker's probe */
  int capped;         /* its timeout is the request's deadline */
  long timeout_ms;    /* the transfer's, after the deadline (0: none) */
  const char *target; /* what it asks, for messages (anchored) */
  int64_t started;    /* monotonic ns: when the transfer was set up */
  char method[16];
  /* Filled when a transfer ends, before its handle is given back. */
  long status;
  long os_errno;
  int json;
  char err[CURL_ERROR_SIZE];
} hxd_request;

/* Sends `method` to the target on top of the stack (path and query,
 * without the version prefix; popped into the request) and returns the
 * results the reply kind gives. `body` and `ctype` are stack indexes of the
 * body (a string, or nil) and its content type (nil: JSON), or 0 for none.
 * `versioned` prefixes /vX.Y, negotiating first when needed. May yield. */
int hxd_send(lua_State *L, const char *method, int reply, int versioned,
             int body, int ctype);

/* c:stats_many(refs), the method itself. */
int hxd_stats_many(lua_State *L);

/* Pushes a new request for the client at index 1. */
hxd_request *hxd_push_request(lua_State *L, const char *method, int reply,
                              int versioned);

/* For the request at ridx (reply HXD_STREAM, synchronous): the deadline,
 * the breaker (a probe first when it is due) and the API version (GET
 * /version when needed). Returns 0 when its own transfer may start, or 3
 * with nil, msg, kind on top. */
int hxd_ready(lua_State *L, int ridx);

/* Sets r's handle up for one transfer of `what` (enum hxd_what), its
 * timeout capped by the request's deadline. */
CURLcode hxd_setup(lua_State *L, int ridx, hxd_request *r, int what);

/* Records what the results need from the handle and gives it back; an
 * answer (rc CURLE_OK) closes the breaker. */
void hxd_finish(hxd_request *r, CURLcode rc);

/* nil, msg, kind of a failed transfer (a failure to reach the daemon
 * counts for its breaker); of a non-2xx reply. Both return 3. */
int hxd_fail_transfer(lua_State *L, hxd_request *r, CURLcode rc);
int hxd_fail_http(lua_State *L, hxd_request *r);

/* Frees the reply buffers once the results are pushed. */
void hxd_reply_free(hxd_request *r);

/* The write callback of replies (r as its data); the buffers' append (0,
 * or 1 past cap_max, 2 out of memory). */
size_t hxd_on_body(char *p, size_t size, size_t n, void *ud);
int hxd_buf_add(hxd_buf *b, const char *p, size_t n, size_t cap_max);

/* The kind of a non-2xx reply with the daemon's message (NULL: none), and
 * of a transfer that failed with rc: the one mapping, for docker_relay.c. */
const char *hxd_status_kind(long status, const char *msg);
const char *hxd_curl_kind(CURLcode rc);

/* c:relay(...), the method (docker_relay.c). */
int hxd_relay(lua_State *L);

/* True when p[0..n) holds only blanks (space, tab, CR). */
int hxd_blank(const char *p, size_t n);

/* Creates the request metatable (once per state). */
void hxd_open_requests(lua_State *L);

/* ---- docker_stream.c ------------------------------------------------- */

/* A stream's settings (see docker.c's stream options). */
typedef struct hxd_stream_opts {
  long stall_ms;   /* no byte for this long fails with "timeout"; 0: none */
  size_t max_line; /* a longer line fails with "limit" */
} hxd_stream_opts;

/* Runs GET <target on top> as a stream, handing each decoded line to the
 * callback at cb, to its end: true, "stopped" | "ended" | nil, msg, kind.
 * Synchronous: the caller has refused to run it in a request coroutine. */
int hxd_stream(lua_State *L, int cb, const hxd_stream_opts *opt);

/* ---- docker_breaker.c ------------------------------------------------ */

/* What the breaker lets a call do. */
enum hxd_gate {
  HXD_GO,     /* send it */
  HXD_PROBE,  /* send GET /_ping first; report its end */
  HXD_REFUSED /* fail at once: the message is in why */
};

/* The breaker of host (found or made) for a client, or NULL when every
 * slot is in use; the client gives it back with hxd_breaker_release. */
hxd_breaker *hxd_breaker_for(const char *host);
void hxd_breaker_release(hxd_breaker *b);

/* Asks b (NULL: no breaker, always HXD_GO) for a call; claims the probe
 * when one is due. */
int hxd_breaker_gate(hxd_breaker *b, char *why, size_t n);

/* Whether b lets calls through without probing (closed): 1, or 0 with the
 * refusal in why. */
int hxd_breaker_admits(hxd_breaker *b, char *why, size_t n);

/* A call got an answer: closes b. */
void hxd_breaker_ok(hxd_breaker *b);

/* A call (probe: the probe) failed with kind and msg after waiting since
 * `started` (monotonic ns). */
void hxd_breaker_fail(hxd_breaker *b, int probe, const char *kind,
                      const char *msg, int64_t started);

/* Pushes b's state: {host, state, failures, opened_count, last_error,
 * last_kind, and while not closed: message, opened, next_probe,
 * next_probe_in}. */
void hxd_breaker_push(lua_State *L, hxd_breaker *b);

/* The same for host, whether or not a client holds its breaker (none
 * known: closed, no failures). */
void hxd_breaker_push_host(lua_State *L, const char *host);

/* Pushes nil, b's refusal message, "unavailable"; returns 3. */
int hxd_breaker_refusal(lua_State *L, hxd_breaker *b);

#endif
