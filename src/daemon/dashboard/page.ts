/**
 * The dashboard's own page, style and script (issue 18), served by the daemon at `GET /` with
 * uPlot from node_modules (./serve.ts). Strings rather than files, so they reach dist/ with the
 * rest of the build and no copying. Plain HTML, CSS and browser JavaScript, no framework: the
 * script reads `/v1/events` (EventSource) for what happens, `GET /v1/agents` every few seconds
 * for the figures, and the selected agent's `/v1/agents/ID/telemetry` for its chart. No inline
 * script or style (the page's CSP forbids them); everything an agent sends is set as text, never
 * as HTML. The script is written without backticks or `${`, as it lives in a template literal.
 */

export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>guestlink</title>
<link rel="icon" href="assets/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="assets/uPlot.min.css">
<link rel="stylesheet" href="assets/dashboard.css">
<script src="assets/uPlot.iife.min.js" defer></script>
<script src="assets/dashboard.js" defer></script>
</head>
<body>
<header>
  <h1>guestlink</h1>
  <span id="where"></span>
  <span id="stream" data-testid="stream" data-state="connecting">connecting…</span>
</header>
<main>
  <section id="agents-section">
    <h2>Agents <span id="agent-count" class="muted"></span></h2>
    <table data-testid="agents">
      <thead>
        <tr>
          <th>Agent</th><th>State</th><th>Since</th><th class="num">Round trip</th>
          <th class="num">Reconnects</th><th class="num">Resumes</th><th class="num">Restarts</th>
          <th class="num">Sent</th><th class="num">Received</th><th>Last error</th>
        </tr>
      </thead>
      <tbody id="agents"></tbody>
    </table>
    <p id="no-agents" class="muted" hidden>The daemon holds no agents yet: they show up here when
    they are found, dial in, or are added to its config.</p>
  </section>
  <section id="chart-section">
    <h2>Telemetry <span id="chart-agent" data-testid="chart-agent"></span></h2>
    <p id="chart-status" class="muted">Select an agent that is up.</p>
    <div id="chart" data-testid="chart" data-points="0"></div>
  </section>
  <section id="log-section">
    <h2>Events</h2>
    <ol id="events" data-testid="event-log"></ol>
  </section>
</main>
</body>
</html>
`;

export const DASHBOARD_CSS = `:root {
  --fg: #1d2330; --muted: #6b7385; --bg: #f6f7f9; --card: #fff; --line: #e2e5ea;
  --up: #1f9d55; --down: #d63c3c; --stalled: #d98b0b; --connecting: #5a6b8c;
  font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
}
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: var(--bg); }
header { display: flex; align-items: baseline; gap: 1em; padding: 0.8em 1.5em;
  background: #1d2330; color: #fff; }
header h1 { margin: 0; font-size: 1.25em; }
#where { color: #aab3c5; }
#stream { margin-left: auto; font-size: 0.9em; }
#stream::before { content: "●"; margin-right: 0.35em; color: var(--stalled); }
#stream[data-state="live"]::before { color: var(--up); }
#stream[data-state="closed"]::before { color: var(--down); }
main { padding: 1em 1.5em; display: grid; gap: 1em; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 6px;
  padding: 0.8em 1em; overflow-x: auto; }
h2 { margin: 0 0 0.6em; font-size: 1.05em; }
.muted { color: var(--muted); font-weight: normal; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 0.35em 0.7em; border-bottom: 1px solid var(--line);
  white-space: nowrap; }
th { font-weight: 600; color: var(--muted); font-size: 0.9em; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr { cursor: pointer; }
tbody tr:hover { background: #f0f3f8; }
tbody tr.selected { background: #e6eefb; }
td.c-agent .addr { display: block; color: var(--muted); font-size: 0.85em; }
td.c-error { white-space: normal; color: var(--down); max-width: 30em; font-size: 0.9em; }
.state { display: inline-block; padding: 0 0.6em; border-radius: 1em; color: #fff;
  font-size: 0.85em; background: var(--connecting); }
.state.up { background: var(--up); }
.state.down { background: var(--down); }
.state.stalled { background: var(--stalled); }
#chart { min-height: 40px; }
#events { list-style: none; margin: 0; padding: 0; max-height: 22em; overflow-y: auto;
  font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; font-size: 0.85em; }
#events li { padding: 0.15em 0; border-bottom: 1px dotted var(--line); }
#events time { color: var(--muted); margin-right: 0.8em; }
#events .type { display: inline-block; min-width: 6em; font-weight: 600; }
#events .type.state-up { color: var(--up); }
#events .type.state-down, #events .type.removed { color: var(--down); }
#events .type.state-stalled, #events .type.restarted { color: var(--stalled); }
`;

export const DASHBOARD_JS = `"use strict";
(() => {
  /** How much of the chart is kept: seconds, and at most this many points. */
  const WINDOW_S = 300;
  const MAX_POINTS = 1000;
  /** Events kept in the log. */
  const MAX_EVENTS = 200;
  /** How often the figures are read again (GET /v1/agents). */
  const REFRESH_MS = 2000;
  const TELEMETRY_INTERVAL_MS = 1000;
  const EVENT_TYPES = ["added", "removed", "state", "resumed", "restarted"];

  const el = (id) => document.getElementById(id);
  const make = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };

  function bytes(n) {
    if (n === null || n === undefined) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i++;
    }
    return (i === 0 ? String(n) : n.toFixed(n < 10 ? 2 : 1)) + " " + units[i];
  }
  function ago(ms) {
    const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (s < 120) return s + " s ago";
    if (s < 7200) return Math.round(s / 60) + " min ago";
    if (s < 172800) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " days ago";
  }
  const clock = (ms) => new Date(ms).toLocaleTimeString();

  // ---- the agents' table ----
  /** id -> { tr, cells, snap, touched } */
  const rows = new Map();
  let selected = null;

  function row(id) {
    let r = rows.get(id);
    if (r) return r;
    const tr = make("tr");
    tr.dataset.testid = "agent-row";
    tr.dataset.agentId = id;
    const cells = {};
    for (const name of ["agent", "state", "since", "rtt", "reconnects", "resumes", "restarts",
      "sent", "received", "error"]) {
      const td = make("td", "c-" + name);
      if (["rtt", "reconnects", "resumes", "restarts", "sent", "received"].includes(name)) {
        td.classList.add("num");
      }
      cells[name] = td;
      tr.append(td);
    }
    cells.agent.append(make("span", "id", id), make("span", "addr"));
    cells.state.append(make("span", "state"));
    tr.addEventListener("click", () => select(id));
    r = { tr, cells, snap: { id, state: "connecting", since: Date.now() }, touched: 0 };
    rows.set(id, r);
    insertSorted(r);
    return r;
  }
  function insertSorted(r) {
    const body = el("agents");
    const after = [...body.children].find((tr) => tr.dataset.agentId > r.snap.id);
    body.insertBefore(r.tr, after || null);
    counts();
  }
  function drop(id) {
    const r = rows.get(id);
    if (!r) return;
    r.tr.remove();
    rows.delete(id);
    if (selected === id) select(null);
    counts();
  }
  function counts() {
    const all = [...rows.values()];
    const up = all.filter((r) => r.snap.state === "up").length;
    el("agent-count").textContent = all.length ? "(" + up + " of " + all.length + " up)" : "";
    el("no-agents").hidden = all.length > 0;
  }
  function render(r) {
    const s = r.snap;
    const c = r.cells;
    r.tr.dataset.state = s.state;
    c.agent.querySelector(".addr").textContent = s.address || s.source || "";
    const badge = c.state.querySelector(".state");
    badge.textContent = s.state;
    badge.className = "state " + s.state;
    c.since.title = s.since ? new Date(s.since).toLocaleString() : "";
    c.rtt.textContent = s.rttMs === null || s.rttMs === undefined ? "–" : s.rttMs.toFixed(1) + " ms";
    c.reconnects.textContent = s.reconnects === undefined ? "–" : String(s.reconnects);
    c.resumes.textContent = s.resumes === undefined ? "–" : String(s.resumes);
    c.restarts.textContent = s.restarts === undefined ? "–" : String(s.restarts);
    c.sent.textContent = bytes(s.bytesSent);
    c.received.textContent = bytes(s.bytesReceived);
    c.error.textContent = s.lastError ? s.lastError.code + ": " + s.lastError.message : "";
    tick(r);
  }
  function tick(r) {
    r.cells.since.textContent = r.snap.since ? ago(r.snap.since) : "–";
  }
  function update(snap, touched) {
    const r = row(snap.id);
    r.snap = Object.assign({}, r.snap, snap);
    if (touched) r.touched = Date.now();
    render(r);
    counts();
    return r;
  }
  /** The whole list: rows not in it go, unless an event touched them since it was asked for. */
  function reconcile(list, askedAt) {
    const ids = new Set(list.map((s) => s.id));
    for (const [id, r] of rows) if (!ids.has(id) && r.touched <= askedAt) drop(id);
    for (const s of list) {
      const r = rows.get(s.id);
      // An event since the list was asked for knows the state better.
      if (r && r.touched > askedAt) update(Object.assign({}, s, { state: r.snap.state,
        since: r.snap.since }), false);
      else update(s, false);
    }
    autoSelect();
    followTelemetry();
  }

  // ---- the event stream ----
  function logEvent(type, e) {
    const list = el("events");
    const li = make("li");
    li.dataset.testid = "event";
    li.dataset.type = type;
    const time = make("time", "", clock(e.at || Date.now()));
    const kind = type === "state" ? "state-" + e.state : type;
    let text = e.id;
    if (type === "state") {
      text += ": " + e.previous + " → " + e.state + (e.error ? " (" + e.error + ")" : "");
    } else if (type === "added") {
      text += " (" + e.source + (e.address ? ", " + e.address : "") + ")";
    } else if (type === "resumed") {
      text += " after " + e.downMs + " ms down";
    }
    li.append(time, make("span", "type " + kind, type), make("span", "", text));
    list.prepend(li);
    while (list.children.length > MAX_EVENTS) list.lastChild.remove();
  }
  function applyEvent(type, e) {
    if (type === "added") {
      update({ id: e.id, source: e.source, address: e.address, state: "connecting",
        since: e.at }, true);
    } else if (type === "removed") {
      drop(e.id);
    } else if (type === "state") {
      update({ id: e.id, state: e.state, since: e.at }, true);
    } else if (type === "resumed" || type === "restarted") {
      refresh();
    }
    autoSelect();
    followTelemetry();
  }

  let events = null;
  function connect() {
    const stream = el("stream");
    events = new EventSource("v1/events");
    events.onopen = () => {
      stream.dataset.state = "live";
      stream.textContent = "live";
    };
    events.onerror = () => {
      if (events.readyState === EventSource.CLOSED) {
        stream.dataset.state = "closed";
        stream.textContent = "disconnected: retrying";
        events = null;
        setTimeout(connect, 3000);
      } else {
        stream.dataset.state = "connecting";
        stream.textContent = "reconnecting…";
      }
    };
    events.addEventListener("agents", (m) => {
      // A new stream: the current agents, then the recent events again.
      el("events").replaceChildren();
      reconcile(JSON.parse(m.data), Date.now());
    });
    for (const type of EVENT_TYPES) {
      events.addEventListener(type, (m) => {
        const e = JSON.parse(m.data);
        applyEvent(type, e);
        logEvent(type, e);
      });
    }
  }

  let refreshing = false;
  async function refresh() {
    if (refreshing) return;
    refreshing = true;
    const askedAt = Date.now();
    try {
      const res = await fetch("v1/agents", { cache: "no-store" });
      if (res.ok) reconcile((await res.json()).agents, askedAt);
    } catch {
      // The daemon is away; the event stream says so.
    } finally {
      refreshing = false;
    }
  }

  // ---- the selected agent's chart ----
  let telemetry = null;
  let telemetryOf = null;
  let chart = null;
  let data = [[], [], []];
  let memTotal = 0;

  const live = (id) => {
    const r = rows.get(id);
    return !!r && (r.snap.state === "up" || r.snap.state === "stalled");
  };
  function autoSelect() {
    if (selected !== null && rows.has(selected)) return;
    const first = [...rows.values()].map((r) => r.snap).filter((s) => s.state === "up")
      .sort((a, b) => (a.id < b.id ? -1 : 1))[0];
    if (first) select(first.id);
  }
  function select(id) {
    if (id === selected) return;
    selected = id;
    for (const [rid, r] of rows) r.tr.classList.toggle("selected", rid === id);
    stopTelemetry();
    data = [[], [], []];
    memTotal = 0;
    el("chart-agent").textContent = id === null ? "" : id;
    if (chart) chart.setData(data);
    points();
    followTelemetry();
  }
  function stopTelemetry() {
    if (telemetry) telemetry.close();
    telemetry = null;
    telemetryOf = null;
  }
  /** Watches the selected agent while it is up; stops when it is not. */
  function followTelemetry() {
    const status = el("chart-status");
    if (selected === null) {
      stopTelemetry();
      status.textContent = "Select an agent that is up.";
      return;
    }
    if (!live(selected)) {
      stopTelemetry();
      status.textContent = selected + " is " + (rows.get(selected) || { snap: { state: "gone" } })
        .snap.state + ": no telemetry now.";
      return;
    }
    if (telemetry && telemetryOf === selected) return;
    stopTelemetry();
    const id = selected;
    telemetryOf = id;
    telemetry = new EventSource("v1/agents/" + encodeURIComponent(id) + "/telemetry?interval=" +
      TELEMETRY_INTERVAL_MS);
    const mine = telemetry;
    status.textContent = "Waiting for " + id + "'s first sample…";
    mine.addEventListener("sample", (m) => {
      if (telemetry !== mine) return;
      sample(JSON.parse(m.data));
    });
    mine.addEventListener("error", (m) => {
      if (telemetry !== mine) return;
      if (m.data) {
        const err = JSON.parse(m.data);
        status.textContent = id + ": " + err.code + ": " + err.message;
      }
      // Refused (the agent went down): tried again when it is up (an event, or the refresh).
      if (mine.readyState === EventSource.CLOSED) {
        telemetry = null;
        telemetryOf = null;
      }
    });
  }
  function sample(s) {
    const t = s.t / 1000;
    data[0].push(t);
    data[1].push(s.cpu.usage * 100);
    data[2].push(s.memory.usedBytes);
    memTotal = s.memory.totalBytes;
    while (data[0].length > MAX_POINTS || (data[0].length && data[0][0] < t - WINDOW_S)) {
      for (const d of data) d.shift();
    }
    el("chart-status").textContent = "CPU " + (s.cpu.usage * 100).toFixed(1) + " % of " +
      s.cpu.count + " · memory used " + bytes(s.memory.usedBytes) + " of " +
      bytes(s.memory.totalBytes) + " · load " + s.load.map((l) => l.toFixed(2)).join(" ") +
      " · last " + WINDOW_S / 60 + " minutes";
    if (!chart) makeChart();
    chart.setData(data);
    points();
  }
  function points() {
    el("chart").dataset.points = String(data[0].length);
  }
  function chartWidth() {
    return Math.max(300, el("chart").clientWidth);
  }
  function makeChart() {
    const pct = (u, v) => (v === null || v === undefined ? "–" : v.toFixed(1) + " %");
    const mem = (u, v) => (v === null || v === undefined ? "–" : bytes(v));
    chart = new uPlot({
      width: chartWidth(),
      height: 260,
      scales: {
        x: { time: true },
        cpu: { range: [0, 100] },
        mem: { range: (u, min, max) => [0, Math.max(memTotal, max || 1)] },
      },
      series: [
        {},
        { label: "CPU", scale: "cpu", stroke: "#2b6fd6", width: 2, value: pct },
        { label: "Memory used", scale: "mem", stroke: "#d9480f", width: 2, value: mem,
          fill: "rgba(217, 72, 15, 0.08)" },
      ],
      axes: [
        {},
        { scale: "cpu", values: (u, vals) => vals.map((v) => v + " %"), size: 55 },
        { scale: "mem", side: 1, values: (u, vals) => vals.map((v) => bytes(v)), size: 80,
          grid: { show: false } },
      ],
    }, data, el("chart"));
  }
  window.addEventListener("resize", () => {
    if (chart) chart.setSize({ width: chartWidth(), height: 260 });
  });

  el("where").textContent = location.host;
  document.title = "guestlink · " + location.host;
  connect();
  refresh();
  setInterval(refresh, REFRESH_MS);
  setInterval(() => {
    for (const r of rows.values()) tick(r);
  }, 1000);
})();
`;

export const FAVICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><circle cx="8" cy="8" r="6" fill="#1f9d55"/></svg>
`;
