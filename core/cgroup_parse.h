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

/* Block I/O sums: v1 "<dev> <Op> <value>" lines, v2 "<dev> key=value...". */
typedef struct {
  uint64_t read, write;
  int entries; /* device lines with a value: 0 means "no data" */
} io_sum;

typedef struct {
  uint64_t rx, tx;
  int interfaces; /* counted, lo excluded */
} net_sum;

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

#endif
