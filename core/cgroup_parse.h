/*
 * cgroup_parse.h - the parsers behind horcrux.cgroup: the formats of cgroup
 * and /proc files, each read from a buffer and a length (no NUL needed)
 * into a Lua table (when L is not NULL) or a C struct. They never read a
 * file and never raise; cgroup.c reads the files and is the Lua module.
 * Each function is described where it is defined (cgroup_parse.c).
 */
#ifndef HORCRUX_CGROUP_PARSE_H
#define HORCRUX_CGROUP_PARSE_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

/* A parsed value: an int64, or (big) an unsigned value above INT64_MAX. */
typedef struct {
  int big;
  int64_t i;
  uint64_t u;
} num;

/* What the parsers keep per item, at most: devices of a block I/O file,
 * interfaces of net/dev (lo left out), CPUs of a per-CPU list. Past it the
 * sums still count every item; the lists say `more`. */
#define CGP_MAX_DEVS 8
#define CGP_MAX_IFACES 8
#define CGP_MAX_CPUS 64
#define CGP_IFNAME 16 /* IFNAMSIZ: 15 bytes and the NUL */

/* One device's bytes read and written. */
typedef struct {
  uint32_t major, minor;
  uint64_t read, write;
} io_dev;

/* Block I/O sums: v1 "<dev> <Op> <value>" lines, v2 "<dev> key=value...". */
typedef struct {
  uint64_t read, write;
  int entries; /* device lines with a value: 0 means "no data" */
  int ndevs, devs_more;
  io_dev devs[CGP_MAX_DEVS]; /* in the file's order */
} io_sum;

/* The counters of one interface, as the Engine API names them. */
enum {
  NI_RX_BYTES,
  NI_RX_PACKETS,
  NI_RX_ERRORS,
  NI_RX_DROPPED,
  NI_TX_BYTES,
  NI_TX_PACKETS,
  NI_TX_ERRORS,
  NI_TX_DROPPED,
  NI_N
};
extern const char *const cgp_iface_names[NI_N]; /* "rx_bytes", ... */

typedef struct {
  char name[CGP_IFNAME];
  uint64_t v[NI_N];
} net_iface;

typedef struct {
  uint64_t rx, tx;
  int interfaces; /* counted, lo excluded */
  int nifs, ifs_more;
  net_iface ifs[CGP_MAX_IFACES]; /* lo excluded, in the file's order */
} net_sum;

/* Pressure stall information: one line of a *.pressure file. */
typedef struct {
  int ok;
  double avg[3];  /* avg10, avg60, avg300: % of the time */
  uint64_t total; /* us stalled in all */
} psi_line;

typedef struct {
  psi_line some, full;
} psi_fig;

typedef struct {
  uint64_t v[10];
  int n;
  uint64_t ticks; /* user+nice+system+idle+iowait+irq+softirq */
} stat_cpu;

int cgp_scan_u64(const char *s, size_t n, uint64_t *out);
int cgp_scan_num(const char *s, size_t n, num *out);
void cgp_push_u64(lua_State *L, uint64_t v);
void cgp_push_num(lua_State *L, const num *v);
int cgp_num_unsigned(const num *v, uint64_t *out);
void cgp_add_sat(uint64_t *acc, uint64_t v);
int cgp_ticks_to_ns(uint64_t ticks, uint64_t hz, uint64_t *ns);
int cgp_is_blank(char c);
int cgp_next_line(const char **p, const char *end, const char **ls,
                  const char **le);
int cgp_next_field(const char **p, const char *end, const char **f, size_t *n);
int cgp_field_is(const char *f, size_t n, const char *lit);
int cgp_field_is_ci(const char *f, size_t n, const char *lit);
int cgp_is_device(const char *f, size_t n);
int cgp_fill_flat(lua_State *L, int t, const char *s, size_t n,
                  const char *want, num *got, int *found);
int cgp_find_key(const char *s, size_t n, const char *key, num *out);
void cgp_find_flat(const char *s, size_t n, const char *const keys[], int nkeys,
                   num vals[], int found[]);
void cgp_parse_blkio_v1(lua_State *L, const char *s, size_t n, io_sum *out);
void cgp_parse_io_v2(lua_State *L, const char *s, size_t n, io_sum *out);
void cgp_parse_net_dev(lua_State *L, const char *s, size_t n, net_sum *out);
int cgp_parse_single(const char *s, size_t n, num *out);
/* The names of stat_cpu's v[]: user, nice, system, idle, ... */
extern const char *const cgp_stat_names[10];
int cgp_parse_stat_cpu(const char *s, size_t len, stat_cpu *out);
int cgp_parse_meminfo(lua_State *L, const char *s, size_t len, const char *want,
                      uint64_t *got);
uint64_t cgp_parse_cpu_list(const char *s, size_t len);
int cgp_first_pid(const char *s, size_t len);
int cgp_pid_at(const char *s, size_t len, int i);
int cgp_status_ns_init(const char *s, size_t len);
int cgp_count_pids(const char *s, size_t len);
int cgp_parse_u64_list(const char *s, size_t len, uint64_t *out, int max);
int cgp_parse_cpu_max(const char *s, size_t len, int *unlimited,
                      uint64_t *quota, uint64_t *period);
int cgp_parse_pressure(lua_State *L, const char *s, size_t len, psi_fig *out);
int cgp_parse_btime(const char *s, size_t len, uint64_t *out);
int cgp_parse_pid_start(const char *s, size_t len, uint64_t *ticks);

#endif
