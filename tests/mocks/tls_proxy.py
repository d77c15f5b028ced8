#!/usr/bin/env python3
"""A TLS endpoint in front of a plain TCP one, for the TLS specs of
tests/docker_spec.lua: it speaks TLS as dockerd does with --tlsverify (its
own certificate, and a client certificate required and verified against
the CA), then forwards the bytes both ways to 127.0.0.1:UPSTREAM (the mock
engine).

  tls_proxy.py CA CERT KEY UPSTREAM_PORT PORTFILE LOGFILE [LIFETIME]

It listens on 127.0.0.1, writes the port it got to PORTFILE, and appends a
line per connection to LOGFILE: "ok <client CN>" after a completed
handshake, "fail <reason>" otherwise. It exits by itself after LIFETIME
seconds (default 300).
"""
import os
import socket
import ssl
import sys
import threading

ca, cert, key, upstream, portfile, logfile = sys.argv[1:7]
lifetime = float(sys.argv[7]) if len(sys.argv) > 7 else 300.0
log_lock = threading.Lock()


def log(line):
    with log_lock, open(logfile, "a") as f:
        f.write(line + "\n")


def pipe(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def handle(ctx, raw):
    try:
        tls = ctx.wrap_socket(raw, server_side=True)
    except (ssl.SSLError, OSError) as e:
        log("fail " + str(e).replace("\n", " "))
        raw.close()
        return
    peer = tls.getpeercert() or {}
    cn = ""
    for rdn in peer.get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                cn = v
    log("ok " + cn)
    up = socket.create_connection(("127.0.0.1", int(upstream)))
    threading.Thread(target=pipe, args=(up, tls), daemon=True).start()
    pipe(tls, up)
    tls.close()
    up.close()


def main():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(ca)
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    with open(portfile + ".tmp", "w") as f:
        f.write(str(srv.getsockname()[1]))
    os.rename(portfile + ".tmp", portfile)
    threading.Timer(lifetime, lambda: os._exit(0)).start()
    while True:
        raw, _ = srv.accept()
        threading.Thread(target=handle, args=(ctx, raw), daemon=True).start()


if __name__ == "__main__":
    main()
