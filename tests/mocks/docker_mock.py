#!/usr/bin/env python3
"""A fake Docker engine that misbehaves on request, for tests/docker_spec.lua.

It speaks real HTTP/1.1 with keep-alive over a unix socket (--unix PATH) or
TCP on 127.0.0.1 (--tcp PORTFILE: the port it got is written there). What it
answers depends on the path, with any /vX.Y prefix removed:

  /version       200 {"ApiVersion": --api, ...}
  /_ping         200 OK (text/plain)
  /containers/json  200 [] (no containers: a collector lists and follows
                 the events, which /events below gives)
  /echo[/...]    200 JSON of the request: method, target, body, content_type,
                 conn (serial of the connection) and nth (request on it);
                 also two X-Multi headers
  /badjson       200 application/json, a truncated object, correct length
  /truncated     Content-Length larger than what is sent, then close
  /garbage       bytes that are not HTTP, then close
  /stall         reads the request and never answers
  /error500      500 {"message": "boom: disk on fire"}
  /text404       404 text/plain "page not found"
  /unauthorized  401 {"message": "authentication required"}
  /forbidden     403 {"message": "access denied"}
  /toonew        400, as a daemon older than DOCKER_API_VERSION: "client
                 version 9.99 is too new. Maximum supported API version is
                 1.41" (JSON)
  /tooold        400, the same for a version under the daemon's minimum
                 (text/plain, as dockerd sends it)
  /status/NNN    status NNN with {"message": "status NNN"} (no body for
                 204 and 304)
  /text          200 text/plain "hello\n"
  /lines         200 application/json, three JSON values on three lines
                 (as a pull or a build reports progress)
  /bigtrunc      a Content-Length one byte over --big, --big bytes, close
  /images/create 200 application/json, one JSON line (a pull's progress)
  /build         200 application/json, a JSON line, then one that is not
  /big           200 JSON of --big bytes with a Content-Length
  /bigchunked    the same, chunked (no length known in advance)
  /flaky         answers only the first request of a connection; on a
                 reused connection it closes without a reply
  /slow          200 {"slow": true, "conn": ...} after --slow seconds
  /stream-lines  a chunked stream of JSON lines {"n": 1} .. {"n": 5}, split
                 across chunks and merged within them, with a blank line, a
                 CRLF and no newline after the last
  /events        the same, after a first line {"target": the request target}
  /stream-stall  headers of a chunked 200, then nothing
  /stream-slow   {"n": 1} .. {"n": 6}, one every 0.4 s
  /stream-long   one line of 10000 bytes
  /stream-badjson  {"n": 1}, then a line that is not JSON
/containers/NAME/json and /containers/NAME/stats answer as /NAME does, so
inspect(), stats(), stats_many() and stats_stream() meet the same faults;
anything else    404 {"message": "no such route: PATH"}

With --hang every request is read and never answered, as a daemon stopped
with SIGSTOP (its socket still accepts). With --hang-file PATH a request
read while PATH exists waits until PATH is removed, then is answered: a
daemon stopped, then continued.

It exits by itself after --lifetime seconds, in case the spec that started it
dies without killing it.
"""
import argparse
import json
import os
import re
import socket
import threading
import time

conn_serial = 0
serial_lock = threading.Lock()


def reply(sock, status, body, ctype="application/json", extra=()):
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    reason = {200: "OK", 404: "Not Found", 500: "Internal Server Error"}
    if status in (204, 304):
        body = b""
    head = [f"HTTP/1.1 {status} {reason.get(status, 'Whatever')}",
            f"Content-Type: {ctype}", f"Content-Length: {len(body)}",
            "Api-Version: 1.99"]
    head.extend(extra)
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)


def chunk(sock, data):
    if isinstance(data, str):
        data = data.encode()
    sock.sendall(b"%x\r\n%s\r\n" % (len(data), data))


def stream_head(sock):
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json"
                 b"\r\nTransfer-Encoding: chunked\r\n\r\n")


def stream_lines(sock, first=None):
    """Lines split across chunks and merged within them; a pause between
    chunks so that they reach the client as separate reads."""
    stream_head(sock)
    parts = ['{"n": 1}\n{"n":', ' 2, "s": "a\\nb"}\n\n{"n": 3}\n{"n": 4}\r\n',
             '{"n"', ': 5}']
    if first is not None:
        parts.insert(0, json.dumps(first) + "\n")
    for part in parts:
        chunk(sock, part)
        time.sleep(0.05)
    sock.sendall(b"0\r\n\r\n")


def read_request(f):
    """Returns (method, target, headers, body) or None at end of stream."""
    line = f.readline()
    if not line:
        return None
    method, target, _ = line.decode("latin-1").split(" ", 2)
    headers = {}
    while True:
        h = f.readline().decode("latin-1")
        if h in ("\r\n", "\n", ""):
            break
        k, _, v = h.partition(":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    body = f.read(n) if n else b""
    return method, target, headers, body


def serve(sock, args):
    global conn_serial
    with serial_lock:
        conn_serial += 1
        conn = conn_serial
    f = sock.makefile("rb")
    nth = 0
    try:
        while True:
            req = read_request(f)
            if req is None:
                return
            nth += 1
            method, target, headers, body = req
            while args.hang or (args.hang_file and
                                os.path.exists(args.hang_file)):
                time.sleep(0.02)
            path = re.sub(r"^/v[0-9]+\.[0-9]+(?=/)", "", target.split("?")[0])
            path = re.sub(r"^/containers/([^/]+)/(json|stats)$", r"/\1", path)
            if path == "/version":
                reply(sock, 200, {"ApiVersion": args.api, "Version": "mock"})
            elif path == "/containers/json":
                reply(sock, 200, [])
            elif path == "/_ping":
                reply(sock, 200, "OK", "text/plain; charset=utf-8")
            elif path == "/echo" or path.startswith("/echo/"):
                reply(sock, 200, {
                    "method": method, "target": target,
                    "body": body.decode("utf-8", "replace"),
                    "body_len": len(body),
                    "content_type": headers.get("content-type"),
                    "conn": conn, "nth": nth,
                }, extra=("X-Multi: a", "X-Multi: b"))
            elif path == "/badjson":
                reply(sock, 200, '{"Id": "abc", "State": {"Runn')
            elif path == "/truncated":
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json"
                             b"\r\nContent-Length: 100\r\n\r\n{\"Id\": \"ab")
                return
            elif path == "/garbage":
                sock.sendall(b"\x00\x01garbage, not HTTP at all\r\n\r\n")
                return
            elif path == "/stall":
                time.sleep(args.lifetime)
                return
            elif path == "/error500":
                reply(sock, 500, {"message": "boom: disk on fire"})
            elif path == "/text404":
                reply(sock, 404, "page not found\nmore", "text/plain")
            elif path == "/unauthorized":
                reply(sock, 401, {"message": "authentication required"})
            elif path == "/forbidden":
                reply(sock, 403, {"message": "access denied"})
            elif path == "/toonew":
                reply(sock, 400, {"message": "client version 9.99 is too new."
                                  " Maximum supported API version is 1.41"})
            elif path == "/tooold":
                reply(sock, 400, "client version 1.5 is too old. Minimum "
                      "supported API version is 1.12, please upgrade your "
                      "client to a newer version\n", "text/plain")
            elif re.match(r"^/status/[0-9]{3}$", path):
                code = int(path[-3:])
                reply(sock, code, {"message": "status %d" % code})
            elif path == "/text":
                reply(sock, 200, "hello\n", "text/plain; charset=utf-8")
            elif path == "/lines":
                reply(sock, 200, '{"status": "a"}\n{"status": "b"}\r\n\n'
                      '{"status": "c"}\n')
            elif path == "/images/create":
                reply(sock, 200, '{"status": "Pulling from library/x"}\r\n')
            elif path == "/build":
                reply(sock, 200, '{"stream": "Step 1/1"}\n{"stream": oops}\n')
            elif path == "/bigtrunc":
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json"
                             b"\r\nContent-Length: %d\r\n\r\n" % (args.big + 1))
                data = b"x" * args.big
                for i in range(0, len(data), 1 << 16):
                    sock.sendall(data[i:i + (1 << 16)])
                return
            elif path == "/big":
                reply(sock, 200, json.dumps("x" * args.big))
            elif path == "/bigchunked":
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json"
                             b"\r\nTransfer-Encoding: chunked\r\n\r\n")
                data = json.dumps("x" * args.big).encode()
                for i in range(0, len(data), 16384):
                    part = data[i:i + 16384]
                    sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
                sock.sendall(b"0\r\n\r\n")
            elif path == "/slow":
                time.sleep(args.slow)
                reply(sock, 200, {"slow": True, "conn": conn})
            elif path == "/stream-lines":
                stream_lines(sock)
            elif path == "/events":
                stream_lines(sock, {"target": target})
            elif path == "/stream-stall":
                stream_head(sock)
                time.sleep(args.lifetime)
                return
            elif path == "/stream-slow":
                stream_head(sock)
                for n in range(1, 7):
                    chunk(sock, json.dumps({"n": n}) + "\n")
                    time.sleep(0.4)
                sock.sendall(b"0\r\n\r\n")
            elif path == "/stream-long":
                stream_head(sock)
                chunk(sock, json.dumps("x" * 9998) + "\n")
                sock.sendall(b"0\r\n\r\n")
            elif path == "/stream-badjson":
                stream_head(sock)
                chunk(sock, '{"n": 1}\n{"n": 2, oops}\n')
                sock.sendall(b"0\r\n\r\n")
            elif path == "/flaky":
                if nth > 1:
                    return
                reply(sock, 200, {"conn": conn, "nth": nth})
            else:
                reply(sock, 404, {"message": "no such route: " + path})
    except (OSError, ValueError):
        pass
    finally:
        try:
            sock.close()
        except OSError:
            pass


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--unix")
    p.add_argument("--tcp", metavar="PORTFILE")
    p.add_argument("--api", default="1.52")
    p.add_argument("--big", type=int, default=1 << 20)
    p.add_argument("--slow", type=float, default=1.0)
    p.add_argument("--lifetime", type=float, default=300)
    p.add_argument("--hang", action="store_true")
    p.add_argument("--hang-file")
    args = p.parse_args()
    if args.unix:
        try:
            os.unlink(args.unix)
        except FileNotFoundError:
            pass
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(args.unix)
    else:
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.bind(("127.0.0.1", 0))
        with open(args.tcp + ".tmp", "w") as f:
            f.write(str(srv.getsockname()[1]))
        os.rename(args.tcp + ".tmp", args.tcp)
    srv.listen(512)  # stats_many connects up to 128 at once
    threading.Timer(args.lifetime, lambda: os._exit(0)).start()
    while True:
        s, _ = srv.accept()
        threading.Thread(target=serve, args=(s, args), daemon=True).start()


if __name__ == "__main__":
    main()
