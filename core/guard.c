/* guard.c - the Host allow-list, the per-address connection count, the
 * descriptor reserve (see guard.h). */
#include "guard.h"

#include "aux.h"
#include "server.h"
#include "states.h"

#include <lauxlib.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <time.h>

/* ---- hosts ------------------------------------------------------------ */

struct hx_hosts {
  size_t n;
  char **name; /* lower case; "NAME" (any port) or "NAME:PORT" */
};

static const char *const loopback_names[] = {"localhost", "127.0.0.1", "[::1]"};

static int add_name(hx_hosts *h, const char *s, size_t len) {
  char *d = malloc(len + 1);
  if (d == NULL)
    return -1;
  for (size_t i = 0; i < len; i++)
    d[i] = (char)tolower((unsigned char)s[i]);
  d[len] = '\0';
  h->name[h->n++] = d;
  return 0;
}

hx_hosts *hx_hosts_new(const char *listen, const char *const *names, size_t n) {
  size_t nloop = sizeof loopback_names / sizeof loopback_names[0];
  hx_hosts *h = calloc(1, sizeof *h);
  if (h == NULL || (h->name = calloc(nloop + 1 + n, sizeof(char *))) == NULL) {
    free(h);
    return NULL;
  }
  int bad = 0;
  for (size_t i = 0; i < nloop; i++)
    bad |= add_name(h, loopback_names[i], strlen(loopback_names[i]));
  const char *colon = listen != NULL ? strrchr(listen, ':') : NULL;
  if (colon != NULL && colon > listen)
    bad |= add_name(h, listen, (size_t)(colon - listen));
  for (size_t i = 0; i < n; i++)
    bad |= add_name(h, names[i], strlen(names[i]));
  if (bad) {
    hx_hosts_free(h);
    return NULL;
  }
  return h;
}

void hx_hosts_free(hx_hosts *h) {
  if (h == NULL)
    return;
  for (size_t i = 0; i < h->n; i++)
    free(h->name[i]);
  free(h->name);
  free(h);
}

/* The Host headers of a request: how many, and the first. */
typedef struct host_count {
  int n;
  const char *value;
} host_count;

static enum MHD_Result count_host(void *cls, enum MHD_ValueKind kind,
                                  const char *key, const char *value) {
  host_count *c = cls;
  (void)kind;
  if (key != NULL && strcasecmp(key, MHD_HTTP_HEADER_HOST) == 0 && c->n++ == 0)
    c->value = value != NULL ? value : "";
  return MHD_YES;
}

/* Splits a Host value into its name (with the brackets of an IPv6
 * address) and port; 0 when it is not one. */
static int split_host(const char *v, size_t *name_len, const char **port) {
  size_t len = strlen(v);
  const char *end;
  if (v[0] == '[')
    end = strchr(v, ']') != NULL ? strchr(v, ']') + 1 : NULL;
  else
    end = strchr(v, ':') != NULL ? strchr(v, ':') : v + len;
  if (end == NULL || end == v)
    return 0;
  *name_len = (size_t)(end - v);
  *port = NULL;
  if (*end == ':') {
    *port = end + 1;
    if (**port == '\0' || strspn(*port, "0123456789") != strlen(*port) ||
        strlen(*port) > 5)
      return 0;
  } else if (*end != '\0') {
    return 0;
  }
  for (const char *p = v; p < end; p++)
    if (!isalnum((unsigned char)*p) && strchr("-._[]:", *p) == NULL)
      return 0;
  return 1;
}

static int listed(const hx_hosts *h, const char *v, size_t name_len,
                  const char *port) {
  for (size_t i = 0; i < h->n; i++) {
    const char *e = h->name[i];
    if (strncasecmp(e, v, name_len) != 0)
      continue;
    if (e[name_len] == '\0')
      return 1; /* NAME: any port */
    if (e[name_len] == ':' && port != NULL &&
        strcmp(e + name_len + 1, port) == 0)
      return 1;
  }
  return 0;
}

/* Whether the name part of a Host value is an IP address (a.b.c.d, or an
 * IPv6 address in brackets). Such a Host cannot come from DNS rebinding:
 * the page that sent it was loaded from that address itself. */
static int ip_literal(const char *v, size_t name_len) {
  char a[INET6_ADDRSTRLEN + 2];
  unsigned char bin[sizeof(struct in6_addr)];
  if (name_len < 2 || name_len >= sizeof a)
    return 0;
  if (v[0] == '[') {
    if (v[name_len - 1] != ']')
      return 0;
    memcpy(a, v + 1, name_len - 2);
    a[name_len - 2] = '\0';
    return inet_pton(AF_INET6, a, bin) == 1;
  }
  memcpy(a, v, name_len);
  a[name_len] = '\0';
  return inet_pton(AF_INET, a, bin) == 1;
}

int hx_hosts_valid_name(const char *name) {
  size_t name_len;
  const char *port;
  return name != NULL && split_host(name, &name_len, &port);
}

const char *hx_hosts_check(const hx_hosts *h, struct MHD_Connection *conn,
                           const char *version, char *msg, size_t cap) {
  host_count c = {0, NULL};
  MHD_get_connection_values(conn, MHD_HEADER_KIND, count_host, &c);
  if (c.n == 0) {
    if (version != NULL && strcmp(version, MHD_HTTP_VERSION_1_0) == 0)
      return NULL;
    snprintf(msg, cap, "an HTTP/1.1 request needs a Host header");
    return "bad_request";
  }
  /* The Host this thread allowed last, for these rules: the answer depends
   * on nothing else, and a client sends the same Host every request. */
  static _Thread_local const hx_hosts *ok_rules;
  static _Thread_local char ok_host[128];
  if (c.n == 1 && ok_rules == h && strcmp(c.value, ok_host) == 0)
    return NULL;
  size_t name_len;
  const char *port;
  if (c.n > 1 || !split_host(c.value, &name_len, &port)) {
    snprintf(msg, cap, "%s",
             c.n > 1 ? "more than one Host header"
                     : "the Host header is malformed");
    return "bad_request";
  }
  if (ip_literal(c.value, name_len) || listed(h, c.value, name_len, port)) {
    size_t n = strlen(c.value);
    if (n < sizeof ok_host) {
      memcpy(ok_host, c.value, n + 1);
      ok_rules = h;
    }
    return NULL;
  }
  snprintf(msg, cap,
           "Host '%.200s' is not allowed here (a guard against DNS "
           "rebinding); to serve it, start horcrux with --allow-host %.*s",
           c.value, (int)(name_len > 200 ? 200 : name_len), c.value);
  return "forbidden";
}

/* ---- the token ------------------------------------------------------ */

static int is_mutating(const char *method) {
  return strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
         strcmp(method, "PATCH") == 0 || strcmp(method, "DELETE") == 0;
}

/* Compares in time that depends only on the lengths, never on where the
 * first difference is, so the token cannot be guessed byte by byte. */
static int same_secret(const char *a, size_t alen, const char *b, size_t blen) {
  volatile unsigned char diff = (unsigned char)(alen != blen);
  for (size_t i = 0; i < blen; i++)
    diff |= (unsigned char)(i < alen ? a[i] ^ b[i] : b[i]);
  return diff == 0;
}

/* The token an Authorization value carries ("Bearer " and at least one
 * byte), or NULL: another scheme, or none, is no token at all (401). */
static const char *bearer_of(const char *auth) {
  if (auth == NULL || strncasecmp(auth, "Bearer ", 7) != 0 || auth[7] == '\0')
    return NULL;
  return auth + 7;
}

const char *hx_token_check(const hx_server_config *cfg, int everywhere,
                           const char *method, const char *auth,
                           int *authenticated, const char **msg) {
  int mutating = is_mutating(method);
  const char *token = cfg->token;
  const char *given = bearer_of(auth);
  if (token != NULL && given != NULL)
    *authenticated = same_secret(given, strlen(given), token, strlen(token));
  if (mutating && cfg->read_only) {
    *msg = "horcrux runs in read-only mode: nothing may change";
    return "forbidden";
  }
  if (!mutating && !everywhere)
    return NULL;
  if (token == NULL) { /* only mutating requests get here without one */
    *msg = "this route changes state and needs a bearer token; start "
           "horcrux with HORCRUX_TOKEN or --token-file";
    return "unauthorized";
  }
  if (given == NULL) {
    *msg = "send Authorization: Bearer <token>";
    return "unauthorized";
  }
  if (!*authenticated) {
    *msg = "wrong bearer token";
    return "forbidden";
  }
  return NULL;
}

int hx_check_access(const hx_server_config *cfg, int open) {
  if (cfg->token != NULL || (!open && !cfg->require_token))
    return 0;
  if (open)
    hx_log("error",
           "--listen %s is beyond loopback: every route then needs a bearer "
           "token; set HORCRUX_TOKEN or --token-file",
           cfg->listen);
  else
    hx_log("error", "--require-token: every route needs a bearer token; set "
                    "HORCRUX_TOKEN or --token-file");
  return -1;
}

/* ---- addresses -------------------------------------------------------- */

int hx_is_loopback(const struct sockaddr *sa) {
  if (sa == NULL)
    return 0;
  if (sa->sa_family == AF_INET)
    return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) ==
           127;
  if (sa->sa_family != AF_INET6)
    return 0;
  const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
  return IN6_IS_ADDR_LOOPBACK(a) ||
         (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
}

/* Whether s is a port: 1 to 5 digits worth at most 65535 (getaddrinfo
 * takes 99999 and binds 34463, its remainder). */
static int is_port(const char *s) {
  unsigned long v = 0;
  size_t i = 0;
  for (; s[i] >= '0' && s[i] <= '9' && i < 5; i++)
    v = v * 10 + (unsigned long)(s[i] - '0');
  return i > 0 && s[i] == '\0' && v <= 65535;
}

int hx_parse_listen(const char *spec, struct sockaddr_storage *ss, int *v6) {
  char host[256];
  const char *colon = strrchr(spec, ':');
  if (colon == NULL || colon == spec || strlen(spec) >= sizeof host ||
      !is_port(colon + 1))
    return -1;
  size_t hl = (size_t)(colon - spec);
  memcpy(host, spec, hl);
  host[hl] = '\0';
  if (host[0] == '[' && hl >= 2 && host[hl - 1] == ']') {
    memmove(host, host + 1, hl - 2);
    host[hl - 2] = '\0';
  }
  struct addrinfo hints = {0}, *res = NULL;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
  hints.ai_socktype = SOCK_STREAM;
  if (getaddrinfo(host, colon + 1, &hints, &res) != 0 || res == NULL)
    return -1;
  memcpy(ss, res->ai_addr, res->ai_addrlen);
  *v6 = res->ai_family == AF_INET6;
  freeaddrinfo(res);
  return 0;
}

/* The key an address is counted under: its IPv6 form (an IPv4 address as
 * ::ffff:a.b.c.d), every loopback address as ::1. 0 for another family. */
static int address_key(const struct sockaddr *sa, unsigned char key[16]) {
  static const unsigned char mapped[12] = {0, 0, 0, 0, 0,    0,
                                           0, 0, 0, 0, 0xff, 0xff};
  memset(key, 0, 16);
  if (hx_is_loopback(sa)) {
    key[15] = 1;
    return 1;
  }
  if (sa != NULL && sa->sa_family == AF_INET) {
    memcpy(key, mapped, 12);
    memcpy(key + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    return 1;
  }
  if (sa != NULL && sa->sa_family == AF_INET6) {
    memcpy(key, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
    return 1;
  }
  return 0;
}

#define CONN_BUCKETS 1024 /* a power of two */

typedef struct conn_entry {
  unsigned char key[16];
  unsigned count;
  struct conn_entry *next;
} conn_entry;

struct hx_conns {
  pthread_mutex_t mu; /* accepts run on every pool thread */
  unsigned max;
  conn_entry *bucket[CONN_BUCKETS];
  atomic_llong last_warn_s; /* the log says a refusal once a second */
};

/* The reservation the accept callback made on this thread, for the
 * connection MHD sets up next on the same thread (its STARTED
 * notification). MHD runs both, one after the other, on the thread that
 * accepted; when it drops the connection between them (out of memory, the
 * connection limit), the next accept on the thread gives the reservation
 * back. */
static _Thread_local conn_entry *tls_reserved;

hx_conns *hx_conns_new(unsigned max) {
  hx_conns *c = calloc(1, sizeof *c);
  if (c == NULL)
    return NULL;
  pthread_mutex_init(&c->mu, NULL);
  c->max = max;
  return c;
}

void hx_conns_free(hx_conns *c) {
  if (c == NULL)
    return;
  for (size_t i = 0; i < CONN_BUCKETS; i++) {
    for (conn_entry *e = c->bucket[i], *next; e != NULL; e = next) {
      next = e->next;
      free(e);
    }
  }
  pthread_mutex_destroy(&c->mu);
  free(c);
}

static conn_entry **slot_of(hx_conns *c, const unsigned char key[16]) {
  uint32_t h = hx_fnv1a((const char *)key, 16);
  conn_entry **pp = &c->bucket[h & (CONN_BUCKETS - 1)];
  while (*pp != NULL && memcmp((*pp)->key, key, 16) != 0)
    pp = &(*pp)->next;
  return pp;
}

/* One connection less for e (c->mu held); the entry goes at 0. */
static void release(hx_conns *c, conn_entry *e) {
  if (--e->count != 0)
    return;
  conn_entry **pp = slot_of(c, e->key);
  if (*pp == e)
    *pp = e->next;
  free(e);
}

static void warn_refused(hx_conns *c, const struct sockaddr *sa) {
  long long now = (long long)time(NULL);
  long long last = atomic_load(&c->last_warn_s);
  if (now == last ||
      !atomic_compare_exchange_strong(&c->last_warn_s, &last, now))
    return;
  char host[INET6_ADDRSTRLEN] = "?";
  if (sa->sa_family == AF_INET)
    inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, host,
              sizeof host);
  else if (sa->sa_family == AF_INET6)
    inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, host,
              sizeof host);
  hx_log("warn", "refusing connections from %s%s: %u open (--max-per-ip)", host,
         hx_is_loopback(sa) ? " (all of loopback counts as one address)" : "",
         c->max);
}

enum MHD_Result hx_conns_accept(void *cls, const struct sockaddr *sa,
                                socklen_t len) {
  hx_conns *c = cls;
  unsigned char key[16];
  (void)len;
  pthread_mutex_lock(&c->mu);
  if (tls_reserved != NULL) { /* MHD dropped the last one before STARTED */
    release(c, tls_reserved);
    tls_reserved = NULL;
  }
  if (!address_key(sa, key)) {
    pthread_mutex_unlock(&c->mu);
    return MHD_YES; /* not an IP address: nothing to count */
  }
  conn_entry **pp = slot_of(c, key);
  if (*pp != NULL && (*pp)->count >= c->max) {
    pthread_mutex_unlock(&c->mu);
    warn_refused(c, sa);
    return MHD_NO;
  }
  if (*pp == NULL && (*pp = calloc(1, sizeof **pp)) != NULL)
    memcpy((*pp)->key, key, 16);
  if (*pp != NULL) {
    (*pp)->count++;
    tls_reserved = *pp;
  }
  pthread_mutex_unlock(&c->mu);
  return MHD_YES;
}

void hx_conns_notify(void *cls, struct MHD_Connection *conn,
                     void **socket_context,
                     enum MHD_ConnectionNotificationCode code) {
  hx_conns *c = cls;
  (void)conn;
  if (code == MHD_CONNECTION_NOTIFY_STARTED) {
    *socket_context = tls_reserved; /* NULL: not counted */
    tls_reserved = NULL;
    return;
  }
  conn_entry *e = *socket_context;
  if (e == NULL)
    return;
  *socket_context = NULL;
  pthread_mutex_lock(&c->mu);
  release(c, e);
  pthread_mutex_unlock(&c->mu);
}

/* ---- descriptors ------------------------------------------------------ */

/* The soft limit is raised to the hard one, up to this: a program the
 * server starts inherits it, and some walk every descriptor number up to
 * it. */
#define FD_CEILING (1 << 20)
/* What the process holds besides connections: stdio, the listening
 * socket, the executor's epoll and event descriptors, script and /proc
 * reads, the collector's client and event stream (64); and one wave of a
 * many-containers stats request in flight (MANY_WAVE, 128 connections to
 * the daemon). */
#define FD_FIXED (64 + 128)
/* Per worker: MHD's epoll and wake-up descriptors (4), the connections its
 * Docker client keeps alive (HXD_FREE_MAX, 32); and one transfer per
 * request in flight (--max-inflight). */
#define FD_PER_WORKER 36
/* Per container whose cgroup files the live view's sampler keeps open:
 * up to 10 (view_sample.c: a v1 or hybrid host; 8 on v2; the files read
 * every 10 s are opened and closed each time). The view keeps what its
 * max_fds allows and reads the other containers by opening their files. */
#define FD_PER_CONTAINER 10
#define MIN_CONTAINERS 16
#define DEFAULT_CONNECTIONS 1024
#define MIN_CONNECTIONS 16

static unsigned long long raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return 1024;
  rlim_t want = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > FD_CEILING
                    ? FD_CEILING
                    : rl.rlim_max;
  if (rl.rlim_cur < want) {
    rlim_t old = rl.rlim_cur;
    rl.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
      rl.rlim_cur = old;
  }
  return (unsigned long long)rl.rlim_cur;
}

int hx_fd_plan(hx_fd_plan_t *p, unsigned workers, unsigned max_inflight,
               unsigned max_connections) {
  p->limit = raise_nofile();
  p->reserve =
      FD_FIXED + (unsigned long long)workers *
                     (FD_PER_WORKER + (unsigned long long)max_inflight);
  unsigned long long room = p->limit > p->reserve ? p->limit - p->reserve : 0;
  unsigned long long least = FD_PER_CONTAINER * MIN_CONTAINERS;
  unsigned long long fits = room > least ? room - least : 0;
  /* Not given: 1024, or half the room when that is less, so that a low
   * limit still leaves the view room for containers. */
  unsigned long long m = max_connections;
  if (m == 0)
    m = room / 2 < DEFAULT_CONNECTIONS ? room / 2 : DEFAULT_CONNECTIONS;
  /* MIN_CONNECTIONS bounds what the plan chooses; an operator may ask for
   * fewer (one client, a test). */
  if (m > fits || (max_connections == 0 && m < MIN_CONNECTIONS)) {
    int n = snprintf(p->why, sizeof p->why, "--max-connections %llu: ", m);
    if (max_connections == 0)
      n = snprintf(p->why, sizeof p->why, "too few descriptors: ");
    snprintf(p->why + n, sizeof p->why - (size_t)n,
             "the descriptor limit is %llu (ulimit -n, raised to the hard "
             "limit); the server keeps %llu for itself (%d, and %d + "
             "--max-inflight per worker), and the live view %d per "
             "container whose cgroup files it keeps open (%d containers "
             "at least), which leaves %llu for connections (%d at least)",
             p->limit, p->reserve, FD_FIXED, FD_PER_WORKER, FD_PER_CONTAINER,
             MIN_CONTAINERS, fits, MIN_CONNECTIONS);
    return -1;
  }
  p->connections = (unsigned)m;
  /* The view's own default is half the limit; less when that would not
   * leave the connections and the server their share. */
  p->view_fds = room - m < p->limit / 2 ? room - m : p->limit / 2;
  return 0;
}

/* Protected: require("horcrux.view").set_limits{max_fds = arg 1}. */
static int set_view_limit(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "horcrux.view");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "set_limits");
  lua_createtable(L, 0, 1);
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "max_fds");
  lua_call(L, 1, 0);
  return 0;
}

int hx_plan_descriptors(hx_server_config *cfg) {
  hx_fd_plan_t p;
  if (hx_fd_plan(&p, cfg->workers, cfg->max_inflight, cfg->max_connections) !=
      0) {
    hx_log("error", "%s", p.why);
    return -1;
  }
  cfg->max_connections = p.connections;
  char *err = NULL;
  hx_state *st = hx_state_new(&cfg->lua, &err);
  if (st != NULL) {
    lua_pushcfunction(st->L, set_view_limit);
    lua_pushinteger(
        st->L, (lua_Integer)(p.view_fds < (1 << 24) ? p.view_fds : (1 << 24)));
    if (lua_pcall(st->L, 1, 0, 0) != LUA_OK)
      err = strdup(lua_tostring(st->L, -1));
    hx_state_close(st);
  }
  if (err != NULL) {
    hx_log("error", "cannot limit the live view: %s", err);
    free(err);
    return -1;
  }
  hx_log("info",
         "descriptors: limit %llu; up to %u connections, %llu kept for the "
         "server, %llu for the cgroup files the live view keeps open (about "
         "%llu containers; it reads others by opening them)",
         p.limit, p.connections, p.reserve, p.view_fds,
         p.view_fds / FD_PER_CONTAINER);
  return 0;
}
