#!/usr/bin/python3
"""scripts/bench streams: N concurrent SSE subscribers of /api/stats/stream
against a running `horcrux serve` (its pid and port given).

  streams.py PORT PID N WINDOW

Prints one JSON object: rss_kb before and with the subscribers, the server's
CPU seconds over WINDOW with and without them (per collector round), how many
messages each subscriber got (min/max), the spread of one round's delivery
across subscribers (p50/p99 ms after the first), and /healthz latency
(p50/p99/max ms, sequential requests on a separate connection each) while
they stream.
"""
import json
import os
import selectors
import socket
import sys
import threading
import time

if sys.argv[1] == "healthz":  # the probe, in a process of its own (no GIL
    PORT, WINDOW = int(sys.argv[2]), float(sys.argv[3])  # shared with the
else:                                                    # subscribers)
    PORT, PID, N, WINDOW = (int(sys.argv[1]), int(sys.argv[2]),
                            int(sys.argv[3]), float(sys.argv[4]))
HZ = os.sysconf("SC_CLK_TCK")


def rss_kb():
    with open("/proc/%d/status" % PID) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])


def cpu_s():
    with open("/proc/%d/stat" % PID) as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / HZ


def healthz(stop, out):
    while not stop.is_set():
        t0 = time.perf_counter()
        s = socket.create_connection(("127.0.0.1", PORT))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        while s.recv(65536):
            pass
        s.close()
        out.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.02)


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p))] if v else None


def main():
    time.sleep(2)
    base_rss = rss_kb()
    c0 = cpu_s()
    time.sleep(WINDOW)
    idle_cpu = cpu_s() - c0
    sel = selectors.DefaultSelector()
    counts = {}
    arrivals = {}  # round index -> [times]
    socks = []
    for i in range(N):
        s = socket.create_connection(("127.0.0.1", PORT))
        s.sendall(b"GET /api/stats/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
        counts[i] = 0
        socks.append(s)

    def pump(until):
        while time.time() < until:
            for key, _ in sel.select(0.1):
                try:
                    d = key.fileobj.recv(262144)
                except BlockingIOError:
                    continue
                n = d.count(b"event: stats")
                if n:
                    i = key.data
                    counts[i] += n
                    arrivals.setdefault(counts[i], []).append(time.time())

    pump(time.time() + 3)  # every one connected and past its first message
    sub_rss = rss_kb()
    start_counts = dict(counts)
    import subprocess
    probe = subprocess.Popen([sys.executable, __file__, "healthz", str(PORT),
                              str(WINDOW)], stdout=subprocess.PIPE)
    c0 = cpu_s()
    t0 = time.time()
    pump(t0 + WINDOW)
    busy_cpu = cpu_s() - c0
    lat = json.loads(probe.communicate()[0])
    got = [counts[i] - start_counts[i] for i in range(N)]
    spread = []
    for k, ts in arrivals.items():
        if len(ts) >= N * 0.9 and min(ts) >= t0:
            first = min(ts)
            spread += [(t - first) * 1000 for t in ts]
    for s in socks:
        s.close()
    print(json.dumps({
        "subscribers": N, "window_s": WINDOW,
        "rss_kb_before": base_rss, "rss_kb_with": sub_rss,
        "kb_per_subscriber": round((sub_rss - base_rss) / N, 2),
        "cpu_s_idle": round(idle_cpu, 3), "cpu_s_streaming": round(busy_cpu, 3),
        "messages_min": min(got), "messages_max": max(got),
        "delivery_p50_ms": round(pct(spread, 0.5) or -1, 1),
        "delivery_p99_ms": round(pct(spread, 0.99) or -1, 1),
        "healthz_n": len(lat), "healthz_p50_ms": round(pct(lat, 0.5), 2),
        "healthz_p99_ms": round(pct(lat, 0.99), 2),
        "healthz_max_ms": round(max(lat), 2),
    }))


if sys.argv[1] == "healthz":
    stop, lat = threading.Event(), []
    threading.Timer(WINDOW, stop.set).start()
    healthz(stop, lat)
    print(json.dumps(lat))
else:
    main()
