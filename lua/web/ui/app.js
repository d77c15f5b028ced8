// The horcrux dashboard: the containers with live figures, a chart per row,
// a detail view with history charts, and lifecycle buttons. Plain
// JavaScript, no library, nothing from another host.
//
// Data (all from the server that served this page):
//   GET /api/session            {read_only, authenticated}: hide the buttons
//                               in read-only mode
//   GET /api/stats/stream       live figures (Server-Sent Events, `event:
//                               stats`, data: the /api/stats array); when the
//                               server has no stream or EventSource fails
//                               (it cannot send a token), GET /api/stats
//                               every second instead
//   GET /api/containers?all=1   names and states, every 5 s and after a
//                               button
//   GET /api/containers/:id/history?window=5m&step=5s
//                               the detail view's history when the server
//                               keeps one; else the page's own, from the
//                               live figures since it was opened
//   POST /api/containers/:id/{start,stop,restart}
// A 401 asks for the token (kept in sessionStorage, sent as
// `Authorization: Bearer ...`, never in a URL); a 403 for a wrong token
// asks again.
"use strict";
(function () {
  const $ = (sel) => document.querySelector(sel);
  const TOKEN_KEY = "horcrux.token";
  const HISTORY_MAX = 900; // points per container: 15 minutes at 1 s
  const SPARK_POINTS = 60;
  const POLL_MS = 1000;
  const LIST_MS = 5000;

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || "",
    readOnly: false,
    containers: new Map(), // id (12) -> {id, name, status, image}
    stats: new Map(), // id (12) -> the latest stats record
    history: new Map(), // id (12) -> [{t, cpu, mem, limit, rx, tx, br, bw}]
    rows: new Map(), // id (12) -> {tr, cells...}
    sort: { key: "name", dir: 1 },
    selected: null,
    serverHistory: null, // the selected container's, when the server has it
    live: "",
  };

  // ---- formatting, as docker stats prints -------------------------------

  function scaled(n, base, units, digits) {
    let i = 0;
    while (n >= base && i < units.length - 1) {
      n /= base;
      i++;
    }
    return String(parseFloat(n.toPrecision(digits))) + units[i];
  }
  const human = (n) => scaled(n, 1000, ["B", "kB", "MB", "GB", "TB", "PB"], 3);
  const bytes = (n) => scaled(n, 1024, ["B", "KiB", "MiB", "GiB", "TiB", "PiB"], 4);
  const isNum = (v) => typeof v === "number" && isFinite(v);
  const pct = (v) => (isNum(v) ? v.toFixed(2) + "%" : "--");
  const size = (f, v) => (isNum(v) ? f(v) : "--");
  const pair = (f, a, b) => size(f, a) + " / " + size(f, b);
  const short = (id) => String(id || "").slice(0, 12);

  // ---- messages ----------------------------------------------------------

  let messageTimer = 0;
  function say(text, bad) {
    const m = $("#message");
    m.textContent = text;
    m.className = bad ? "bad" : "";
    m.hidden = false;
    clearTimeout(messageTimer);
    messageTimer = setTimeout(() => { m.hidden = true; }, bad ? 15000 : 5000);
  }

  function setLive(how, cls) {
    if (state.live === how) return;
    state.live = how;
    const b = $("#live");
    b.textContent = how;
    b.className = "badge " + (cls || "");
    document.body.dataset.live = how;
  }

  function setReadOnly(on) {
    state.readOnly = on;
    document.body.classList.toggle("read-only", on);
    $("#mode").hidden = !on;
    for (const r of state.rows.values()) r.actions.hidden = on;
    $("#detail-actions").hidden = on;
  }

  // ---- the token ---------------------------------------------------------

  let asking = null; // the pending dialog's promise: one at a time

  function askToken(why) {
    if (asking) return asking;
    asking = new Promise((resolve) => {
      const dlg = $("#token-dialog");
      const input = $("#token-input");
      $("#token-why").textContent = why || "";
      input.value = state.token;
      dlg.hidden = false;
      input.focus();
      const done = (ok) => {
        dlg.hidden = true;
        $("#token-form").onsubmit = null;
        $("#token-cancel").onclick = null;
        $("#token-clear").onclick = null;
        asking = null;
        resolve(ok);
      };
      $("#token-form").onsubmit = (e) => {
        e.preventDefault();
        state.token = input.value.trim();
        sessionStorage.setItem(TOKEN_KEY, state.token);
        done(state.token !== "");
      };
      $("#token-cancel").onclick = () => done(false);
      $("#token-clear").onclick = () => {
        state.token = "";
        sessionStorage.removeItem(TOKEN_KEY);
        done(false);
      };
    });
    return asking;
  }

  // ---- the API -----------------------------------------------------------

  // fetch with the token; a 401 or a 403 for a wrong token asks for it and
  // tries again. Resolves to {status, body (parsed JSON or null)}.
  async function api(method, path) {
    for (;;) {
      const headers = { Accept: "application/json" };
      if (state.token) headers.Authorization = "Bearer " + state.token;
      const r = await fetch(path, { method, headers, cache: "no-store" });
      let body = null;
      try {
        body = await r.json();
      } catch (e) {
        body = null;
      }
      const err = body && body.error;
      const msg = err && err.message ? err.message : "";
      if (r.status === 401 || (r.status === 403 && /token/.test(msg))) {
        const why = r.status === 401 ? "This server wants its bearer token: " + msg
          : "That token is wrong.";
        if (await askToken(why)) continue;
      }
      if (r.status === 403 && /read-only/.test(msg)) setReadOnly(true);
      return { status: r.status, body };
    }
  }

  function failure(what, r) {
    const e = r.body && r.body.error;
    return what + ": " + (e ? e.message : "HTTP " + r.status);
  }

  // ---- the data ----------------------------------------------------------

  function onStats(list) {
    if (!Array.isArray(list)) return;
    const seen = new Set();
    const now = Date.now();
    for (const rec of list) {
      const id = short(rec.id);
      seen.add(id);
      state.stats.set(id, rec);
      if (!state.containers.has(id)) {
        state.containers.set(id, { id, name: rec.name || id, status: "running" });
      }
      const c = state.containers.get(id);
      if (rec.name && !c.name) c.name = rec.name;
      let h = state.history.get(id);
      if (!h) state.history.set(id, (h = []));
      const t = Date.parse(rec.read) || now;
      if (h.length && h[h.length - 1].t >= t) continue; // the same sample
      h.push({
        t, cpu: rec.cpu_usage_percent, mem: rec.memory_usage_bytes,
        limit: rec.memory_limit_bytes, rx: rec.network_rx_bytes,
        tx: rec.network_tx_bytes, br: rec.block_read_bytes,
        bw: rec.block_write_bytes,
      });
      if (h.length > HISTORY_MAX) h.splice(0, h.length - HISTORY_MAX);
    }
    for (const id of state.stats.keys()) {
      if (!seen.has(id)) state.stats.delete(id); // stopped: no figures
    }
    render();
  }

  async function loadContainers() {
    const r = await api("GET", "/api/containers?all=1");
    if (r.status !== 200 || !Array.isArray(r.body)) {
      say(failure("containers", r), true);
      return;
    }
    const seen = new Set();
    for (const c of r.body) {
      const id = short(c.id);
      seen.add(id);
      state.containers.set(id, { id, name: c.name, status: c.status, image: c.image });
    }
    for (const id of [...state.containers.keys()]) {
      if (!seen.has(id)) {
        state.containers.delete(id);
        state.stats.delete(id);
      }
    }
    render();
  }

  let pollTimer = 0;
  function startPolling() {
    if (pollTimer) return;
    setLive("live: polling /api/stats", "warn");
    const tick = async () => {
      try {
        const r = await api("GET", "/api/stats");
        if (r.status === 200) {
          onStats(r.body);
          setLive("live: polling /api/stats", "warn");
        } else {
          setLive("no figures: HTTP " + r.status, "bad");
        }
      } catch (e) {
        setLive("server unreachable", "bad");
      }
    };
    tick();
    pollTimer = setInterval(tick, POLL_MS);
  }

  // EventSource first (it cannot send the token: where reads need it, it
  // fails and the page polls, with the token).
  function startLive() {
    if (!window.EventSource) return startPolling();
    let got = false;
    const es = new EventSource("/api/stats/stream");
    const fallback = setTimeout(() => {
      if (!got) {
        es.close();
        startPolling();
      }
    }, 4000);
    let lastMessage = 0;
    es.addEventListener("stats", (e) => {
      got = true;
      lastMessage = Date.now();
      clearTimeout(fallback);
      setLive("live: stream", "ok");
      try {
        onStats(JSON.parse(e.data));
      } catch (err) {
        say("a stats message that is not JSON", true);
      }
    });
    es.onerror = () => {
      if (!got || es.readyState === EventSource.CLOSED) {
        clearTimeout(fallback);
        es.close();
        startPolling();
      } else {
        // EventSource reconnects by itself; say so only when it takes long
        const since = Date.now();
        setTimeout(() => {
          if (lastMessage < since) setLive("live: reconnecting", "warn");
        }, 3000);
      }
    };
  }

  // ---- the table ---------------------------------------------------------

  const SORT_VALUE = {
    id: (c) => c.id,
    name: (c) => c.name || "",
    status: (c) => c.status || "",
    cpu: (c, s) => (s && isNum(s.cpu_usage_percent) ? s.cpu_usage_percent : -1),
    mem: (c, s) => (s && isNum(s.memory_usage_bytes) ? s.memory_usage_bytes : -1),
    memp: (c, s) => (s && isNum(s.memory_percent) ? s.memory_percent : -1),
    net: (c, s) => (s ? (s.network_rx_bytes || 0) + (s.network_tx_bytes || 0) : -1),
    block: (c, s) => (s ? (s.block_read_bytes || 0) + (s.block_write_bytes || 0) : -1),
    pids: (c, s) => (s && isNum(s.pids) ? s.pids : -1),
  };

  function compare(a, b) {
    const f = SORT_VALUE[state.sort.key];
    const va = f(a, state.stats.get(a.id));
    const vb = f(b, state.stats.get(b.id));
    let d = typeof va === "number" && typeof vb === "number" ? va - vb
      : String(va).localeCompare(String(vb));
    if (d === 0) d = String(a.name).localeCompare(String(b.name));
    return d * state.sort.dir;
  }

  function button(label, action, id) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.dataset.action = action;
    b.addEventListener("click", () => act(id, action, b));
    return b;
  }

  function actionButtons(id) {
    const span = document.createElement("span");
    span.className = "actions";
    span.append(button("start", "start", id), button("stop", "stop", id),
      button("restart", "restart", id));
    return span;
  }

  function showButtons(span, running) {
    for (const b of span.querySelectorAll("button")) {
      b.hidden = b.dataset.action === "start" ? running : !running;
    }
  }

  function makeRow(id) {
    const tr = document.createElement("tr");
    tr.dataset.id = id;
    const td = (cls) => {
      const cell = document.createElement("td");
      if (cls) cell.className = cls;
      tr.append(cell);
      return cell;
    };
    const row = { tr };
    row.id = td("id");
    const nameCell = td("name");
    row.name = document.createElement("button");
    row.name.type = "button";
    row.name.className = "link";
    row.name.addEventListener("click", () => select(id));
    nameCell.append(row.name);
    row.status = td("status");
    row.cpu = td("num cpu");
    row.mem = td("num mem");
    row.memp = td("num memp");
    row.net = td("num net");
    row.block = td("num block");
    row.pids = td("num pids");
    row.spark = document.createElement("canvas");
    row.spark.width = 120;
    row.spark.height = 24;
    td("spark").append(row.spark);
    row.actions = actionButtons(id);
    row.actions.hidden = state.readOnly;
    td("actions-cell").append(row.actions);
    state.rows.set(id, row);
    return row;
  }

  function render() {
    const list = [...state.containers.values()].sort(compare);
    const tbody = $("#containers tbody");
    for (const [id, row] of state.rows) {
      if (!state.containers.has(id)) {
        row.tr.remove();
        state.rows.delete(id);
      }
    }
    for (const c of list) {
      const row = state.rows.get(c.id) || makeRow(c.id);
      const s = state.stats.get(c.id);
      const running = c.status === "running";
      row.tr.classList.toggle("stopped", !running);
      row.tr.classList.toggle("selected", state.selected === c.id);
      row.id.textContent = c.id;
      row.name.textContent = c.name || c.id;
      row.status.textContent = c.status || "";
      row.cpu.textContent = s ? pct(s.cpu_usage_percent) : "--";
      row.mem.textContent = s ? pair(bytes, s.memory_usage_bytes, s.memory_limit_bytes) : "--";
      row.memp.textContent = s ? pct(s.memory_percent) : "--";
      row.net.textContent = s ? pair(human, s.network_rx_bytes, s.network_tx_bytes) : "--";
      row.block.textContent = s ? pair(human, s.block_read_bytes, s.block_write_bytes) : "--";
      row.pids.textContent = s && isNum(s.pids) ? String(s.pids) : "--";
      showButtons(row.actions, running);
      const h = state.history.get(c.id) || [];
      sparkline(row.spark, h.slice(-SPARK_POINTS).map((p) => p.cpu));
      tbody.append(row.tr); // in sorted order (a move, not a copy)
    }
    $("#empty").hidden = list.length > 0;
    $("#count").textContent = list.length + " containers, " +
      list.filter((c) => c.status === "running").length + " running";
    for (const th of document.querySelectorAll("#containers th[data-key]")) {
      if (th.dataset.key === state.sort.key) {
        th.setAttribute("aria-sort", state.sort.dir > 0 ? "ascending" : "descending");
      } else {
        th.removeAttribute("aria-sort");
      }
    }
    if (state.selected) renderDetail();
  }

  // ---- lifecycle buttons -------------------------------------------------

  async function act(id, action, btn) {
    if (state.readOnly) {
      say("horcrux runs in read-only mode: nothing may change", true);
      return;
    }
    const c = state.containers.get(id) || { name: id };
    const all = document.querySelectorAll('tr[data-id="' + id + '"] button, #detail-actions button');
    all.forEach((b) => { b.disabled = true; });
    say(action + " " + c.name + "…");
    try {
      const r = await api("POST", "/api/containers/" + encodeURIComponent(id) + "/" + action);
      if (r.status === 200) {
        say(c.name + ": " + action + (r.body && r.body.changed === false ? " (it already was so)" : " done"));
      } else {
        say(failure(action + " " + c.name, r), true);
      }
    } catch (e) {
      say(action + " " + c.name + ": " + e.message, true);
    } finally {
      all.forEach((b) => { b.disabled = false; });
      if (btn) btn.blur();
      await loadContainers();
    }
  }

  // ---- charts (canvas, by hand) ------------------------------------------

  function fitCanvas(canvas) {
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || canvas.width;
    const h = canvas.clientHeight || canvas.height;
    if (canvas.width !== Math.round(w * ratio)) canvas.width = Math.round(w * ratio);
    if (canvas.height !== Math.round(h * ratio)) canvas.height = Math.round(h * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    return { ctx, w, h };
  }

  function sparkline(canvas, values) {
    const ctx = canvas.getContext("2d");
    const w = canvas.width, h = canvas.height;
    ctx.clearRect(0, 0, w, h);
    const v = values.map((x) => (isNum(x) ? x : 0));
    if (v.length < 2) return;
    const max = Math.max(100, ...v);
    ctx.strokeStyle = "#2f6fdd";
    ctx.lineWidth = 1.2;
    ctx.beginPath();
    v.forEach((y, i) => {
      const x = (i / (SPARK_POINTS - 1)) * (w - 2) + 1 + (SPARK_POINTS - v.length) * (w - 2) / (SPARK_POINTS - 1);
      const py = h - 1 - (y / max) * (h - 2);
      if (i === 0) ctx.moveTo(x, py); else ctx.lineTo(x, py);
    });
    ctx.stroke();
  }

  // series: [{points: [[t, y], ...], color, label}]; fmt formats a y value.
  function chart(canvas, series, fmt, minMax) {
    const { ctx, w, h } = fitCanvas(canvas);
    ctx.clearRect(0, 0, w, h);
    const pad = { l: 64, r: 8, t: 8, b: 18 };
    let t0 = Infinity, t1 = -Infinity, max = minMax || 0;
    for (const s of series) {
      for (const [t, y] of s.points) {
        if (t < t0) t0 = t;
        if (t > t1) t1 = t;
        if (isNum(y) && y > max) max = y;
      }
    }
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = "#6b7385";
    ctx.strokeStyle = "#e2e5ec";
    ctx.lineWidth = 1;
    if (!(t1 > t0)) {
      ctx.fillText("waiting for figures…", pad.l, h / 2);
      return;
    }
    if (max <= 0) max = 1;
    const X = (t) => pad.l + ((t - t0) / (t1 - t0)) * (w - pad.l - pad.r);
    const Y = (y) => h - pad.b - (y / max) * (h - pad.t - pad.b);
    for (let i = 0; i <= 4; i++) {
      const y = (max * i) / 4;
      ctx.beginPath();
      ctx.moveTo(pad.l, Y(y) + 0.5);
      ctx.lineTo(w - pad.r, Y(y) + 0.5);
      ctx.stroke();
      ctx.fillText(fmt(y), 4, Y(y) + 4);
    }
    const secs = Math.round((t1 - t0) / 1000);
    ctx.fillText(secs >= 120 ? Math.round(secs / 60) + " min" : secs + " s", pad.l, h - 4);
    ctx.fillText("now", w - pad.r - 22, h - 4);
    for (const s of series) {
      ctx.strokeStyle = s.color;
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      let started = false;
      for (const [t, y] of s.points) {
        if (!isNum(y)) { started = false; continue; }
        if (!started) ctx.moveTo(X(t), Y(y)); else ctx.lineTo(X(t), Y(y));
        started = true;
      }
      ctx.stroke();
    }
  }

  // Per-second rates of a counter field between consecutive points.
  function rates(points, field) {
    const out = [];
    for (let i = 1; i < points.length; i++) {
      const a = points[i - 1], b = points[i];
      const dt = (b.t - a.t) / 1000;
      if (dt > 0 && isNum(a[field]) && isNum(b[field]) && b[field] >= a[field]) {
        out.push([b.t, (b[field] - a[field]) / dt]);
      }
    }
    return out;
  }

  // The server's history answer as points like ours, or null when its
  // shape is not one we know (then the page's own history is used).
  function parseHistory(body) {
    const pts = Array.isArray(body) ? body : body && (body.points || body.samples);
    if (!Array.isArray(pts) || pts.length === 0) return null;
    const out = [];
    for (const p of pts) {
      let t = p.t !== undefined ? p.t : p.time !== undefined ? p.time : p.ts !== undefined ? p.ts : p.read;
      if (typeof t === "string") t = Date.parse(t);
      else if (isNum(t) && t < 1e11) t = t * 1000; // seconds
      if (!isNum(t)) return null;
      out.push({
        t, cpu: p.cpu_usage_percent, mem: p.memory_usage_bytes,
        limit: p.memory_limit_bytes, rx: p.network_rx_bytes, tx: p.network_tx_bytes,
        br: p.block_read_bytes, bw: p.block_write_bytes,
      });
    }
    return out.some((p) => isNum(p.cpu) || isNum(p.mem)) ? out : null;
  }

  let historyTimer = 0;
  async function loadHistory(id) {
    try {
      const r = await api("GET", "/api/containers/" + encodeURIComponent(id) +
        "/history?window=5m&step=5s");
      if (state.selected !== id) return;
      state.serverHistory = r.status === 200 ? parseHistory(r.body) : null;
    } catch (e) {
      state.serverHistory = null;
    }
    renderDetail();
  }

  function select(id) {
    state.selected = id;
    state.serverHistory = null;
    const d = $("#detail");
    d.hidden = false;
    const actions = $("#detail-actions");
    actions.replaceChildren(...actionButtons(id).children);
    actions.hidden = state.readOnly;
    clearInterval(historyTimer);
    loadHistory(id);
    historyTimer = setInterval(() => loadHistory(id), 5000);
    render();
    d.scrollIntoView({ block: "nearest" });
  }

  function renderDetail() {
    const id = state.selected;
    const c = state.containers.get(id);
    if (!c) {
      $("#detail").hidden = true;
      state.selected = null;
      clearInterval(historyTimer);
      return;
    }
    $("#detail-name").textContent = c.name + " (" + c.id + ")";
    $("#detail-status").textContent = c.status || "";
    for (const b of $("#detail-actions").querySelectorAll("button")) {
      b.hidden = b.dataset.action === "start" ? c.status === "running" : c.status !== "running";
    }
    const server = state.serverHistory;
    const pts = server || state.history.get(id) || [];
    $("#history-source").textContent = server
      ? "History kept by the server: the last 5 minutes, a point every 5 s."
      : "History kept by this page from the live figures since it was opened (the server keeps none).";
    document.body.dataset.history = server ? "server" : "page";
    chart($("#chart-cpu"), [{ points: pts.map((p) => [p.t, p.cpu]), color: "#2f6fdd" }],
      (y) => y.toFixed(y < 10 ? 1 : 0) + "%", 10);
    chart($("#chart-mem"), [{ points: pts.map((p) => [p.t, p.mem]), color: "#2f6fdd" }], bytes);
    chart($("#chart-net"), [
      { points: rates(pts, "rx"), color: "#2f6fdd" },
      { points: rates(pts, "tx"), color: "#d9822b" }], (y) => human(y) + "/s");
    chart($("#chart-block"), [
      { points: rates(pts, "br"), color: "#2f6fdd" },
      { points: rates(pts, "bw"), color: "#d9822b" }], (y) => human(y) + "/s");
  }

  // ---- start ---------------------------------------------------------------

  function wire() {
    for (const th of document.querySelectorAll("#containers th[data-key]")) {
      th.addEventListener("click", () => {
        const key = th.dataset.key;
        if (state.sort.key === key) {
          state.sort.dir = -state.sort.dir;
        } else {
          // numbers read best largest first, words from A
          state.sort = { key, dir: ["id", "name", "status"].includes(key) ? 1 : -1 };
        }
        render();
      });
    }
    $("#detail-close").addEventListener("click", () => {
      state.selected = null;
      clearInterval(historyTimer);
      $("#detail").hidden = true;
      render();
    });
    $("#token-button").addEventListener("click", () => askToken("A token for this tab."));
    window.addEventListener("resize", () => { if (state.selected) renderDetail(); });
  }

  async function main() {
    wire();
    try {
      const r = await api("GET", "/api/session");
      if (r.status === 200 && r.body) setReadOnly(r.body.read_only === true);
    } catch (e) {
      say("the server does not answer", true);
    }
    await loadContainers().catch(() => say("the server does not answer", true));
    setInterval(() => loadContainers().catch(() => {}), LIST_MS);
    startLive();
  }

  main();
})();
