#!/usr/bin/python3
"""Stream clients for tests/streams_spec.lua and scripts/bench streams.

  stream_client.py sse URL SECONDS [HEADER: VALUE]...
      an SSE client (http.client): one JSON line per message on stdout,
      {"t": arrival (unix s), "event", "id", "data"}; stops after SECONDS or
      when the server ends the stream ({"end": true} last).
  stream_client.py ws URL SECONDS
      a WebSocket client (python3-websocket): {"t", "op", "data"} per frame.
  stream_client.py ws-late URL SECONDS LATE
      the same with a 4 KiB receive buffer, reading nothing for LATE seconds
      first (the server's sends go out in parts), then for SECONDS.
  stream_client.py slow URL SECONDS [GOFILE]
      connects with a 4 KiB receive buffer, reads nothing until GOFILE exists
      (or for SECONDS), then reads to the end (at most 10 s, 5 s of silence)
      and prints the last 600 bytes (JSON: {"tail", "eof"}).
"""
import http.client
import json
import os
import socket
import sys
import threading
import time
import urllib.parse


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def sse_read(resp):
    msg = {}
    while True:
        line = resp.readline()
        if not line:
            out({"end": True})
            return
        line = line.decode().rstrip("\r\n")
        if line == "":
            if "data" in msg:
                msg["t"] = time.time()
                out(msg)
            msg = {}
        elif not line.startswith(":"):
            k, _, v = line.partition(":")
            v = v[1:] if v.startswith(" ") else v
            if k == "data" and "data" in msg:
                msg["data"] += "\n" + v
            else:
                msg[k] = v


def sse(url, seconds, headers):
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=seconds + 5)
    conn.request("GET", u.path + ("?" + u.query if u.query else ""),
                 headers=headers)
    resp = conn.getresponse()
    out({"status": resp.status,
         "content_type": resp.getheader("Content-Type")})
    if resp.status != 200:
        out({"body": resp.read().decode(errors="replace")[:500], "end": True})
        return
    # a blocking reader in a thread: a timeout inside http.client's chunked
    # reader would lose bytes
    t = threading.Thread(target=sse_read, args=(resp,), daemon=True)
    t.start()
    t.join(seconds)
    sys.stdout.flush()
    os._exit(0)


def ws_read(c):
    import websocket
    while True:
        try:
            op, data = c.recv_data(control_frame=True)
        except websocket.WebSocketConnectionClosedException:
            out({"end": True})
            return
        out({"t": time.time(), "op": op,
             "data": data.decode(errors="replace")})
        if op == 8:
            out({"end": True})
            return


def ws(url, seconds, late=0.0):
    import websocket  # python3-websocket
    opts = {}
    if late > 0:  # a 4 KiB receive buffer: the server's sends are partial
        opts["sockopt"] = ((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),)
    c = websocket.create_connection(url, timeout=seconds + late + 5, **opts)
    out({"status": 101})
    time.sleep(late)
    # a blocking reader in a thread: a timeout inside a frame would lose
    # the frame's bytes read so far
    t = threading.Thread(target=ws_read, args=(c,), daemon=True)
    t.start()
    t.join(seconds)
    sys.stdout.flush()
    os._exit(0)


def slow(url, seconds, gofile=None):
    u = urllib.parse.urlsplit(url)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((u.hostname, u.port))
    s.sendall(("GET %s HTTP/1.1\r\nHost: %s:%d\r\n\r\n"
               % (u.path + ("?" + u.query if u.query else ""), u.hostname,
                  u.port)).encode())
    # the spec says when: a fixed sleep raced the events it waits for
    deadline = time.time() + seconds
    while time.time() < deadline and not (gofile and os.path.exists(gofile)):
        time.sleep(0.05)
    s.settimeout(5)
    buf = b""
    eof = False
    stop = time.time() + 10  # a stream that is not dropped never ends
    try:
        while time.time() < stop:
            d = s.recv(65536)
            if not d:
                eof = True
                break
            buf = (buf + d)[-4096:]
    except (socket.timeout, TimeoutError):
        pass
    out({"tail": buf[-600:].decode(errors="replace"), "eof": eof})


def main():
    mode, url, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    if mode == "sse":
        headers = {}
        for h in sys.argv[4:]:
            k, _, v = h.partition(":")
            headers[k.strip()] = v.strip()
        sse(url, seconds, headers)
    elif mode == "ws":
        ws(url, seconds)
    elif mode == "ws-late":
        ws(url, seconds, float(sys.argv[4]))
    else:
        slow(url, seconds, sys.argv[4] if len(sys.argv) > 4 else None)


if __name__ == "__main__":
    main()
