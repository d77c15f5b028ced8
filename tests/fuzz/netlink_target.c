/*
 * netlink_target.c - libFuzzer target "netlink": the rtnetlink reply
 * parser of core/netlink.c (nl_parse: links, stats, nsid) on any bytes.
 *
 * The first 4 bytes are the sequence the parser looks for (an input may
 * match it or not); the rest is the reply, handed over in a buffer of
 * exactly its size, so ASan sees any read past the end. The three kinds
 * run on every input. Checked: the result is -errno, 0 or 1; every name given
 * is NUL-terminated within CGP_IFNAME bytes; counters come only from
 * stats, names only from links; the callbacks are fewer than the messages
 * the bytes can hold. A failed check prints what differs and aborts.
 */
#include "netlink.h"

#include <linux/netlink.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond, ...)                                                       \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "\nfuzz netlink: invariant: " __VA_ARGS__);              \
      fprintf(stderr, "\n");                                                   \
      abort();                                                                 \
    }                                                                          \
  } while (0)

typedef struct seen {
  int what, calls;
  uint64_t sum;
} seen;

static void each(void *arg, const nl_item *it) {
  seen *s = arg;
  s->calls++;
  if (it->name) {
    CHECK(s->what == NL_LINKS, "a name from a reply of kind %d", s->what);
    size_t n = strnlen(it->name, CGP_IFNAME);
    CHECK(n > 0 && n < CGP_IFNAME, "a name of %zu bytes", n);
  }
  CHECK(!(it->has_link || it->veth) || s->what == NL_LINKS,
        "a link from a reply of kind %d", s->what);
  CHECK(!it->has_nsid || s->what != NL_STATS, "an nsid from a stats reply");
  if (it->v) {
    CHECK(s->what == NL_STATS, "counters from a reply of kind %d", s->what);
    for (int i = 0; i < NI_N; i++)
      s->sum += it->v[i]; /* every counter is read: ASan sees a bad one */
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint32_t seq;
  if (size < sizeof seq)
    return 0;
  memcpy(&seq, data, sizeof seq);
  size_t n = size - sizeof seq;
  char *p = malloc(n ? n : 1);
  if (!p)
    return 0;
  memcpy(p, data + sizeof seq, n);
  for (int what = NL_LINKS; what <= NL_NSID; what++) {
    seen s = {what, 0, 0};
    int r = nl_parse(what, p, n, seq, each, &s);
    CHECK(r == 0 || r == 1 || (r < 0 && r > -4096), "result %d", r);
    CHECK((size_t)s.calls <= n / NLMSG_HDRLEN, "%d calls from %zu bytes",
          s.calls, n);
    CHECK(what != NL_NSID || s.calls <= 1, "%d nsid answers", s.calls);
  }
  free(p);
  return 0;
}
