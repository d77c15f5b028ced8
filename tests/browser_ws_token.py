#!/usr/bin/env python3
"""tests/browser_ws_token.py: headless Chromium's own WebSocket sending the
token in its protocols (a browser's WebSocket cannot send Authorization),
for tests/stream_clients_spec.lua (over the DevTools protocol, with
tests/dashboard.py's browser start).

    browser_ws_token.py JSON-ARGS  ->  one JSON object on stdout

JSON-ARGS: {"url": server, "token": the server's token}. The page (the
server's /, which needs no token) opens three WebSockets on /api/stats/stream:
"token" offers ["horcrux", "horcrux.bearer.<token, base64url>"], "none"
offers nothing, "wrong" offers another token. Each reports
{"messages": n, "protocol": what the server selected, "error": bool,
"code": the close code}.
"""
import json
import sys

from dashboard import eval_on_page

JS = """
new Promise(resolve => {
  const b64url = s => btoa(s).replace(/\\+/g, '-').replace(/\\//g, '_')
    .replace(/=+$/, '');
  const url = location.origin.replace(/^http/, 'ws') + '/api/stats/stream';
  const out = {};
  const open = (name, protocols) => new Promise(done => {
    const ws = protocols ? new WebSocket(url, protocols) : new WebSocket(url);
    const r = {messages: 0, protocol: null, error: false, code: null};
    ws.onopen = () => { r.protocol = ws.protocol; };
    ws.onmessage = () => { if (++r.messages >= 2) ws.close(); };
    ws.onerror = () => { r.error = true; };
    ws.onclose = e => { r.code = e.code; out[name] = r; done(); };
    setTimeout(() => ws.close(), 8000);
  });
  Promise.all([
    open('token', ['horcrux', 'horcrux.bearer.' + b64url(%(token)s)]),
    open('none', null),
    open('wrong', ['horcrux', 'horcrux.bearer.' + b64url('not the token, 32 bytes long...')]),
  ]).then(() => resolve(out));
})
"""


def main():
    a = json.loads(sys.argv[1])
    json.dump(eval_on_page(a["url"] + "/",
                           JS % {"token": json.dumps(a["token"])}), sys.stdout)


if __name__ == "__main__":
    main()
