/*
 * main.c - the command line.
 *
 *   horcrux serve [options]        the HTTP API (server.c)
 *   horcrux run FILE.lua [ARGS]    a script with the modules loaded
 *   horcrux NAME [ARGS]            lua/commands/NAME.lua (ps, stats, ...)
 */
#include "cors.h"
#include "guard.h"
#include "server.h"
#include "states.h"

#include <ctype.h>
#include <errno.h>
#include <lauxlib.h>
#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

extern char **environ;

#ifndef HORCRUX_VERSION
#define HORCRUX_VERSION "dev"
#endif
/* Where `cmake --install` puts the shipped Lua: absolute (the configured
 * prefix) and relative to the binary's own directory, so an install moved or
 * made with `--prefix` elsewhere still finds it. */
#ifndef HORCRUX_DEFAULT_SCRIPTS
#define HORCRUX_DEFAULT_SCRIPTS "/usr/local/share/horcrux/lua"
#endif
#ifndef HORCRUX_DEFAULT_LUA_LIB
#define HORCRUX_DEFAULT_LUA_LIB "/usr/local/share/lua/5.4"
#endif
#ifndef HORCRUX_REL_SCRIPTS
#define HORCRUX_REL_SCRIPTS "../share/horcrux/lua"
#endif
#ifndef HORCRUX_REL_LUA_LIB
#define HORCRUX_REL_LUA_LIB "../share/lua/5.4"
#endif

static const char usage[] =
    "usage: horcrux serve [--listen ADDR:PORT] [--scripts DIR] [--workers N]\n"
    "                     [--budget N] [--memory MB] [--timeout S]\n"
    "                     [--max-connections N] [--max-per-ip N] "
    "[--max-inflight N]\n"
    "                     [--body-max BYTES] [--grace S] [--interval S]\n"
    "                     [--history DURATION]\n"
    "                     [--deadline S] [--events-ring N] [--stream-queue N]\n"
    "                     [--stream-bytes BYTES] [--state-dir DIR]\n"
    "                     [--token-file PATH] [--require-token]\n"
    "                     [--allow-host NAME]... [--read-only] "
    "[--no-access-log]\n"
    "                     [--web DIR|none] [--cors ORIGIN]...\n"
    "       horcrux run FILE.lua [ARGS...]\n"
    "       horcrux ps [-a] [-q] [--no-trunc] [--filter K=V]...\n"
    "       horcrux stats [-a] [--no-stream] [--interval S] [--no-trunc] "
    "[CONTAINER...]\n"
    "       horcrux events [--since T] [--until T] [--filter K=V]... "
    "[--format json]\n"
    "       horcrux version\n";

static int exists(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0;
}

/* The directory of the running binary (no trailing slash) into out. */
static int exe_dir(char *out, size_t cap) {
  ssize_t n = readlink("/proc/self/exe", out, cap - 1);
  if (n <= 0 || (size_t)n >= cap - 1)
    return 0;
  out[n] = '\0';
  char *slash = strrchr(out, '/');
  if (slash == NULL)
    return 0;
  *slash = '\0';
  return 1;
}

/* base/rel (rel may be absolute: then base is not used) when it holds the
 * file or directory `probe`: its real path into out (PATH_MAX bytes). */
static int locate(const char *base, const char *rel, const char *probe,
                  char *out) {
  char path[PATH_MAX];
  int n = rel[0] == '/' || base == NULL
              ? snprintf(path, sizeof path, "%s/%s", rel, probe)
              : snprintf(path, sizeof path, "%s/%s/%s", base, rel, probe);
  if (n < 0 || (size_t)n >= sizeof path || !exists(path))
    return 0;
  path[n - strlen(probe) - 1] = '\0';
  return realpath(path, out) != NULL;
}

/* The shipped Lua: `scripts` holds the default operator scripts and
 * commands/ (routes.lua, commands/ps.lua, ...), `library` the library
 * modules (horcrux/app.lua, ...), NULL when they are in `scripts` too. */
typedef struct lua_dirs {
  const char *scripts;
  const char *library;
} lua_dirs;

/* Looks, in order: HORCRUX_LIB (one dir holding both); a build tree, whose
 * lua/ beside the binary's directory holds both; an install under any
 * prefix, the dirs at their place relative to the binary; the dirs of the
 * prefix configured at build time. The strings are static. */
static lua_dirs find_lua_dirs(void) {
  static char bin[PATH_MAX], scripts[PATH_MAX], library[PATH_MAX];
  lua_dirs d = {HORCRUX_DEFAULT_SCRIPTS, HORCRUX_DEFAULT_LUA_LIB};
  const char *env = getenv("HORCRUX_LIB");
  int have_bin = exe_dir(bin, sizeof bin);
  if (env != NULL && *env != '\0')
    d.scripts = env;
  else if (have_bin && locate(bin, "../lua", "horcrux", scripts))
    d.scripts = scripts;
  else if (have_bin && locate(bin, HORCRUX_REL_SCRIPTS, "routes.lua", scripts))
    d.scripts = scripts;
  if (locate(NULL, d.scripts, "horcrux", library))
    d.library = NULL;
  else if (have_bin && locate(bin, HORCRUX_REL_LUA_LIB, "horcrux", library))
    d.library = library;
  return d;
}

/* The host's Lua states set package.path to the scripts dir, then whatever
 * LUA_PATH_5_4 (else LUA_PATH, else Lua's default) says. An installed
 * library is found as stock lua5.4 finds an installed module: its dir goes
 * in front of that variable, before any state exists. Programs the scripts
 * start inherit it, which only helps a lua5.4 among them. */
static void put_library_on_path(const char *library) {
  const char *old = getenv("LUA_PATH_5_4");
  if (old == NULL)
    old = getenv("LUA_PATH");
  /* ";;" stands for Lua's default path where no variable was set. */
  size_t n = 2 * strlen(library) + (old ? strlen(old) : 1) + 32;
  char *path = malloc(n);
  if (path == NULL)
    return;
  snprintf(path, n, "%s/?.lua;%s/?/init.lua;%s", library, library,
           old ? old : ";");
  setenv("LUA_PATH_5_4", path, 1);
  free(path);
}

/* s as a number from min to max into *out; else -1, the bounds printed. */
static int parse_uint(const char *flag, const char *s, unsigned long long min,
                      unsigned long long max, unsigned long long *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s != NULL ? s : "", &end, 10);
  if (s == NULL || *s == '\0' || *s == '-' || *end != '\0' || errno != 0 ||
      v < min || v > max) {
    fprintf(stderr, "horcrux: %s needs a number from %llu to %llu\n", flag, min,
            max);
    return -1;
  }
  *out = v;
  return 0;
}

/* The token of --token-file: the first line, without its newline. Returns a
 * malloc'ed string or NULL with a message printed. */
static char *read_token(const char *path) {
  FILE *f = fopen(path, "r");
  if (f == NULL) {
    fprintf(stderr, "horcrux: --token-file %s: %s\n", path, strerror(errno));
    return NULL;
  }
  struct stat sb;
  if (fstat(fileno(f), &sb) == 0 && (sb.st_mode & 077) != 0)
    fprintf(stderr,
            "horcrux: warning: --token-file %s is readable by other "
            "users (chmod 600 it)\n",
            path);
  char *line = NULL;
  size_t cap = 0;
  ssize_t n = getline(&line, &cap, f);
  fclose(f);
  while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
    line[--n] = '\0';
  if (n <= 0) {
    fprintf(stderr, "horcrux: --token-file %s: empty\n", path);
    free(line);
    return NULL;
  }
  return line;
}

/* A token shorter than this is refused at start: a guessable token on a
 * socket that is root on the host is worse than none. */
#define TOKEN_MIN 16

/* 0 when token may serve; else -1 with the reason printed. */
static int check_token(const char *token, const char *from) {
  size_t n = strlen(token), blank = 0;
  while (blank < n && isspace((unsigned char)token[blank]))
    blank++;
  if (blank == n) {
    fprintf(stderr, "horcrux: the token of %s is blank\n", from);
    return -1;
  }
  if (n < TOKEN_MIN) {
    fprintf(stderr,
            "horcrux: the token of %s has %zu bytes; it needs at least %d "
            "(openssl rand -hex 32 makes one)\n",
            from, n, TOKEN_MIN);
    return -1;
  }
  return 0;
}

/* HORCRUX_TOKEN, taken out of the environment: a copy is returned (NULL
 * when it is not set), the variable is unset, so that neither a route's
 * os.getenv nor a program the server starts sees it, and its text is
 * wiped, so that /proc/PID/environ (the environment the process started
 * with) no longer shows it. *set tells whether it was set at all. */
static char *take_env_token(int *set) {
  static const char name[] = "HORCRUX_TOKEN=";
  const size_t nl = sizeof name - 1;
  char *copy = NULL, *wipe[8];
  int nwipe = 0;
  *set = 0;
  for (char **e = environ; e != NULL && *e != NULL; e++) {
    if (strncmp(*e, name, nl) != 0)
      continue;
    if (!*set)
      copy = strdup(*e + nl);
    *set = 1;
    if (nwipe < 8)
      wipe[nwipe++] = *e;
  }
  unsetenv("HORCRUX_TOKEN");
  for (int i = 0; i < nwipe; i++)
    explicit_bzero(wipe[i], strlen(wipe[i]));
  return copy;
}

/* A numeric option of serve: 1 when `a` is one (its value v stored in
 * cfg), 0 when it is not, -1 when v is bad (message printed). */
static int numeric_option(const char *a, const char *v, hx_server_config *cfg) {
  static const struct {
    const char *flag;
    unsigned long long max;
    int nonzero;
  } opts[] = {
      {"--workers", 256, 1},
      {"--budget", 1ULL << 50, 0},
      {"--memory", 1 << 20, 0},
      {"--timeout", 86400, 0},
      {"--max-connections", 1000000, 1},
      {"--max-per-ip", 1000000, 0},
      {"--body-max", 1ULL << 32, 0},
      {"--grace", 3600, 0},
      {"--deadline", 86400, 0},
      {"--max-inflight", 100000, 1},
      {"--events-ring", 1000000, 1},
      {"--stream-queue", 100000, 1},
      {"--stream-bytes", 1ULL << 32, 1},
  };
  size_t i = 0;
  while (i < sizeof opts / sizeof opts[0] && strcmp(a, opts[i].flag) != 0)
    i++;
  if (i == sizeof opts / sizeof opts[0])
    return 0;
  unsigned long long n = 0;
  if (parse_uint(a, v, opts[i].nonzero ? 1 : 0, opts[i].max, &n) != 0)
    return -1;
  switch (i) {
  case 0:
    cfg->workers = (unsigned)n;
    break;
  case 1:
    cfg->lua.budget = (long long)n;
    break;
  case 2:
    cfg->lua.memory_cap = (size_t)n << 20;
    break;
  case 3:
    cfg->conn_timeout = (unsigned)n;
    break;
  case 4:
    cfg->max_connections = (unsigned)n;
    break;
  case 5:
    cfg->max_per_ip = (unsigned)n;
    break;
  case 6:
    cfg->body_max = (size_t)n;
    break;
  case 7:
    cfg->grace = (unsigned)n;
    break;
  case 8:
    cfg->deadline = (unsigned)n;
    break;
  case 9:
    cfg->max_inflight = (unsigned)n;
    break;
  case 10:
    cfg->events_ring = (unsigned)n;
    break;
  case 11:
    cfg->stream_queue = (unsigned)n;
    break;
  default:
    cfg->stream_bytes = (size_t)n;
    break;
  }
  return 1;
}

/* --history DURATION: how long each container's history reaches back, in
 * seconds or with a unit (90s, 15m, 2h); 0: none. */
static int history_option(const char *v, hx_server_config *cfg) {
  char *end;
  double d = v != NULL ? strtod(v, &end) : -1, mul = 1;
  if (v != NULL && end != v && *end != '\0' && end[1] == '\0')
    mul = *end == 's' ? 1 : *end == 'm' ? 60 : *end == 'h' ? 3600 : -1, end++;
  if (v == NULL || *end != '\0' || mul < 0 ||
      !(d * mul >= 0 && d * mul <= 86400)) {
    fprintf(stderr, "horcrux: --history needs a duration up to 24h "
                    "(900, 90s, 15m, 2h; 0: none)\n");
    return -1;
  }
  cfg->history = d * mul;
  return 0;
}

static int interval_option(const char *v, hx_server_config *cfg) {
  char *end;
  double d = v != NULL ? strtod(v, &end) : -1;
  if (v == NULL || *end != '\0' || !(d >= 0 && d <= 3600)) {
    fprintf(stderr, "horcrux: --interval needs seconds 0..3600 "
                    "(0: no collector)\n");
    return -1;
  }
  cfg->interval = d;
  return 0;
}

/* --allow-host NAME: added to cfg->allow_hosts (room for one per
 * argument was made by serve()). */
static int allow_host(const char *v, hx_server_config *cfg) {
  if (!hx_hosts_valid_name(v)) {
    fprintf(stderr,
            "horcrux: --allow-host %s: expected a host name or address, "
            "with or without :PORT ([::1] for IPv6)\n",
            v);
    return -1;
  }
  ((const char **)cfg->allow_hosts)[cfg->n_allow_hosts++] = v;
  return 0;
}

/* --cors ORIGIN: added to cfg->cors (room for one per argument was made
 * by serve()) when it is an origin as a browser sends it. */
static int cors_origin(const char *v, hx_server_config *cfg) {
  const char *why = hx_cors_invalid(v);
  if (why != NULL) {
    fprintf(stderr, "horcrux: --cors %s: %s\n", v, why);
    return -1;
  }
  ((const char **)cfg->cors)[cfg->n_cors++] = v;
  return 0;
}

/* --max-inflight when not given: 64 requests per worker, but no more
 * than one per MB of --memory (at least 4), since the requests a worker
 * runs at once share its state's memory. */
static unsigned default_inflight(size_t memory_cap) {
  size_t mb = memory_cap >> 20;
  if (memory_cap == 0 || mb >= 64)
    return 64;
  return mb < 4 ? 4 : (unsigned)mb;
}

/* Reads serve's options into cfg. Returns 0, 1 after printing the usage
 * (--help), or -1 after printing why. *token_file gets the malloc'ed token
 * of --token-file. */
static int serve_options(int argc, char **argv, hx_server_config *cfg,
                         char **token_file) {
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    int num;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      fputs(usage, stdout);
      return 1;
    } else if (strcmp(a, "--listen") == 0 && v != NULL) {
      cfg->listen = v, i++;
    } else if (strcmp(a, "--scripts") == 0 && v != NULL) {
      cfg->lua.scripts_dir = v, i++;
    } else if (strcmp(a, "--state-dir") == 0 && v != NULL && *v != '\0') {
      cfg->state_dir = v, i++;
    } else if (strcmp(a, "--web") == 0 && v != NULL) {
      cfg->web_dir = v, i++;
    } else if (strcmp(a, "--no-access-log") == 0) {
      cfg->access_log = 0;
    } else if (strcmp(a, "--read-only") == 0) {
      cfg->read_only = 1;
    } else if (strcmp(a, "--require-token") == 0) {
      cfg->require_token = 1;
    } else if (strcmp(a, "--allow-host") == 0 && v != NULL) {
      if (allow_host(v, cfg) != 0)
        return -1;
      i++;
    } else if (strcmp(a, "--cors") == 0 && v != NULL) {
      if (cors_origin(v, cfg) != 0)
        return -1;
      i++;
    } else if (strcmp(a, "--token-file") == 0 && v != NULL) {
      free(*token_file);
      if ((*token_file = read_token(v)) == NULL)
        return -1;
      cfg->token = *token_file, i++;
    } else if (strcmp(a, "--interval") == 0) {
      if (interval_option(v, cfg) != 0)
        return -1;
      i++;
    } else if (strcmp(a, "--history") == 0) {
      if (history_option(v, cfg) != 0)
        return -1;
      i++;
    } else if ((num = numeric_option(a, v, cfg)) != 0) {
      if (num < 0)
        return -1;
      i++;
    } else {
      fprintf(stderr, "horcrux serve: unknown or incomplete option '%s'\n%s", a,
              usage);
      return -1;
    }
  }
  return 0;
}

/* The dashboard's folder, resolved (malloc'ed), into *out: --web's (an
 * error when it is not there; "none": no dashboard), else web/ of the
 * scripts dir, else the shipped web/ (none when neither is there).
 * Returns 0 or -1 with the reason printed. */
static int web_dir(const char *given, const char *scripts, const char *lib,
                   char **out) {
  *out = NULL;
  if (given != NULL) {
    if (strcmp(given, "none") == 0)
      return 0;
    if ((*out = realpath(given, NULL)) == NULL) {
      fprintf(stderr, "horcrux: --web %s: %s\n", given, strerror(errno));
      return -1;
    }
    return 0;
  }
  const char *dirs[] = {scripts, lib};
  for (size_t i = 0; i < 2 && *out == NULL; i++) {
    char path[PATH_MAX];
    int n = snprintf(path, sizeof path, "%s/web", dirs[i]);
    if (n > 0 && (size_t)n < sizeof path)
      *out = realpath(path, NULL);
  }
  return 0;
}

/* glibc malloc as a long-running server with a few threads wants it. */
static void tune_malloc(void) {
  /* Two malloc arenas, not glibc's eight a core: each thread (workers,
   * the collector, the HTTP daemon's) otherwise keeps what it freed in an
   * arena of its own. Measured side by side with 400 containers: RSS 33
   * against 45 MB, 41 against 55 after 180 requests, the same latencies.
   * MALLOC_ARENA_MAX in the environment still decides. */
  if (getenv("MALLOC_ARENA_MAX") == NULL)
    mallopt(M_ARENA_MAX, 2);
  /* Blocks of 256 KiB and more from mmap, given back when freed. glibc
   * otherwise raises its threshold to the largest block freed, so once an
   * answer of 1,000 containers (1.8 MB, and its copy in the response) was
   * freed, the next ones came from the arenas and left them fragmented.
   * Measured side by side on 1,003 idle containers with the same requests
   * every 2 s for 4 min: RSS 34-46 MB against 45-62, the same CPU.
   * MALLOC_MMAP_THRESHOLD_ in the environment still decides. */
  if (getenv("MALLOC_MMAP_THRESHOLD_") == NULL)
    mallopt(M_MMAP_THRESHOLD, 256 << 10);
}

static int serve(int argc, char **argv, const char *lib) {
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  tune_malloc();
  hx_server_config cfg = {
      .listen = "127.0.0.1:8080",
      .workers = ncpu > 0 ? (unsigned)ncpu : 2,
      .conn_timeout = 30,
      .max_connections = 0, /* 1024, or what the descriptors allow */
      .max_per_ip = 512,
      .body_max = 1 << 20,
      .grace = 10,
      .deadline = 10,
      .access_log = 1,
      .interval = 1.0,
      .history = 900,
      .state_dir = "/var/lib/horcrux",
      .stream_queue = 64,
      .stream_bytes = (size_t)4 << 20,
      .events_ring = 10000,
      .lua = {.scripts_dir = lib,
              .lib_dir = lib,
              .budget = 100000000,
              .memory_cap = (size_t)256 << 20,
              .sandbox = 1},
  };
  const char *env = getenv("HORCRUX_LISTEN");
  if (env != NULL && *env != '\0')
    cfg.listen = env;
  int env_set;
  char *env_token = take_env_token(&env_set);
  char *token_file = NULL;
  const char **hosts = calloc((size_t)argc + 1, sizeof *hosts);
  cfg.allow_hosts = hosts;
  const char **cors = calloc((size_t)argc + 1, sizeof *cors);
  cfg.cors = cors;
  cfg.token = env_token;
  int rc = 0;
  if (hosts == NULL || cors == NULL || (env_set && env_token == NULL)) {
    fprintf(stderr, "horcrux: out of memory\n");
    rc = -1;
  }
  if (rc == 0)
    rc = serve_options(argc, argv, &cfg, &token_file);
  if (cfg.max_inflight == 0)
    cfg.max_inflight = default_inflight(cfg.lua.memory_cap);
  if (rc == 0 && cfg.token != NULL)
    rc = check_token(cfg.token, cfg.token == token_file ? "--token-file"
                                                        : "HORCRUX_TOKEN");
  char *real = NULL, *web = NULL;
  if (rc == 0 && (real = realpath(cfg.lua.scripts_dir, NULL)) == NULL) {
    fprintf(stderr, "horcrux: --scripts %s: %s\n", cfg.lua.scripts_dir,
            strerror(errno));
    rc = -1;
  }
  if (rc == 0)
    rc = web_dir(cfg.web_dir, real, lib, &web);
  if (rc == 0) {
    cfg.lua.scripts_dir = real;
    cfg.lua.state_dir = cfg.state_dir; /* compose's stacks/ (config.lua) */
    cfg.web_dir = web;
    rc = hx_serve(&cfg);
  } else {
    rc = rc > 0 ? 0 : 2;
  }
  free(real);
  free(web);
  free(token_file);
  free(env_token);
  free(hosts);
  free(cors);
  return rc;
}

/* Protected part of `run`: arg table, load, call. */
static int run_script(lua_State *L) {
  char **argv = lua_touserdata(L, 1);
  int argc = (int)lua_tointeger(L, 2);
  const char *file = argv[0];
  lua_createtable(L, argc, 2);
  lua_pushstring(L, "horcrux");
  lua_rawseti(L, -2, -1);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i);
  }
  lua_setglobal(L, "arg");
  if (luaL_loadfilex(L, file, "t") != LUA_OK)
    return 1; /* its message, without a traceback of this C function */
  for (int i = 1; i < argc; i++)
    lua_pushstring(L, argv[i]);
  lua_call(L, argc - 1, 0);
  return 0;
}

/* Runs argv[0] (a file) with argv[1..] as its arguments. */
static int run(int argc, char **argv, const char *lib) {
  hx_states_config ec = {.scripts_dir = lib, .lib_dir = lib};
  char *err = NULL;
  hx_state *st = hx_state_new(&ec, &err);
  if (st == NULL) {
    fprintf(stderr, "horcrux: %s\n", err);
    free(err);
    return 1;
  }
  lua_State *L = st->L;
  lua_pushcfunction(L, hx_traceback);
  lua_pushcfunction(L, run_script);
  lua_pushlightuserdata(L, argv);
  lua_pushinteger(L, argc);
  int rc = lua_pcall(L, 2, 1, 1);
  if (rc != LUA_OK || lua_isstring(L, -1)) {
    fprintf(stderr, "horcrux: %s\n", lua_tostring(L, -1));
    rc = LUA_ERRRUN;
  }
  hx_state_close(st);
  return rc == LUA_OK ? 0 : 1;
}

static const char run_usage[] =
    "usage: horcrux run FILE.lua [ARGS...]\n"
    "Runs FILE.lua with the horcrux library on its path (require "
    "\"horcrux.engine\", ...);\n"
    "ARGS are its `arg` table and its `...`.\n";

int main(int argc, char **argv) {
  if (argc < 2) {
    fputs(usage, stderr);
    return 2;
  }
  const char *cmd = argv[1];
  lua_dirs dirs = find_lua_dirs();
  const char *lib = dirs.scripts;
  if (dirs.library != NULL)
    put_library_on_path(dirs.library);
  if (strcmp(cmd, "serve") == 0)
    return serve(argc - 2, argv + 2, lib);
  if (strcmp(cmd, "run") == 0) {
    if (argc >= 3 &&
        (strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0)) {
      fputs(run_usage, stdout);
      return 0;
    }
    if (argc < 3 || argv[2][0] == '-') {
      if (argc >= 3)
        fprintf(stderr, "horcrux run: unknown option %s\n", argv[2]);
      fputs(run_usage, stderr);
      return 2;
    }
    return run(argc - 2, argv + 2, lib);
  }
  if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
    printf("horcrux %s\n", HORCRUX_VERSION);
    return 0;
  }
  if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 ||
      strcmp(cmd, "-h") == 0) {
    fputs(usage, stdout);
    return 0;
  }
  /* Any other word is a command script: lua/commands/<word>.lua. */
  for (const char *p = cmd; *p != '\0'; p++) {
    if (!(*p >= 'a' && *p <= 'z') && *p != '-' && *p != '_') {
      fprintf(stderr, "horcrux: unknown command '%s'\n%s", cmd, usage);
      return 2;
    }
  }
  size_t n = strlen(lib) + strlen(cmd) + sizeof "/commands/.lua";
  char *path = malloc(n);
  if (path == NULL)
    return 1;
  snprintf(path, n, "%s/commands/%s.lua", lib, cmd);
  if (!exists(path)) {
    fprintf(stderr, "horcrux: unknown command '%s' (no %s)\n%s", cmd, path,
            usage);
    free(path);
    return 2;
  }
  argv[1] = path;
  int rc = run(argc - 1, argv + 1, lib);
  free(path);
  return rc;
}
