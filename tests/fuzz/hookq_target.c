/*
 * hookq_target.c - libFuzzer target "hookq": the webhooks' queue file
 * (core/hooks_queue.c) on any bytes.
 *
 * hxq_parse walks the buffer as libFuzzer gives it (exactly its size, so
 * ASan sees a read past the end); every record it hands over must lie
 * inside the valid prefix it returns, data seqs must follow one another,
 * and parsing the valid prefix again must take all of it. Then the bytes
 * are written as a queue file and opened as the server would: what was cut
 * must be what the parser refused, and the pending records must read back
 * whole. The same bytes go to hxq_mark_parse (the events mark). A broken
 * invariant prints what differs and aborts.
 */
#include "hooks_queue.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHECK(cond, ...)                                                       \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "\nfuzz hookq: invariant: " __VA_ARGS__);                \
      fprintf(stderr, "\n");                                                   \
      abort();                                                                 \
    }                                                                          \
  } while (0)

static char dir[64];

static void remove_dir(void) {
  const char *names[] = {"queue", "queue.new", "lock"};
  char path[96];
  for (int i = 0; i < 3; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    unlink(path);
  }
  rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  /* tmpfs where there is one: the queue fsyncs, a disk would make this
   * a hundred times slower */
  const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  snprintf(dir, sizeof dir, "%s/hx-fuzz-hookq-%d", base, (int)getpid());
  atexit(remove_dir);
  return 0;
}

typedef struct walk {
  size_t end; /* of the last record seen */
  int data;   /* data records seen */
  uint64_t seq;
} walk;

static int visit(void *ud, int kind, uint64_t seq, const char *id,
                 const char *body, size_t len, size_t off) {
  walk *w = ud;
  CHECK(off == w->end, "record at %zu, the previous ended at %zu", off, w->end);
  if (kind == HXQ_DATA) {
    CHECK(id != NULL && body != NULL, "data without id or body");
    CHECK(len <= HXQ_BODY_MAX, "body of %zu bytes", len);
    CHECK(w->data == 0 || seq == w->seq + 1, "seq %llu after %llu",
          (unsigned long long)seq, (unsigned long long)w->seq);
    w->seq = seq;
    w->data++;
    w->end = off + HXQ_DATA_HEAD + len;
  } else {
    CHECK(kind == HXQ_ACK, "kind %d", kind);
    w->end = off + HXQ_ACK_LEN;
  }
  return 0;
}

static void write_file(const uint8_t *data, size_t size) {
  char path[96];
  snprintf(path, sizeof path, "%s/queue", dir);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  CHECK(fd >= 0, "cannot write %s", path);
  CHECK(size == 0 || write(fd, data, size) == (ssize_t)size, "short write");
  close(fd);
}

/* The events mark: taken only as "HXM1 ", 1 to 19 digits, a newline, and
 * then what it took is the value those digits say. */
static void check_mark(const char *buf, size_t size) {
  int64_t ns = -1;
  if (hxq_mark_parse(buf, size, &ns) != 0)
    return;
  CHECK(size >= 7 && size <= 25 && memcmp(buf, "HXM1 ", 5) == 0 &&
            buf[size - 1] == '\n',
        "a mark of %zu bytes taken", size);
  int64_t v = 0;
  for (size_t i = 5; i < size - 1; i++) {
    CHECK(buf[i] >= '0' && buf[i] <= '9', "byte %zu of a mark taken", i);
    v = v * 10 + (buf[i] - '0');
  }
  CHECK(ns == v && ns >= 0, "mark %lld, the digits say %lld", (long long)ns,
        (long long)v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *buf = (const char *)data;
  check_mark(buf, size);
  walk w = {0};
  size_t ok = hxq_parse(buf, size, visit, &w);
  CHECK(ok <= size, "prefix %zu of %zu", ok, size);
  CHECK(ok == w.end, "prefix %zu but the records end at %zu", ok, w.end);
  walk again = {0};
  CHECK(hxq_parse(buf, ok, visit, &again) == ok, "the prefix parses shorter");

  char err[256];
  size_t cut = 0;
  hxq *q = hxq_open(dir, 1u << 30, &cut, err, sizeof err); /* makes dir */
  CHECK(q != NULL, "open: %s", err);
  hxq_close(q);
  write_file(data, size);
  q = hxq_open(dir, 1u << 30, &cut, err, sizeof err);
  CHECK(q != NULL, "open: %s", err);
  CHECK(cut == size - ok, "cut %zu, the parser refused %zu", cut, size - ok);
  CHECK(hxq_file_bytes(q) == ok, "file of %llu bytes, prefix %zu",
        (unsigned long long)hxq_file_bytes(q), ok);
  CHECK(hxq_pending(q) <= (size_t)w.data, "%zu pending of %d records",
        hxq_pending(q), w.data);
  size_t len;
  char id[HXQ_ID_LEN + 1];
  uint64_t seq;
  if (hxq_head(q, &len, id, &seq)) {
    char *body = malloc(len ? len : 1);
    CHECK(body != NULL && hxq_read_head(q, body) == 0, "cannot read head");
    free(body);
    CHECK(hxq_ack(q, seq) == 0, "ack");
  }
  hxq_close(q);
  return 0;
}
