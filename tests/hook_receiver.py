#!/usr/bin/env python3
"""A webhook receiver for tests/hooks_spec.lua: python3 hook_receiver.py
PORT LOG [STATUS [SECRET]]. Appends one JSON line per POST to LOG (path,
the X-Horcrux-* headers, the body as text, and with SECRET whether the
signature verifies) and answers STATUS (default 200). Writes "ready PORT"
to stdout once it listens (PORT 0: the port the kernel gave)."""
import hashlib
import hmac
import http.server
import json
import sys

PORT, LOG = int(sys.argv[1]), sys.argv[2]
STATUS = int(sys.argv[3]) if len(sys.argv) > 3 else 200
SECRET = sys.argv[4].encode() if len(sys.argv) > 4 else None


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(n)
        body = raw.decode("utf-8", "replace")
        rec = {
            "path": self.path,
            "delivery": self.headers.get("X-Horcrux-Delivery"),
            "signature": self.headers.get("X-Horcrux-Signature"),
            "event": self.headers.get("X-Horcrux-Event"),
            "content_type": self.headers.get("Content-Type"),
            "body": body,
        }
        if SECRET is not None:
            want = "sha256=" + hmac.new(SECRET, raw, hashlib.sha256).hexdigest()
            got = self.headers.get("X-Horcrux-Signature") or ""
            rec["verified"] = hmac.compare_digest(want, got)
        with open(LOG, "a") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()
        self.send_response(STATUS)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


class Server(http.server.HTTPServer):
    allow_reuse_address = True


srv = Server(("127.0.0.1", PORT), Handler)  # PORT 0: one the kernel picks
print("ready", srv.server_address[1], flush=True)
srv.serve_forever()
