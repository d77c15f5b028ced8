/*
 * request.h - one HTTP request of `horcrux serve` as the server keeps it,
 * and as a route sees it: a Lua table built lazily.
 *
 * The table a route gets holds `method` and `path`; every other field
 * (headers, query, args, body, id, remote, read_only, authenticated) is
 * made by the metatable's __index the first time a route reads it, then
 * stored in the table, so a route pays only for what it reads. The table
 * reaches its request through its metatable, one of a slot of the state's
 * (not a field of its own: pairs and JSON see only request fields), and the
 * server swaps that metatable when the request completes: a table a route
 * kept (in an upvalue, in a global) then answers nil for what it never
 * read, and never touches freed memory.
 */
#ifndef HORCRUX_REQUEST_H
#define HORCRUX_REQUEST_H

#include "deadline.h"
#include "states.h"

#include <lua.h>
#include <microhttpd.h>
#include <stddef.h>
#include <time.h>

typedef struct server server;

enum phase { RECEIVING, WAITING, DONE };

typedef struct request {
  server *srv;
  struct MHD_Connection *conn;
  hx_state *st;
  lua_State *co; /* the thread running the route, or NULL */
  int co_ref;
  int slot; /* its request table's slot (request.c), or 0 */
  hx_run run;
  enum phase phase;
  lua_Integer resume_value; /* set by the executor before resuming */
  char *body;
  size_t len, cap;
  int too_large;
  int counted;       /* in its worker's count of requests in flight */
  int authenticated; /* a valid bearer token came with it */
  int read_only;     /* the server runs with --read-only */
  int web;           /* a dashboard file (static.h), not a route */
  int status;
  struct timespec start;
  hx_deadline deadline; /* set by the server when the route starts */
  char method[16];
  char id[20];
  size_t path_len;
  char path[]; /* as MHD decoded it */
} request;

/* Makes the state's slots of request tables (request.c) in L. Raises on a
 * memory error. */
void hx_request_slots(lua_State *L, hx_state *st);

/* Pushes the request table of rq and gives it a slot (protected callers
 * only: allocates). */
void hx_request_push(lua_State *L, request *rq, hx_state *st);

/* Cuts rq's request table off rq and frees its slot. Allocates nothing. */
void hx_request_forget(lua_State *L, request *rq, hx_state *st);

/* Writes rq->id: 16 hex digits of base and n. */
void hx_request_id(request *rq, unsigned long long base, unsigned long long n);

/* The client's address (IPv4 or IPv6) into host, or `none`. */
const char *hx_client_host(struct MHD_Connection *conn, char *host, size_t size,
                           const char *none);

/* MHD's unescape callback: percent-decodes the path and query values in
 * place, except %00. */
size_t hx_unescape(void *cls, struct MHD_Connection *c, char *s);

/* The access log's line for rq, written to stderr with one write. */
void hx_request_log(const request *rq, int aborted);

#endif
