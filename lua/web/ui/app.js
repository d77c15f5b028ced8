// The horcrux dashboard: the containers with live figures, grouped by
// Compose stack, a chart per row, a detail view with history charts, the
// container events as they come, and lifecycle buttons. Plain JavaScript,
// no library, nothing from another host.
//
// Data (from the server that served this page, or from the one the
// <meta name="horcrux-api"> of index.html names; that server must then list
// this page's origin with --cors):
//   GET /api/session            {read_only, authenticated}: hide the buttons
//                               in read-only mode
//   GET /api/stats/stream       live figures (Server-Sent Events, `event:
//                               stats`, data: the /api/stats array): by
//                               EventSource while no token is needed, else
//                               by fetch() with the token, the SSE read
//                               from its body; GET /api/stats every second
//                               when the server has no stream
//   GET /api/containers?all=1   names and states, every 5 s and after a
//                               button
//   GET /api/stacks, /api/stacks/:name
//                               which containers form which Compose stack
//   GET /api/events?since=, /api/events/stream
//                               the last events, then each one as it comes
//                               (resumed by Last-Event-ID)
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
  const EVENTS_MAX = 50; // events the panel shows
  const RETRY_MS = 2000; // before a stream is opened again
  // The API's origin: this page's own, unless index.html names another.
  const API = ((document.querySelector('meta[name="horcrux-api"]') || {}).content || "")
    .replace(/\/+$/, "");

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
    stackOf: new Map(), // id (12) -> {stack, service}
    collapsed: new Set(), // stack names folded in the table
    groupRows: new Map(), // stack name -> {tr, cells...}
    events: [], // the last EVENTS_MAX events, oldest first
    lastEventId: 0,
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

  function setLive(how, cls, transport) {
    if (transport) document.body.dataset.transport = transport;
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

  // fetch with the token; a 401, or a 403 for a wrong token, asks for it
  // and tries again. Resolves to the Response: its body is unread unless
  // it was such a refusal.
  async function authed(method, path, extra) {
    for (;;) {
      const headers = Object.assign({ Accept: "application/json" }, extra);
      if (state.token) headers.Authorization = "Bearer " + state.token;
      const r = await fetch(API + path, { method, headers, cache: "no-store" });
      if (r.status !== 401 && r.status !== 403) return r;
      let body = null;
      try {
        body = await r.clone().json();
      } catch (e) {
        body = null;
      }
      const err = body && body.error;
      const msg = err && err.message ? err.message : "";
      if (r.status === 401 || /token/.test(msg)) {
        const why = r.status === 401 ? "This server wants its bearer token: " + msg
          : "That token is wrong.";
        if (await askToken(why)) continue;
      }
      if (r.status === 403 && /read-only/.test(msg)) setReadOnly(true);
      return r;
    }
  }

  // authed(), the body parsed: {status, body (JSON or null)}.
  async function api(method, path) {
    const r = await authed(method, path);
    let body = null;
    try {
      body = await r.json();
    } catch (e) {
      body = null;
    }
    return { status: r.status, body };
  }

  // Reads a text/event-stream body: onMessage({event, data, id}) for each
  // message (comments and retry skipped). Resolves when the body ends.
  async function readSSE(body, onMessage) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "", event = "", data = [], id = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value;
      let nl;
      while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
        if (buf[nl] === "\r" && nl === buf.length - 1) break; // \r\n split
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + (buf.startsWith("\r\n", nl) ? 2 : 1));
        if (line === "") {
          if (data.length) onMessage({ event: event || "message", data: data.join("\n"), id });
          event = "";
          data = [];
          continue;
        }
        if (line[0] === ":") continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let v = colon < 0 ? "" : line.slice(colon + 1);
        if (v[0] === " ") v = v.slice(1);
        if (field === "event") event = v;
        else if (field === "data") data.push(v);
        else if (field === "id") id = v;
      }
    }
  }

  // A stream by fetch() (which, unlike EventSource, sends the token),
  // opened again RETRY_MS after it ends. opts: onMessage, onOpen,
  // lastId() (sent as Last-Event-ID), onFail(status) when it cannot be
  // opened at all (before any message: then it is not retried).
  function fetchStream(path, opts) {
    let got = false;
    const open = async () => {
      let ok = false;
      try {
        const extra = { Accept: "text/event-stream" };
        const last = opts.lastId && opts.lastId();
        if (last) extra["Last-Event-ID"] = String(last);
        const r = await authed("GET", path, extra);
        if (r.status !== 200 || !r.body) {
          if (!got) return opts.onFail(r.status);
        } else {
          ok = true;
          if (opts.onOpen) opts.onOpen();
          await readSSE(r.body, (m) => {
            got = true;
            opts.onMessage(m);
          });
        }
      } catch (e) {
        if (!got && !ok) return opts.onFail(0);
      }
      if (opts.onGone) opts.onGone();
      setTimeout(open, RETRY_MS);
    };
    open();
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

  function onStatsMessage(data) {
    try {
      onStats(JSON.parse(data));
    } catch (err) {
      say("a stats message that is not JSON", true);
    }
  }

  // The stats stream by fetch(), with the token; polling when the server
  // has no stream.
  function startFetchLive() {
    if (!window.ReadableStream || !window.TextDecoderStream) return startPolling();
    fetchStream("/api/stats/stream", {
      onMessage: (m) => {
        if (m.event !== "stats") return;
        setLive("live: stream", "ok", "fetch");
        onStatsMessage(m.data);
      },
      onGone: () => setLive("live: reconnecting", "warn"),
      onFail: () => startPolling(),
    });
  }

  // EventSource while no token is needed (it cannot send one): when it
  // fails before its first message, the stream by fetch() (which asks for
  // the token on a 401), and polling when there is no stream at all.
  function startLive() {
    if (state.token || !window.EventSource) return startFetchLive();
    let got = false;
    const es = new EventSource(API + "/api/stats/stream");
    const fallback = setTimeout(() => {
      if (!got) {
        es.close();
        startFetchLive();
      }
    }, 4000);
    let lastMessage = 0;
    es.addEventListener("stats", (e) => {
      got = true;
      lastMessage = Date.now();
      clearTimeout(fallback);
      setLive("live: stream", "ok", "eventsource");
      onStatsMessage(e.data);
    });
    es.onerror = () => {
      if (!got || es.readyState === EventSource.CLOSED) {
        clearTimeout(fallback);
        es.close();
        if (!got) startFetchLive(); else setTimeout(startLive, RETRY_MS);
      } else {
        // EventSource reconnects by itself; say so only when it takes long
        const since = Date.now();
        setTimeout(() => {
          if (lastMessage < since) setLive("live: reconnecting", "warn");
        }, 3000);
      }
    };
  }

  // ---- events --------------------------------------------------------------

  const EVENT_CLASS = { start: "ok", unpause: "ok", die: "bad", kill: "bad", oom: "bad",
    stop: "warn", destroy: "warn", pause: "warn" };

  function onEvent(ev) {
    if (!ev || typeof ev.event_id !== "number") return;
    if (ev.event_id <= state.lastEventId) return; // seen (a resume overlaps)
    state.lastEventId = ev.event_id;
    state.events.push(ev);
    if (state.events.length > EVENTS_MAX) state.events.splice(0, state.events.length - EVENTS_MAX);
    renderEvents();
    if (["start", "die", "stop", "destroy", "create", "pause", "unpause", "rename"].includes(ev.action)) {
      clearTimeout(onEvent.reload);
      onEvent.reload = setTimeout(() => loadContainers().catch(() => {}), 300);
    }
  }

  function renderEvents() {
    const ol = $("#events-list");
    const items = state.events.slice().reverse().map((ev) => {
      const li = document.createElement("li");
      li.dataset.eventId = ev.event_id;
      const time = document.createElement("time");
      const d = new Date(ev.time || (ev.time_ns || 0) / 1e6);
      time.textContent = isNaN(d) ? "" : d.toLocaleTimeString();
      const action = document.createElement("span");
      action.className = "badge " + (EVENT_CLASS[ev.action] || "");
      action.textContent = ev.action || "?";
      const name = document.createElement("span");
      name.className = "event-name";
      name.textContent = ev.name || short(ev.id);
      const extra = document.createElement("span");
      extra.className = "note";
      const code = ev.attributes && ev.attributes.exitCode;
      extra.textContent = (ev.image ? ev.image : "") + (code !== undefined ? " exit " + code : "");
      li.append(time, action, name, extra);
      return li;
    });
    ol.replaceChildren(...items);
    $("#events-empty").hidden = items.length > 0;
  }

  function onEventMessage(m) {
    if (m.event === "gap") say("some container events were missed (the server's ring moved on)");
    if (m.event !== "event") return;
    try {
      onEvent(JSON.parse(m.data));
    } catch (e) {
      say("an event message that is not JSON", true);
    }
  }

  // The last 15 minutes' events from the ring (the last EVENTS_MAX kept), then
  // the stream from the last of them on: EventSource (which resumes by
  // Last-Event-ID itself) while no token is needed, else fetch() sending
  // Last-Event-ID at each reconnection.
  async function startEvents() {
    const since = Math.floor(Date.now() / 1000) - 900;
    const r = await api("GET", "/api/events?since=" + since);
    if (r.status === 404) {
      $("#events").hidden = true; // a server without events
      return;
    }
    if (r.status === 200 && Array.isArray(r.body)) r.body.slice(-EVENTS_MAX).forEach(onEvent);
    renderEvents();
    const path = "/api/events/stream";
    const setBadge = (how, cls) => {
      const b = $("#events-live");
      b.textContent = how;
      b.className = "badge " + (cls || "");
    };
    const byFetch = () => fetchStream(path, {
      lastId: () => state.lastEventId,
      onOpen: () => setBadge("following", "ok"),
      onMessage: onEventMessage,
      onGone: () => setBadge("reconnecting", "warn"),
      onFail: (status) => setBadge("no stream" + (status ? ": HTTP " + status : ""), "bad"),
    });
    if (state.token || !window.EventSource) return byFetch();
    const es = new EventSource(API + path + "?last_event_id=" + state.lastEventId);
    let opened = false;
    es.onopen = () => {
      opened = true;
      setBadge("following", "ok");
    };
    for (const name of ["event", "gap"]) {
      es.addEventListener(name, (e) => onEventMessage({ event: name, data: e.data }));
    }
    es.onerror = () => {
      if (!opened) {
        es.close();
        byFetch();
      } else {
        setBadge("reconnecting", "warn");
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

  // Names and ids in natural order: web-2 before web-10 (Compose's and
  // scale's numbered replicas).
  const natural = new Intl.Collator(undefined, { numeric: true }).compare;

  function compare(a, b) {
    const f = SORT_VALUE[state.sort.key];
    const va = f(a, state.stats.get(a.id));
    const vb = f(b, state.stats.get(b.id));
    let d = typeof va === "number" && typeof vb === "number" ? va - vb
      : natural(String(va), String(vb));
    if (d === 0) d = natural(String(a.name), String(b.name));
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
    span.append(button("start", "start", id), button("unpause", "unpause", id),
      button("stop", "stop", id), button("restart", "restart", id));
    return span;
  }

  // Which buttons a status offers: a paused container is unpaused (the
  // engine refuses to start one), stopped or restarted; a running one
  // stopped or restarted; any other started.
  const OFFERS = { running: ["stop", "restart"], paused: ["unpause", "stop", "restart"] };

  function showButtons(span, status) {
    const offers = OFFERS[status] || ["start"];
    for (const b of span.querySelectorAll("button")) {
      b.hidden = !offers.includes(b.dataset.action);
    }
  }

  // The figure cells of a container's row and of a stack's row, in the
  // table's column order: status, CPU, memory, memory %, network, block
  // I/O, PIDs and the sparkline. td(className) appends a cell to the row.
  function figureCells(r, td) {
    r.status = td("status");
    r.cpu = td("num cpu");
    r.mem = td("num mem");
    r.memp = td("num memp");
    r.net = td("num net");
    r.block = td("num block");
    r.pids = td("num pids");
    r.spark = document.createElement("canvas");
    r.spark.width = 120;
    r.spark.height = 24;
    td("spark").append(r.spark);
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
    figureCells(row, td);
    row.actions = actionButtons(id);
    row.actions.hidden = state.readOnly;
    td("actions-cell").append(row.actions);
    state.rows.set(id, row);
    return row;
  }

  // ---- stacks ---------------------------------------------------------------

  // Which container is in which Compose stack (label
  // com.docker.compose.project): every LIST_MS, from /api/stacks.
  async function loadStacks() {
    const r = await api("GET", "/api/stacks");
    if (r.status !== 200 || !Array.isArray(r.body)) return;
    const map = new Map();
    await Promise.all(r.body.map(async (st) => {
      const d = await api("GET", "/api/stacks/" + encodeURIComponent(st.name));
      if (d.status !== 200 || !d.body) return;
      for (const svc of d.body.services || []) {
        for (const c of svc.containers || []) {
          map.set(short(c.id), { stack: st.name, service: svc.name });
        }
      }
    }));
    state.stackOf = map;
    render();
  }

  const SUMMED = ["cpu_usage_percent", "memory_usage_bytes", "network_rx_bytes",
    "network_tx_bytes", "block_read_bytes", "block_write_bytes", "pids"];

  // A stack's figures: the sums over its running members (null: none had it).
  function totals(members) {
    const t = {};
    for (const k of SUMMED) {
      let sum = null;
      for (const c of members) {
        const s = state.stats.get(c.id);
        if (s && isNum(s[k])) sum = (sum || 0) + s[k];
      }
      t[k] = sum;
    }
    return t;
  }

  function makeGroupRow(name) {
    const tr = document.createElement("tr");
    tr.className = "stack";
    tr.dataset.stack = name;
    const td = (cls, span) => {
      const cell = document.createElement("td");
      if (cls) cell.className = cls;
      if (span) cell.colSpan = span;
      tr.append(cell);
      return cell;
    };
    const g = { tr };
    g.toggle = document.createElement("button");
    g.toggle.type = "button";
    g.toggle.className = "toggle link";
    g.toggle.addEventListener("click", () => {
      if (state.collapsed.has(name)) state.collapsed.delete(name);
      else state.collapsed.add(name);
      render();
    });
    const first = td("stack-name", 2);
    first.append(g.toggle);
    figureCells(g, td);
    td("actions-cell");
    state.groupRows.set(name, g);
    return g;
  }

  function fillGroupRow(g, name, members) {
    const t = totals(members);
    const open = !state.collapsed.has(name);
    g.tr.classList.toggle("collapsed", !open);
    g.toggle.textContent = (open ? "\u25BE " : "\u25B8 ") + name;
    g.toggle.setAttribute("aria-expanded", String(open));
    g.toggle.title = (open ? "fold" : "unfold") + " the stack " + name;
    const running = members.filter((c) => c.status === "running").length;
    g.status.textContent = "stack: " + running + "/" + members.length + " running";
    g.cpu.textContent = pct(t.cpu_usage_percent);
    g.mem.textContent = size(bytes, t.memory_usage_bytes);
    g.net.textContent = pair(human, t.network_rx_bytes, t.network_tx_bytes);
    g.block.textContent = pair(human, t.block_read_bytes, t.block_write_bytes);
    g.pids.textContent = isNum(t.pids) ? String(t.pids) : "--";
    // the members' last minute, summed point by point from the newest
    const sums = [];
    for (const c of members) {
      const h = (state.history.get(c.id) || []).slice(-SPARK_POINTS);
      h.forEach((p, i) => {
        const at = SPARK_POINTS - h.length + i;
        sums[at] = (sums[at] || 0) + (isNum(p.cpu) ? p.cpu : 0);
      });
    }
    sparkline(g.spark, sums.filter((v) => v !== undefined));
    return t;
  }

  function fillRow(c) {
    const row = state.rows.get(c.id) || makeRow(c.id);
    const s = state.stats.get(c.id);
    const running = c.status === "running";
    const st = state.stackOf.get(c.id);
    row.tr.classList.toggle("stopped", !running);
    row.tr.classList.toggle("selected", state.selected === c.id);
    row.tr.classList.toggle("in-stack", !!st);
    row.tr.hidden = !!st && state.collapsed.has(st.stack);
    row.id.textContent = c.id;
    row.name.textContent = c.name || c.id;
    row.name.title = st ? "stack " + st.stack + ", service " + st.service : "";
    row.status.textContent = c.status || "";
    row.cpu.textContent = s ? pct(s.cpu_usage_percent) : "--";
    row.mem.textContent = s ? pair(bytes, s.memory_usage_bytes, s.memory_limit_bytes) : "--";
    row.memp.textContent = s ? pct(s.memory_percent) : "--";
    row.net.textContent = s ? pair(human, s.network_rx_bytes, s.network_tx_bytes) : "--";
    row.block.textContent = s ? pair(human, s.block_read_bytes, s.block_write_bytes) : "--";
    row.pids.textContent = s && isNum(s.pids) ? String(s.pids) : "--";
    showButtons(row.actions, c.status);
    const h = state.history.get(c.id) || [];
    sparkline(row.spark, h.slice(-SPARK_POINTS).map((p) => p.cpu));
    return row;
  }

  // The rows: each stack's header (its totals; a click folds it) with its
  // members under it, stacks first, then the containers of no stack; each
  // part in the sort order (stacks by their totals).
  function render() {
    const list = [...state.containers.values()];
    const tbody = $("#containers tbody");
    for (const [id, row] of state.rows) {
      if (!state.containers.has(id)) {
        row.tr.remove();
        state.rows.delete(id);
      }
    }
    const stacks = new Map(), singles = [];
    for (const c of list) {
      const st = state.stackOf.get(c.id);
      if (!st) {
        singles.push(c);
      } else {
        if (!stacks.has(st.stack)) stacks.set(st.stack, []);
        stacks.get(st.stack).push(c);
      }
    }
    for (const [name, g] of state.groupRows) {
      if (!stacks.has(name)) {
        g.tr.remove();
        state.groupRows.delete(name);
      }
    }
    const groups = [...stacks].map(([name, members]) => {
      const g = state.groupRows.get(name) || makeGroupRow(name);
      return { name, members, g, t: fillGroupRow(g, name, members) };
    });
    const f = SORT_VALUE[state.sort.key];
    groups.sort((a, b) => {
      const va = f({ id: a.name, name: a.name, status: "" }, a.t);
      const vb = f({ id: b.name, name: b.name, status: "" }, b.t);
      const d = typeof va === "number" && typeof vb === "number" ? va - vb
        : natural(String(va), String(vb));
      return (d || natural(a.name, b.name)) * state.sort.dir;
    });
    for (const grp of groups) {
      tbody.append(grp.g.tr); // in sorted order (a move, not a copy)
      for (const c of grp.members.sort(compare)) tbody.append(fillRow(c).tr);
    }
    for (const c of singles.sort(compare)) tbody.append(fillRow(c).tr);
    $("#empty").hidden = list.length > 0;
    $("#count").textContent = list.length + " containers, " +
      list.filter((c) => c.status === "running").length + " running" +
      (stacks.size ? ", " + stacks.size + (stacks.size === 1 ? " stack" : " stacks") : "");
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

  // Chart series from the page's own points (counters: rates worked out).
  function pageSeries(pts) {
    return {
      cpu: pts.map((p) => [p.t, p.cpu]), mem: pts.map((p) => [p.t, p.mem]),
      rx: rates(pts, "rx"), tx: rates(pts, "tx"),
      br: rates(pts, "br"), bw: rates(pts, "bw"), summary: null,
    };
  }

  const timeOf = (p) => {
    let t = p.t !== undefined ? p.t : p.time !== undefined ? p.time : p.ts !== undefined ? p.ts : p.read;
    if (typeof t === "string") t = Date.parse(t);
    else if (isNum(t) && t < 1e11) t = t * 1000; // seconds
    return t;
  };
  const first = (p, names) => {
    for (const n of names) if (p[n] !== undefined) return p[n];
    return undefined;
  };

  // The server's history answer as chart series, or null when its shape is
  // not one we know (then the page's own history is used). The shape of
  // GET /api/containers/:id/history: {points: [{t, cpu_percent,
  // memory_working_set_bytes, network_rx_bytes_per_second, ...}], summary:
  // {cpu_percent: {min, mean, max, p90, p99, count}, ...}}; points carrying
  // counters (network_rx_bytes, ...) instead of rates are taken too.
  function serverSeries(body) {
    const pts = Array.isArray(body) ? body : body && (body.points || body.samples);
    if (!Array.isArray(pts) || pts.length === 0) return null;
    const norm = [];
    for (const p of pts) {
      const t = timeOf(p);
      if (!isNum(t)) return null;
      norm.push({
        t, cpu: first(p, ["cpu_percent", "cpu_usage_percent"]),
        mem: first(p, ["memory_working_set_bytes", "memory_usage_bytes"]),
        rx: p.network_rx_bytes, tx: p.network_tx_bytes,
        br: p.block_read_bytes, bw: p.block_write_bytes,
        rxs: p.network_rx_bytes_per_second, txs: p.network_tx_bytes_per_second,
        brs: p.block_read_bytes_per_second, bws: p.block_write_bytes_per_second,
      });
    }
    if (!norm.some((p) => isNum(p.cpu) || isNum(p.mem))) return null;
    const out = pageSeries(norm);
    for (const [k, ks] of [["rx", "rxs"], ["tx", "txs"], ["br", "brs"], ["bw", "bws"]]) {
      if (norm.some((p) => isNum(p[ks]))) out[k] = norm.map((p) => [p.t, p[ks]]);
    }
    const sm = body && !Array.isArray(body) && body.summary;
    out.summary = sm && typeof sm === "object" ? sm : null;
    out.window = body && body.window_s;
    out.step = body && body.step_s;
    return out;
  }

  // "min 1.2 · mean 3.4 · max 9 · p90 8" of a summary figure, or "".
  function summaryText(sum, fmt) {
    if (!sum || typeof sum !== "object") return "";
    return ["min", "mean", "max", "p90"].filter((k) => isNum(sum[k]))
      .map((k) => k + " " + fmt(sum[k])).join(" \u00b7 ");
  }

  let historyTimer = 0;
  async function loadHistory(id) {
    try {
      const r = await api("GET", "/api/containers/" + encodeURIComponent(id) +
        "/history?window=5m&step=5s");
      if (state.selected !== id) return;
      state.serverHistory = r.status === 200 ? serverSeries(r.body) : null;
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
    showButtons($("#detail-actions"), c.status);
    const server = state.serverHistory;
    const series = server || pageSeries(state.history.get(id) || []);
    $("#history-source").textContent = server
      ? "History kept by the server: the last " + Math.round((server.window || 300) / 60) +
        " minutes, a point every " + (server.step || 5) + " s."
      : "History kept by this page from the live figures since it was opened (the server keeps none).";
    document.body.dataset.history = server ? "server" : "page";
    const cpuFmt = (y) => y.toFixed(y < 10 ? 1 : 0) + "%";
    const rate = (y) => human(y) + "/s";
    const sm = (server && server.summary) || {};
    $("#sum-cpu").textContent = summaryText(sm.cpu_percent, cpuFmt);
    $("#sum-mem").textContent = summaryText(sm.memory_working_set_bytes, bytes);
    const labelled = (label, text) => (text ? label + ": " + text : "");
    $("#sum-net").textContent = labelled("rx", summaryText(sm.network_rx_bytes_per_second, rate));
    $("#sum-block").textContent = labelled("write", summaryText(sm.block_write_bytes_per_second, rate));
    chart($("#chart-cpu"), [{ points: series.cpu, color: "#2f6fdd" }], cpuFmt, 10);
    chart($("#chart-mem"), [{ points: series.mem, color: "#2f6fdd" }], bytes);
    chart($("#chart-net"), [
      { points: series.rx, color: "#2f6fdd" },
      { points: series.tx, color: "#d9822b" }], rate);
    chart($("#chart-block"), [
      { points: series.br, color: "#2f6fdd" },
      { points: series.bw, color: "#d9822b" }], rate);
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
    loadStacks().catch(() => {});
    setInterval(() => loadStacks().catch(() => {}), LIST_MS);
    startLive();
    startEvents().catch(() => say("no container events: the server does not answer", true));
  }

  main();
})();
