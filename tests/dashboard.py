#!/usr/bin/env python3
"""tests/dashboard.py: drives headless Chromium through the dashboard for
tests/console_web_spec.lua, over the DevTools protocol (python3-websocket).

    dashboard.py SCENARIO JSON-ARGS  ->  one JSON object on stdout

Scenarios:
  states    a paused container's row and detail view offer unpause, stop
            and restart, never start; names sort naturally (n2 before n10)
  readonly  a --read-only server: no buttons, a POST is refused, live data
            by the stream through EventSource, the busy CPU cell changes,
            the Compose stack grouped (totals, folding), the history chart
            from the server's /history, the events panel follows a pause
  cors      a copy of the page served by http.server on another port (its
            <meta name="horcrux-api"> naming the server, which lists that
            origin with --cors): live data cross-origin through the fetch()
            stream with the token; from an origin not listed the browser
            keeps the page from reading the API
  token     a server with --require-token: the page asks for the token, the
            live figures come by the fetch() stream with the token, sorting
            reorders, the detail view draws, the events panel follows by
            fetch(), the stop button stops the container

Every request the page makes is recorded: `foreign` lists those to another
host (there must be none).
"""
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import websocket


class CDP:
    def __init__(self, url):
        self.ws = websocket.create_connection(url, timeout=30,
                                              suppress_origin=True)
        self.next_id = 0
        self.seen = []  # (loaderId, url) of every request since open()
        self.loader = None

    @property
    def requests(self):
        """The current page's requests: one of the page navigated away
        from (its stream reconnecting as it unloads) can arrive after
        open() began."""
        return [u for (ld, u) in self.seen
                if self.loader is None or ld == self.loader]

    def _event(self, m):
        if m.get("method") == "Network.requestWillBeSent":
            self.seen.append((m["params"].get("loaderId"),
                              m["params"]["request"]["url"]))

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
        self.seen = []
        self.loader = self.call("Page.navigate", url=url).get("loaderId")
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


def eval_on_page(url, expr):
    """Opens url in a browser of its own, evaluates expr there (a promise is
    awaited) and returns its value, or {"error": why}; the browser is
    stopped and its profile removed whatever happens."""
    p, prof, cdp = start_browser()
    try:
        cdp.open(url)
        return cdp.eval(expr)
    except Exception as e:  # reported to the spec, which fails
        return {"error": str(e)}
    finally:
        p.kill()
        p.wait()
        shutil.rmtree(prof, ignore_errors=True)


ROW = ("[...document.querySelectorAll('#containers tbody tr')]"
       ".find(tr => tr.querySelector('td.name button')?.textContent === %s)")


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


def cpu_text(cdp, name):
    return cdp.eval("(() => { const r = %s; return r ? r.querySelector("
                    "'td.cpu').textContent : null })()" % (ROW % json.dumps(name)))


def cpu_change(cdp, name):
    """Seconds until the CPU cell of name shows another figure."""
    before, start = cpu_text(cdp, name), time.time()
    cdp.wait("(() => { const r = %s; return r && r.querySelector('td.cpu')"
             ".textContent !== %s })()" % (ROW % json.dumps(name),
                                           json.dumps(before)),
             name + "'s CPU cell to change", timeout=6)
    return round(time.time() - start, 2)


def names(cdp):
    return cdp.eval("[...document.querySelectorAll('#containers tbody tr "
                    "td.name button')].map(b => b.textContent)")


def enter_token(cdp, token):
    cdp.wait("!document.querySelector('#token-dialog').hidden",
             "the token dialog (the server answered 401)")
    cdp.eval("document.querySelector('#token-input').value = %s"
             % json.dumps(token))
    click(cdp, "#token-ok")


def chart_drawn(cdp, canvas):
    """Whether the canvas has a line of the series colour (#2f6fdd)."""
    return cdp.eval(
        "(() => { const c = document.querySelector(%s); const d = c"
        ".getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        " let n = 0; for (let i = 0; i < d.length; i += 4)"
        " if (d[i] === 0x2f && d[i+1] === 0x6f && d[i+2] === 0xdd) n++;"
        " return n })()" % json.dumps(canvas))


def stack_scenario(cdp, a, out):
    sel = "tr.stack[data-stack=%s]" % json.dumps(a["stack"])
    cdp.wait("!!document.querySelector(%s)" % json.dumps(sel),
             "the stack's row", timeout=8)
    members = ("(() => { const out = []; let tr = document.querySelector(%s)"
               ".nextElementSibling; while (tr && tr.classList.contains("
               "'in-stack')) { if (!tr.hidden) out.push(tr.querySelector("
               "'td.name button').textContent); tr = tr.nextElementSibling }"
               " return out.sort() })()" % json.dumps(sel))
    out["stack_members"] = cdp.eval(members)
    out["stack_status"] = cdp.eval("document.querySelector(%s + ' td.status')"
                                   ".textContent" % json.dumps(sel))
    out["stack_pids"] = cdp.eval("document.querySelector(%s + ' td.pids')"
                                 ".textContent" % json.dumps(sel))
    click(cdp, sel + " button.toggle")
    out["stack_folded"] = cdp.eval(members)
    click(cdp, sel + " button.toggle")
    out["stack_unfolded"] = cdp.eval(members)


def event_seen(cdp, name, action):
    return cdp.wait(
        "[...document.querySelectorAll('#events-list li')].some(li => "
        "li.querySelector('.event-name').textContent === %s && "
        "li.querySelector('.badge').textContent === %s)"
        % (json.dumps(name), json.dumps(action)),
        "the %s event of %s in the panel" % (action, name), timeout=5)


def token_scenario(cdp, a):
    out = {}
    cdp.open(a["url"] + "/")
    enter_token(cdp, a["token"])
    out["cpu"] = cpu_of(cdp, a["busy"])
    out["live"] = cdp.wait(
        "document.body.dataset.live === 'live: stream' && "
        "document.body.dataset.live", "live data by the stream")
    out["transport"] = cdp.eval("document.body.dataset.transport")
    out["cpu_change_s"] = cpu_change(cdp, a["busy"])
    out["events_live"] = cdp.wait(
        "(() => { const t = document.querySelector('#events-live')"
        ".textContent; return t === 'following' ? t : null })()",
        "the events stream by fetch()")
    names = [a["busy"], a["idle"]]
    click(cdp, "th[data-key=cpu]")  # largest first
    out["order_cpu_desc"] = order(cdp, names)
    click(cdp, "th[data-key=cpu]")
    out["order_cpu_asc"] = order(cdp, names)
    click(cdp, "th[data-key=name]")
    cdp.eval("(%s).querySelector('td.name button').click()"
             % (ROW % json.dumps(a["busy"])))
    cdp.wait("!document.querySelector('#detail').hidden", "the detail view")
    # a few more points for the charts (a minute of them for the README's
    # screenshot)
    time.sleep(60 if a.get("screenshot") else 2.5)
    out["history"] = cdp.eval("document.body.dataset.history")
    out["token_in_storage"] = cdp.eval(
        "sessionStorage.getItem('horcrux.token') === %s"
        % json.dumps(a["token"]))
    out["token_in_url"] = any(a["token"] in u for u in cdp.requests)
    if a.get("screenshot"):
        size = cdp.eval("[document.documentElement.scrollWidth, "
                        "document.documentElement.scrollHeight]")
        shot = cdp.call("Page.captureScreenshot", format="png",
                        captureBeyondViewport=True,
                        clip={"x": 0, "y": 0, "width": size[0],
                              "height": size[1], "scale": 1})
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
    out["transport"] = cdp.eval("document.body.dataset.transport")
    out["cpu_change_s"] = cpu_change(cdp, a["busy"])
    out["names"] = names(cdp)
    stack_scenario(cdp, a, out)
    cdp.eval("(%s).querySelector('td.name button').click()"
             % (ROW % json.dumps(a["busy"])))
    out["history"] = cdp.wait(
        "document.body.dataset.history === 'server' && "
        "document.body.dataset.history", "the server's history")
    out["history_summary"] = cdp.eval(
        "document.querySelector('#sum-cpu').textContent")
    # a line needs two points of the server's history (5 s apart at the
    # page's step; the page asks again every 5 s): a young server has one
    end = time.time() + 12
    out["chart_pixels"] = chart_drawn(cdp, "#chart-cpu")
    while out["chart_pixels"] <= 20 and time.time() < end:
        time.sleep(0.25)
        out["chart_pixels"] = chart_drawn(cdp, "#chart-cpu")
    subprocess.run(["docker", "pause", a["idle"]], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["docker", "unpause", a["idle"]], check=True,
                   stdout=subprocess.DEVNULL)
    out["event_seen"] = event_seen(cdp, a["idle"], "unpause")
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


def serve_dir(directory, port):
    """http.server on 127.0.0.1:port for directory, in a thread."""
    handler = functools.partial(QuietHandler, directory=directory)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


FETCH_STATS = ("fetch(%s + '/api/stats', {headers: {Authorization: "
               "'Bearer ' + %s}}).then(r => r.status, e => 'blocked: ' + e)")


def cors_scenario(cdp, a):
    out = {}
    site = tempfile.mkdtemp(prefix="hx-site-")
    try:
        shutil.copytree(a["web"], site, dirs_exist_ok=True)
        index = os.path.join(site, "index.html")
        with open(index) as f:
            html = f.read()
        html = html.replace('<meta name="horcrux-api" content="">',
                            '<meta name="horcrux-api" content=%s>'
                            % json.dumps(a["url"]))
        with open(index, "w") as f:
            f.write(html)
        srv = serve_dir(site, a["port"])
        try:
            page = "http://127.0.0.1:%d" % a["port"]
            cdp.open(page + "/")
            enter_token(cdp, a["token"])
            out["cpu"] = cpu_of(cdp, a["busy"])
            out["live"] = cdp.wait(
                "document.body.dataset.live === 'live: stream' && "
                "document.body.dataset.live", "live data by the stream")
            out["transport"] = cdp.eval("document.body.dataset.transport")
            out["fetch_status"] = cdp.eval(FETCH_STATS % (
                json.dumps(a["url"]), json.dumps(a["token"])))
            out["hosts"] = sorted({u.split("/")[2] for u in cdp.requests
                                   if u.startswith("http")})
            # the same files from an origin the server does not list
            cdp.open("http://localhost:%d/" % a["port"])
            out["unlisted_status"] = cdp.eval(FETCH_STATS % (
                json.dumps(a["url"]), json.dumps(a["token"])))
        finally:
            srv.shutdown()
    finally:
        shutil.rmtree(site, ignore_errors=True)
    return out


def states_scenario(cdp, a):
    """The buttons a paused container's row and detail view offer (the
    engine refuses to start a paused one), and names in natural order."""
    out = {}
    cdp.open(a["url"] + "/")
    row = ROW % json.dumps(a["paused"])
    cdp.wait("(() => { const r = %s; return r && r.querySelector('td.status')"
             ".textContent === 'paused' })()" % row, "the paused row")
    shown = ("[...%s.querySelectorAll('button')].filter(b => !b.hidden)"
             ".map(b => b.dataset.action)")
    out["row_buttons"] = cdp.eval(shown % ("(%s).querySelector('.actions')" % row))
    cdp.eval("(%s).querySelector('td.name button').click()" % row)
    cdp.wait("!document.querySelector('#detail').hidden", "the detail view")
    out["detail_buttons"] = cdp.eval(
        shown % "document.querySelector('#detail-actions')")
    out["order"] = order(cdp, a["numbered"])
    return out


def main():
    scenarios = json.loads(sys.argv[1])
    p, prof, cdp = start_browser()
    results = {}
    try:
        for s in scenarios:
            fn = {"token": token_scenario, "readonly": readonly_scenario,
                  "cors": cors_scenario,
                  "states": states_scenario}[s["scenario"]]
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
