/*
 * docker_relay.c - c:relay(method, path, query, body, opts): a daemon reply
 * of JSON lines (a pull's or a push's progress) published as it comes, line by
 * line, to a hub topic, by the host's executor thread. The route that starts it
 * returns hub.stream{topic = opts.topic} and lets go of its worker and its
 * Lua state: the connection becomes the topic's subscriber (core/stream.c)
 * and nothing else of the request is held while the daemon works.
 *
 *   c:relay(method, path, query, body, opts) -> true | nil, msg, kind
 *     path    the Engine API path, without the version prefix (the
 *             client's version is added once negotiated); letters, digits
 *             and / . _ - : @ only
 *     query   {key = string} (escaped here), or nil
 *     body    a string (JSON), or nil
 *     opts    topic (required), image (named in the result), op ("pull",
 *             the default, or "push": the word of a streamed error's
 *             message), timeout (seconds, 600), headers ({"Name: value",
 *             ...}: never logged, freed with the transfer)
 *
 * What the topic gets: each line of the reply as it is (`progress`); then
 * one final message, after which its subscribers end:
 *   `result`  {"event":"result","image":...,"status":<the last status>},
 *             with "digest" and "size" when the daemon sent an aux record
 *             (a push's {"aux":{"Tag","Digest","Size"}})
 *   `error`   {"event":"error","error":{"code":KIND,"message":...}}: a
 *             non-2xx reply (the daemon's message), an error the daemon
 *             streamed after its 200 ({"error": ...} lines), a failed
 *             transfer.
 *
 * Order. A message published before anyone subscribed would be lost, and
 * the subscriber only comes once the route has returned: so the transfer
 * is not started at once. A task (async.h) on the executor looks every
 * 10 ms for the topic's first subscriber, then submits the transfer; with
 * none after WAIT_MS it gives up (the client went, or was never there).
 * Every message then goes to a subscriber that exists, in order.
 *
 * A client that goes away ends the transfer: the progress callback (called
 * by curl at least once a second) aborts it when the topic has no
 * subscriber left, and the daemon, seeing its client go, cancels the pull.
 *
 * Outside `horcrux serve` (stock lua5.4, `horcrux run`) there is no
 * executor and no hub subscriber: c:relay fails with kind "unavailable".
 * The host's symbols are reached through weak references, so this module's
 * .so loads without them.
 */
#include "async.h"
#include "aux.h"
#include "docker_private.h"
#include "hub.h"

#include <cjson/cJSON.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#define WAIT_MS 10000 /* for the first subscriber */
#define RELAY_LINE_MAX                                                         \
  (1024 * 1024)               /* a longer line ends the relay: "limit"         \
                               */
#define STATUS_MAX 512        /* of the last status kept for the result */
#define ERROR_MAX 1024        /* of the daemon's message kept */
#define DEFAULT_TIMEOUT_S 600 /* as engine.pull's */
#define RESULT_MAX (8 * 1024)

/* The host's, when linked into it (executor.h, hub.h): weak, so that
 * docker.so, which has neither, still loads in stock lua5.4. */
#pragma weak hx_hub_publish
#pragma weak hx_hub_subscribers
typedef struct hx_executor hx_executor;
extern hx_executor *hx_executor_host __attribute__((weak));
typedef void (*exec_done)(CURLcode rc, void *ud);
extern int hx_executor_submit(hx_executor *ex, CURL *easy, exec_done done,
                              void *ud) __attribute__((weak));
extern int hx_executor_task(hx_executor *ex, hx_task *task, exec_done done,
                            void *ud) __attribute__((weak));

typedef struct relay {
  hx_task task; /* first: the executor hands back &task */
  hx_executor *ex;
  CURL *easy;
  struct curl_slist *headers;
  char *body;
  hxd_buf line;         /* a line not yet complete */
  long long wait_until; /* monotonic ms: give up waiting for a subscriber */
  long status;          /* the reply's HTTP status once known */
  int limit;            /* a line passed RELAY_LINE_MAX */
  char last_status[STATUS_MAX];
  char failed[ERROR_MAX]; /* the first error the daemon streamed */
  hxd_buf errbody;        /* a non-2xx reply's body (capped) */
  char curl_err[CURL_ERROR_SIZE];
  char image[512];
  char topic[HX_TOPIC_MAX];
  char op[8];       /* "pull" or "push" */
  char digest[160]; /* the aux record's Digest, "" when none came */
  double size;      /* its Size, < 0 when none */
} relay;

static long long mono_ms(void) { return hx_mono_ns() / 1000000; }

static void relay_free(relay *r) {
  if (r->easy != NULL)
    curl_easy_cleanup(r->easy);
  curl_slist_free_all(r->headers);
  free(r->body);
  free(r->line.p);
  free(r->errbody.p);
  free(r);
}

/* ---- the final message ------------------------------------------------- */

static void publish_json(relay *r, const char *event, cJSON *o) {
  char *text = o != NULL ? cJSON_PrintUnformatted(o) : NULL;
  if (text != NULL)
    hx_hub_publish(r->topic, event, text, strlen(text), 1);
  else /* out of memory: the subscribers still end */
    hx_hub_publish(r->topic, event, "{\"event\":\"error\"}", 17, 1);
  free(text);
  cJSON_Delete(o);
}

static void publish_error(relay *r, const char *kind, const char *message) {
  cJSON *o = cJSON_CreateObject();
  cJSON *e = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "event", "error");
  cJSON_AddStringToObject(e, "code", kind);
  cJSON_AddStringToObject(e, "message", message);
  cJSON_AddItemToObject(o, "error", e);
  publish_json(r, "error", o);
}

/* The kind of an error the daemon streamed after its 200 (images.lua's
 * stream_kind). */
static const char *streamed_kind(const char *msg) {
  if (strstr(msg, "not found") != NULL || strstr(msg, "manifest unknown"))
    return HX_NOT_FOUND;
  return HX_SERVER;
}

/* The daemon's "message" of a non-2xx reply, else its first line. */
static void daemon_message(relay *r, char *out, size_t cap) {
  cJSON *o =
      cJSON_ParseWithLength(r->errbody.p ? r->errbody.p : "", r->errbody.len);
  const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, "message");
  if (cJSON_IsString(m))
    snprintf(out, cap, "%s", m->valuestring);
  else
    snprintf(out, cap, "%.*s",
             (int)strcspn(r->errbody.p ? r->errbody.p : "", "\r\n"),
             r->errbody.p ? r->errbody.p : "");
  cJSON_Delete(o);
}

static void finish_relay(relay *r, CURLcode rc) {
  char msg[ERROR_MAX + 1024];
  if (r->limit) {
    publish_error(r, HX_LIMIT, "docker: a progress line passed 1 MiB");
  } else if (rc != CURLE_OK) {
    snprintf(msg, sizeof msg, "docker: %s",
             rc == CURLE_ABORTED_BY_CALLBACK
                 ? "transfer aborted"
                 : (r->curl_err[0] ? r->curl_err : curl_easy_strerror(rc)));
    publish_error(r, hxd_curl_kind(rc), msg);
  } else if (r->status < 200 || r->status > 299) {
    char dm[ERROR_MAX];
    daemon_message(r, dm, sizeof dm);
    snprintf(msg, sizeof msg, "docker: %s", dm);
    publish_error(r, hxd_status_kind(r->status, dm), msg);
  } else if (r->failed[0] != '\0') {
    snprintf(msg, sizeof msg, "%s %s: %s", r->op, r->image, r->failed);
    publish_error(r, streamed_kind(r->failed), msg);
  } else {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "event", "result");
    cJSON_AddStringToObject(o, "image", r->image);
    if (r->last_status[0] != '\0')
      cJSON_AddStringToObject(o, "status", r->last_status);
    else
      cJSON_AddNullToObject(o, "status");
    if (r->digest[0] != '\0')
      cJSON_AddStringToObject(o, "digest", r->digest);
    if (r->size >= 0)
      cJSON_AddNumberToObject(o, "size", r->size);
    publish_json(r, "result", o);
  }
}

/* ---- the transfer (executor thread) ------------------------------------ */

/* Keeps what the result needs from one line: its status, the first
 * error, a push's aux record. */
static void note_line(relay *r, const char *p, size_t n) {
  cJSON *o = cJSON_ParseWithLength(p, n);
  const cJSON *st = cJSON_GetObjectItemCaseSensitive(o, "status");
  const cJSON *err = cJSON_GetObjectItemCaseSensitive(o, "error");
  const cJSON *aux = cJSON_GetObjectItemCaseSensitive(o, "aux");
  const cJSON *digest = cJSON_GetObjectItemCaseSensitive(aux, "Digest");
  const cJSON *size = cJSON_GetObjectItemCaseSensitive(aux, "Size");
  if (cJSON_IsString(digest))
    snprintf(r->digest, sizeof r->digest, "%s", digest->valuestring);
  if (cJSON_IsNumber(size) && size->valuedouble >= 0)
    r->size = size->valuedouble;
  if (cJSON_IsString(st))
    snprintf(r->last_status, sizeof r->last_status, "%s", st->valuestring);
  if (cJSON_IsString(err) && r->failed[0] == '\0')
    snprintf(r->failed, sizeof r->failed, "%s", err->valuestring);
  cJSON_Delete(o);
}

/* Publishes each complete line of r->line (all of it when `final`). */
static void deliver(relay *r, int final) {
  size_t done = 0;
  while (done < r->line.len) {
    const char *p = r->line.p + done;
    size_t left = r->line.len - done;
    const char *nl = memchr(p, '\n', left);
    if (nl == NULL && !final)
      break;
    size_t n = nl != NULL ? (size_t)(nl - p) : left;
    done += nl != NULL ? n + 1 : n;
    while (n > 0 && (p[n - 1] == '\r' || p[n - 1] == ' '))
      n--;
    if (hxd_blank(p, n))
      continue;
    note_line(r, p, n);
    hx_hub_publish(r->topic, "progress", p, n, 0);
  }
  memmove(r->line.p, r->line.p + done, r->line.len - done);
  r->line.len -= done;
}

static size_t on_write(char *p, size_t size, size_t n, void *ud) {
  relay *r = ud;
  size_t len = size * n;
  if (r->status == 0)
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->status);
  if (r->status < 200 || r->status > 299) { /* the daemon's refusal */
    hxd_buf_add(&r->errbody, p, len, ERROR_MAX);
    return len;
  }
  if (hxd_buf_add(&r->line, p, len, RELAY_LINE_MAX + 2) != 0) {
    r->limit = 1;
    return 0;
  }
  deliver(r, 0);
  if (r->line.len > RELAY_LINE_MAX) {
    r->limit = 1;
    return 0;
  }
  return len;
}

/* Called by curl at least once a second: a topic nobody reads any more
 * ends the transfer. */
static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut,
                       curl_off_t un) {
  (void)dt, (void)dn, (void)ut, (void)un;
  relay *r = ud;
  return hx_hub_subscribers(r->topic) == 0;
}

static void on_done(CURLcode rc, void *ud) {
  relay *r = ud;
  if (rc == CURLE_OK && r->line.len > 0)
    deliver(r, 1);
  finish_relay(r, rc);
  relay_free(r);
}

/* The waiting task: steps until the topic has a subscriber. */
static long wait_step(hx_task *t) {
  relay *r = (relay *)t;
  if (hx_hub_subscribers(r->topic) > 0 || mono_ms() >= r->wait_until)
    return HX_TASK_DONE;
  return 10;
}

static int wait_fds(hx_task *t, struct curl_waitfd *w) {
  (void)t, (void)w;
  return 0;
}

static void on_waited(CURLcode rc, void *ud) {
  relay *r = ud;
  if (rc != CURLE_OK || hx_hub_subscribers(r->topic) == 0) {
    relay_free(r); /* nobody came (or the host stops): nothing to tell */
    return;
  }
  if (hx_executor_submit(r->ex, r->easy, on_done, r) != 0)
    on_done(CURLE_ABORTED_BY_CALLBACK, r);
}

/* ---- c:relay ----------------------------------------------------------- */

#define SETOPT(opt, val)                                                       \
  do {                                                                         \
    if (rc == CURLE_OK)                                                        \
      rc = curl_easy_setopt(e, opt, val);                                      \
  } while (0)

static int valid_path(const char *p) {
  if (p[0] != '/' || strstr(p, "..") != NULL)
    return 0;
  for (; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
          (*p >= '0' && *p <= '9') || strchr("/._-:@", *p) != NULL))
      return 0;
  return 1;
}

/* Pushes the URL: base, /vX.Y once negotiated (else unversioned: the
 * daemon's own version), path, the query escaped. */
static void push_url(lua_State *L, hxd_client *c, const char *path, CURL *e) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addstring(&b, c->base);
  if (c->version[0] != '\0') {
    luaL_addstring(&b, "/v");
    luaL_addstring(&b, c->version);
  }
  luaL_addstring(&b, path);
  if (lua_istable(L, 4)) {
    char sep = '?';
    lua_pushnil(L);
    while (lua_next(L, 4) != 0) {
      if (lua_type(L, -2) == LUA_TSTRING && lua_isstring(L, -1)) {
        char *k = curl_easy_escape(e, lua_tostring(L, -2), 0);
        char *v = curl_easy_escape(e, lua_tostring(L, -1), 0);
        if (k != NULL && v != NULL) {
          luaL_addchar(&b, sep);
          luaL_addstring(&b, k);
          luaL_addchar(&b, '=');
          luaL_addstring(&b, v);
          sep = '&';
        }
        curl_free(k);
        curl_free(v);
      }
      lua_pop(L, 1);
    }
  }
  luaL_pushresult(&b);
}

static CURLcode setup(lua_State *L, hxd_client *c, relay *r, const char *method,
                      const char *path, long timeout_ms) {
  CURL *e = r->easy;
  CURLcode rc = CURLE_OK;
  push_url(L, c, path, e);
  SETOPT(CURLOPT_URL, lua_tostring(L, -1));
  lua_pop(L, 1);
  SETOPT(CURLOPT_NOSIGNAL, 1L);
  SETOPT(CURLOPT_OPENSOCKETFUNCTION, hx_open_socket);
  SETOPT(CURLOPT_ERRORBUFFER, r->curl_err);
  SETOPT(CURLOPT_WRITEFUNCTION, on_write);
  SETOPT(CURLOPT_WRITEDATA, r);
  SETOPT(CURLOPT_NOPROGRESS, 0L);
  SETOPT(CURLOPT_XFERINFOFUNCTION, on_progress);
  SETOPT(CURLOPT_XFERINFODATA, r);
  SETOPT(CURLOPT_TIMEOUT_MS, timeout_ms);
  SETOPT(CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
  if (rc == CURLE_OK)
    rc = hxd_setup_where(e, c);
  if (strcmp(method, "POST") == 0 || r->body != NULL) {
    if (strcmp(method, "POST") != 0)
      SETOPT(CURLOPT_CUSTOMREQUEST, method);
    SETOPT(CURLOPT_POSTFIELDSIZE_LARGE,
           (curl_off_t)(r->body ? strlen(r->body) : 0));
    SETOPT(CURLOPT_POSTFIELDS, r->body ? r->body : "");
  } else if (strcmp(method, "GET") != 0) {
    SETOPT(CURLOPT_CUSTOMREQUEST, method);
  }
  SETOPT(CURLOPT_HTTPHEADER, r->headers);
  return rc;
}

/* opts.headers and the fixed ones into r->headers; 0, or -1 (memory, or
 * a header that is not one line). */
static int add_headers(lua_State *L, relay *r) {
  const char *fixed[] = {"Expect:", "Content-Type: application/json"};
  for (size_t i = 0; i < 2; i++) {
    struct curl_slist *h = curl_slist_append(r->headers, fixed[i]);
    if (h == NULL)
      return -1;
    r->headers = h;
  }
  if (lua_getfield(L, 6, "headers") == LUA_TTABLE) {
    for (lua_Integer i = 1; lua_rawgeti(L, -1, i) == LUA_TSTRING; i++) {
      const char *s = lua_tostring(L, -1);
      if (strcspn(s, "\r\n") != strlen(s)) { /* no raise: r would leak */
        lua_pop(L, 2);
        return -1;
      }
      struct curl_slist *h = curl_slist_append(r->headers, s);
      lua_pop(L, 1);
      if (h == NULL)
        return -1;
      r->headers = h;
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return 0;
}

int hxd_relay(lua_State *L) {
  hxd_client *c = hxd_check_client(L);
  const char *method = luaL_checkstring(L, 2);
  const char *path = luaL_checkstring(L, 3);
  const char *body = luaL_optstring(L, 5, NULL);
  luaL_checktype(L, 6, LUA_TTABLE);
  const char *topic = hx_opt_string(L, 6, "topic", NULL);
  const char *image = hx_opt_string(L, 6, "image", "");
  const char *op = hx_opt_string(L, 6, "op", "pull");
  lua_Number timeout = hx_opt_number(L, 6, "timeout", DEFAULT_TIMEOUT_S);
  luaL_argcheck(L, topic != NULL && topic[0] && strlen(topic) < HX_TOPIC_MAX, 6,
                "topic: a name of 1-255 bytes");
  luaL_argcheck(L, timeout > 0 && timeout <= 86400, 6, "timeout: seconds");
  luaL_argcheck(L, strcmp(op, "pull") == 0 || strcmp(op, "push") == 0, 6,
                "op: \"pull\" or \"push\"");
  if (!valid_path(path))
    return hx_fail(L, HX_BAD_REQUEST, "relay: %s is not an API path", path);
  if (&hx_executor_host == NULL || hx_executor_host == NULL ||
      hx_executor_submit == NULL || hx_executor_task == NULL ||
      hx_hub_publish == NULL || hx_hub_subscribers == NULL)
    return hx_fail(L, HX_UNAVAILABLE,
                   "relay: only `horcrux serve` streams a reply");
  relay *r = calloc(1, sizeof *r);
  if (r == NULL)
    return hx_fail(L, HX_LIMIT, "relay: out of memory");
  snprintf(r->topic, sizeof r->topic, "%s", topic);
  snprintf(r->image, sizeof r->image, "%s", image);
  snprintf(r->op, sizeof r->op, "%s", op);
  r->size = -1;
  r->ex = hx_executor_host;
  r->body = body != NULL ? strdup(body) : NULL;
  r->easy = curl_easy_init();
  if (r->easy == NULL || (body != NULL && r->body == NULL) ||
      add_headers(L, r) != 0 ||
      setup(L, c, r, method, path, (long)(timeout * 1000)) != CURLE_OK) {
    relay_free(r);
    return hx_fail(L, HX_BAD_REQUEST,
                   "relay: cannot set the transfer up (memory, or a header "
                   "of more than one line)");
  }
  r->task.step = wait_step;
  r->task.fds = wait_fds;
  r->wait_until = mono_ms() + WAIT_MS;
  if (hx_executor_task(r->ex, &r->task, on_waited, r) != 0) {
    relay_free(r);
    return hx_fail(L, HX_UNAVAILABLE, "relay: the server is stopping");
  }
  lua_pushboolean(L, 1);
  return 1;
}
