#!/usr/bin/env python3
"""tests/browser_streams.py: headless Chromium's own EventSource and
WebSocket on horcrux's streams, for tests/stream_clients_spec.lua (driven
over the DevTools protocol as tests/dashboard.py does, whose browser start
it uses).

    browser_streams.py JSON-ARGS  ->  one JSON object on stdout

JSON-ARGS: {"url": server, "busy": a busy container's id, "logs": a ticking
container's id, "seconds": how long to listen}. The page (the server's /,
so the streams are same-origin) opens an EventSource and a WebSocket on
/api/containers/<busy>/stats/stream and an EventSource on
/api/containers/<logs>/logs?follow=1, and reports what each received:
{"sse": [{t, cpu}], "ws": [{t, cpu}], "logs": [line], "end": reason,
"errors": [{what, t, state, after}]}.
"""
import json
import sys

from dashboard import eval_on_page

JS = """
new Promise(resolve => {
  const out = {sse: [], ws: [], logs: [], end: null, errors: []};
  const base = '/api/containers/';
  const es = new EventSource(base + %(busy)s + '/stats/stream');
  es.addEventListener('stats', e => out.sse.push(
    {t: Date.now() / 1000, cpu: JSON.parse(e.data).cpu_usage_percent}));
  // an error says when, the state it left (0: reconnecting, 2: closed)
  // and how many messages had come
  const fail = (what, src, n) => () => out.errors.push(
    {what: what, t: Date.now() / 1000, state: src.readyState, after: n()});
  es.onerror = fail('stats EventSource', es, () => out.sse.length);
  const ws = new WebSocket(location.origin.replace(/^http/, 'ws') + base +
    %(busy)s + '/stats/stream');
  ws.onmessage = e => out.ws.push(
    {t: Date.now() / 1000, cpu: JSON.parse(e.data).cpu_usage_percent});
  ws.onerror = fail('WebSocket', ws, () => out.ws.length);
  const logs = new EventSource(base + %(logs)s + '/logs?follow=1');
  logs.addEventListener('log', e => out.logs.push(JSON.parse(e.data).line));
  logs.addEventListener('end', e => {
    out.end = JSON.parse(e.data).reason;
    logs.close();  // else EventSource reconnects after retry: 2000
  });
  setTimeout(() => { es.close(); ws.close(); logs.close(); resolve(out); },
             %(ms)d);
})
"""


def main():
    a = json.loads(sys.argv[1])
    json.dump(eval_on_page(a["url"] + "/", JS % {
        "busy": json.dumps(a["busy"]), "logs": json.dumps(a["logs"]),
        "ms": int(a["seconds"] * 1000)}), sys.stdout)


if __name__ == "__main__":
    main()
