/* guard.c - the Host allow-list, the per-address connection count, the
 * descriptor reserve (see guard.h). */
#include "guard.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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
  size_t name_len;
  const char *port;
  if (c.n > 1 || !split_host(c.value, &name_len, &port)) {
    snprintf(msg, cap, "%s",
             c.n > 1 ? "more than one Host header"
                     : "the Host header is malformed");
    return "bad_request";
  }
  if (listed(h, c.value, name_len, port))
    return NULL;
  snprintf(msg, cap,
           "Host '%.200s' is not allowed here (a guard against DNS "
           "rebinding); to serve it, start horcrux with --allow-host %.*s",
           c.value, (int)(name_len > 200 ? 200 : name_len), c.value);
  return "forbidden";
}
