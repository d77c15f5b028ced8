#!/usr/bin/env python3
"""tests/dashboard.py: drives headless Chromium through the dashboard for
tests/console_web_spec.lua, over the DevTools protocol (python3-websocket).

    dashboard.py SCENARIO JSON-ARGS  ->  one JSON object on stdout

Scenarios:
  token     a server with --require-token: the page asks for the token, the
            busy container's row shows a CPU figure, sorting reorders, the
            detail view draws, the stop button stops the container
  readonly  a --read-only server: no buttons, a POST is refused, live data
            by the stream when the server has one

Every request the page makes is recorded: `foreign` lists those to another
host (there must be none).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket


class CDP:
    def __init__(self, url):
        self.ws = websocket.create_connection(url, timeout=30,
                                              suppress_origin=True)
        self.next_id = 0
        self.requests = []

    def _event(self, m):
        if m.get("method") == "Network.requestWillBeSent":
            self.requests.append(m["params"]["request"]["url"])

    def call(self, method, **params):
        self.next_id += 1
        mid = self.next_id
        self.ws.send(json.dumps({"id": mid, "method": method,
                                 "params": params}))
        while True:
            m = json.loads(self.ws.recv())
            if m.get("id") == mid:
                if "error" in m:
                    raise RuntimeError("%s: %s" % (method, m["error"]))
                return m.get("result", {})
            self._event(m)

    def eval(self, expr):
        r = self.call("Runtime.evaluate", expression=expr,
                      returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError("%s: %s" % (expr[:80], r["exceptionDetails"]))
        return r["result"].get("value")

    def wait(self, expr, what, timeout=10.0):
        end = time.time() + timeout
        while time.time() < end:
            v = self.eval(expr)
            if v:
                return v
            time.sleep(0.1)
        raise RuntimeError("timed out (%.0f s) waiting for %s; page: %s" % (
            timeout, what, self.eval(
                "document.body.dataset.live + ' | ' + "
                "document.querySelector('#message').textContent + ' | ' + "
                "document.querySelector('#containers tbody').innerText")))

    def open(self, url):
        self.requests = []
        self.call("Page.navigate", url=url)
        self.wait("document.readyState === 'complete'", "the page to load")


def start_browser():
    prof = tempfile.mkdtemp(prefix="hx-chromium-")
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    p = subprocess.Popen([
        exe, "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-dev-shm-usage", "--no-first-run", "--hide-scrollbars",
        "--remote-debugging-port=0", "--remote-allow-origins=*",
        "--user-data-dir=" + prof, "--window-size=1400,900", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port_file = os.path.join(prof, "DevToolsActivePort")
    end = time.time() + 20
    while not os.path.exists(port_file) or os.path.getsize(port_file) == 0:
        if time.time() > end or p.poll() is not None:
            raise RuntimeError("chromium did not start")
        time.sleep(0.05)
    port = open(port_file).read().split()[0]
    targets = json.load(urllib.request.urlopen(
        "http://127.0.0.1:%s/json/list" % port))
    page = next(t for t in targets if t["type"] == "page")
    cdp = CDP(page["webSocketDebuggerUrl"])
    cdp.call("Page.enable")
    cdp.call("Network.enable")
    cdp.call("Emulation.setDeviceMetricsOverride", width=1400, height=900,
             deviceScaleFactor=1, mobile=False)
    return p, prof, cdp


ROW = ("[...document.querySelectorAll('#containers tbody tr')]"
       ".find(tr => tr.querySelector('td.name button').textContent === %s)")


def cpu_of(cdp, name):
    return cdp.wait("(() => { const r = %s; if (!r) return null; "
                    "const v = parseFloat(r.querySelector('td.cpu')"
                    ".textContent); return v > 0 ? v : null })()"
                    % (ROW % json.dumps(name)),
                    name + "'s row with a CPU figure above 0")


def order(cdp, names):
    return cdp.eval("[...document.querySelectorAll('#containers tbody tr "
                    "td.name button')].map(b => b.textContent)"
                    ".filter(n => %s.includes(n))" % json.dumps(names))


def click(cdp, selector):
    cdp.eval("document.querySelector(%s).click()" % json.dumps(selector))


def foreign(cdp, base):
    return [u for u in cdp.requests
            if not (u.startswith(base + "/") or u.startswith("data:"))]


def token_scenario(cdp, a):
    out = {}
    cdp.open(a["url"] + "/")
    cdp.wait("!document.querySelector('#token-dialog').hidden",
             "the token dialog (the server answered 401)")
    cdp.eval("document.querySelector('#token-input').value = %s"
             % json.dumps(a["token"]))
    click(cdp, "#token-ok")
    out["cpu"] = cpu_of(cdp, a["busy"])
    out["live"] = cdp.eval("document.body.dataset.live")
    names = [a["busy"], a["idle"]]
    click(cdp, "th[data-key=cpu]")  # largest first
    out["order_cpu_desc"] = order(cdp, names)
    click(cdp, "th[data-key=cpu]")
    out["order_cpu_asc"] = order(cdp, names)
    click(cdp, "th[data-key=name]")
    cdp.eval("(%s).querySelector('td.name button').click()"
             % (ROW % json.dumps(a["busy"])))
    cdp.wait("!document.querySelector('#detail').hidden", "the detail view")
    time.sleep(2.5)  # a few more points for the charts
    out["history"] = cdp.eval("document.body.dataset.history")
    out["token_in_storage"] = cdp.eval(
        "sessionStorage.getItem('horcrux.token') === %s"
        % json.dumps(a["token"]))
    out["token_in_url"] = any(a["token"] in u for u in cdp.requests)
    if a.get("screenshot"):
        shot = cdp.call("Page.captureScreenshot", format="png")
        import base64
        with open(a["screenshot"], "wb") as f:
            f.write(base64.b64decode(shot["data"]))
    out["buttons_visible"] = cdp.eval(
        "[...document.querySelectorAll('#containers tbody button"
        "[data-action]')].filter(b => b.offsetParent !== null).length")
    cdp.eval("(%s).querySelector('button[data-action=stop]').click()"
             % (ROW % json.dumps(a["busy"])))
    out["message"] = cdp.wait(
        "(() => { const t = document.querySelector('#message').textContent;"
        " return /stop done|already/.test(t) ? t : null })()",
        "the stop to be done", timeout=20)
    out["foreign"] = foreign(cdp, a["url"])
    return out


def readonly_scenario(cdp, a):
    out = {}
    cdp.open(a["url"] + "/")
    out["cpu"] = cpu_of(cdp, a["busy"])
    out["live"] = cdp.wait(
        "document.body.dataset.live === 'live: stream' && "
        "document.body.dataset.live", "live data by the stream")
    out["read_only_badge"] = cdp.eval(
        "!document.querySelector('#mode').hidden && "
        "document.body.classList.contains('read-only')")
    out["buttons_visible"] = cdp.eval(
        "[...document.querySelectorAll('button[data-action]')]"
        ".filter(b => b.offsetParent !== null).length")
    out["post_status"] = cdp.eval(
        "fetch('/api/containers/' + %s + '/stop', {method: 'POST'})"
        ".then(r => r.status)" % json.dumps(a["busy"]))
    out["foreign"] = foreign(cdp, a["url"])
    return out


def main():
    scenarios = json.loads(sys.argv[1])
    p, prof, cdp = start_browser()
    results = {}
    try:
        for s in scenarios:
            fn = token_scenario if s["scenario"] == "token" \
                else readonly_scenario
            try:
                results[s["scenario"]] = fn(cdp, s)
            except Exception as e:  # reported to the spec, which fails
                results[s["scenario"]] = {"error": str(e)}
    finally:
        p.kill()
        p.wait()
        shutil.rmtree(prof, ignore_errors=True)
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
