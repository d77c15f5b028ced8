#!/usr/bin/env python3
"""A webhook receiver for the hooks and telemetry specs (through
tests/hook_receiver.lua): python3 hook_receiver.py PORT LOG [STATUS
[SECRET]] [--down]. Appends one JSON line per POST to LOG (path, the
X-Horcrux-* headers, the body as text, and with SECRET whether the
signature verifies) and answers STATUS (default 200).

Once its socket is bound it writes "ready PORT" (PORT 0: the port the
kernel gave) as a line of its own. A port it cannot bind (taken, even by a
client socket in TIME_WAIT) ends it with status 2 and a line starting
"cannot listen", never "ready".

--down: bound but not listening, so that a connection is refused (a
receiver that is down) while no one else can take the port, until SIGUSR1;
then it listens and writes "up"."""
import hashlib
import hmac
import http.server
import json
import signal
import sys

args = [a for a in sys.argv[1:] if a != "--down"]
DOWN = len(args) < len(sys.argv) - 1
PORT, LOG = int(args[0]), args[1]
STATUS = int(args[2]) if len(args) > 2 else 200
SECRET = args[3].encode() if len(args) > 3 else None


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


# blocked before "ready": a SIGUSR1 sent as soon as it is read waits
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
srv = Server(("127.0.0.1", PORT), Handler, bind_and_activate=False)
try:
    srv.server_bind()
    if not DOWN:
        srv.server_activate()
except OSError as e:
    # strerror says "Address already in use": a spec that looked for
    # "ready" anywhere took that for a receiver listening
    print("cannot listen on 127.0.0.1:%d: %s" % (PORT, e.strerror), flush=True)
    sys.exit(2)
print("ready", srv.server_address[1], flush=True)
if DOWN:
    signal.sigwait({signal.SIGUSR1})
    srv.server_activate()
    print("up", flush=True)
srv.serve_forever()
