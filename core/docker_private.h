/*
 * docker_private.h - what the two files of horcrux.docker share:
 *
 *   docker.c           the client, connect, the grammar of refs, names,
 *                      images and paths, and the methods (what each asks)
 *   docker_transfer.c  the request userdata, transfers, results (the one
 *                      HTTP status -> kind mapping), stats_many batches and
 *                      streams (how it is asked and answered)
 *
 * Not a public header: the module's only exported symbol is still
 * luaopen_horcrux_docker (everything is built with -fvisibility=hidden).
 * The names below are global inside the horcrux binary, which links every
 * module, hence the hxd_ prefix.
 */
#ifndef HORCRUX_DOCKER_PRIVATE_H
#define HORCRUX_DOCKER_PRIVATE_H

#include <curl/curl.h>
#include <lua.h>
#include <stddef.h>

#define HXD_CLIENT_MT "horcrux.docker.client"
#define HXD_REQUEST_MT "horcrux.docker.request"

/* The newest API version we speak. Negotiation takes the lower of this and
 * the daemon's; engines keep serving older versions, so a newer engine
 * works, and an older one is spoken to in its own version. */
#define HXD_MAX_API "1.51"

/* Idle easy handles a client keeps: enough for a stats_many batch of a
 * usual host to find its handles ready; a bigger batch cleans up the rest. */
#define HXD_FREE_MAX 32

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
  HXD_VALUE,     /* the decoded JSON value; a non-2xx fails */
  HXD_TRUE,      /* true (ping); negotiates from its API-Version header */
  HXD_VERSION,   /* the decoded value; negotiates when not done yet */
  HXD_RAW,       /* status, body, headers: request() */
  HXD_CALL,      /* value, status | nil, msg, kind, status: call() */
  HXD_CALL_LINES /* the same; a JSON reply is a sequence of JSON lines */
};

/* Sends `method` to the target on top of the stack (path and query,
 * without the version prefix; popped into the request) and returns the
 * results the reply kind gives. `body` and `ctype` are stack indexes of the
 * body (a string, or nil) and its content type (nil: JSON), or 0 for none.
 * `versioned` prefixes /vX.Y, negotiating first when needed. May yield. */
int hxd_send(lua_State *L, const char *method, int reply, int versioned,
             int body, int ctype);

/* c:stats_many(refs), the method itself. */
int hxd_stats_many(lua_State *L);

/* A stream's settings (see docker.c's stream options). */
typedef struct hxd_stream_opts {
  long stall_ms;   /* no byte for this long fails with "timeout"; 0: none */
  size_t max_line; /* a longer line fails with "limit" */
} hxd_stream_opts;

/* Runs GET <target on top> as a stream, handing each decoded line to the
 * callback at cb, to its end: true, "stopped" | "ended" | nil, msg, kind.
 * Synchronous: the caller has refused to run it in a request coroutine. */
int hxd_stream(lua_State *L, int cb, const hxd_stream_opts *opt);

/* Creates the request metatable (once per state). */
void hxd_open_requests(lua_State *L);

#endif
