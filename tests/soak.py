#!/usr/bin/env python3
"""tests/soak.py: the load and the checks of scripts/soak (which builds,
starts `horcrux serve` and the containers, and calls this).

Phase 1, mixed routes at a fixed rate (default 200 req/s) for MINUTES:
GET /healthz, /api/containers, /api/stats, /api/containers/:id,
/:id/stats, /:id/logs, and lifecycle POSTs with the token (start, pause,
unpause on one container; restart on another; serialized so that each is
valid), while a churn thread starts
and removes labelled containers. Every answer must be 2xx. Every 5 s a
line: requests, rate, answers by class, latency (p50, p99, max), the
server's RSS and open fds. After the warm-up (the first quarter), RSS and
the fd count must stay within 10 % of their value at its end (fds: or 8,
whichever is more: a few are connections in flight).

Phase 2, slowloris: SLOW connections (default 1000) from other loopback
addresses (127.0.1.x, at most 200 each, under the default --max-per-ip)
send a request head one header at a time, every few seconds, and never
finish it; meanwhile a normal request (GET /healthz, GET /api/stats) from
127.0.0.1 every 0.25 s must answer 2xx in under 1 s.

Only the standard library (Debian's python3). Exits 1 when a bound is
broken, printing which.
"""
import argparse
import http.client
import json
import os
import queue
import random
import resource
import socket
import subprocess
import sys
import threading
import time


def log(msg):
    print(msg, flush=True)


class Stats:
    """Answers of one interval and of the whole run, under a lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.total = {}
        self.unexpected = {}  # (method, route, status) -> [count, example]
        self.routes = {}  # (method, route) -> [latencies]
        self.reset()

    def reset(self):
        self.lat = []
        self.classes = {}
        self.count = 0

    def add(self, method, path, status, secs, body=b""):
        cls = "err" if status is None else "%dxx" % (status // 100)
        route = route_of(path)
        with self.lock:
            self.count += 1
            self.lat.append(secs)
            self.classes[cls] = self.classes.get(cls, 0) + 1
            self.total[cls] = self.total.get(cls, 0) + 1
            self.routes.setdefault((method, route), []).append(secs)
            if cls != "2xx":
                u = self.unexpected.setdefault((method, route, status), [0, ""])
                u[0] += 1
                if not u[1]:
                    u[1] = "%s %s -> %s %s" % (method, path, status, body[
                        :300].decode("utf-8", "replace"))

    def take(self):
        with self.lock:
            lat, classes, count = sorted(self.lat), dict(self.classes), self.count
            self.reset()
        return lat, classes, count


def route_of(path):
    """/api/containers/8a82.../stats?x -> /api/containers/:id/stats"""
    parts = path.split("?", 1)[0].split("/")
    if len(parts) > 3 and parts[1:3] == ["api", "containers"]:
        parts[3] = ":id"
    return "/".join(parts)


def pct(lat, p):
    if not lat:
        return 0.0
    return lat[min(len(lat) - 1, int(len(lat) * p))]


def proc_figures(pid):
    rss = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    fds = len(os.listdir("/proc/%d/fd" % pid))
    return rss, fds


def socket_inodes(path, col):
    out = set()
    try:
        with open(path) as f:
            next(f)
            for line in f:
                parts = line.split()
                if len(parts) > col:
                    out.add(parts[col])
    except OSError:
        pass
    return out


def fd_kinds(pid):
    """What the server's fds are: tcp (clients), unix (the daemon), other."""
    tcp = socket_inodes("/proc/net/tcp", 9) | socket_inodes("/proc/net/tcp6", 9)
    unix = socket_inodes("/proc/net/unix", 6)
    kinds = {"tcp": 0, "unix": 0, "other": 0}
    d = "/proc/%d/fd" % pid
    for fd in os.listdir(d):
        try:
            target = os.readlink(os.path.join(d, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inode = target[8:-1]
            kind = "tcp" if inode in tcp else "unix" if inode in unix else "other"
        else:
            kind = "other"
        kinds[kind] += 1
    return kinds


class Client:
    """One keep-alive connection, reopened when the server closes it."""

    def __init__(self, host, port, source=None):
        self.host, self.port, self.source = host, port, source
        self.conn = None

    def request(self, method, path, headers=None, timeout=10):
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(
                    self.host, self.port, timeout=timeout,
                    source_address=(self.source, 0) if self.source else None)
            try:
                self.conn.request(method, path, headers=headers or {})
                r = self.conn.getresponse()
                body = r.read()
                if r.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return r.status, body
            except (http.client.RemoteDisconnected, BrokenPipeError,
                    ConnectionResetError) as e:
                # a keep-alive connection the server closed between two
                # requests: once more on a new one
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise e
            except Exception:
                self.conn.close()
                self.conn = None
                raise
        return None, b""


def mixed_jobs(a):
    """The weighted list of requests, one picked per tick."""
    jobs = []

    def add(weight, method, path, headers=None):
        jobs.extend([(method, path, headers)] * weight)

    add(4, "GET", "/healthz")
    add(4, "GET", "/api/containers")
    add(4, "GET", "/api/stats")
    for cid in a.ids:
        add(2, "GET", "/api/containers/%s" % cid[:12])
        add(3, "GET", "/api/containers/%s/stats" % cid[:12])
        add(1, "GET", "/api/containers/%s/logs?tail=20" % cid[:12])
    return jobs


def churn(a, stop):
    """Starts a labelled container every few seconds, removes the oldest
    beyond four; returns how many it started."""
    alive, started = [], 0
    while not stop.wait(3.0):
        r = subprocess.run(
            ["docker", "run", "-d", "--label", a.label, "--stop-timeout", "1",
             "--name", "hxsoak-churn-%d-%d" % (os.getpid(), started),
             a.image, "sleep", "600"], capture_output=True, text=True)
        if r.returncode == 0:
            alive.append(r.stdout.strip())
            started += 1
        else:
            log("churn: docker run failed: " + r.stderr.strip())
        while len(alive) > 4:
            cid = alive.pop(0)
            subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
    for cid in alive:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
    churn.started = started


def lifecycle(a, stop, stats):
    """The lifecycle POSTs, in an order where each is valid: pause,
    unpause, start (of a running one: unchanged) on one container, twice a
    second; a restart of another every 10 s (it takes a second)."""
    c = Client(a.host, a.port)
    tok = {"Authorization": "Bearer " + a.token}
    cycle = ["/api/containers/%s/%s" % (a.life[:12], action)
             for action in ("pause", "unpause", "start")]
    restart = "/api/containers/%s/restart?timeout=1" % a.restart[:12]
    n, k = 0, 0
    while not stop.wait(0.5):
        n += 1
        if n % 20 == 0:
            path = restart
        else:
            path, k = cycle[k % 3], k + 1
        t0 = time.monotonic()
        try:
            status, body = c.request("POST", path, tok, timeout=30)
        except Exception as e:
            status, body = None, str(e).encode()
        stats.add("POST", path, status, time.monotonic() - t0, body)


def phase_mixed(a):
    jobs = mixed_jobs(a)
    work = queue.Queue()
    stats = Stats()
    stop = threading.Event()

    def worker():
        c = Client(a.host, a.port)
        while True:
            job = work.get()
            if job is None:
                return
            method, path, headers = job
            t0 = time.monotonic()
            try:
                status, body = c.request(method, path, headers)
            except Exception as e:
                status, body = None, ("%s: %s" % (type(e).__name__, e)).encode()
            stats.add(method, path, status, time.monotonic() - t0, body)

    workers = [threading.Thread(target=worker, daemon=True)
               for _ in range(a.clients)]
    for w in workers:
        w.start()
    side = [threading.Thread(target=churn, args=(a, stop), daemon=True),
            threading.Thread(target=lifecycle, args=(a, stop, stats),
                             daemon=True)]
    for t in side:
        t.start()

    duration = a.minutes * 60.0
    warm = duration / 4
    start = time.monotonic()
    next_tick, next_report = start, start + 5
    samples, sent = [], 0
    rng = random.Random(1)
    log("phase 1: mixed routes at %d req/s for %.1f min (warm-up %.0f s), "
        "%d clients" % (a.rate, a.minutes, warm, a.clients))
    log("%6s %7s %6s %-28s %7s %7s %7s %8s %5s %-18s %5s" % (
        "t(s)", "reqs", "req/s", "answers", "p50ms", "p99ms", "maxms",
        "rss(MB)", "fds", "tcp/unix/other", "queue"))
    while True:
        now = time.monotonic()
        if now - start >= duration:
            break
        while next_tick <= now:
            work.put(rng.choice(jobs))
            sent += 1
            next_tick += 1.0 / a.rate
        if now >= next_report:
            lat, classes, count = stats.take()
            rss, fds = proc_figures(a.pid)
            t = now - start
            samples.append((t, rss, fds))
            k = fd_kinds(a.pid)
            log("%6.0f %7d %6.1f %-28s %7.1f %7.1f %7.1f %8.1f %5d %-18s %5d" % (
                t, count, count / 5.0,
                " ".join("%s:%d" % kv for kv in sorted(classes.items())),
                pct(lat, 0.5) * 1e3, pct(lat, 0.99) * 1e3,
                (lat[-1] if lat else 0) * 1e3, rss / 2**20, fds,
                "%d/%d/%d" % (k["tcp"], k["unix"], k["other"]), work.qsize()))
            next_report += 5
        time.sleep(max(0.0, min(next_tick, next_report) - time.monotonic()))
    stop.set()
    for _ in workers:
        work.put(None)
    for w in workers:
        w.join(30)
    for t in side:
        t.join(60)
    elapsed = time.monotonic() - start
    return stats, samples, sent, elapsed, warm, getattr(churn, "started", 0)


def check_flat(samples, warm, name, index, slack_abs, fmt):
    after = [s for s in samples if s[0] >= warm]
    if len(after) < 2:
        return None, "%s: too few samples after the warm-up" % name
    base = after[0][index]
    peak = max(s[index] for s in after)
    limit = max(base * 1.10, base + slack_abs)
    line = "%s after warm-up: %s at %.0f s, peak %s, last %s (bound %s)" % (
        name, fmt(base), after[0][0], fmt(peak), fmt(after[-1][index]),
        fmt(limit))
    return line, None if peak <= limit else "%s grew past 10 %%" % name


def slow_conn(a, source):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(5)
    s.bind((source, 0))
    s.connect((a.host, a.port))
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    s.setblocking(False)
    return s


def phase_slowloris(a):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.slow + 200
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    log("phase 2: %d slowloris connections for %d s, a normal request every "
        "0.25 s" % (a.slow, a.slow_seconds))
    conns, refused = [], 0
    per_source = 200
    t0 = time.monotonic()
    for i in range(a.slow):
        source = "127.0.1.%d" % (1 + i // per_source)
        try:
            conns.append(slow_conn(a, source))
        except OSError:
            refused += 1
    log("opened %d in %.1f s (%d refused or failed)" % (
        len(conns), time.monotonic() - t0, refused))
    probe = Client(a.host, a.port, "127.0.0.1")
    lat, bad, slow = [], [], []
    paths = ["/healthz", "/api/stats"]
    end = time.monotonic() + a.slow_seconds
    next_drip, n = time.monotonic() + 5, 0
    while time.monotonic() < end:
        if time.monotonic() >= next_drip:
            alive = []
            for s in conns:
                try:
                    s.send(b"X-Slow: %d\r\n" % n)
                    alive.append(s)
                except (BlockingIOError, InterruptedError):
                    alive.append(s)
                except OSError:
                    s.close()
            conns = alive
            next_drip = time.monotonic() + 5
        path = paths[n % 2]
        n += 1
        probe.conn = None  # a new connection each time, as a new client
        t = time.monotonic()
        try:
            status, body = probe.request("GET", path, timeout=5)
        except Exception as e:
            status, body = None, str(e).encode()
        secs = time.monotonic() - t
        lat.append(secs)
        if secs >= 0.1:
            slow.append("%.1f:%s:%.0fms" % (time.monotonic() - t0, path,
                                            secs * 1e3))
        if status is None or status // 100 != 2 or secs >= 1.0:
            bad.append("%.1f s in: %s -> %s in %.2f s %s" % (
                time.monotonic() - t0, path, status, secs,
                body[:120].decode("utf-8", "replace")))
        time.sleep(0.25)
    rss, fds = proc_figures(a.pid)
    still = len(conns)
    for s in conns:
        s.close()
    lat.sort()
    log("normal requests during slowloris: %d, p50 %.1f ms, p99 %.1f ms, max "
        "%.1f ms; %d slow connections still open at the end; server RSS "
        "%.1f MB, %d fds" % (len(lat), pct(lat, 0.5) * 1e3,
                             pct(lat, 0.99) * 1e3, lat[-1] * 1e3, still,
                             rss / 2**20, fds))
    if slow:
        log("normal requests of 100 ms or more (s in: path: time): " +
            " ".join(slow))
    return bad


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--ids", required=True, help="comma-separated stable ids")
    p.add_argument("--life", required=True)
    p.add_argument("--restart", required=True)
    p.add_argument("--label", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--minutes", type=float, default=5)
    p.add_argument("--rate", type=int, default=200)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--slow", type=int, default=1000)
    p.add_argument("--slow-seconds", type=int, default=30)
    a = p.parse_args()
    hostport = a.url.split("//", 1)[1]
    a.host, port = hostport.rsplit(":", 1)
    a.port = int(port)
    a.ids = a.ids.split(",")

    broken = []
    if a.minutes > 0:
        broken += phase_1(a)
    if a.slow > 0:
        if a.minutes > 0:
            # the churn's last removals settle first: a request that waits on
            # a busy daemon is not what this phase measures
            time.sleep(5)
        bad = phase_slowloris(a)
        if bad:
            broken.append("%d normal requests failed or took 1 s or more "
                          "during slowloris:\n  %s" % (
                              len(bad), "\n  ".join(bad[:10])))
    log("")
    if broken:
        for b in broken:
            log("BOUND BROKEN: " + b)
        return 1
    log("soak: every bound held")
    return 0


def phase_1(a):
    broken = []
    stats, samples, sent, elapsed, warm, churned = phase_mixed(a)
    total = stats.total
    log("")
    log("phase 1: %d requests sent in %.0f s (%.1f req/s); answers %s; %d "
        "containers churned" % (sent, elapsed, sent / elapsed, json.dumps(
            total, sort_keys=True), churned))
    log("%-6s %-34s %7s %8s %8s %8s" % ("", "route", "count", "p50ms",
                                          "p99ms", "maxms"))
    for (method, route), lat in sorted(stats.routes.items()):
        lat.sort()
        log("%-6s %-34s %7d %8.1f %8.1f %8.1f" % (
            method, route, len(lat), pct(lat, 0.5) * 1e3, pct(lat, 0.99) * 1e3,
            lat[-1] * 1e3))
    unexpected = sum(n for cls, n in total.items() if cls != "2xx")
    log("unexpected non-2xx: %d" % unexpected)
    if unexpected:
        broken.append("%d unexpected answers:\n  %s" % (unexpected, "\n  ".join(
            "%d x %s" % (n, ex) for (n, ex) in stats.unexpected.values())))
    answered = sum(total.values())
    if answered / elapsed < a.rate * 0.95:
        broken.append("%.1f answers/s, below the %d req/s asked for (the "
                      "server did not keep up)" % (answered / elapsed, a.rate))
    for name, index, slack, fmt in (
            ("RSS", 1, 0, lambda v: "%.1f MB" % (v / 2**20)),
            ("fds", 2, 8, lambda v: "%d" % v)):
        line, err = check_flat(samples, warm, name, index, slack, fmt)
        if line:
            log(line)
        if err:
            broken.append(err)
    return broken


if __name__ == "__main__":
    sys.exit(main())
