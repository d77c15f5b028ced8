/*
 * cpu_capi.h - horcrux.cpu's sample store for other C modules.
 *
 * There is one store per loaded copy of core/cpu.c, and DESIGN.md wants one
 * store for every source. Stock lua5.4 loads each module's .so on its own,
 * so a module that linked cpu.c would get a second, private store. Instead
 * the module table of horcrux.cpu carries `capi`, a light userdata pointing
 * to the hx_cpu_capi below (static const, in the loaded copy of cpu.c): a C
 * module fetches it through require("horcrux.cpu") (package.preload in the
 * horcrux binary, cpu.so in stock Lua) and calls through it, so it reaches
 * the same store as cpu.observe() from Lua.
 *
 *   lua_getglobal(L, "require"); lua_pushliteral(L, "horcrux.cpu");
 *   lua_call(L, 1, 1); lua_getfield(L, -1, "capi");
 *   const hx_cpu_capi *api = lua_touserdata(L, -1);
 *   if (!api || api->version != HX_CPU_CAPI_VERSION) ... refuse
 *
 * The functions take the store's lock themselves, never call Lua, never
 * raise, and may be called from any thread without a lua_State.
 */
#ifndef HORCRUX_CPU_CAPI_H
#define HORCRUX_CPU_CAPI_H

#include <stddef.h>
#include <stdint.h>

#define HX_CPU_CAPI_VERSION 1

/* A sample, as cpu.observe's table: cumulative container CPU ns, the
 * host's cumulative CPU ns (< 0: unknown), the CPUs online (0: unknown),
 * and when it was taken (ns since the epoch). Counters are >= 0. */
typedef struct hx_cpu_sample {
  int64_t cpu_ns;
  int64_t system_ns;
  int64_t time_ns;
  int64_t online_cpus;
} hx_cpu_sample;

typedef struct hx_cpu_capi {
  int version; /* HX_CPU_CAPI_VERSION */
  /* cpu.observe(id, s [, window]): stores s and sets *pct and *base_age_ms
   * against the newest stored sample at least window_ns older (< 0: the
   * store's window). Returns NULL, or cpu.observe's reason word ("reset",
   * "clock", "range", "no_base"), "memory" when a new id could not be
   * stored, or "id" when id is not 1..128 bytes. */
  const char *(*observe)(const char *id, size_t len, const hx_cpu_sample *s,
                         int64_t window_ns, double *pct, double *base_age_ms);
  /* cpu.latest(id): 1 and *out when a sample is stored, else 0. */
  int (*latest)(const char *id, size_t len, hx_cpu_sample *out);
  /* cpu.forget(id): 1 when id was stored. */
  int (*forget)(const char *id, size_t len);
} hx_cpu_capi;

#endif
