/*
 * netlink.h - the host's interface counters over rtnetlink (netlink.c), for
 * the live view's sampler: a container's veth seen from the host side, one
 * dump a round for every container, instead of /proc/<pid>/net/dev of each
 * (which makes the kernel print every counter of every interface of the
 * namespace as text). Nothing here raises: a function returns 0 or an
 * errno value (EPROTO: a reply that is not what it should be).
 */
#ifndef HORCRUX_NETLINK_H
#define HORCRUX_NETLINK_H

#include "cgroup_parse.h"

#include <stddef.h>
#include <stdint.h>

/* A reply's buffer: the kernel makes each part of a dump as large as the
 * largest read the socket saw, up to 32 KB. */
#define NL_BUF 32768

/* What one message of a reply says of an interface. */
typedef struct nl_item {
  int index;
  const char *name;   /* links: NUL-terminated, < CGP_IFNAME bytes; or NULL */
  int has_link, link; /* links: IFLA_LINK (a veth's peer's index) */
  int has_nsid, nsid; /* links: IFLA_LINK_NETNSID (the peer's namespace) */
  int veth;           /* links: of kind "veth" (IFLA_INFO_KIND) */
  const uint64_t *v;  /* stats: NI_* counters, as net/dev prints them */
} nl_item;

typedef void (*nl_each_fn)(void *arg, const nl_item *it);

/* A NETLINK_ROUTE socket of the caller's namespace (close-on-exec), or
 * -errno. */
int nl_open(void);

/* Every link of the namespace (RTM_GETLINK dump), each given to fn. */
int nl_links(int fd, uint32_t *seq, char *buf, nl_each_fn fn, void *arg);
/* Every link's 64-bit counters (RTM_GETSTATS dump), each given to fn. */
int nl_stats(int fd, uint32_t *seq, char *buf, nl_each_fn fn, void *arg);
/* The id this namespace gives the namespace of the file ns_path
 * (/proc/<pid>/ns/net) into *nsid: -1 when it has none yet (RTM_GETNSID). */
int nl_nsid(int fd, uint32_t *seq, char *buf, const char *ns_path, int *nsid);

/* ---- the parsers (fuzzed: tests/fuzz/netlink_target.c) */

/* The messages of sequence seq in [p, p + len): each RTM_NEWLINK (links),
 * RTM_NEWSTATS (stats) or RTM_NEWNSID (nsid: it.nsid, has_nsid) calls fn.
 * Returns 1 when the reply is done (NLMSG_DONE; for nsid, its message), 0
 * when more is to come, or -errno (an NLMSG_ERROR, or EPROTO for a
 * malformed message). */
enum { NL_LINKS, NL_STATS, NL_NSID };
int nl_parse(int what, const char *p, size_t len, uint32_t seq, nl_each_fn fn,
             void *arg);

#endif
