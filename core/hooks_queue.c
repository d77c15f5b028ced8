/*
 * hooks_queue.c - the on-disk queue of one webhook (hooks_queue.h). Plain
 * C, no Lua: horcrux.hooks (hooks.c) wraps it, the fuzz target
 * tests/fuzz/hookq_target.c drives hxq_parse.
 */
#include "hooks_queue.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- the format ------------------------------------------------------- */

uint32_t hxq_crc32(uint32_t crc, const void *p, size_t n) {
  const unsigned char *s = p;
  crc = ~crc;
  while (n--) {
    crc ^= *s++;
    for (int k = 0; k < 8; k++)
      crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1)));
  }
  return ~crc;
}

static uint32_t get32(const char *p) {
  const unsigned char *s = (const unsigned char *)p;
  return (uint32_t)s[0] | (uint32_t)s[1] << 8 | (uint32_t)s[2] << 16 |
         (uint32_t)s[3] << 24;
}

static uint64_t get64(const char *p) {
  return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static void put32(char *p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (char)(v >> (8 * i));
}

static void put64(char *p, uint64_t v) {
  put32(p, (uint32_t)v);
  put32(p + 4, (uint32_t)(v >> 32));
}

/* A delivery id is a UUID's text: hex digits and dashes. */
static int id_ok(const char *id) {
  for (int i = 0; i < HXQ_ID_LEN; i++) {
    char c = id[i];
    int dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? c != '-' : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
      return 0;
  }
  return 1;
}

size_t hxq_parse(const char *buf, size_t len, hxq_visit visit, void *ud) {
  size_t off = 0;
  int seen = 0;
  uint64_t last = 0, acked = 0; /* last data seq (or the opening ack's) */
  while (off < len) {
    const char *r = buf + off;
    size_t left = len - off;
    if (left >= HXQ_ACK_LEN && memcmp(r, "HXA1", 4) == 0) {
      uint64_t seq = get64(r + 4);
      if (hxq_crc32(0, r + 4, 8) != get32(r + 12))
        break;
      if (seen && (seq > last || seq < acked))
        break;
      if (!seen)
        last = seq;
      seen = 1;
      acked = seq;
      if (visit != NULL && visit(ud, HXQ_ACK, seq, NULL, NULL, 0, off) != 0)
        break;
      off += HXQ_ACK_LEN;
    } else if (left >= HXQ_DATA_HEAD && memcmp(r, "HXQ1", 4) == 0) {
      uint64_t seq = get64(r + 4);
      uint32_t blen = get32(r + 12);
      if (blen > HXQ_BODY_MAX || left - HXQ_DATA_HEAD < blen)
        break;
      if (seen && (last == UINT64_MAX || seq != last + 1))
        break;
      const char *id = r + 16, *body = r + HXQ_DATA_HEAD;
      uint32_t crc = hxq_crc32(0, r + 4, HXQ_DATA_HEAD - 8);
      if (hxq_crc32(crc, body, blen) != get32(r + 16 + HXQ_ID_LEN) ||
          !id_ok(id))
        break;
      seen = 1;
      last = seq;
      if (visit != NULL && visit(ud, HXQ_DATA, seq, id, body, blen, off) != 0)
        break;
      off += HXQ_DATA_HEAD + (size_t)blen;
    } else {
      break;
    }
  }
  return off;
}

/* ---- the queue -------------------------------------------------------- */

typedef struct rec {
  uint64_t seq;
  uint64_t off; /* of the record in the file */
  uint32_t len; /* of the body */
  char id[HXQ_ID_LEN];
} rec;

struct hxq {
  int fd, lockfd;
  char *dir;
  uint64_t max_bytes;
  uint64_t size;     /* of the file */
  uint64_t next_seq; /* of the next data record */
  uint64_t acked;    /* every seq up to this one is done */
  rec *recs;         /* pending: recs[head .. n) */
  size_t head, n, cap;
  uint64_t pending_bytes;
};

static uint64_t rec_bytes(const rec *r) {
  return HXQ_DATA_HEAD + (uint64_t)r->len;
}

static int push_rec(hxq *q, const rec *r) {
  if (q->head > 0 && q->n == q->cap) { /* reuse the room of the done ones */
    memmove(q->recs, q->recs + q->head, (q->n - q->head) * sizeof(rec));
    q->n -= q->head;
    q->head = 0;
  }
  if (q->n == q->cap) {
    size_t cap = q->cap ? q->cap * 2 : 64;
    rec *p = realloc(q->recs, cap * sizeof(rec));
    if (p == NULL)
      return -1;
    q->recs = p;
    q->cap = cap;
  }
  q->recs[q->n++] = *r;
  q->pending_bytes += rec_bytes(r);
  return 0;
}

/* Forgets the pending records up to seq (their acks are the caller's). */
static void drop_to(hxq *q, uint64_t seq) {
  while (q->head < q->n && q->recs[q->head].seq <= seq) {
    q->pending_bytes -= rec_bytes(&q->recs[q->head]);
    q->head++;
  }
  if (q->head == q->n)
    q->head = q->n = 0;
  if (seq > q->acked)
    q->acked = seq;
}

static int on_record(void *ud, int kind, uint64_t seq, const char *id,
                     const char *body, size_t len, size_t off) {
  (void)body;
  hxq *q = ud;
  if (kind == HXQ_ACK) {
    drop_to(q, seq);
    if (q->next_seq <= seq)
      q->next_seq = seq + 1;
    return 0;
  }
  rec r = {.seq = seq, .off = off, .len = (uint32_t)len};
  memcpy(r.id, id, HXQ_ID_LEN);
  q->next_seq = seq + 1;
  return push_rec(q, &r);
}

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int read_at(int fd, char *p, size_t n, uint64_t off) {
  while (n > 0) {
    ssize_t r = pread(fd, p, n, (off_t)off);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0) {
      if (r == 0)
        errno = EIO;
      return -1;
    }
    p += r;
    n -= (size_t)r;
    off += (uint64_t)r;
  }
  return 0;
}

static int mkdirs(const char *dir) {
  char path[4096];
  size_t n = strlen(dir);
  if (n == 0 || n >= sizeof path) {
    errno = ENAMETOOLONG;
    return -1;
  }
  memcpy(path, dir, n + 1);
  for (char *p = path + 1; *p != '\0'; p++) {
    if (*p != '/')
      continue;
    *p = '\0';
    if (mkdir(path, 0700) != 0 && errno != EEXIST)
      return -1;
    *p = '/';
  }
  if (mkdir(path, 0700) != 0 && errno != EEXIST)
    return -1;
  return 0;
}

static char *path_in(const char *dir, const char *name) {
  size_t n = strlen(dir) + strlen(name) + 2;
  char *p = malloc(n);
  if (p != NULL)
    snprintf(p, n, "%s/%s", dir, name);
  return p;
}

static int open_in(const char *dir, const char *name, int flags) {
  char *p = path_in(dir, name);
  if (p == NULL) {
    errno = ENOMEM; /* not a stale ENOENT: a missing mark is no mark */
    return -1;
  }
  int fd = open(p, flags | O_CLOEXEC, 0600);
  free(p);
  return fd;
}

/* Reads the whole file, parses it, cuts a bad tail. */
static int load(hxq *q, size_t *cut) {
  struct stat st;
  if (fstat(q->fd, &st) != 0)
    return -1;
  size_t len = (size_t)st.st_size;
  char *buf = malloc(len ? len : 1);
  if (buf == NULL || read_at(q->fd, buf, len, 0) != 0) {
    free(buf);
    return -1;
  }
  size_t ok = hxq_parse(buf, len, on_record, q);
  free(buf);
  *cut = len - ok;
  if (ok < len && (ftruncate(q->fd, (off_t)ok) != 0 || fsync(q->fd) != 0))
    return -1;
  q->size = ok;
  if (q->next_seq == 0)
    q->next_seq = 1;
  return 0;
}

hxq *hxq_open(const char *dir, uint64_t max_bytes, size_t *cut, char *err,
              size_t errlen) {
  hxq *q = calloc(1, sizeof *q);
  const char *what = "out of memory";
  *cut = 0;
  if (q == NULL)
    goto fail;
  q->fd = q->lockfd = -1;
  q->max_bytes = max_bytes;
  q->dir = strdup(dir);
  if (q->dir == NULL)
    goto fail;
  what = "cannot create it";
  if (mkdirs(dir) != 0)
    goto fail;
  what = "cannot open its lock";
  q->lockfd = open_in(dir, "lock", O_RDWR | O_CREAT);
  if (q->lockfd < 0)
    goto fail;
  what = "in use by another process (flock)";
  if (flock(q->lockfd, LOCK_EX | LOCK_NB) != 0)
    goto fail;
  what = "cannot open its queue file";
  q->fd = open_in(dir, "queue", O_RDWR | O_CREAT | O_APPEND);
  if (q->fd < 0)
    goto fail;
  what = "cannot read its queue file";
  if (load(q, cut) != 0)
    goto fail;
  return q;
fail:
  snprintf(err, errlen, "%s: %s%s%s", dir, what, errno ? ": " : "",
           errno ? strerror(errno) : "");
  hxq_close(q);
  return NULL;
}

void hxq_close(hxq *q) {
  if (q == NULL)
    return;
  if (q->fd >= 0)
    close(q->fd);
  if (q->lockfd >= 0)
    close(q->lockfd); /* releases the flock */
  free(q->recs);
  free(q->dir);
  free(q);
}

static void new_id(char out[HXQ_ID_LEN + 1]) {
  unsigned char b[16];
  size_t got = 0;
  while (got < sizeof b) {
    ssize_t r = getrandom(b + got, sizeof b - got, 0);
    if (r <= 0) { /* no entropy source: an id unique enough in time */
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      uint64_t t = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
      memcpy(b, &t, 8);
      break;
    }
    got += (size_t)r;
  }
  b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
  b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* variant 1 */
  static const char hex[] = "0123456789abcdef";
  char *p = out;
  for (int i = 0; i < 16; i++) {
    if (i == 4 || i == 6 || i == 8 || i == 10)
      *p++ = '-';
    *p++ = hex[b[i] >> 4];
    *p++ = hex[b[i] & 15];
  }
  *p = '\0';
}

static int write_ack(hxq *q, uint64_t seq) {
  char r[HXQ_ACK_LEN];
  memcpy(r, "HXA1", 4);
  put64(r + 4, seq);
  put32(r + 12, hxq_crc32(0, r + 4, 8));
  if (write_all(q->fd, r, sizeof r) != 0)
    return -1;
  q->size += sizeof r;
  return 0;
}

static void maybe_compact(hxq *q);

int hxq_append(hxq *q, const char *body, size_t len,
               char id_out[HXQ_ID_LEN + 1], unsigned *dropped) {
  *dropped = 0;
  if (len > HXQ_BODY_MAX || HXQ_DATA_HEAD + (uint64_t)len > q->max_bytes) {
    errno = EMSGSIZE;
    return -1;
  }
  uint64_t need = HXQ_DATA_HEAD + (uint64_t)len, upto = 0;
  uint64_t keep = q->pending_bytes;
  for (size_t i = q->head; i < q->n && keep + need > q->max_bytes; i++) {
    keep -= rec_bytes(&q->recs[i]);
    upto = q->recs[i].seq;
    (*dropped)++;
  }
  if (*dropped > 0) {
    if (write_ack(q, upto) != 0)
      return -1;
    drop_to(q, upto);
  }
  char head[HXQ_DATA_HEAD], id[HXQ_ID_LEN + 1];
  new_id(id);
  memcpy(head, "HXQ1", 4);
  put64(head + 4, q->next_seq);
  put32(head + 12, (uint32_t)len);
  memcpy(head + 16, id, HXQ_ID_LEN);
  uint32_t crc = hxq_crc32(0, head + 4, HXQ_DATA_HEAD - 8);
  put32(head + 16 + HXQ_ID_LEN, hxq_crc32(crc, body, len));
  if (write_all(q->fd, head, sizeof head) != 0 ||
      write_all(q->fd, body, len) != 0) {
    int e = errno; /* a torn record would stop the parser: cut it now */
    if (ftruncate(q->fd, (off_t)q->size) != 0) {
      /* the next open cuts it */
    }
    errno = e;
    return -1;
  }
  rec r = {.seq = q->next_seq, .off = q->size, .len = (uint32_t)len};
  memcpy(r.id, id, HXQ_ID_LEN);
  if (push_rec(q, &r) != 0) {
    errno = ENOMEM;
    return -1;
  }
  q->size += need;
  q->next_seq++;
  if (id_out != NULL)
    memcpy(id_out, id, HXQ_ID_LEN + 1);
  /* what was dropped for room is done as a delivery is: while a receiver
   * hangs nothing is acked, and only this keeps the file bounded */
  if (*dropped > 0)
    maybe_compact(q);
  return 0;
}

int hxq_sync(hxq *q) { return fdatasync(q->fd); }

int hxq_head(const hxq *q, size_t *len, char id[HXQ_ID_LEN + 1],
             uint64_t *seq) {
  if (q->head >= q->n)
    return 0;
  const rec *r = &q->recs[q->head];
  *len = r->len;
  memcpy(id, r->id, HXQ_ID_LEN);
  id[HXQ_ID_LEN] = '\0';
  *seq = r->seq;
  return 1;
}

int hxq_read_head(hxq *q, char *body) {
  if (q->head >= q->n) {
    errno = ENOENT;
    return -1;
  }
  const rec *r = &q->recs[q->head];
  return read_at(q->fd, body, r->len, r->off + HXQ_DATA_HEAD);
}

static int sync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  int rc = fsync(fd);
  close(fd);
  return rc;
}

/* Writes the pending records to queue.new (after an ack of what is done)
 * and renames it over the queue. On failure the old file stays. */
static int compact(hxq *q) {
  int fd = open_in(q->dir, "queue.new", O_RDWR | O_CREAT | O_TRUNC);
  if (fd < 0)
    return -1;
  char a[HXQ_ACK_LEN];
  memcpy(a, "HXA1", 4);
  put64(a + 4, q->acked);
  put32(a + 12, hxq_crc32(0, a + 4, 8));
  uint64_t off = sizeof a;
  int ok = write_all(fd, a, sizeof a) == 0;
  char *buf = NULL;
  size_t cap = 0;
  for (size_t i = q->head; ok && i < q->n; i++) {
    size_t n = (size_t)rec_bytes(&q->recs[i]);
    if (n > cap) {
      char *p = realloc(buf, n);
      ok = p != NULL;
      if (!ok)
        break;
      buf = p;
      cap = n;
    }
    ok = read_at(q->fd, buf, n, q->recs[i].off) == 0 &&
         write_all(fd, buf, n) == 0;
    off += n;
  }
  free(buf);
  char *from = path_in(q->dir, "queue.new"), *to = path_in(q->dir, "queue");
  ok = ok && from != NULL && to != NULL && fsync(fd) == 0 &&
       rename(from, to) == 0;
  free(from);
  free(to);
  if (!ok) {
    close(fd);
    return -1;
  }
  sync_dir(q->dir);
  /* the appends want O_APPEND (a write after a failed one's ftruncate
   * lands at the end); failing that, the new file as it is, at its end */
  int nfd = open_in(q->dir, "queue", O_RDWR | O_APPEND);
  if (nfd >= 0) {
    close(fd);
    fd = nfd;
  }
  close(q->fd);
  q->fd = fd;
  uint64_t at = sizeof a;
  for (size_t i = q->head; i < q->n; i++) {
    q->recs[i].off = at;
    at += rec_bytes(&q->recs[i]);
  }
  q->size = off;
  return 0;
}

/* Compacts when the done records (delivered, or dropped for room) take
 * more room than the pending ones and at least HXQ_COMPACT_MIN, or when
 * nothing is pending and the file has grown: the file's bound. */
static void maybe_compact(hxq *q) {
  uint64_t done = q->size - q->pending_bytes;
  if ((done >= HXQ_COMPACT_MIN && done >= q->pending_bytes) ||
      (q->head == q->n && q->size >= 64 * 1024))
    compact(q); /* a failed compaction leaves the file as it was */
}

int hxq_ack(hxq *q, uint64_t seq) {
  /* Done already: a delivery in flight while appends dropped it (queue
   * full). Its ack record would go below the last one, which the parser
   * takes for damage and cuts, with everything after it. */
  if (seq <= q->acked)
    return 0;
  if (seq >= q->next_seq) { /* an ack past the last record: refused too */
    errno = EINVAL;
    return -1;
  }
  if (write_ack(q, seq) != 0 || fdatasync(q->fd) != 0)
    return -1;
  drop_to(q, seq);
  maybe_compact(q);
  return 0;
}

size_t hxq_pending(const hxq *q) { return q->n - q->head; }
uint64_t hxq_pending_bytes(const hxq *q) { return q->pending_bytes; }
uint64_t hxq_file_bytes(const hxq *q) { return q->size; }

/* ---- the events mark -------------------------------------------------- */

int hxq_mark_parse(const char *s, size_t n, int64_t *ns) {
  static const char magic[] = "HXM1 ";
  size_t m = sizeof magic - 1, i = m;
  uint64_t v = 0;
  if (n < m + 2 || memcmp(s, magic, m) != 0 || s[n - 1] != '\n')
    return -1;
  for (; i < n - 1; i++) {
    if (s[i] < '0' || s[i] > '9' || i - m >= 19) /* 19 digits fit */
      return -1;
    v = v * 10 + (uint64_t)(s[i] - '0');
  }
  if (i == m || v > (uint64_t)INT64_MAX)
    return -1;
  *ns = (int64_t)v;
  return 0;
}

int hxq_mark_load(const char *dir, int64_t *ns) {
  char buf[64];
  int fd = open_in(dir, HXQ_MARK, O_RDONLY);
  if (fd < 0)
    return errno == ENOENT ? 0 : -1;
  ssize_t n;
  do
    n = read(fd, buf, sizeof buf);
  while (n < 0 && errno == EINTR);
  int saved = errno;
  close(fd);
  if (n < 0) {
    errno = saved;
    return -1;
  }
  if (hxq_mark_parse(buf, (size_t)n, ns) != 0) {
    errno = EINVAL;
    return -1;
  }
  return 1;
}

int hxq_file_save(const char *dir, const char *name, const char *text,
                  size_t len) {
  size_t cap = strlen(name) + sizeof ".new";
  char *tmp = malloc(cap);
  if (tmp == NULL) {
    errno = ENOMEM;
    return -1;
  }
  snprintf(tmp, cap, "%s.new", name);
  int fd = open_in(dir, tmp, O_WRONLY | O_CREAT | O_TRUNC);
  if (fd < 0) {
    free(tmp);
    return -1;
  }
  char *from = path_in(dir, tmp), *to = path_in(dir, name);
  int ok = from != NULL && to != NULL && write_all(fd, text, len) == 0 &&
           fdatasync(fd) == 0 && rename(from, to) == 0;
  int saved = errno;
  close(fd);
  free(tmp);
  free(from);
  free(to);
  if (!ok) {
    errno = saved;
    return -1;
  }
  sync_dir(dir);
  return 0;
}

int hxq_mark_save(const char *dir, int64_t ns) {
  char text[32];
  if (ns < 0) {
    errno = EINVAL;
    return -1;
  }
  int len = snprintf(text, sizeof text, "HXM1 %lld\n", (long long)ns);
  return hxq_file_save(dir, HXQ_MARK, text, (size_t)len);
}
