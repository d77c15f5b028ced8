# shellcheck shell=bash
# Helpers sourced by scripts/run, scripts/test and scripts/bench: install what
# is missing, build, find (or start) a Docker engine, stop what we started.
#
# Nothing here runs on sourcing except setting variables; the callers decide.
# Every message goes to stderr, so a script's stdout stays for its results.

HX_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HX_PROG=${HX_PROG:-$(basename "$0")}

# Logs and pid files of what the scripts start (a private dockerd).
HX_STATE_DIR=${HORCRUX_STATE_DIR:-/run/horcrux}

# What scripts/run needs; scripts/test and scripts/bench add theirs. curl and
# make are not dependencies of the others on a minimal Debian: name them.
# wrk drives tests/concurrency_spec.lua; util-linux (unshare) the private
# dockerd of tests/daemon.lua; openssl makes the certificates of the TLS
# specs (tests/docker_spec.lua); iproute2 (ip) finds the address beyond
# loopback that tests/access_spec.lua listens on. scripts/fuzz, memcheck and
# tsan add theirs.
# shellcheck disable=SC2034 # used by the scripts that source this file
HX_PACKAGES=(cmake make gcc pkg-config curl python3 lua5.4 liblua5.4-dev
  libcurl4-openssl-dev libcjson-dev libmicrohttpd-dev libwslay-dev libssl-dev
  lua-busted docker.io python3-websocket
  busybox-static wrk util-linux strace openssl iproute2 prometheus
  zlib1g-dev ninja-build)

# Set by hx_docker_ensure when it started dockerd itself (empty otherwise).
HX_DOCKERD_PID=""

hx_log() { printf '%s: %s\n' "$HX_PROG" "$*" >&2; }
hx_die() {
  printf '%s: error: %s\n' "$HX_PROG" "$*" >&2
  exit 1
}

# --- exit hooks ------------------------------------------------------------
# Scripts register cleanups with hx_on_exit; they run once, last registered
# first, on normal exit and on INT/TERM/HUP (which then exit 128+N).
HX_EXIT_HOOKS=()
hx_on_exit() {
  HX_EXIT_HOOKS+=("$1")
  if [ "${#HX_EXIT_HOOKS[@]}" -eq 1 ]; then
    trap hx__run_exit_hooks EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
  fi
}
hx__run_exit_hooks() {
  local rc=$?
  trap - EXIT INT TERM HUP
  # A ^C may have taken the reader of our output (a `| tee`) with it: a write
  # must not kill us before we have stopped what we started.
  trap '' PIPE
  hx_run_exit_hooks_now
  exit "$rc"
}
# Runs the registered hooks now (e.g. before a final summary line, so that it
# is the last thing printed) and forgets them.
hx_run_exit_hooks_now() {
  local i
  for ((i = ${#HX_EXIT_HOOKS[@]} - 1; i >= 0; i--)); do
    ${HX_EXIT_HOOKS[i]} || true
  done
  HX_EXIT_HOOKS=()
}

# --- packages --------------------------------------------------------------
# Prints the packages among the arguments that dpkg does not have installed.
hx_missing_packages() {
  local p
  for p in "$@"; do
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] ||
      printf '%s\n' "$p"
  done
}

# Installs the missing ones with apt-get; touches apt only when one is missing.
hx_ensure_packages() {
  local missing
  mapfile -t missing < <(hx_missing_packages "$@")
  [ "${#missing[@]}" -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] ||
    hx_die "missing packages: ${missing[*]} (run as root to install them)"
  hx_log "installing: ${missing[*]}"
  # No stdin in CI: never prompt, keep the packaged config files, and skip
  # recommends (needrestart, among docker.io's, asks questions).
  export DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=a
  apt-get update -q >&2 || hx_die "apt-get update failed"
  apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confold "${missing[@]}" >&2 ||
    hx_die "apt-get install failed: ${missing[*]}"
}

# --- build -----------------------------------------------------------------
# hx_build DIR [CMAKE-ARGS...]: configure (if needed) and build into DIR.
# A DIR named in HORCRUX_PREBUILT (space-separated) is taken as it is:
# scripts/test builds them before it starts the tools, which run at the same
# time as specs that load those builds.
# A new build folder is configured for Ninja when it is installed: make
# runs cmake for every target's dependencies and progress, and a whole
# suite builds four trees on a 2-core machine (an ASan tree took 66 s of
# CPU with make, 43 s with Ninja). A folder already configured keeps its
# generator (CMake refuses another).
hx_generator() { # hx_generator DIR: the -G arguments for DIR, one a line
  [ -e "$1/CMakeCache.txt" ] && return 0
  command -v ninja >/dev/null 2>&1 && printf '%s\n' -G Ninja
}

hx_build() {
  local dir=$1 gen
  shift
  case " ${HORCRUX_PREBUILT:-} " in *" $dir "*) return 0 ;; esac
  hx_log "building $dir"
  mapfile -t gen < <(hx_generator "$dir")
  cmake "${gen[@]}" -S "$HX_ROOT" -B "$dir" "$@" >&2 || hx_die "cmake configure of $dir failed"
  cmake --build "$dir" -j "$(nproc)" >&2 || hx_die "build of $dir failed"
}

# hx_build_fuzz DIR [TARGET...]: the libFuzzer harnesses of tests/fuzz
# (clang, ASan + UBSan) into DIR; default every target.
HX_FUZZ_TARGETS=(json cgroup router logs manage streams hookq objects follow view netlink
  history wsproto)
hx_build_fuzz() {
  local dir=$1 targets gen
  shift
  targets=("$@")
  [ "${#targets[@]}" -gt 0 ] || targets=("${HX_FUZZ_TARGETS[@]}")
  case " ${HORCRUX_PREBUILT:-} " in *" $dir "*) return 0 ;; esac
  hx_log "building $dir (clang, ASan + UBSan, libFuzzer)"
  mapfile -t gen < <(hx_generator "$dir")
  CC=clang cmake "${gen[@]}" -S "$HX_ROOT" -B "$dir" -DHORCRUX_FUZZ=ON \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >&2 || hx_die "cmake configure of $dir failed"
  cmake --build "$dir" -j "$(nproc)" \
    --target "${targets[@]/#/fuzz_}" >&2 || hx_die "build of $dir failed"
}

# --- Docker engine ---------------------------------------------------------
# The engine is the one DOCKER_HOST names (unix:// or tcp://, TLS as the docker
# CLI does it), else the default socket.
hx_docker_socket() {
  case ${DOCKER_HOST:-} in
  "") printf '%s\n' /var/run/docker.sock ;;
  unix://*) printf '%s\n' "${DOCKER_HOST#unix://}" ;;
  *) return 1 ;;
  esac
}

# Succeeds when the engine answers GET /_ping with OK.
hx_docker_ping() {
  local sock url certs args=(-fsS --max-time 3)
  case ${DOCKER_HOST:-} in
  "" | unix://*)
    sock=$(hx_docker_socket)
    [ -S "$sock" ] || return 1
    args+=(--unix-socket "$sock")
    url=http://localhost/_ping
    ;;
  tcp://*)
    url=${DOCKER_HOST#tcp://}
    url=${url%/}
    if [ -n "${DOCKER_TLS_VERIFY:-}" ]; then
      certs=${DOCKER_CERT_PATH:-$HOME/.docker}
      args+=(--cacert "$certs/ca.pem" --cert "$certs/cert.pem"
        --key "$certs/key.pem")
      url=https://$url/_ping
    else
      url=http://$url/_ping
    fi
    ;;
  *) return 1 ;;
  esac
  [ "$(curl "${args[@]}" "$url" 2>/dev/null)" = OK ]
}

# Describes the engine in use, for logs.
hx_docker_describe() {
  printf '%s' "${DOCKER_HOST:-unix:///var/run/docker.sock}"
}

# Makes sure an engine answers. One that does is used as it is. Otherwise a
# local dockerd is started on the socket that DOCKER_HOST (or the default)
# names, its output to $HX_STATE_DIR/dockerd.log, its pid in HX_DOCKERD_PID
# and $HX_STATE_DIR/dockerd.started.pid; hx_dockerd_stop stops it.
# Returns non-zero (with the reason logged) when no engine can be had.
hx_docker_ensure() {
  local sock log from waited=0 limit=${HORCRUX_DOCKERD_TIMEOUT:-60}
  local args=()
  if hx_docker_ping; then
    hx_log "using the Docker engine at $(hx_docker_describe)"
    return 0
  fi
  if ! sock=$(hx_docker_socket); then
    hx_log "DOCKER_HOST=$DOCKER_HOST does not answer; only a local engine" \
      "(unix://) can be started here"
    return 1
  fi
  if ! command -v dockerd >/dev/null; then
    hx_log "no Docker engine answers at $sock and dockerd is not installed"
    return 1
  fi
  if [ "$(id -u)" -ne 0 ]; then
    hx_log "no Docker engine answers at $sock; starting dockerd needs root"
    return 1
  fi
  mkdir -p "$HX_STATE_DIR" "$(dirname "$sock")"
  log=$HX_STATE_DIR/dockerd.log
  args=(-H "unix://$sock")
  case $sock in
  /var/run/docker.sock | /run/docker.sock) ;;
  *)
    # A socket of its own: keep its state apart from a stock engine's too.
    # (Two engines on one host still share iptables and the default bridge;
    # this is for hosts where the stock one is not running.)
    args+=(--pidfile "$HX_STATE_DIR/dockerd.pid"
      --data-root /var/lib/horcrux-docker
      --exec-root "$HX_STATE_DIR/docker-exec")
    ;;
  esac
  hx_log "no Docker engine answers at $sock; starting dockerd (log: $log)"
  printf '\n==== %s: dockerd %s\n' "$(date -Is)" "${args[*]}" >>"$log"
  from=$(wc -l <"$log")
  # setsid: its own session, so a ^C on the terminal reaches only us and we
  # stop it in order, after what uses it. The job is not a process-group
  # leader, so setsid does not fork: $! is dockerd's pid.
  setsid dockerd "${args[@]}" </dev/null >>"$log" 2>&1 &
  HX_DOCKERD_PID=$!
  printf '%s\n' "$HX_DOCKERD_PID" >"$HX_STATE_DIR/dockerd.started.pid"
  while ! hx_docker_ping; do
    if ! kill -0 "$HX_DOCKERD_PID" 2>/dev/null; then
      wait "$HX_DOCKERD_PID" 2>/dev/null
      hx_log "dockerd exited (status $?) before answering; end of $log:"
      tail -n +"$from" "$log" | tail -n 30 >&2
      HX_DOCKERD_PID=""
      return 1
    fi
    if [ "$waited" -ge $((limit * 2)) ]; then
      hx_log "dockerd (pid $HX_DOCKERD_PID) did not answer within ${limit}s;" \
        "end of $log:"
      tail -n +"$from" "$log" | tail -n 30 >&2
      hx_dockerd_stop
      return 1
    fi
    sleep 0.5
    waited=$((waited + 1))
  done
  hx_log "dockerd (pid $HX_DOCKERD_PID) answers at $sock"
}

# Stops the dockerd that hx_docker_ensure started (by its pid), if any.
hx_dockerd_stop() {
  local pid=$HX_DOCKERD_PID i
  [ -n "$pid" ] || return 0
  HX_DOCKERD_PID=""
  rm -f "$HX_STATE_DIR/dockerd.started.pid"
  kill -0 "$pid" 2>/dev/null || return 0
  hx_log "stopping dockerd (pid $pid)"
  kill -TERM "$pid" 2>/dev/null
  # dockerd gives running containers 15 s to stop before it kills them.
  for ((i = 0; i < 60; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    hx_log "dockerd (pid $pid) still running after 30 s; killing it"
    kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null || true
}

# hx_remove_labelled LABEL: removes every container (running or not) that
# carries LABEL (key=value), with its anonymous volumes.
hx_remove_labelled() {
  local ids
  ids=$(timeout 60 docker ps -aq --filter "label=$1" 2>/dev/null) || {
    hx_log "could not list containers labelled $1"
    return 1
  }
  [ -n "$ids" ] || return 0
  hx_log "removing containers labelled $1: ${ids//$'\n'/ }"
  # shellcheck disable=SC2086 # one id per word
  # bounded: an exit hook must end (a container the engine cannot kill
  # would otherwise hold the whole run)
  timeout 120 docker rm -f -v $ids >/dev/null
}

# hx_sweep_daemon_roots [GLOB]: removes the roots of private dockerds that
# specs start (tests/daemon.lua: /tmp/hxd.XXXXXX, GLOB's default) left by a
# run that was killed: those whose dockerd (the pid in ROOT/docker.pid) is
# gone and that are older than 10 minutes (a spec of another run may be
# starting one: mktemp, then dockerd writes its pid). Mounts under a root
# are unmounted (lazily) first, and rm stays on the root's file system.
# Prints the roots removed.
hx_sweep_daemon_roots() {
  local glob=${1:-/tmp/hxd.*} d pid m
  for d in $glob; do
    if [ ! -d "$d" ] || [ -L "$d" ]; then continue; fi
    pid=$(cat "$d/docker.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then continue; fi
    [ -n "$(find "$d" -maxdepth 0 -mmin +10)" ] || continue
    # deepest first; /proc/self/mounts escapes a space as \040
    awk -v r="$d/" 'substr($2, 1, length(r)) == r { print length($2), $2 }' /proc/self/mounts |
      sort -rn | cut -d' ' -f2- | while read -r m; do
      umount -l "$(printf '%b' "$m")" 2>/dev/null || true
    done
    rm -rf --one-file-system "$d" 2>/dev/null || true
    [ -e "$d" ] || printf '%s\n' "$d"
  done
}

# The image that test and bench containers run: tests/image/Dockerfile with
# the host's static busybox, built in a context of its own under WORKDIR
# (nothing is copied into the repo).
HX_TEST_IMAGE=horcrux-test:busybox
hx_build_test_image() {
  local ctx=$1/image
  [[ $(readelf -l /bin/busybox 2>/dev/null) == *"program interpreter"* ]] &&
    hx_die "/bin/busybox is dynamically linked; install busybox-static"
  mkdir -p "$ctx"
  cp "$HX_ROOT/tests/image/Dockerfile" "$ctx/Dockerfile"
  cp /bin/busybox "$ctx/busybox"
  hx_log "building image $HX_TEST_IMAGE"
  # The classic builder: no buildx plugin needed, with any CLI version.
  DOCKER_BUILDKIT=0 docker build -q -t "$HX_TEST_IMAGE" "$ctx" \
    >/dev/null 2>"$ctx/build.err" || {
    cat "$ctx/build.err" >&2
    hx_die "docker build of $HX_TEST_IMAGE failed"
  }
}

# --- misc ------------------------------------------------------------------
# Prints the first TCP port from $1 up on 127.0.0.1 that nothing listens on.
hx_free_port() {
  local port=$1
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    port=$((port + 1))
  done
  printf '%s\n' "$port"
}

# hx_wait_http URL SECONDS PID: waits until URL answers (any HTTP status);
# fails early if process PID has exited.
hx_wait_http() {
  local url=$1 limit=$2 pid=$3 i
  for ((i = 0; i < limit * 10; i++)); do
    curl -s -o /dev/null --max-time 1 "$url" && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# Stops process PID (SIGTERM, then SIGKILL after SECONDS, default 10) and
# reaps it when it is our child.
hx_stop_pid() {
  local pid=$1 limit=${2:-10} i
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < limit * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    hx_log "pid $pid still running after ${limit}s; killing it"
    kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null || true
}

# hx_stop_sessions PID...: stops the sessions these leaders started (TERM,
# then KILL a second later) and reaps the leaders, and only them: a bare
# `wait` would also wait for our other children, such as the dockerd that
# hx_docker_ensure started and a later hook stops. That hung a CI run of
# scripts/test until the run's time ran out.
hx_stop_sessions() {
  local p
  [ "$#" -gt 0 ] || return 0
  for p in "$@"; do pkill -TERM -s "$p" 2>/dev/null; done
  sleep 1
  for p in "$@"; do pkill -KILL -s "$p" 2>/dev/null; done
  wait "$@" 2>/dev/null || true
}
