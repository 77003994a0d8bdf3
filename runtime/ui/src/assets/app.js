// Squall's web UI: draws the REST API (/api/v1/...) and refreshes itself.
// Routes (in the URL's hash): #/ the cluster, #/topology/NAME, #/topology/NAME/component/ID.
"use strict";

const REFRESH_MS = 2000;
const SECRET_KEY = "squall-secret";
// The previous page of each topology and when it came, for rates.
const previous = {};

function esc(s) {
  return String(s == null ? "" : s).replace(/[&<>"']/g, (c) =>
    ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function human(x) {
  if (x < 1e3) return x.toFixed(x < 10 && x % 1 ? 1 : 0);
  if (x < 1e6) return (x / 1e3).toFixed(1) + "k";
  return (x / 1e6).toFixed(2) + "M";
}

function ms(x) {
  return x < 1 ? (x * 1000).toFixed(0) + "µs" : x < 1000 ? x.toFixed(1) + "ms" : (x / 1000).toFixed(2) + "s";
}

function headers() {
  const secret = sessionStorage.getItem(SECRET_KEY);
  return secret ? { "x-squall-secret": secret } : {};
}

function askSecret(why) {
  const s = window.prompt(why + "\nThe cluster secret ([cluster] secret of the cluster file):");
  if (s) sessionStorage.setItem(SECRET_KEY, s);
  return !!s;
}

async function get(path) {
  let r = await fetch(path, { headers: headers() });
  if (r.status === 401 && askSecret("Reading this cluster needs its secret.")) {
    r = await fetch(path, { headers: headers() });
  }
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

async function act(name, operation, body) {
  if (!sessionStorage.getItem(SECRET_KEY) && !askSecret("Actions need the cluster secret.")) return;
  let r = await fetch(`/api/v1/topology/${encodeURIComponent(name)}/${operation}`, {
    method: "POST",
    headers: Object.assign({ "content-type": "application/json" }, headers()),
    body: JSON.stringify(body || {}),
  });
  if (r.status === 401) {
    sessionStorage.removeItem(SECRET_KEY);
    if (!askSecret("The secret was refused.")) return;
    return act(name, operation, body);
  }
  const reply = await r.json();
  window.alert(r.ok ? `${operation}: ${reply.status}` : `${operation} refused: ${reply.error}`);
  refresh();
}

function table(columns, rows, attrs) {
  const head = columns.map((c) => `<th class="${c.text ? "text" : ""}">${esc(c.title)}</th>`).join("");
  const body = rows
    .map((r) => `<tr ${attrs ? attrs(r) : ""}>${columns.map((c) => `<td class="${c.cls || ""}">${c.cell(r)}</td>`).join("")}</tr>`)
    .join("");
  return `<table><thead><tr>${head}</tr></thead><tbody>${body || `<tr><td class="muted" colspan="${columns.length}">none</td></tr>`}</tbody></table>`;
}

function link(topology, component) {
  const t = encodeURIComponent(topology);
  return component == null ? `#/topology/${t}` : `#/topology/${t}/component/${encodeURIComponent(component)}`;
}

async function clusterPage() {
  const [summary, supervisors, topologies] = await Promise.all([
    get("/api/v1/cluster/summary"),
    get("/api/v1/supervisor/summary"),
    get("/api/v1/topology/summary"),
  ]);
  const card = (label, value) => `<div class="card"><span class="muted">${label}</span><b>${esc(value)}</b></div>`;
  return `<h2>Cluster</h2><div class="cards" id="cluster-summary" data-supervisors="${summary.supervisors}" data-slots-free="${summary.slotsFree}">
    ${card("supervisors", summary.supervisors)}${card("slots used", summary.slotsUsed + " / " + summary.slotsTotal)}
    ${card("slots free", summary.slotsFree)}${card("topologies", summary.topologies)}${card("tasks", summary.tasksTotal)}
    ${card("worker restarts", summary.workerRestarts)}</div>
  <h2>Topologies</h2>${table(
    [
      { title: "name", text: true, cell: (t) => `<a href="${link(t.name)}">${esc(t.name)}</a>` },
      { title: "status", cell: (t) => `<span class="status-${esc(t.status)}">${esc(t.status)}</span>` },
      { title: "uptime", cell: (t) => esc(t.uptime) },
      { title: "workers", cell: (t) => t.workersTotal },
      { title: "tasks", cell: (t) => t.tasksTotal },
    ],
    topologies.topologies,
    (t) => `data-topology="${esc(t.name)}"`,
  )}
  <h2>Supervisors</h2>${table(
    [
      { title: "id", text: true, cell: (s) => esc(s.id) },
      { title: "host", cell: (s) => esc(s.host) },
      { title: "slots", cell: (s) => s.slotsTotal },
      { title: "used", cell: (s) => s.slotsUsed },
      { title: "alive", cell: (s) => (s.alive ? "yes" : `<span class="error">lost</span>`) },
      { title: "last heartbeat", cell: (s) => s.lastHeartbeatSeconds.toFixed(1) + "s ago" },
    ],
    supervisors.supervisors,
  )}`;
}

// Per component: tuples emitted per second between the two latest pages of the topology
// (timed by the server's clock, so a slow or throttled page still shows true rates); on the
// first page, the mean since the topology started.
function rates(page) {
  const now = page.sampledAtMs;
  const emitted = {};
  for (const s of page.spouts) emitted[s.spoutId] = s.emitted;
  for (const b of page.bolts) emitted[b.boltId] = b.emitted;
  const prev = previous[page.name];
  if (prev && now - prev.at < 250) return prev.rates;
  const out = {};
  for (const id in emitted) {
    if (prev && prev.emitted[id] != null && now > prev.at) {
      out[id] = Math.max(0, (emitted[id] - prev.emitted[id]) / ((now - prev.at) / 1000));
    } else {
      // No earlier page yet: the mean since the topology started.
      out[id] = page.uptimeSeconds > 0 ? emitted[id] / page.uptimeSeconds : null;
    }
  }
  previous[page.name] = { at: now, emitted, rates: out };
  return out;
}

function capacityColour(c) {
  const hue = Math.round(120 * (1 - Math.min(1, Math.max(0, c))));
  return `hsl(${hue}, 70%, 78%)`;
}

function graph(page, rate) {
  const nodes = {};
  for (const s of page.spouts) nodes[s.spoutId] = { id: s.spoutId, spout: true, s };
  for (const b of page.bolts) nodes[b.boltId] = { id: b.boltId, spout: false, s: b };
  // Columns by the longest path from a spout.
  const depth = {};
  for (const id in nodes) depth[id] = 0;
  for (let round = 0; round < Object.keys(nodes).length; round++) {
    for (const e of page.edges) {
      if (nodes[e.from] && nodes[e.to] && e.from !== e.to && depth[e.to] < depth[e.from] + 1) depth[e.to] = depth[e.from] + 1;
    }
  }
  const columns = [];
  for (const id in nodes) (columns[depth[id]] = columns[depth[id]] || []).push(id);
  const W = 190, H = 64, GX = 110, GY = 30;
  const rows = Math.max(1, ...columns.map((c) => (c ? c.length : 0)));
  const width = columns.length * (W + GX) + 20, height = rows * (H + GY) + 20;
  columns.forEach((col, x) => (col || []).forEach((id, y) => {
    nodes[id].x = 20 + x * (W + GX);
    nodes[id].y = 20 + y * (H + GY) + ((rows - col.length) * (H + GY)) / 2;
  }));
  let svg = `<svg class="graph" viewBox="0 0 ${width} ${height}" style="max-height:${height}px" id="topology-graph">`;
  svg += `<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#8a96a3"/></marker></defs>`;
  for (const e of page.edges) {
    const a = nodes[e.from], b = nodes[e.to];
    if (!a || !b) continue;
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
    const r = rate[e.from];
    const label = r == null ? "…" : human(r) + "/s";
    svg += `<g class="edge" data-from="${esc(e.from)}" data-to="${esc(e.to)}" data-stream="${esc(e.stream)}" data-rate="${r == null ? "" : r.toFixed(1)}">
      <path d="M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}" marker-end="url(#arrow)"/>
      <text x="${mx}" y="${(y1 + y2) / 2 - 6}" text-anchor="middle">${esc(label)}${e.stream !== "default" ? " · " + esc(e.stream) : ""}</text>
      <title>${esc(e.from)} → ${esc(e.to)} (${esc(e.stream)}, ${esc(e.grouping)})</title></g>`;
  }
  for (const id in nodes) {
    const n = nodes[id], s = n.s;
    const fill = n.spout ? "#dbe7fb" : capacityColour(s.capacity);
    const line2 = n.spout ? `emitted ${human(s.emitted)} · acked ${human(s.acked)}` : `executed ${human(s.executed)} · cap ${s.capacity.toFixed(2)}`;
    const line3 = n.spout ? `complete ${ms(s.completeLatency)} · failed ${human(s.failed)}` : `exec ${ms(s.executeLatency)} · failed ${human(s.failed)}`;
    svg += `<a href="${link(page.name, id)}"><g class="node" data-component="${esc(id)}" data-role="${n.spout ? "spout" : "bolt"}" data-emitted="${s.emitted}" data-executed="${s.executed || 0}" data-capacity="${n.spout ? "" : s.capacity.toFixed(3)}">
      <rect x="${n.x}" y="${n.y}" width="${W}" height="${H}" rx="7" fill="${fill}"/>
      <text class="id" x="${n.x + 10}" y="${n.y + 18}">${esc(id)} <tspan class="muted">×${s.tasks}</tspan></text>
      <text x="${n.x + 10}" y="${n.y + 36}">${esc(line2)}</text>
      <text x="${n.x + 10}" y="${n.y + 53}">${esc(line3)}</text>
      ${s.lastError ? `<circle cx="${n.x + W - 12}" cy="${n.y + 12}" r="5" fill="#d92d20"><title>${esc(s.lastError)}</title></circle>` : ""}
    </g></a>`;
  }
  return svg + `</svg><div class="legend muted">Edges: tuples per second emitted by the upstream component. Bolts coloured by capacity: green idle, red saturated.</div>`;
}

function split(s) {
  const pc = (x) => Math.round((x || 0) * 100);
  return `<span title="busy / idle / backpressured">${pc(s.busy)}/${pc(s.idle)}/${pc(s.backpressured)}%</span>`;
}

function failedBy(s) {
  return (s.failedBy || [])
    .map((f) => `<span data-failed-by="${esc(f.component)}" data-cause="${esc(f.cause)}">${esc(f.component || "?")}: ${esc(f.cause)} ${f.count}</span>`)
    .join(" · ");
}

function errorCell(s) {
  return s.lastError ? `${esc(s.lastError)} <span class="muted">(${s.errors} errors)</span>` : s.errors ? `${s.errors} errors` : "";
}

async function topologyPage(name) {
  const page = await get(`/api/v1/topology/${encodeURIComponent(name)}`);
  const rate = rates(page);
  const r = (id) => (rate[id] == null ? "…" : human(rate[id]) + "/s");
  return `<h2>Topology <span data-name="${esc(page.name)}">${esc(page.name)}</span>
      <span class="status-${esc(page.status)}" id="topology-status">${esc(page.status)}</span></h2>
    <div class="muted">up ${esc(page.uptime)} · ${page.workersTotal} workers · ${page.tasksTotal} tasks · message timeout ${page.msgTimeout}s</div>
    <div class="actions">
      <button data-action="activate">Activate</button><button data-action="deactivate">Deactivate</button>
      <button data-action="rebalance">Rebalance…</button><button data-action="kill" class="danger">Kill…</button>
    </div>
    ${graph(page, rate)}
    <h2>Windows</h2>${table(
      [
        { title: "window", text: true, cell: (w) => esc(w.windowPretty) },
        { title: "emitted", cell: (w) => w.emitted },
        { title: "transferred", cell: (w) => w.transferred },
        { title: "acked", cell: (w) => w.acked },
        { title: "failed", cell: (w) => w.failed },
        { title: "complete p50", cell: (w) => ms(w.completeLatency) },
      ],
      page.topologyStats || [],
      (w) => `data-window="${esc(w.window)}"`,
    )}
    <h2>Spouts</h2>${table(
      [
        { title: "id", text: true, cell: (s) => `<a href="${link(page.name, s.spoutId)}">${esc(s.spoutId)}</a>` },
        { title: "kind", cell: (s) => esc(s.kind) },
        { title: "tasks", cell: (s) => s.tasks },
        { title: "rate", cell: (s) => r(s.spoutId) },
        { title: "emitted", cell: (s) => s.emitted },
        { title: "transferred", cell: (s) => s.transferred },
        { title: "acked", cell: (s) => s.acked },
        { title: "failed", cell: (s) => s.failed },
        { title: "complete p50", cell: (s) => ms(s.completeLatency) },
        { title: "p99", cell: (s) => ms(s.completeLatencyP99) },
        { title: "busy/idle/bp", cell: split },
        { title: "failed by", text: true, cls: "text", cell: failedBy },
        { title: "last error", cls: "err", cell: errorCell },
      ],
      page.spouts,
      (s) => `data-spout="${esc(s.spoutId)}" data-emitted="${s.emitted}" data-acked="${s.acked}"`,
    )}
    <h2>Bolts</h2>${table(
      [
        { title: "id", text: true, cell: (b) => `<a href="${link(page.name, b.boltId)}">${esc(b.boltId)}</a>` },
        { title: "kind", cell: (b) => esc(b.kind) },
        { title: "tasks", cell: (b) => b.tasks },
        { title: "rate", cell: (b) => r(b.boltId) },
        { title: "executed", cell: (b) => b.executed },
        { title: "emitted", cell: (b) => b.emitted },
        { title: "acked", cell: (b) => b.acked },
        { title: "failed", cell: (b) => b.failed },
        { title: "capacity", cell: (b) => b.capacity.toFixed(3) },
        { title: "execute", cell: (b) => ms(b.executeLatency) },
        { title: "queued", cell: (b) => b.queueDepth },
        { title: "busy/idle/bp", cell: split },
        { title: "last error", cls: "err", cell: errorCell },
      ],
      page.bolts,
      (b) => `data-bolt="${esc(b.boltId)}" data-executed="${b.executed}"`,
    )}
    <h2>Workers</h2>${table(
      [
        { title: "worker", text: true, cell: (w) => w.worker },
        { title: "supervisor", cell: (w) => esc(w.supervisorId) },
        { title: "address", cell: (w) => esc(w.host) + (w.port ? ":" + w.port : "") },
        { title: "reporting", cell: (w) => (w.reporting ? "yes" : `<span class="error">no</span>`) },
        { title: "restarts", cell: (w) => (w.restarts ? `<span class="error" data-restarts="${w.restarts}">${w.restarts}</span>` : "0") },
        { title: "components", text: true, cls: "text", cell: (w) => esc(w.components.join(", ")) },
        { title: "tasks", text: true, cls: "text", cell: (w) => esc(w.tasks.join(" ")) },
      ],
      page.workers,
    )}`;
}

async function componentPage(name, id) {
  const c = await get(`/api/v1/topology/${encodeURIComponent(name)}/component/${encodeURIComponent(id)}`);
  const s = c.stats;
  return `<h2>${esc(c.componentType)} <span data-component-page="${esc(c.id)}">${esc(c.id)}</span> of <a href="${link(name)}">${esc(name)}</a></h2>
    <div class="muted">${esc(c.kind)} · ${c.tasks} tasks · inputs ${esc(c.inputs.map((e) => e.from + " (" + e.grouping + ")").join(", ") || "none")}</div>
    <div class="cards">${["emitted", "transferred", "executed", "acked", "failed", "errors"].filter((k) => s[k] != null)
      .map((k) => `<div class="card"><span class="muted">${k}</span><b>${s[k]}</b></div>`).join("")}
      <div class="card"><span class="muted">busy/idle/backpressured</span><b>${split(s)}</b></div></div>
    ${(s.failedBy || []).length ? `<h2>Failed trees</h2>${table(
      [
        { title: "by", text: true, cell: (f) => esc(f.component || "?") },
        { title: "cause", cell: (f) => esc(f.cause) },
        { title: "trees", cell: (f) => f.count },
      ],
      s.failedBy,
      (f) => `data-failed-by="${esc(f.component)}"`,
    )}` : ""}
    <h2>Tasks</h2>${table(
      [
        { title: "task", text: true, cell: (e) => e.task },
        { title: "worker", cell: (e) => (e.worker == null ? "" : e.worker) },
        { title: "supervisor", cell: (e) => esc(e.supervisorId) },
        { title: "address", cell: (e) => esc(e.host) + (e.port ? ":" + e.port : "") },
        { title: "emitted", cell: (e) => e.emitted },
        { title: "executed", cell: (e) => e.executed },
        { title: "acked", cell: (e) => e.acked },
        { title: "failed", cell: (e) => e.failed },
        { title: "capacity", cell: (e) => e.capacity.toFixed(3) },
        { title: "execute", cell: (e) => ms(e.executeLatency) },
        { title: "queued", cell: (e) => e.queueDepth },
        { title: "errors", cell: (e) => e.errors },
      ],
      c.executorStats,
      (e) => `data-task="${e.task}"`,
    )}
    <h2>Errors</h2>${table(
      [
        { title: "time", text: true, cell: (e) => new Date(e.errorTime * 1000).toISOString() },
        { title: "task", cell: (e) => e.task },
        { title: "worker", cell: (e) => (e.worker == null ? "" : e.worker) },
        { title: "error", cls: "err", cell: (e) => esc(e.error) },
      ],
      c.componentErrors,
    )}`;
}

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "topology" && parts[1] && parts[2] === "component" && parts[3]) return { name: parts[1], component: parts[3] };
  if (parts[0] === "topology" && parts[1]) return { name: parts[1] };
  return {};
}

let refreshing = false;
async function refresh() {
  if (refreshing) return;
  refreshing = true;
  const r = route();
  const app = document.getElementById("app");
  try {
    const html = r.component ? await componentPage(r.name, r.component) : r.name ? await topologyPage(r.name) : await clusterPage();
    app.innerHTML = html;
    document.getElementById("crumbs").innerHTML = r.name
      ? `/ <a href="${link(r.name)}">${esc(r.name)}</a>` + (r.component ? ` / ${esc(r.component)}` : "")
      : "";
    document.getElementById("refreshed").textContent = "updated " + new Date().toLocaleTimeString();
    app.setAttribute("data-loaded", "true");
  } catch (e) {
    app.innerHTML = `<p class="error" id="load-error">${esc(e.message)}</p>`;
  } finally {
    refreshing = false;
  }
}

document.addEventListener("click", (ev) => {
  const button = ev.target.closest("button[data-action]");
  if (!button) return;
  const name = route().name;
  const action = button.getAttribute("data-action");
  if (action === "kill") {
    const wait = window.prompt(`Kill ${name}? Seconds to let in-flight tuples drain (empty: the message timeout):`, "");
    if (wait === null) return;
    act(name, "kill", wait.trim() ? { wait_secs: Number(wait) } : {});
  } else if (action === "rebalance") {
    const workers = window.prompt("Workers (empty: unchanged):", "");
    if (workers === null) return;
    const par = window.prompt("Parallelism, as COMPONENT=N,… (empty: unchanged):", "");
    if (par === null) return;
    const parallelism = {};
    for (const kv of par.split(",").map((s) => s.trim()).filter(Boolean)) {
      const [k, v] = kv.split("=");
      parallelism[k.trim()] = Number(v);
    }
    const body = { parallelism };
    if (workers.trim()) body.workers = Number(workers);
    act(name, "rebalance", body);
  } else {
    act(name, action, {});
  }
});

window.addEventListener("hashchange", refresh);
refresh();
setInterval(refresh, REFRESH_MS);
