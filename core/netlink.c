/*
 * netlink.c - the host's interface counters over rtnetlink (see netlink.h).
 *
 * Why. /proc/<pid>/net/dev makes the kernel print the 16 counters of every
 * interface of the container's namespace as text on each read (vsnprintf
 * per number): at 200 idle containers it was 18 % of the collector
 * thread's time in `horcrux serve`, the dearest read of a round. A
 * container on a bridge network has a veth whose other end is in the
 * host's namespace; one RTM_GETSTATS dump a round (only the 64-bit link
 * counters, IFLA_STATS_LINK_64) gives every such end's counters as binary
 * structs, what the host's end sent being what the container's received.
 * The sampler finds a container's end once (RTM_GETNSID of its namespace,
 * matched against the IFLA_LINK_NETNSID of the host's links).
 *
 * A socket per container in its namespace (made by a thread that enters
 * it) was tried first: a dump a container a round cost as much as net/dev.
 *
 * The parsers check every length against the bytes received before they
 * read, and copy structs out (no aligned access into the buffer).
 */
#define _GNU_SOURCE
#include "netlink.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if_link.h>
#include <linux/net_namespace.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_READS 4096 /* replies of one dump */

int nl_open(void) {
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  return fd < 0 ? -errno : fd;
}

/* ---- the parsers */

/* Calls fn(arg, type, payload, n) for each attribute in [a, a + n); 0, or
 * -EPROTO when one is malformed. */
static int each_attr(const char *a, size_t n,
                     void (*fn)(void *, unsigned, const char *, size_t),
                     void *arg) {
  size_t off = 0;
  while (n - off >= sizeof(struct rtattr)) {
    struct rtattr r;
    memcpy(&r, a + off, sizeof r);
    if (r.rta_len < sizeof r || r.rta_len > n - off)
      return -EPROTO;
    fn(arg, r.rta_type & NLA_TYPE_MASK, a + off + RTA_LENGTH(0),
       r.rta_len - RTA_LENGTH(0));
    size_t step = RTA_ALIGN(r.rta_len);
    if (step >= n - off)
      break;
    off += step;
  }
  return 0;
}

static int get_s32(const char *v, size_t n, int *out) {
  int32_t x;
  if (n < sizeof x)
    return 0;
  memcpy(&x, v, sizeof x);
  *out = x;
  return 1;
}

static void info_attr(void *arg, unsigned type, const char *v, size_t n) {
  nl_item *it = arg;
  if (type == IFLA_INFO_KIND)
    it->veth = strnlen(v, n) == 4 && memcmp(v, "veth", 4) == 0;
}

typedef struct link_attrs {
  nl_item *it;
  char name[CGP_IFNAME];
} link_attrs;

static void link_attr(void *arg, unsigned type, const char *v, size_t n) {
  link_attrs *a = arg;
  if (type == IFLA_IFNAME) {
    size_t len = strnlen(v, n);
    a->it->name = NULL;
    if (len > 0 && len < sizeof a->name) {
      memcpy(a->name, v, len);
      a->name[len] = '\0';
      a->it->name = a->name;
    }
  } else if (type == IFLA_LINK) {
    a->it->has_link = get_s32(v, n, &a->it->link);
  } else if (type == IFLA_LINK_NETNSID) {
    a->it->has_nsid = get_s32(v, n, &a->it->nsid);
  } else if (type == IFLA_LINKINFO) {
    each_attr(v, n, info_attr, a->it); /* a malformed kind: not a veth */
  }
}

static void stats_attr(void *arg, unsigned type, const char *v, size_t n) {
  uint64_t *s = arg; /* s[16], s[16] set when found */
  if (type == IFLA_STATS_LINK_64 && n >= 8 * sizeof s[0]) {
    memset(s, 0, 16 * sizeof s[0]);
    memcpy(s, v, n < 16 * sizeof s[0] ? n : 16 * sizeof s[0]);
    s[16] = 1;
  }
}

static void nsid_attr(void *arg, unsigned type, const char *v, size_t n) {
  nl_item *it = arg;
  if (type == NETNSA_NSID)
    it->has_nsid = get_s32(v, n, &it->nsid);
}

/* One message's body b[0..n) of the type `what` parses. */
static int body(int what, const char *b, size_t n, nl_each_fn fn, void *arg) {
  nl_item it;
  memset(&it, 0, sizeof it);
  if (what == NL_LINKS) {
    struct ifinfomsg ifi;
    link_attrs a = {&it, {0}};
    size_t hl = NLMSG_ALIGN(sizeof ifi);
    if (n < sizeof ifi)
      return -EPROTO;
    memcpy(&ifi, b, sizeof ifi);
    it.index = ifi.ifi_index;
    if (n > hl && each_attr(b + hl, n - hl, link_attr, &a))
      return -EPROTO;
    fn(arg, &it);
    return 0;
  }
  if (what == NL_STATS) {
    /* rtnl_link_stats64: rx_packets, tx_packets, rx_bytes, tx_bytes,
     * rx_errors, tx_errors, rx_dropped, tx_dropped, ..., [15] rx_missed */
    struct if_stats_msg m;
    uint64_t s[17] = {0}, out[NI_N];
    size_t hl = NLMSG_ALIGN(sizeof m);
    if (n < sizeof m)
      return -EPROTO;
    memcpy(&m, b, sizeof m);
    it.index = (int)m.ifindex;
    if (n > hl && each_attr(b + hl, n - hl, stats_attr, s))
      return -EPROTO;
    if (s[16]) { /* as net/dev prints them: rx dropped with the missed */
      out[NI_RX_BYTES] = s[2], out[NI_RX_PACKETS] = s[0];
      out[NI_RX_ERRORS] = s[4], out[NI_RX_DROPPED] = s[6];
      cgp_add_sat(&out[NI_RX_DROPPED], s[15]);
      out[NI_TX_BYTES] = s[3], out[NI_TX_PACKETS] = s[1];
      out[NI_TX_ERRORS] = s[5], out[NI_TX_DROPPED] = s[7];
      it.v = out;
    }
    fn(arg, &it);
    return 0;
  }
  size_t hl = NLMSG_ALIGN(sizeof(struct rtgenmsg));
  if (n < sizeof(struct rtgenmsg))
    return -EPROTO;
  if (n > hl && each_attr(b + hl, n - hl, nsid_attr, &it))
    return -EPROTO;
  fn(arg, &it);
  return 1;
}

static const int types[3] = {RTM_NEWLINK, RTM_NEWSTATS, RTM_NEWNSID};

int nl_parse(int what, const char *p, size_t len, uint32_t seq, nl_each_fn fn,
             void *arg) {
  size_t off = 0;
  if (what < NL_LINKS || what > NL_NSID)
    return -EINVAL;
  while (len - off >= sizeof(struct nlmsghdr)) {
    struct nlmsghdr h;
    int e, r;
    memcpy(&h, p + off, sizeof h);
    if (h.nlmsg_len < NLMSG_HDRLEN || h.nlmsg_len > len - off)
      return -EPROTO;
    const char *b = p + off + NLMSG_HDRLEN;
    size_t bn = h.nlmsg_len - NLMSG_HDRLEN;
    if (h.nlmsg_seq == seq) {
      if (h.nlmsg_type == NLMSG_DONE)
        return 1;
      if (h.nlmsg_type == NLMSG_ERROR) {
        if (bn < sizeof e)
          return -EPROTO;
        memcpy(&e, b, sizeof e);
        return e < 0 && e > -4096 ? e : -EPROTO;
      }
      if (h.nlmsg_type == types[what] && (r = body(what, b, bn, fn, arg)))
        return r;
    }
    size_t step = NLMSG_ALIGN(h.nlmsg_len);
    if (step >= len - off)
      break;
    off += step;
  }
  return 0;
}

/* ---- the requests */

/* Sends req (len bytes, its sequence set here) and parses the replies
 * until the end. */
static int ask(int fd, uint32_t *seq, char *buf, void *req, size_t len,
               int what, nl_each_fn fn, void *arg) {
  struct nlmsghdr *h = req;
  h->nlmsg_seq = ++*seq;
  if (send(fd, req, len, MSG_DONTWAIT) != (ssize_t)len)
    return errno ? errno : EIO;
  for (int i = 0; i < MAX_READS; i++) {
    /* the kernel makes each part of a dump as the one before is read:
     * there is always one to read until the end */
    ssize_t n = recv(fd, buf, NL_BUF, MSG_DONTWAIT);
    if (n <= 0)
      return n < 0 ? errno : EPROTO;
    int r = nl_parse(what, buf, (size_t)n, *seq, fn, arg);
    if (r < 0)
      return -r;
    if (r == 1)
      return 0;
  }
  return EPROTO;
}

int nl_links(int fd, uint32_t *seq, char *buf, nl_each_fn fn, void *arg) {
  struct {
    struct nlmsghdr h;
    struct ifinfomsg ifi;
    struct rtattr ext;
    uint32_t mask;
  } req;
  memset(&req, 0, sizeof req);
  req.h.nlmsg_len = sizeof req;
  req.h.nlmsg_type = RTM_GETLINK;
  req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.ifi.ifi_family = AF_UNSPEC;
  req.ext.rta_type = IFLA_EXT_MASK;
  req.ext.rta_len = RTA_LENGTH(sizeof req.mask);
  req.mask = RTEXT_FILTER_SKIP_STATS;
  return ask(fd, seq, buf, &req, sizeof req, NL_LINKS, fn, arg);
}

int nl_stats(int fd, uint32_t *seq, char *buf, nl_each_fn fn, void *arg) {
  struct {
    struct nlmsghdr h;
    struct if_stats_msg m;
  } req;
  memset(&req, 0, sizeof req);
  req.h.nlmsg_len = sizeof req;
  req.h.nlmsg_type = RTM_GETSTATS;
  req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.m.family = AF_UNSPEC;
  req.m.filter_mask = IFLA_STATS_FILTER_BIT(IFLA_STATS_LINK_64);
  return ask(fd, seq, buf, &req, sizeof req, NL_STATS, fn, arg);
}

static void take_nsid(void *arg, const nl_item *it) {
  int *nsid = arg;
  if (it->has_nsid)
    *nsid = it->nsid;
}

int nl_nsid(int fd, uint32_t *seq, char *buf, const char *ns_path, int *nsid) {
  struct {
    struct nlmsghdr h;
    struct rtgenmsg g;
    char pad[NLMSG_ALIGN(sizeof(struct rtgenmsg)) - sizeof(struct rtgenmsg)];
    struct rtattr fd_attr;
    uint32_t fd;
  } req;
  int nsfd = open(ns_path, O_RDONLY | O_CLOEXEC), e;
  if (nsfd < 0)
    return errno;
  memset(&req, 0, sizeof req);
  req.h.nlmsg_len = sizeof req;
  req.h.nlmsg_type = RTM_GETNSID;
  req.h.nlmsg_flags = NLM_F_REQUEST;
  req.g.rtgen_family = AF_UNSPEC;
  req.fd_attr.rta_type = NETNSA_FD;
  req.fd_attr.rta_len = RTA_LENGTH(sizeof req.fd);
  req.fd = (uint32_t)nsfd;
  *nsid = -2; /* no answer */
  e = ask(fd, seq, buf, &req, sizeof req, NL_NSID, take_nsid, nsid);
  close(nsfd);
  if (!e && *nsid == -2)
    e = EPROTO;
  return e;
}
