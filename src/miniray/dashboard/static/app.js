// The miniray dashboard page: polls the JSON endpoints under /api/ and
// redraws. Every list is paged by the server; the page never holds more
// than one page of rows per table. Text from the cluster (task and actor
// names, errors, log files) is only ever set as textContent, never as HTML.
"use strict";

const POLL_MS = 1500;
const TIMELINE_EVERY = 3;          // polls between timeline refreshes
const PAGE = 25;
const HISTORY = 120;               // sparkline points kept per node and figure
const TASK_STATES = ["PENDING_ARGS_AVAIL", "PENDING_NODE_ASSIGNMENT",
  "SUBMITTED_TO_WORKER", "RUNNING", "FINISHED", "FAILED"];

const LOG_LINES = 2000;           // lines of a log kept on the page (and its first tail)
const LOG_READ = 256 * 1024;       // the server's largest read: further behind, jump to the tail

const pages = { tasks: 0, actors: 0, pgs: 0, jobs: 0, objects: 0, logs: 0 };
const totals = { tasks: 0, actors: 0, pgs: 0, jobs: 0, objects: 0, logs: 0 };
const history = new Map();         // node id -> {cpu: [], mem: [], store: []}
let polls = 0;
let timer = null;
let inFlight = false;

// --- helpers ------------------------------------------------------------------------
function el(tag, props, ...children) {
  const node = document.createElement(tag);
  if (props) {
    for (const [key, value] of Object.entries(props)) {
      if (key === "class") node.className = value;
      else if (key === "title") node.title = value;
      else node[key] = value;
    }
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function short(id) { return id ? id.slice(0, 8) : "-"; }

function idCell(id) { return el("td", { class: "id", title: id || "" }, short(id)); }

// Task ids share their job's prefix: show the start and the distinguishing end.
function taskIdCell(id) {
  return el("td", { class: "id", title: id }, id.length > 20 ? `${id.slice(0, 4)}…${id.slice(-12)}` : id);
}

function bytes(n) {
  if (n === null || n === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(Math.round(n))) + " " + units[i];
}

function amount(name, v) {
  if (name === "memory" || name === "object_store_memory") return bytes(v);
  return Number.isInteger(v) ? String(v) : v.toFixed(2);
}

function stateSpan(state) { return el("span", { class: "state-" + state }, state); }

function setRows(table, rows, emptyText, columns) {
  const body = document.querySelector(`#${table} tbody`);
  const fresh = document.createElement("tbody");
  if (!rows.length) {
    fresh.append(el("tr", null, el("td", { class: "muted", colSpan: columns }, emptyText)));
  } else {
    for (const row of rows) fresh.append(row);
  }
  body.replaceWith(fresh);
}

function badges(container, counts, order) {
  const box = document.getElementById(container);
  box.replaceChildren();
  const keys = Object.keys(counts).sort((a, b) => {
    const ia = order.indexOf(a), ib = order.indexOf(b);
    return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib);
  });
  for (const key of keys) {
    box.append(el("span", { class: "badge state-" + key, title: key },
      key, el("b", { class: "state-count" }, counts[key])));
  }
  if (!keys.length) box.append(el("span", { class: "muted small" }, "none yet"));
}

function sparkline(values, max, label) {
  const w = 90, h = 22;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("width", w); svg.setAttribute("height", h);
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("aria-label", label);
  const bg = document.createElementNS(svg.namespaceURI, "rect");
  bg.setAttribute("width", w); bg.setAttribute("height", h); bg.setAttribute("fill", "#f1f5f9");
  svg.append(bg);
  const pts = values.filter(v => v !== null && v !== undefined);
  if (pts.length > 1 && max > 0) {
    const line = document.createElementNS(svg.namespaceURI, "polyline");
    const step = w / (HISTORY - 1);
    const offset = w - (pts.length - 1) * step;
    line.setAttribute("points", pts.map((v, i) =>
      `${(offset + i * step).toFixed(1)},${(h - 1 - (Math.min(v, max) / max) * (h - 2)).toFixed(1)}`
    ).join(" "));
    line.setAttribute("fill", "none"); line.setAttribute("stroke", "#2563eb");
    line.setAttribute("stroke-width", "1.5");
    svg.append(line);
  }
  return svg;
}

function meter(series, max, text, label) {
  return el("span", { class: "meter" }, sparkline(series, max, label),
    el("span", { class: "value" }, text));
}

function remember(nodeId, key, value) {
  let h = history.get(nodeId);
  if (!h) { h = { cpu: [], mem: [], store: [] }; history.set(nodeId, h); }
  h[key].push(value === undefined ? null : value);
  if (h[key].length > HISTORY) h[key].shift();
  return h[key];
}

async function getJSON(path) {
  const response = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  if (response.status === 401) throw Object.assign(new Error("unauthorized"), { auth: true });
  if (!response.ok) {
    let message = response.statusText;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    throw new Error(`${path}: ${message}`);
  }
  return response.json();
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null) q.set(k, v);
  return q.toString();
}

// --- sections -----------------------------------------------------------------------
function renderCluster(status) {
  document.getElementById("cluster-summary").textContent =
    `${status.num_nodes_alive} node${status.num_nodes_alive === 1 ? "" : "s"} alive` +
    (status.num_nodes_dead ? `, ${status.num_nodes_dead} dead` : "") +
    ` · ${status.num_jobs_running ?? 0} job(s) running · miniray ${status.version}`;
  const box = document.getElementById("resources");
  box.replaceChildren();
  const names = Object.keys(status.resources_total)
    .filter(n => !n.startsWith("node:") && !n.includes("_group_"))
    .sort((a, b) => (a === "CPU" ? -1 : b === "CPU" ? 1 : a.localeCompare(b)));
  for (const name of names) {
    const total = status.resources_total[name];
    const used = status.resources_used[name] || 0;
    const bar = el("span", { class: "bar" }, el("span"));
    bar.firstChild.style.width = `${total ? Math.min(100, 100 * used / total) : 0}%`;
    box.append(el("span", { class: "res" }, bar,
      `${name} ${amount(name, used)} / ${amount(name, total)}`));
  }
}

function renderNodes(data) {
  const nodes = data.nodes;
  document.getElementById("nodes-count").textContent = `(${nodes.length})`;
  const rows = nodes.map(n => {
    const cpu = remember(n.node_id, "cpu", n.cpu_percent);
    const memPct = n.mem_total ? 100 * n.mem_used / n.mem_total : null;
    const mem = remember(n.node_id, "mem", memPct);
    const storePct = n.object_store_capacity ? 100 * (n.object_store_used || 0) / n.object_store_capacity : null;
    const store = remember(n.node_id, "store", storePct);
    const res = Object.keys(n.resources_total)
      .filter(k => !k.startsWith("node:") && !k.includes("_group_"))
      .sort((a, b) => (a === "CPU" ? -1 : b === "CPU" ? 1 : a.localeCompare(b)))
      .map(k => {
        const total = n.resources_total[k];
        const used = total - (n.resources_available[k] ?? total);
        return `${k} ${amount(k, Math.max(0, used))}/${amount(k, total)}`;
      }).join(", ");
    return el("tr", { className: "node-row" },
      el("td", { class: "id", title: n.node_id }, short(n.node_id), n.is_head_node ? " (head)" : ""),
      el("td", null, n.node_ip),
      el("td", null, stateSpan(n.state)),
      el("td", null, meter(cpu, 100, n.cpu_percent === null ? "-" :
        `${n.cpu_percent.toFixed(0)}%` + (n.cpu_count ? ` of ${n.cpu_count}` : ""), "CPU")),
      el("td", null, meter(mem, 100, n.mem_total ? `${bytes(n.mem_used)} / ${bytes(n.mem_total)}` : "-", "memory")),
      el("td", null, meter(store, 100, n.object_store_capacity ?
        `${bytes(n.object_store_used || 0)} / ${bytes(n.object_store_capacity)}` : "-", "object store")),
      el("td", null, n.num_workers ?? "-"),
      el("td", { class: "wrap small" }, res));
  });
  setRows("nodes", rows, "no nodes", 8);
}

function renderTaskSummary(data) {
  const c = data.cluster;
  const total = c.total_tasks + c.total_actor_tasks + c.total_actor_scheduled;
  document.getElementById("tasks-total").textContent =
    `(${total}: ${c.total_tasks} tasks, ${c.total_actor_tasks} actor calls, ` +
    `${c.total_actor_scheduled} actor creations)`;
  document.getElementById("tasks-dropped").textContent =
    c.num_dropped ? `${c.num_dropped} task events dropped` : "";
  badges("task-states", c.state_counts, TASK_STATES);
  const entries = Object.values(c.summary).slice(0, 20);
  const rows = entries.map(e => {
    const counts = e.state_counts;
    const sum = Object.values(counts).reduce((a, b) => a + b, 0);
    const parts = el("span", { class: "small" });
    for (const s of TASK_STATES.concat(Object.keys(counts).filter(k => !TASK_STATES.includes(k)))) {
      if (counts[s]) parts.append(el("span", { class: "state-" + s }, `${s} ${counts[s]}`), "  ");
    }
    return el("tr", null, el("td", { class: "task-name" }, e.func_or_class_name),
      el("td", { class: "small muted" }, e.type), el("td", null, sum), el("td", null, parts));
  });
  setRows("task-names", rows, "no tasks yet", 4);
  const more = c.num_functions - entries.length;
  document.getElementById("task-names-more").textContent =
    more > 0 ? `and ${more} more function(s)` : "";
}

function duration(t) {
  if (!t.start_time_ms) return "-";
  const end = t.end_time_ms || Date.now();
  const s = (end - t.start_time_ms) / 1000;
  return s < 1 ? `${(s * 1000).toFixed(0)} ms` : `${s.toFixed(2)} s`;
}

function renderTasks(data) {
  totals.tasks = data.total;
  const rows = data.tasks.map(t => el("tr", null,
    taskIdCell(t.task_id), el("td", null, t.attempt_number), el("td", null, t.name),
    el("td", null, stateSpan(t.state)), el("td", { class: "small muted" }, t.type),
    idCell(t.node_id), el("td", null, t.worker_pid ?? "-"), el("td", null, duration(t)),
    el("td", { class: "wrap small", title: t.error_message || "" }, t.error_type || "")));
  setRows("tasks", rows, "no task attempts match", 9);
  renderPager("tasks");
}

function renderActors(data) {
  totals.actors = data.total;
  const all = Object.values(data.state_counts).reduce((a, b) => a + b, 0);
  document.getElementById("actors-total").textContent = `(${all})`;
  badges("actor-states", data.state_counts, ["ALIVE", "PENDING_CREATION", "RESTARTING", "DEAD"]);
  const rows = data.actors.map(a => el("tr", { className: "actor-row" },
    idCell(a.actor_id), el("td", { class: "actor-class" }, a.class_name),
    el("td", null, a.name || ""), el("td", null, stateSpan(a.state)),
    el("td", null, a.num_restarts), el("td", null, a.pid || "-"), idCell(a.node_id),
    idCell(a.job_id)));
  setRows("actors", rows, "no actors", 8);
  renderPager("actors");
}

function renderPGs(data) {
  totals.pgs = data.total;
  document.getElementById("pgs-total").textContent = `(${data.total})`;
  const rows = data.placement_groups.map(g => el("tr", null,
    idCell(g.placement_group_id), el("td", null, g.name || ""), el("td", null, stateSpan(g.state)),
    el("td", null, g.strategy),
    el("td", { class: "wrap small" }, g.bundles.map(b =>
      Object.entries(b.unit_resources).map(([k, v]) => `${k}: ${amount(k, v)}`).join(" ") +
      (b.node_id ? ` @${short(b.node_id)}` : "")).join(" | "))));
  setRows("pgs", rows, "no placement groups", 5);
  renderPager("pgs");
}

function renderJobs(data) {
  totals.jobs = data.total;
  document.getElementById("jobs-total").textContent = `(${data.total})`;
  const rows = data.jobs.map(j => el("tr", null, el("td", { class: "id" }, j.job_id),
    el("td", null, stateSpan(j.status)), el("td", null, j.namespace), el("td", null, j.driver_pid)));
  setRows("jobs", rows, "no jobs", 4);
  renderPager("jobs");
}

function renderObjects(data) {
  totals.objects = data.total;
  document.getElementById("objects-note").textContent = data.note || "";
  document.getElementById("objects-total").textContent =
    data.note ? "" : `(${data.total}, ${bytes(data.total_size)})`;
  const stores = data.stores.map(s => el("tr", null, idCell(s.node_id),
    el("td", null, s.num_objects ?? "-"), el("td", null, bytes(s.used)),
    el("td", null, bytes(s.spilled)), el("td", null, bytes(s.capacity))));
  setRows("stores", stores, "no object stores", 5);
  const rows = data.objects.map(o => el("tr", null,
    el("td", { class: "id", title: o.object_id }, `${o.object_id.slice(0, 4)}…${o.object_id.slice(-12)}`),
    el("td", null, o.object_size >= 0 ? bytes(o.object_size) : "?"),
    el("td", { class: "small" }, o.reference_type || ""),
    idCell(o.node_id), el("td", { class: "small" }, o.pid ? `${o.type || ""} pid ${o.pid}` : (o.type || "")),
    el("td", null, stateSpan(o.task_status || "NIL"))));
  setRows("objects", rows, data.note ? "not available" : "no object references", 6);
  renderPager("objects");
}

function renderPager(name) {
  const box = document.querySelector(`.pager[data-for="${name}"]`);
  const total = totals[name];
  const last = Math.max(0, Math.ceil(total / PAGE) - 1);
  if (pages[name] > last) pages[name] = last;
  box.replaceChildren();
  if (total <= PAGE) return;
  const prev = el("button", { type: "button", disabled: pages[name] === 0 }, "‹ prev");
  const next = el("button", { type: "button", disabled: pages[name] >= last }, "next ›");
  prev.addEventListener("click", () => { pages[name]--; refresh(); });
  next.addEventListener("click", () => { pages[name]++; refresh(); });
  const from = pages[name] * PAGE + 1, to = Math.min(total, (pages[name] + 1) * PAGE);
  box.append(prev, el("span", null, `${from}–${to} of ${total}`), next);
}

// --- logs -------------------------------------------------------------------------
// The last `max` lines of `text` (a last line without its newline counts).
function keepLastLines(text, max) {
  if (max <= 0) return "";
  let i = text.endsWith("\n") ? text.length - 1 : text.length;
  for (let n = 0; n < max; n++) {
    if (i <= 0) return text;
    i = text.lastIndexOf("\n", i - 1);
    if (i < 0) return text;
  }
  return text.slice(i + 1);
}

function logFilter() {
  const form = document.getElementById("log-filter");
  return { node_id: form.node_id.value, name: form.name.value.trim() };
}

function logHash(nodeId, filename) {
  return `#log=${encodeURIComponent(nodeId)}/${encodeURIComponent(filename)}`;
}

let logNodes = "";                 // the node ids the filter's options were made from

function renderLogs(data) {
  totals.logs = data.total;
  const files = data.nodes.reduce((a, n) => a + n.num_files, 0);
  document.getElementById("logs-total").textContent =
    `(${files} file${files === 1 ? "" : "s"} on ${data.nodes.length} node${data.nodes.length === 1 ? "" : "s"})`;
  document.getElementById("logs-errors").textContent = data.nodes.filter(n => n.error)
    .map(n => `node ${short(n.node_id)}: ${n.error}`).join("; ");
  const ids = data.nodes.map(n => n.node_id).join(",");
  if (ids !== logNodes) {            // rebuild the node filter only when the nodes change
    logNodes = ids;
    const select = document.getElementById("log-filter").node_id;
    const chosen = select.value;
    select.replaceChildren(el("option", { value: "" }, "any"), ...data.nodes.map(n =>
      el("option", { value: n.node_id }, `${short(n.node_id)} ${n.node_ip}${n.is_head_node ? " (head)" : ""}`)));
    select.value = data.nodes.some(n => n.node_id === chosen) ? chosen : "";
  }
  const rows = data.files.map(f => el("tr", {
    className: "log-row" + (logView.nodeId === f.node_id && logView.filename === f.filename ? " selected" : "") },
    el("td", { class: "id", title: `${f.node_id} (${f.node_ip})` }, short(f.node_id)),
    el("td", { class: "log-file" }, el("a", { href: logHash(f.node_id, f.filename) }, f.filename)),
    el("td", { class: "small muted" }, f.category), el("td", null, bytes(f.size)),
    el("td", { class: "small" }, f.mtime_ms ? new Date(f.mtime_ms).toLocaleString() : "-")));
  setRows("logs", rows, "no log files match", 5);
  renderPager("logs");
}

// The open log: its text so far (at most LOG_LINES lines) and where to read on.
const logView = { nodeId: null, filename: null, offset: 0, text: "", busy: false, generation: 0 };

function logInfo(text, error) {
  const info = document.getElementById("log-info");
  info.textContent = text;
  info.className = error ? "small error-text" : "muted small";
}

function showLogText(scrollToEnd) {
  const pre = document.getElementById("log-text");
  const atEnd = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 40;
  logView.text = keepLastLines(logView.text, LOG_LINES);
  pre.textContent = logView.text;                   // text, never HTML
  if (scrollToEnd || atEnd) pre.scrollTop = pre.scrollHeight;
}

function logPath(params) {
  return "/api/logs/read?" + query({ node_id: logView.nodeId, filename: logView.filename, ...params });
}

async function readLog(params, generation) {
  const reply = await getJSON(logPath(params));
  if (generation !== logView.generation) return null;   // another file was opened since
  return reply;
}

// The last LOG_LINES lines; `before` (following, far behind): the text read
// up to byte `from`, kept ahead of a note of what was skipped.
async function tailLog(generation, before, from) {
  // After a jump, half as many lines, so the note of what was skipped stays in view.
  const reply = await readLog({ tail: before === undefined ? LOG_LINES : LOG_LINES / 2 }, generation);
  if (!reply) return;
  const skipped = before === undefined ? "" :
    `${before.endsWith("\n") || !before ? "" : "\n"}[… ${bytes(Math.max(0, reply.offset - from))} skipped …]\n`;
  logView.text = (before === undefined ? "" : logView.text + before + skipped) + reply.text;
  logView.offset = reply.next_offset;
  showLogText(before === undefined);
  logInfo(`${bytes(reply.file_size)}` + (reply.skipped ? " (its last read starts mid-line: that line is left out)" : ""));
}

async function openLog(nodeId, filename) {
  const generation = ++logView.generation;
  Object.assign(logView, { nodeId, filename, offset: 0, text: "", busy: true });
  document.getElementById("log-view").hidden = false;
  document.getElementById("log-title").textContent = `${filename} on node ${short(nodeId)}`;
  document.getElementById("log-text").textContent = "";
  logInfo("loading…");
  for (const row of document.querySelectorAll("#logs tr.log-row")) row.classList.remove("selected");
  try {
    await tailLog(generation);
  } catch (err) {
    if (generation === logView.generation) logInfo(err.message, true);
  } finally {
    if (generation === logView.generation) logView.busy = false;
  }
}

function closeLog() {
  logView.generation++;
  Object.assign(logView, { nodeId: null, filename: null, offset: 0, text: "" });
  document.getElementById("log-view").hidden = true;
  document.getElementById("log-text").textContent = "";
  if (location.hash.startsWith("#log=")) history.replaceState(null, "", location.pathname);
}

// One poll of the open log while "follow" is on: what was written since.
async function followLog() {
  if (!logView.filename || logView.busy || !document.getElementById("log-follow").checked) return;
  logView.busy = true;
  const generation = logView.generation;
  try {
    const reply = await readLog({ offset: logView.offset }, generation);
    if (!reply) return;
    if (reply.reset) logView.text = "[the file was truncated: from its start]\n";
    const behind = reply.file_size - reply.next_offset;
    if (behind > LOG_READ) {          // written faster than we read: jump to its end
      await tailLog(generation, reply.text, reply.next_offset);
      return;
    }
    if (reply.text || reply.reset) {
      logView.text += reply.text;
      showLogText(false);
    }
    logView.offset = reply.next_offset;
    logInfo(`${bytes(reply.file_size)} · following`);
  } catch (err) {
    if (generation === logView.generation) logInfo(err.message, true);
  } finally {
    if (generation === logView.generation) logView.busy = false;
  }
}

// "#log=<node id>/<file name>" opens that log (the file list's links set it).
function openLogFromHash() {
  if (!location.hash.startsWith("#log=")) return;
  const rest = location.hash.slice("#log=".length);
  const slash = rest.indexOf("/");
  if (slash < 0) return;
  let nodeId, filename;
  try {
    nodeId = decodeURIComponent(rest.slice(0, slash));
    filename = decodeURIComponent(rest.slice(slash + 1));
  } catch (e) { return; }
  if (nodeId !== logView.nodeId || filename !== logView.filename) openLog(nodeId, filename);
}

function setupLogs() {
  const form = document.getElementById("log-filter");
  form.addEventListener("input", () => { pages.logs = 0; refresh(); });
  form.addEventListener("submit", ev => ev.preventDefault());
  document.getElementById("log-close").addEventListener("click", closeLog);
  document.getElementById("log-follow").addEventListener("change", ev => {
    logInfo(ev.target.checked ? "following" : "paused");
    if (ev.target.checked) followLog();
  });
  window.addEventListener("hashchange", openLogFromHash);
  openLogFromHash();
}

// --- timeline -----------------------------------------------------------------------
let timelineSlices = [];
let timelineLayout = null;

function colorFor(name) {
  let h = 0;
  for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
  return `hsl(${30 + h % 290}, 55%, 55%)`;      // no reds: red means failed
}

function renderTimeline(events) {
  timelineSlices = events;
  const canvas = document.getElementById("timeline");
  const empty = document.getElementById("timeline-empty");
  if (!events.length) {
    empty.textContent = "No finished task runs yet.";
    canvas.height = 0;
    timelineLayout = null;
    return;
  }
  empty.textContent = "";
  const rows = [...new Set(events.map(e => `${e.pid} · ${e.tid}`))].sort();
  const rowOf = new Map(rows.map((r, i) => [r, i]));
  const t0 = Math.min(...events.map(e => e.ts));
  const t1 = Math.max(...events.map(e => e.ts + e.dur));
  const labelW = 190, rowH = 18, pad = 4;
  const width = canvas.clientWidth || 800;
  const ratio = window.devicePixelRatio || 1;
  const height = rows.length * rowH + 22;
  canvas.width = width * ratio; canvas.height = height * ratio;
  canvas.style.height = `${height}px`;
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  ctx.clearRect(0, 0, width, height);
  ctx.font = "11px system-ui, sans-serif";
  const span = Math.max(1, t1 - t0);
  const scale = (width - labelW - pad) / span;
  rows.forEach((r, i) => {
    ctx.fillStyle = i % 2 ? "#f8fafc" : "#ffffff";
    ctx.fillRect(0, i * rowH, width, rowH);
    ctx.fillStyle = "#475569";
    ctx.fillText(r, 4, i * rowH + 13);
  });
  for (const e of events) {
    const y = rowOf.get(`${e.pid} · ${e.tid}`) * rowH + 2;
    const x = labelW + (e.ts - t0) * scale;
    ctx.fillStyle = e.args.state === "FAILED" ? "#dc2626" : colorFor(e.name);
    ctx.fillRect(x, y, Math.max(1, e.dur * scale), rowH - 4);
  }
  ctx.fillStyle = "#64748b";
  ctx.fillText(`${(span / 1e6).toFixed(2)} s shown (${events.length} runs)`, labelW, rows.length * rowH + 15);
  timelineLayout = { t0, scale, labelW, rowH, rows: rowOf };
}

function setupTimeline() {
  const canvas = document.getElementById("timeline");
  const tip = document.getElementById("timeline-tip");
  canvas.addEventListener("mousemove", ev => {
    if (!timelineLayout) return;
    const rect = canvas.getBoundingClientRect();
    const x = ev.clientX - rect.left, y = ev.clientY - rect.top;
    const { t0, scale, labelW, rowH, rows } = timelineLayout;
    const row = Math.floor(y / rowH);
    const t = t0 + (x - labelW) / scale;
    const hit = timelineSlices.find(e => rows.get(`${e.pid} · ${e.tid}`) === row &&
      t >= e.ts && t <= e.ts + Math.max(e.dur, 2 / scale));
    if (!hit) { tip.hidden = true; return; }
    tip.textContent = `${hit.name} · ${(hit.dur / 1000).toFixed(1)} ms · ${hit.args.state}`;
    tip.style.left = `${Math.min(x + 10, rect.width - 260)}px`;
    tip.style.top = `${y + 12}px`;
    tip.hidden = false;
  });
  canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
  document.getElementById("timeline-download").addEventListener("click", async ev => {
    ev.preventDefault();
    const events = await getJSON("/api/timeline");
    const blob = new Blob([JSON.stringify(events)], { type: "application/json" });
    const link = el("a", { href: URL.createObjectURL(blob), download: "miniray-timeline.json" });
    document.body.append(link); link.click(); link.remove();
  });
}

// --- polling ------------------------------------------------------------------------
function taskFilter() {
  const form = document.getElementById("task-filter");
  return { state: form.state.value, name: form.name.value.trim(), job_id: form.job_id.value.trim() };
}

async function refresh() {
  if (inFlight) return;
  inFlight = true;
  const status = document.getElementById("status");
  try {
    const wantTimeline = polls % TIMELINE_EVERY === 0;
    const [cluster, nodes, summary, tasks, actors, pgs, jobs, objects, logs, timeline] = await Promise.all([
      getJSON("/api/cluster_status"),
      getJSON("/api/nodes"),
      getJSON("/api/tasks/summary"),
      getJSON("/api/tasks?" + query({ limit: PAGE, offset: pages.tasks * PAGE, ...taskFilter() })),
      getJSON("/api/actors?" + query({ limit: PAGE, offset: pages.actors * PAGE })),
      getJSON("/api/placement_groups?" + query({ limit: PAGE, offset: pages.pgs * PAGE })),
      getJSON("/api/jobs?" + query({ limit: PAGE, offset: pages.jobs * PAGE })),
      getJSON("/api/objects?" + query({ limit: PAGE, offset: pages.objects * PAGE })),
      getJSON("/api/logs?" + query({ limit: PAGE, offset: pages.logs * PAGE, ...logFilter() })),
      wantTimeline ? getJSON("/api/timeline?limit=2000") : Promise.resolve(null),
    ]);
    renderCluster(cluster);
    renderNodes(nodes);
    renderTaskSummary(summary);
    renderTasks(tasks);
    renderActors(actors);
    renderPGs(pgs);
    renderJobs(jobs);
    renderObjects(objects);
    renderLogs(logs);
    if (timeline) renderTimeline(timeline);
    polls++;
    document.getElementById("auth-error").hidden = true;
    status.className = "status";
    status.textContent = "updated " + new Date().toLocaleTimeString();
  } catch (err) {
    status.className = "status error";
    if (err.auth) {
      document.getElementById("auth-error").hidden = false;
      status.textContent = "not authorized";
    } else {
      status.textContent = "cannot reach the cluster: " + err.message;
    }
  } finally {
    inFlight = false;
  }
}

function schedule() {
  clearInterval(timer);
  timer = setInterval(() => { if (!document.hidden) { refresh(); followLog(); } }, POLL_MS);
}

if (typeof module !== "undefined") module.exports = { keepLastLines };   // unit tests (node)

if (typeof document !== "undefined") document.addEventListener("DOMContentLoaded", () => {
  setupTimeline();
  setupLogs();
  const form = document.getElementById("task-filter");
  form.addEventListener("input", () => { pages.tasks = 0; refresh(); });
  form.addEventListener("submit", ev => ev.preventDefault());
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
  refresh();
  schedule();
});
