/* static.c - the dashboard's files (see static.h). */
#define _GNU_SOURCE /* O_NOFOLLOW, O_CLOEXEC, st_mtim */
#include "static.h"

#include "kinds.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define UI_PREFIX "/ui/"
#define NAME_MAX_LEN 128 /* one segment */
#define PATH_MAX_LEN 512 /* the whole name under dir */
#define DEPTH_MAX 4

/* Every answer: revalidated each time (an operator's edit shows at the
 * next load; a 304 costs a stat), never sniffed, never framed, and no
 * request to another host (the page loads nothing from elsewhere). */
static const char csp[] =
    "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'";

static const struct {
  const char *ext;
  const char *type;
} types[] = {
    {"html", "text/html; charset=utf-8"},
    {"css", "text/css; charset=utf-8"},
    {"js", "text/javascript; charset=utf-8"},
    {"mjs", "text/javascript; charset=utf-8"},
    {"json", "application/json"},
    {"svg", "image/svg+xml"},
    {"png", "image/png"},
    {"ico", "image/vnd.microsoft.icon"},
    {"txt", "text/plain; charset=utf-8"},
    {"woff2", "font/woff2"},
};

int hx_static_wants(const char *method, const char *path) {
  if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
    return 0;
  return strcmp(path, "/") == 0 ||
         strncmp(path, UI_PREFIX, sizeof UI_PREFIX - 1) == 0;
}

/* The file's name under dir for path, into out; 0 when path is not one
 * (outside the grammar: "..", ".hidden", "a//b", too deep or too long). */
static int file_name(const char *path, char *out, size_t cap) {
  /* the URL is the file's path in the folder: /ui/app.js is ui/app.js */
  const char *rel = strcmp(path, "/") == 0 ? "index.html" : path + 1;
  size_t n = strlen(rel);
  if (n == 0 || n >= cap || n > PATH_MAX_LEN)
    return 0;
  int depth = 0;
  const char *seg = rel;
  for (;;) {
    const char *end = strchr(seg, '/');
    size_t len = end != NULL ? (size_t)(end - seg) : strlen(seg);
    if (len == 0 || len > NAME_MAX_LEN || ++depth > DEPTH_MAX)
      return 0;
    unsigned char c0 = (unsigned char)seg[0];
    if (!(c0 == '_' || (c0 >= '0' && c0 <= '9') || (c0 >= 'a' && c0 <= 'z') ||
          (c0 >= 'A' && c0 <= 'Z')))
      return 0;
    for (size_t i = 1; i < len; i++) {
      unsigned char c = (unsigned char)seg[i];
      if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
            (c >= 'A' && c <= 'Z') || c == '.' || c == '_' || c == '-'))
        return 0;
    }
    if (end == NULL)
      break;
    seg = end + 1;
  }
  memcpy(out, rel, n + 1);
  return 1;
}

static const char *content_type(const char *name) {
  const char *dot = strrchr(name, '.');
  if (dot == NULL || strchr(dot, '/') != NULL)
    return NULL;
  for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
    if (strcasecmp(dot + 1, types[i].ext) == 0)
      return types[i].type;
  return NULL;
}

/* Whether the client's validators say it has this version: If-None-Match
 * holding our ETag (or "*"), else an If-Modified-Since equal to our
 * Last-Modified (what a browser sends back is what it was given). */
static int fresh(struct MHD_Connection *conn, const char *etag,
                 const char *modified) {
  const char *inm = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                MHD_HTTP_HEADER_IF_NONE_MATCH);
  if (inm != NULL)
    return strstr(inm, etag) != NULL || strcmp(inm, "*") == 0;
  const char *ims = MHD_lookup_connection_value(
      conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_MODIFIED_SINCE);
  return ims != NULL && strcmp(ims, modified) == 0;
}

static enum MHD_Result queue(struct MHD_Connection *conn,
                             struct MHD_Response *r, const char *request_id,
                             int code, int *status) {
  if (r == NULL)
    return MHD_NO;
  MHD_add_response_header(r, "X-Request-Id", request_id);
  MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
  MHD_add_response_header(r, "Content-Security-Policy", csp);
  MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
  *status = code;
  enum MHD_Result ret = MHD_queue_response(conn, (unsigned)code, r);
  MHD_destroy_response(r);
  return ret;
}

static enum MHD_Result not_found(struct MHD_Connection *conn, const char *path,
                                 const char *request_id, int *status) {
  char body[768], msg[640];
  snprintf(msg, sizeof msg, "no dashboard file for %.512s", path);
  size_t n = hx_error_json(body, sizeof body, "not_found", msg, request_id);
  struct MHD_Response *r =
      MHD_create_response_from_buffer(n, body, MHD_RESPMEM_MUST_COPY);
  if (r != NULL)
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                            "application/json");
  return queue(conn, r, request_id, MHD_HTTP_NOT_FOUND, status);
}

enum MHD_Result hx_static_send(struct MHD_Connection *conn, const char *dir,
                               const char *path, const char *request_id,
                               int *status) {
  char name[PATH_MAX_LEN + 1], full[4096];
  const char *type;
  if (!file_name(path, name, sizeof name) ||
      (type = content_type(name)) == NULL ||
      (size_t)snprintf(full, sizeof full, "%s/%s", dir, name) >= sizeof full)
    return not_found(conn, path, request_id, status);
  /* O_NONBLOCK: a FIFO left in the folder must not hold the worker; only a
   * regular file is served. */
  int fd = open(full, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  struct stat sb;
  if (fd < 0 || fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
    if (fd >= 0)
      close(fd);
    return not_found(conn, path, request_id, status);
  }
  char etag[96], modified[64];
  snprintf(etag, sizeof etag, "\"%llx-%llx.%lx\"",
           (unsigned long long)sb.st_size, (unsigned long long)sb.st_mtime,
           (unsigned long)sb.st_mtim.tv_nsec);
  struct tm tm;
  gmtime_r(&sb.st_mtime, &tm);
  strftime(modified, sizeof modified, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  struct MHD_Response *r;
  int code = MHD_HTTP_OK;
  if (fresh(conn, etag, modified)) {
    close(fd);
    r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    code = MHD_HTTP_NOT_MODIFIED;
  } else {
    /* MHD owns fd from here (closed with the response), and sends it with
     * sendfile where it can. */
    r = MHD_create_response_from_fd((uint64_t)sb.st_size, fd);
    if (r == NULL)
      close(fd);
    else
      MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
  }
  if (r != NULL) {
    MHD_add_response_header(r, MHD_HTTP_HEADER_ETAG, etag);
    MHD_add_response_header(r, MHD_HTTP_HEADER_LAST_MODIFIED, modified);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
  }
  return queue(conn, r, request_id, code, status);
}
