/*
 * proc.c - horcrux.proc: run a program from an argv, never through a shell.
 *
 *   proc.run(argv [, opts]) -> {status, signal, stdout, stderr, timed_out,
 *                               truncated} | nil, message, kind
 *   proc.which(name)        -> path | nil
 *   proc.realpath(path)     -> the resolved path | nil, message, kind
 *   proc.isatty([fd])       -> whether descriptor fd (default 1, stdout)
 *                              is a terminal (`horcrux stats` redraws on
 *                              one, appends frames elsewhere)
 *   proc.spawn(argv [, opts]) -> child | nil, message, kind
 *       a program left running: opts stdout/stderr (file paths, appended;
 *       default /dev/null), env, cwd; child:pid(), child:kill([sig]),
 *       child:wait([timeout]) -> {status | signal} | nil, "timeout",
 *       "timeout"; child:running(). The handle owns the child: collecting
 *       or closing it kills (SIGKILL) and reaps a child still running.
 *
 * A run is a task (async.h): a step that never blocks (read the outputs,
 * feed stdin, reap, signal at the timeout) and the descriptors it waits on
 * (the pipes; a pidfd once the outputs are closed). Inside a request of
 * `horcrux serve` the task is yielded to the host's executor thread, which
 * polls them with its curl transfers, so no worker thread waits for a
 * program; elsewhere hx_run_task steps it here between poll(2) calls.
 *
 * It is called from the server's worker threads in parallel and stepped on
 * the executor thread, so: no mutable global state, posix_spawnp instead of
 * fork (after fork a threaded process may only call async-signal-safe
 * functions; glibc's posix_spawn does the vfork-style dance for us), every
 * descriptor O_CLOEXEC, and SIGPIPE blocked in the stepping thread only
 * while we write the child's stdin.
 *
 * A child gets descriptors 0, 1 and 2 and nothing else: every descriptor
 * above 2 is closed in it (posix_spawn_file_actions_addclosefrom_np, glibc
 * 2.34), whatever flags the host's or a library's descriptors carry. Its
 * environment is opts.env when given, else ours without HORCRUX_TOKEN.
 *
 * Nothing between the spawn and the reap can raise: the run, its C-owned
 * buffers and descriptors live in a userdata whose __gc kills and reaps a
 * child still running, and the result is pushed only once the child is
 * reaped and its pipes closed.
 */
#define _GNU_SOURCE /* posix_spawn_file_actions_add{chdir,closefrom}_np */
#include "async.h"
#include "aux.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define PROC_RUN "horcrux.proc.run"
#define PROC_CHILD "horcrux.proc.child"
#define DEFAULT_TIMEOUT 10.0
#define DEFAULT_MAX_OUTPUT (1024 * 1024)
/* Between SIGTERM and SIGKILL at the timeout: enough for a well-behaved
 * program to exit, short against the caller's deadline. */
#define KILL_GRACE 0.5
#define CHUNK 65536
/* Bytes past the cap go through a stack buffer: small, for worker threads. */
#define SCRATCH 16384
/* Without a pidfd, how often a child that closed its outputs is looked at:
 * from 1 ms, doubling, to this. */
#define MAX_NAP 0.05

/* One captured stream; the bytes are malloc'ed and owned by the userdata. */
typedef struct stream {
  char *data;
  size_t len, cap;
  int fd; /* our end of the pipe, -1 once closed */
} stream;

/* Where a run is: reading its outputs; they are closed and the child is
 * waited for; the timeout came and SIGTERM was sent; then SIGKILL; reaped. */
enum phase { PUMP, WAIT, TERM, KILL, DONE };

/* One proc.run: a task (async.h) that the executor or run_task_now steps,
 * in a userdata with __gc. Only the task's stepper touches it between the
 * spawn and the continuation. */
typedef struct run {
  hx_task task;  /* first: the host sees a hx_task * */
  stream out[2]; /* stdout, stderr */
  size_t max_output;
  int truncated, oom, timed_out;
  const char *in; /* the stdin option's bytes, kept by the anchor table */
  size_t in_len, in_off;
  int in_fd;
  const char *prog; /* argv[0], for messages */
  pid_t pid;
  int pidfd;          /* -1 without pidfd_open (Linux < 5.3) */
  int reaped, status; /* status: waitpid's, -1 when unknown */
  enum phase phase;
  double deadline, kill_at, nap; /* CLOCK_MONOTONIC seconds */
} run;

static void close_fd(int *fd);
static void reap_blocking(pid_t pid, int *st);

/* Kills (SIGKILL) and reaps a child still running, closes every
 * descriptor. Idempotent; blocks only for a killed child to die. */
static void run_end(run *r) {
  if (!r->reaped && r->pid > 0) {
    kill(-r->pid, SIGKILL);
    kill(r->pid, SIGKILL);
    reap_blocking(r->pid, &r->status);
    r->reaped = 1;
  }
  close_fd(&r->out[0].fd);
  close_fd(&r->out[1].fd);
  close_fd(&r->in_fd);
  close_fd(&r->pidfd);
  r->phase = DONE;
}

static int run_gc(lua_State *L) {
  run *r = luaL_checkudata(L, 1, PROC_RUN);
  run_end(r);
  for (int i = 0; i < 2; i++) {
    free(r->out[i].data);
    r->out[i].data = NULL;
    r->out[i].len = r->out[i].cap = 0;
  }
  return 0;
}

/* ---- time ---------------------------------------------------------------- */

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_for(double s) {
  if (s <= 0)
    return;
  struct timespec ts;
  ts.tv_sec = (time_t)s;
  ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
  while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
    ;
}

/* ---- argument collection (may raise; nothing C-owned exists yet) -------- */

/* Converts the value on top of the stack to a string that the anchor table
 * at `anchor` keeps alive, pops it and returns the pointer. Raises on a
 * value that is not a string or number, or that holds a NUL byte. */
static const char *anchored_string(lua_State *L, int anchor, const char *what,
                                   lua_Integer i) {
  int t = lua_type(L, -1);
  if (t != LUA_TSTRING && t != LUA_TNUMBER)
    luaL_error(L, "%s[%I]: string expected, got %s", what, i,
               luaL_typename(L, -1));
  size_t len;
  const char *s = lua_tolstring(L, -1, &len);
  if (strlen(s) != len)
    luaL_error(L, "%s[%I]: contains a NUL byte", what, i);
  lua_rawseti(L, anchor, luaL_len(L, anchor) + 1);
  return s;
}

/* argv table at index 1 -> NULL-terminated char *[] in a userdata. */
static char **collect_argv(lua_State *L, int anchor) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer n = luaL_len(L, 1);
  luaL_argcheck(L, n >= 1, 1, "argv must hold at least the program");
  luaL_argcheck(L, n < INT_MAX / 2, 1, "argv too long");
  char **argv = lua_newuserdatauv(L, sizeof(char *) * (size_t)(n + 1), 0);
  lua_rawseti(L, anchor, luaL_len(L, anchor) + 1);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_geti(L, 1, i);
    argv[i - 1] = (char *)anchored_string(L, anchor, "argv", i);
  }
  argv[n] = NULL;
  luaL_argcheck(L, argv[0][0] != '\0', 1, "argv[1] is empty");
  return argv;
}

/* The variable an inherited environment never passes on: horcrux's bearer
 * token is a secret of the host, not of the programs it runs (issue 8 #9).
 * A child gets it only when opts.env names it. */
#define SECRET_VAR "HORCRUX_TOKEN="

/* This process's environment without SECRET_VAR, in a userdata. The server
 * changes its environment only before its threads start. */
static char **inherited_env(lua_State *L, int anchor) {
  size_t n = 0;
  while (environ != NULL && environ[n] != NULL)
    n++;
  char **envp = lua_newuserdatauv(L, sizeof(char *) * (n + 1), 0);
  lua_rawseti(L, anchor, luaL_len(L, anchor) + 1);
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (strncmp(environ[i], SECRET_VAR, sizeof SECRET_VAR - 1) != 0)
      envp[k++] = environ[i];
  envp[k] = NULL;
  return envp;
}

/* opts.env: a sequence of "K=V", a map K -> V, or both -> char *[]; with
 * no env option, the inherited environment. */
static char **collect_env(lua_State *L, int opts, int anchor) {
  if (lua_isnoneornil(L, opts))
    return inherited_env(L, anchor);
  if (lua_getfield(L, opts, "env") == LUA_TNIL) {
    lua_pop(L, 1);
    return inherited_env(L, anchor);
  }
  if (!lua_istable(L, -1))
    luaL_error(L, "option 'env': table expected, got %s", luaL_typename(L, -1));
  int env = lua_gettop(L);
  size_t n = 0;
  lua_pushnil(L);
  while (lua_next(L, env)) {
    n++;
    lua_pop(L, 1);
  }
  if (n >= INT_MAX / 2)
    luaL_error(L, "option 'env': too many entries");
  char **envp = lua_newuserdatauv(L, sizeof(char *) * (n + 1), 0);
  lua_rawseti(L, anchor, luaL_len(L, anchor) + 1);
  size_t k = 0;
  lua_pushnil(L);
  while (lua_next(L, env)) {
    /* Stack: env, key, value. */
    if (lua_type(L, -2) == LUA_TNUMBER) {
      const char *s = anchored_string(L, anchor, "env", (lua_Integer)k + 1);
      if (strchr(s, '=') == NULL || s[0] == '=')
        luaL_error(L, "option 'env': entry '%s' is not K=V", s);
      envp[k++] = (char *)s;
    } else if (lua_type(L, -2) == LUA_TSTRING) {
      const char *key = lua_tostring(L, -2);
      int vt = lua_type(L, -1);
      if (key[0] == '\0' || strchr(key, '=') != NULL ||
          strlen(key) != lua_rawlen(L, -2))
        luaL_error(L, "option 'env': bad variable name '%s'", key);
      if (vt != LUA_TSTRING && vt != LUA_TNUMBER)
        luaL_error(L, "option 'env': value of '%s' must be a string", key);
      lua_pushfstring(L, "%s=%s", key, lua_tostring(L, -1));
      lua_remove(L, -2); /* the value; keep the key for lua_next */
      envp[k] = (char *)anchored_string(L, anchor, "env", (lua_Integer)k + 1);
      k++;
      continue;
    } else {
      luaL_error(L, "option 'env': keys must be names or indices");
    }
  }
  envp[k] = NULL;
  lua_pop(L, 1); /* env */
  return envp;
}

/* ---- the child ----------------------------------------------------------- */

/* Moves fd above 2 so adddup2 onto 0..2 never becomes a no-op that leaves
 * O_CLOEXEC set (possible when the host runs with stdio closed). */
static int above_stdio(int fd) {
  if (fd > 2)
    return fd;
  int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  int err = errno;
  close(fd);
  errno = err;
  return nfd;
}

/* A pipe, both ends close-on-exec and above 2; on failure nothing is left
 * open and p is {-1, -1}, so the caller closes nothing twice. */
static int cloexec_pipe(int p[2]) {
  if (pipe2(p, O_CLOEXEC) == -1) {
    p[0] = p[1] = -1;
    return -1;
  }
  for (int i = 0; i < 2; i++) {
    p[i] = above_stdio(p[i]); /* closes the old number either way */
    if (p[i] == -1) {
      int err = errno;
      close(p[1 - i]);
      p[0] = p[1] = -1;
      errno = err;
      return -1;
    }
  }
  return 0;
}

static void close_fd(int *fd) {
  if (*fd >= 0) {
    close(*fd); /* not retried on EINTR: Linux has closed it already */
    *fd = -1;
  }
}

static void set_nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl != -1)
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

typedef struct spawn_req {
  char **argv, **envp;
  const char *cwd;
  int has_stdin;
} spawn_req;

/* Spawns the child with pipes for stdout and stderr (and stdin when there is
 * input; /dev/null otherwise), in its own process group so the timeout can
 * kill whatever it started. Returns 0 or an errno value; on success the
 * parent's ends are in out[]/in_fd. */
static int spawn(const spawn_req *r, pid_t *pid, int out_fd[2], int *in_fd) {
  int po[2] = {-1, -1}, pe[2] = {-1, -1}, pi[2] = {-1, -1};
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  int err = 0, fa_ok = 0, at_ok = 0;

  if (cloexec_pipe(po) == -1 || cloexec_pipe(pe) == -1 ||
      (r->has_stdin && cloexec_pipe(pi) == -1)) {
    err = errno;
    goto out;
  }
  if ((err = posix_spawn_file_actions_init(&fa)) != 0)
    goto out;
  fa_ok = 1;
  if (r->has_stdin)
    err = posix_spawn_file_actions_adddup2(&fa, pi[0], 0);
  else
    err = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  if (err || (err = posix_spawn_file_actions_adddup2(&fa, po[1], 1)) ||
      (err = posix_spawn_file_actions_adddup2(&fa, pe[1], 2)) ||
      (err = posix_spawn_file_actions_addclosefrom_np(&fa, 3)))
    goto out;
  if (r->cwd && (err = posix_spawn_file_actions_addchdir_np(&fa, r->cwd)))
    goto out;

  if ((err = posix_spawnattr_init(&at)) != 0)
    goto out;
  at_ok = 1;
  /* The child starts with no blocked signals and default dispositions: the
   * host may block or ignore SIGPIPE, SIGCHLD, ... and exec keeps both. */
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  sigdelset(&all, SIGKILL);
  sigdelset(&all, SIGSTOP);
  if ((err = posix_spawnattr_setsigmask(&at, &none)) ||
      (err = posix_spawnattr_setsigdefault(&at, &all)) ||
      (err = posix_spawnattr_setpgroup(&at, 0)) ||
      (err = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK |
                                               POSIX_SPAWN_SETSIGDEF |
                                               POSIX_SPAWN_SETPGROUP)))
    goto out;

  err = posix_spawnp(pid, r->argv[0], &fa, &at, r->argv, r->envp);

out:
  if (fa_ok)
    posix_spawn_file_actions_destroy(&fa);
  if (at_ok)
    posix_spawnattr_destroy(&at);
  close_fd(&po[1]);
  close_fd(&pe[1]);
  close_fd(&pi[0]);
  if (err) {
    close_fd(&po[0]);
    close_fd(&pe[0]);
    close_fd(&pi[1]);
    return err;
  }
  out_fd[0] = po[0];
  out_fd[1] = pe[0];
  *in_fd = pi[1];
  set_nonblock(po[0]);
  set_nonblock(pe[0]);
  if (pi[1] >= 0)
    set_nonblock(pi[1]);
  return 0;
}

/* ---- the run's steps (never raise, never block) ------------------------- */

/* Reads what is available on stream s; closes it at EOF or error. Bytes past
 * the cap are read and dropped, so the child never blocks on a full pipe. */
static void drain(run *r, stream *s) {
  char scratch[SCRATCH];
  while (s->fd >= 0) {
    char *dst = scratch;
    size_t room = sizeof scratch;
    if (s->len < r->max_output && !r->oom) {
      if (s->cap == s->len) {
        size_t want = s->cap ? s->cap * 2 : CHUNK;
        if (want > r->max_output)
          want = r->max_output;
        char *p = realloc(s->data, want);
        if (p == NULL) {
          r->oom = 1;
          continue;
        }
        s->data = p;
        s->cap = want;
      }
      dst = s->data + s->len;
      room = s->cap - s->len;
    }
    ssize_t n = read(s->fd, dst, room);
    if (n > 0) {
      if (dst == scratch)
        r->truncated = 1;
      else
        s->len += (size_t)n;
    } else if (n == 0) {
      close_fd(&s->fd);
    } else if (errno == EINTR) {
      continue;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      return;
    } else {
      close_fd(&s->fd);
    }
  }
}

/* Writes what the pipe takes of the child's stdin. SIGPIPE is blocked around
 * the write in this thread only; one raised by our EPIPE is consumed so it
 * never reaches the process once unblocked. */
static void feed(run *r) {
  sigset_t pipeset, old, pending;
  sigemptyset(&pipeset);
  sigaddset(&pipeset, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipeset, &old);
  sigpending(&pending);
  int was_pending = sigismember(&pending, SIGPIPE);

  while (r->in_fd >= 0 && r->in_off < r->in_len) {
    size_t n = r->in_len - r->in_off;
    if (n > CHUNK)
      n = CHUNK;
    ssize_t w = write(r->in_fd, r->in + r->in_off, n);
    if (w >= 0) {
      r->in_off += (size_t)w;
    } else if (errno == EINTR) {
      continue;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      break;
    } else {
      if (errno == EPIPE && !was_pending) {
        static const struct timespec zero = {0, 0};
        while (sigtimedwait(&pipeset, NULL, &zero) == -1 && errno == EINTR)
          ;
      }
      close_fd(&r->in_fd); /* the child stopped reading: drop the rest */
    }
  }
  if (r->in_off >= r->in_len)
    close_fd(&r->in_fd); /* EOF for the child */
  pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* Reaps the child if it has exited; 1 when it is reaped. */
static int try_reap(run *r) {
  for (;;) {
    pid_t w = waitpid(r->pid, &r->status, WNOHANG);
    if (w == r->pid)
      return r->reaped = 1;
    if (w == -1 && errno == EINTR)
      continue;
    if (w == -1) {
      r->status = -1; /* ECHILD: the host reaps children itself */
      return r->reaped = 1;
    }
    return 0;
  }
}

/* The group takes whatever the child started; the pid itself, in case the
 * child left the group. It is not reaped yet, so neither id is reused. */
static void signal_child(run *r, int sig, enum phase next) {
  kill(-r->pid, sig);
  kill(r->pid, sig);
  r->phase = next;
  r->nap = 0.001;
}

/* The child is reaped: after a timeout, keep what it wrote before it died
 * without waiting for EOF (a grandchild may still hold the pipe). */
static long run_done(run *r) {
  for (int i = 0; i < 2; i++) {
    drain(r, &r->out[i]);
    close_fd(&r->out[i].fd);
  }
  close_fd(&r->in_fd);
  close_fd(&r->pidfd);
  r->phase = DONE;
  return HX_TASK_DONE;
}

/* Milliseconds until the run must be stepped again with no descriptor
 * ready; -1 for never. */
static long run_wake(run *r, double t) {
  double until = r->phase == TERM   ? r->kill_at
                 : r->phase == KILL ? INFINITY
                                    : r->deadline;
  /* Without a pidfd nothing says when the child exits: look again soon. */
  if (r->phase != PUMP && r->pidfd < 0) {
    if (t + r->nap < until)
      until = t + r->nap;
    r->nap = r->nap * 2 < MAX_NAP ? r->nap * 2 : MAX_NAP;
  }
  if (isinf(until))
    return -1;
  double ms = ceil((until - t) * 1000);
  return ms <= 0 ? 0 : ms > INT_MAX ? INT_MAX : (long)ms;
}

/* The task's step: outputs until EOF, then the exit, both by the deadline;
 * past it SIGTERM, then SIGKILL after KILL_GRACE. */
static long run_step(hx_task *t) {
  run *r = (run *)t;
  if (r->phase == DONE)
    return HX_TASK_DONE;
  if (r->in_fd >= 0)
    feed(r);
  drain(r, &r->out[0]);
  drain(r, &r->out[1]);
  if (r->phase == PUMP && r->out[0].fd < 0 && r->out[1].fd < 0) {
    r->phase = WAIT; /* the child usually exits now, but it may not have */
    r->nap = 0.001;
  }
  if (r->phase != PUMP && try_reap(r))
    return run_done(r);
  double now_s = now();
  if ((r->phase == PUMP || r->phase == WAIT) && now_s >= r->deadline) {
    r->timed_out = 1;
    r->kill_at = now_s + KILL_GRACE;
    signal_child(r, SIGTERM, TERM);
  } else if (r->phase == TERM && now_s >= r->kill_at) {
    signal_child(r, SIGKILL, KILL);
  }
  return run_wake(r, now_s);
}

static int run_fds(hx_task *t, struct curl_waitfd *w) {
  run *r = (run *)t;
  int n = 0;
  for (int i = 0; i < 2; i++)
    if (r->out[i].fd >= 0)
      w[n++] = (struct curl_waitfd){r->out[i].fd, CURL_WAIT_POLLIN, 0};
  if (r->in_fd >= 0)
    w[n++] = (struct curl_waitfd){r->in_fd, CURL_WAIT_POLLOUT, 0};
  /* Only once the outputs are closed: before, an exit must not end the
   * wait for them, and a readable pidfd would wake us at every turn. */
  if (r->phase != PUMP && r->pidfd >= 0)
    w[n++] = (struct curl_waitfd){r->pidfd, CURL_WAIT_POLLIN, 0};
  return n;
}

/* Waits for pid until the deadline; 1 when reaped (status in *st). */
static int reap_until(pid_t pid, int *st, double deadline) {
  double nap = 0.001;
  for (;;) {
    pid_t r = waitpid(pid, st, WNOHANG);
    if (r == pid)
      return 1;
    if (r == -1 && errno != EINTR) {
      *st = -1; /* ECHILD: the host reaps children itself (SIGCHLD ignored) */
      return 1;
    }
    double left = deadline - now();
    if (left <= 0)
      return 0;
    sleep_for(nap < left ? nap : left);
    if (nap < MAX_NAP)
      nap *= 2;
  }
}

static void reap_blocking(pid_t pid, int *st) {
  while (waitpid(pid, st, 0) == -1) {
    if (errno != EINTR) {
      *st = -1;
      return;
    }
  }
}

/* ---- proc.run ------------------------------------------------------------ */

/* {status = n} or {signal = n} (or neither: unknown) from a waitpid status. */
static int push_status(lua_State *L, int st) {
  lua_createtable(L, 0, 2);
  if (st != -1 && WIFEXITED(st)) {
    lua_pushinteger(L, WEXITSTATUS(st));
    lua_setfield(L, -2, "status");
  } else if (st != -1 && WIFSIGNALED(st)) {
    lua_pushinteger(L, WTERMSIG(st));
    lua_setfield(L, -2, "signal");
  }
  return 1;
}

/* opts.stdin into r (anchored); raises on a bad value. */
static void collect_stdin(lua_State *L, int opts, int anchor, run *r) {
  if (lua_isnil(L, opts))
    return;
  int t = lua_getfield(L, opts, "stdin");
  if (t != LUA_TNIL && t != LUA_TSTRING)
    luaL_error(L, "option 'stdin': string expected, got %s",
               luaL_typename(L, -1));
  if (t == LUA_TSTRING) {
    r->in = lua_tolstring(L, -1, &r->in_len);
    lua_rawseti(L, anchor, luaL_len(L, anchor) + 1);
  } else {
    lua_pop(L, 1);
  }
}

/* Reads the arguments into *req and a new run userdata (pushed, with
 * __gc); raises on misuse. The strings stay alive in the anchor table at
 * index 3. */
static run *run_new(lua_State *L, spawn_req *req, double *timeout) {
  int opts = 2, anchor = 3;
  req->argv = collect_argv(L, anchor);
  req->envp = collect_env(L, opts, anchor);
  *timeout = hx_opt_number(L, opts, "timeout", DEFAULT_TIMEOUT);
  if (!(*timeout > 0)) /* also NaN */
    luaL_error(L, "option 'timeout': must be positive");
  lua_Integer max_out =
      hx_opt_integer(L, opts, "max_output", DEFAULT_MAX_OUTPUT);
  if (max_out < 0)
    luaL_error(L, "option 'max_output': must not be negative");
  req->cwd = hx_opt_string(L, opts, "cwd", NULL);
  run *r = lua_newuserdatauv(L, sizeof *r, 0);
  memset(r, 0, sizeof *r);
  r->out[0].fd = r->out[1].fd = r->in_fd = r->pidfd = -1;
  r->reaped = 1; /* nothing to reap yet */
  r->status = -1;
  luaL_setmetatable(L, PROC_RUN);
  r->task.step = run_step;
  r->task.fds = run_fds;
  r->max_output = (size_t)max_out;
  r->prog = req->argv[0];
  collect_stdin(L, opts, anchor, r);
  req->has_stdin = r->in != NULL;
  return r;
}

/* chdir failing inside posix_spawn reports the same ENOENT as a missing
 * program; checking first gives each its own message. Returns 0, or pushes
 * the failure and returns 3. */
static int check_cwd(lua_State *L, const char *cwd) {
  struct stat sb;
  if (cwd == NULL)
    return 0;
  if (stat(cwd, &sb) == -1)
    return hx_fail(L, HX_UNAVAILABLE, "proc: cwd '%s': %s", cwd,
                   strerror(errno));
  if (!S_ISDIR(sb.st_mode))
    return hx_fail(L, HX_UNAVAILABLE, "proc: cwd '%s': not a directory", cwd);
  return 0;
}

/* A pidfd for the child: its exit wakes a poll (Linux 5.3). Without one
 * the step looks at the child with a backoff instead. */
static int open_pidfd(pid_t pid) {
#ifdef SYS_pidfd_open
  return (int)syscall(SYS_pidfd_open, pid, 0); /* close-on-exec */
#else
  (void)pid;
  return -1;
#endif
}

/* The result table of a finished run, or the failure when the host
 * stopped before it finished. k of hx_run_task: ctx is the run's index. */
static int run_result(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  int aborted = lua_tointeger(L, -1) != 0;
  lua_pop(L, 1);
  run *r = lua_touserdata(L, (int)ctx);
  if (aborted || r->phase != DONE) {
    run_end(r);
    return hx_fail(L, HX_UNAVAILABLE, "proc: %s: stopped, the server stops",
                   r->prog);
  }
  if (r->oom)
    return hx_fail(L, HX_UNAVAILABLE, "proc: %s: out of memory for output",
                   r->prog);
  push_status(L, r->status);
  static const char *const names[2] = {"stdout", "stderr"};
  for (int i = 0; i < 2; i++) {
    lua_pushlstring(L, r->out[i].data ? r->out[i].data : "", r->out[i].len);
    lua_setfield(L, -2, names[i]);
  }
  lua_pushboolean(L, r->timed_out);
  lua_setfield(L, -2, "timed_out");
  lua_pushboolean(L, r->truncated);
  lua_setfield(L, -2, "truncated");
  return 1;
}

static int proc_run(lua_State *L) {
  lua_settop(L, 2);
  if (!lua_isnil(L, 2))
    luaL_checktype(L, 2, LUA_TTABLE);
  lua_newtable(L); /* 3: anchor for every string and array the child uses */
  spawn_req req = {0};
  double timeout;
  run *r = run_new(L, &req, &timeout);
  int ridx = lua_gettop(L);
  if (check_cwd(L, req.cwd) != 0)
    return 3;

  int out_fd[2];
  double start = now();
  int err = spawn(&req, &r->pid, out_fd, &r->in_fd);
  if (err == ENOENT)
    return hx_fail(L, HX_NOT_FOUND, "proc: %s: program not found", r->prog);
  if (err)
    return hx_fail(L, HX_UNAVAILABLE, "proc: cannot run %s: %s", r->prog,
                   strerror(err));
  /* From here the run's __gc kills and reaps the child if anything ends
   * this call before the result. */
  r->reaped = 0;
  r->out[0].fd = out_fd[0];
  r->out[1].fd = out_fd[1];
  r->pidfd = open_pidfd(r->pid);
  r->deadline = isinf(timeout) ? INFINITY : start + timeout;
  r->phase = PUMP;
  return hx_run_task(L, &r->task, ridx, run_result);
}

/* ---- proc.which ---------------------------------------------------------- */

static int executable(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0 && S_ISREG(sb.st_mode) && access(path, X_OK) == 0;
}

static int proc_which(lua_State *L) {
  size_t len;
  const char *name = luaL_checklstring(L, 1, &len);
  if (len == 0 || strlen(name) != len) {
    lua_pushnil(L);
    return 1;
  }
  if (strchr(name, '/')) {
    if (executable(name))
      lua_pushvalue(L, 1);
    else
      lua_pushnil(L);
    return 1;
  }
  const char *path = getenv("PATH");
  if (path == NULL)
    path = "/usr/local/bin:/usr/bin:/bin";
  char buf[PATH_MAX];
  for (const char *p = path;; p++) {
    const char *end = strchr(p, ':');
    size_t dlen = end ? (size_t)(end - p) : strlen(p);
    /* An empty element means the current directory, as execvp reads it. */
    const char *dir = dlen ? p : ".";
    size_t dl = dlen ? dlen : 1;
    if (dl + 1 + len < sizeof buf) {
      memcpy(buf, dir, dl);
      buf[dl] = '/';
      memcpy(buf + dl + 1, name, len + 1);
      if (executable(buf)) {
        lua_pushstring(L, buf);
        return 1;
      }
    }
    if (end == NULL)
      break;
    p = end;
  }
  lua_pushnil(L);
  return 1;
}

/* ---- proc.spawn ---------------------------------------------------------- */

typedef struct child {
  pid_t pid;
  int status; /* waitpid status once reaped */
  int reaped;
} child;

static int open_output(posix_spawn_file_actions_t *fa, int fd,
                       const char *path) {
  if (path == NULL)
    return posix_spawn_file_actions_addopen(fa, fd, "/dev/null", O_WRONLY, 0);
  return posix_spawn_file_actions_addopen(fa, fd, path,
                                          O_WRONLY | O_CREAT | O_APPEND, 0644);
}

static int spawn_detached(char **argv, char **envp, const char *cwd,
                          const char *out, const char *err_path, pid_t *pid) {
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  int err;
  if ((err = posix_spawn_file_actions_init(&fa)) != 0)
    return err;
  if ((err = posix_spawnattr_init(&at)) != 0) {
    posix_spawn_file_actions_destroy(&fa);
    return err;
  }
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  sigdelset(&all, SIGKILL);
  sigdelset(&all, SIGSTOP);
  if (!(err = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY,
                                               0)) &&
      !(err = open_output(&fa, 1, out))) {
    if (err_path != NULL && out != NULL && strcmp(err_path, out) == 0)
      err = posix_spawn_file_actions_adddup2(&fa, 1, 2);
    else
      err = open_output(&fa, 2, err_path);
  }
  if (!err)
    err = posix_spawn_file_actions_addclosefrom_np(&fa, 3);
  if (!err && cwd)
    err = posix_spawn_file_actions_addchdir_np(&fa, cwd);
  if (!err && !(err = posix_spawnattr_setsigmask(&at, &none)) &&
      !(err = posix_spawnattr_setsigdefault(&at, &all)) &&
      !(err = posix_spawnattr_setpgroup(&at, 0)))
    err = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK |
                                            POSIX_SPAWN_SETSIGDEF |
                                            POSIX_SPAWN_SETPGROUP);
  if (!err)
    err = posix_spawnp(pid, argv[0], &fa, &at, argv, envp);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  return err;
}

static int proc_spawn(lua_State *L) {
  lua_settop(L, 2);
  int opts = 2;
  if (!lua_isnil(L, opts))
    luaL_checktype(L, opts, LUA_TTABLE);
  lua_newtable(L);
  int anchor = lua_gettop(L);
  char **argv = collect_argv(L, anchor);
  char **envp = collect_env(L, opts, anchor);
  const char *cwd = hx_opt_string(L, opts, "cwd", NULL);
  const char *out = hx_opt_string(L, opts, "stdout", NULL);
  const char *err_path = hx_opt_string(L, opts, "stderr", NULL);
  child *c = lua_newuserdatauv(L, sizeof *c, 0);
  c->pid = -1;
  c->reaped = 1;
  luaL_setmetatable(L, PROC_CHILD);
  pid_t pid;
  int err = spawn_detached(argv, envp, cwd, out, err_path, &pid);
  if (err == ENOENT)
    return hx_fail(L, HX_NOT_FOUND, "proc: %s: program not found (or %s)",
                   argv[0], cwd ? "cwd missing" : "an output path missing");
  if (err)
    return hx_fail(L, HX_UNAVAILABLE, "proc: cannot run %s: %s", argv[0],
                   strerror(err));
  c->pid = pid;
  c->reaped = 0;
  return 1;
}

static child *check_child(lua_State *L) {
  return luaL_checkudata(L, 1, PROC_CHILD);
}

static int child_pid(lua_State *L) {
  child *c = check_child(L);
  lua_pushinteger(L, c->pid);
  return 1;
}

static const struct {
  const char *name;
  int sig;
} signals[] = {{"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT},
               {"KILL", SIGKILL}, {"TERM", SIGTERM}, {"USR1", SIGUSR1},
               {"USR2", SIGUSR2}, {"STOP", SIGSTOP}, {"CONT", SIGCONT},
               {NULL, 0}};

static int check_signal(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx))
    return SIGTERM;
  if (lua_type(L, idx) == LUA_TNUMBER) {
    lua_Integer n = luaL_checkinteger(L, idx);
    luaL_argcheck(L, n >= 0 && n < 65, idx, "signal number out of range");
    return (int)n;
  }
  const char *name = luaL_checkstring(L, idx);
  if (strncmp(name, "SIG", 3) == 0)
    name += 3;
  for (int i = 0; signals[i].name != NULL; i++)
    if (strcmp(signals[i].name, name) == 0)
      return signals[i].sig;
  return luaL_argerror(L, idx, "unknown signal name");
}

static int child_kill(lua_State *L) {
  child *c = check_child(L);
  int sig = check_signal(L, 2);
  if (c->reaped)
    return hx_fail(L, HX_NOT_FOUND, "proc: process %d has exited", (int)c->pid);
  if (kill(c->pid, sig) != 0)
    return hx_fail_errno(L, HX_UNAVAILABLE, "proc: kill", errno);
  lua_pushboolean(L, 1);
  return 1;
}

/* child:wait([timeout]): nil = until it exits; 0 = only look. */
static int child_wait(lua_State *L) {
  child *c = check_child(L);
  double timeout = luaL_optnumber(L, 2, INFINITY);
  luaL_argcheck(L, timeout >= 0, 2, "timeout must not be negative");
  if (!c->reaped) {
    int st;
    if (isinf(timeout))
      reap_blocking(c->pid, &st);
    else if (!reap_until(c->pid, &st, now() + timeout))
      return hx_fail(L, HX_TIMEOUT, "proc: process %d still running",
                     (int)c->pid);
    c->status = st;
    c->reaped = 1;
  }
  return push_status(L, c->status);
}

static int child_running(lua_State *L) {
  child *c = check_child(L);
  if (!c->reaped) {
    int st;
    if (reap_until(c->pid, &st, 0)) {
      c->status = st;
      c->reaped = 1;
    }
  }
  lua_pushboolean(L, !c->reaped);
  return 1;
}

static int child_gc(lua_State *L) {
  child *c = check_child(L);
  if (!c->reaped && c->pid > 0) {
    kill(c->pid, SIGKILL);
    reap_blocking(c->pid, &c->status);
    c->reaped = 1;
  }
  return 0;
}

static const luaL_Reg child_methods[] = {
    {"pid", child_pid},         {"kill", child_kill}, {"wait", child_wait},
    {"running", child_running}, {"close", child_gc},  {NULL, NULL}};

/* proc.realpath(path): the path with every symlink, "." and ".." resolved
 * (realpath(3)), so a policy compares where a path really leads. */
static int proc_realpath(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  char *r = realpath(path, NULL);
  if (r == NULL) {
    int e = errno;
    return hx_fail_errno(L, e == ENOENT || e == ENOTDIR ? HX_NOT_FOUND : HX_IO,
                         path, e);
  }
  lua_pushstring(L, r);
  free(r);
  return 1;
}

static int proc_isatty(lua_State *L) {
  lua_Integer fd = luaL_optinteger(L, 1, 1);
  lua_pushboolean(L, fd >= 0 && fd <= INT_MAX && isatty((int)fd) == 1);
  return 1;
}

static const luaL_Reg proc_funcs[] = {
    {"run", proc_run},     {"which", proc_which},   {"realpath", proc_realpath},
    {"spawn", proc_spawn}, {"isatty", proc_isatty}, {NULL, NULL},
};

HX_EXPORT int luaopen_horcrux_proc(lua_State *L) {
  if (luaL_newmetatable(L, PROC_RUN)) {
    lua_pushcfunction(L, run_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, PROC_CHILD)) {
    luaL_newlib(L, child_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, child_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, child_gc);
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
  luaL_newlib(L, proc_funcs);
  return 1;
}
