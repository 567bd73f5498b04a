// docproc dashboard: plain JavaScript, no build step, same-origin API calls
// (the session cookie authenticates them; changes carry x-docproc-ui).
"use strict";

const $ = (sel) => document.querySelector(sel);
const HEADERS = { "x-docproc-ui": "1" };
const FINAL = new Set(["completed", "failed", "cancelled"]);
const jobs = new Map();      // job id -> status body
const history = new Map();   // job id -> [{status, at, attempts, error}]
const samples = new Map();   // job type -> [{completed, at}] over the last minute
let lastEventId = null;
let detailId = null;

function text(s) { return s === null || s === undefined ? "" : String(s); }
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("data-")) e.setAttribute(k, v); else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(text(c)));
  return e;
}
function say(msg, error = true) {
  $("#message").textContent = msg || "";
  $("#message").className = error ? "error" : "info";
}

async function api(method, path, body) {
  const r = await fetch(path, { method, headers: HEADERS, body, credentials: "same-origin" });
  if (r.status === 401) { location.href = "/ui"; throw new Error("signed out"); }
  const j = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(`${r.status} ${j.code || ""}: ${j.message || ""}`);
  return j;
}

// Queues: depth by state, completions per minute between two refreshes.
async function loadStats() {
  const s = await api("GET", "/api/queue/stats");
  $("#backend").textContent = `backend: ${s.backend}`;
  const now = Date.now();
  const body = $("#queues tbody");
  body.replaceChildren();
  for (const t of s.job_types) {
    const sum = (k) => t.priorities.reduce((a, p) => a + (p[k] || 0), 0);
    const done = t.counters.completed;
    // Completions per minute over the last minute of samples.
    const list = (samples.get(t.job_type) || []).filter((x) => now - x.at <= 60000);
    list.push({ completed: done, at: now });
    samples.set(t.job_type, list);
    const first = list[0];
    const rate = now > first.at ? ((done - first.completed) * 60000 / Math.max(now - first.at, 1000)).toFixed(1) : "";
    const w = s.workers && s.workers[t.job_type];
    body.append(el("tr", { "data-type": t.job_type },
      el("td", {}, t.job_type), el("td", { class: "num" }, sum("pending")), el("td", { class: "num queued" }, sum("queued")),
      el("td", { class: "num" }, sum("processing")), el("td", { class: "num" }, sum("retrying")),
      el("td", { class: "num" }, sum("failed")), el("td", { class: "num completed" }, done),
      el("td", { class: "num rate" }, rate), el("td", { class: "num" }, w ? `${w.busy}/${w.size}` : "")));
  }
}

function jobRow(j) {
  const actions = el("td", {});
  if (!FINAL.has(j.status)) {
    actions.append(el("button", { type: "button", class: "cancel", onclick: () => cancel(j.job_id) }, "Cancel"));
  }
  const link = el("a", { href: "#", class: "job-link", onclick: (e) => { e.preventDefault(); showDetail(j.job_id); } }, j.job_id);
  return el("tr", { "data-job": j.job_id },
    el("td", {}, link), el("td", {}, j.job_type),
    el("td", { class: `status status-${j.status}` }, j.status), el("td", {}, j.priority),
    el("td", { class: "num attempts" }, j.attempts), el("td", {}, j.created_at), actions);
}

function filters() {
  return { status: $("#filter-status").value, type: $("#filter-type").value };
}
function matches(j) {
  const f = filters();
  return (!f.status || j.status === f.status) && (!f.type || j.job_type === f.type);
}

async function loadJobs() {
  const f = filters();
  const q = new URLSearchParams({ limit: "50" });
  if (f.status) q.set("status", f.status);
  if (f.type) q.set("job_type", f.type);
  const page = await api("GET", `/api/jobs?${q}`);
  jobs.clear();
  const body = $("#jobs tbody");
  body.replaceChildren();
  for (const j of page.jobs) { jobs.set(j.job_id, j); body.append(jobRow(j)); }
}

function upsertJob(j) {
  const body = $("#jobs tbody");
  const old = body.querySelector(`tr[data-job="${CSS.escape(j.job_id)}"]`);
  // Answers can arrive out of order: a final status never goes back.
  const known = jobs.get(j.job_id);
  if (known && FINAL.has(known.status) && !FINAL.has(j.status)) return;
  if (!matches(j)) { if (old) old.remove(); jobs.delete(j.job_id); return; }
  jobs.set(j.job_id, j);
  const row = jobRow(j);
  if (old) old.replaceWith(row); else body.prepend(row);
}

async function loadDead() {
  const page = await api("GET", "/api/dead?limit=50");
  const body = $("#dead tbody");
  body.replaceChildren();
  for (const j of page.jobs) {
    const actions = el("td", {});
    if (!j.retried_as) actions.append(el("button", { type: "button", class: "retry", onclick: () => retry(j.job_id) }, "Retry"));
    actions.append(el("button", { type: "button", class: "delete", onclick: () => remove(j.job_id) }, "Delete"));
    body.append(el("tr", { "data-job": j.job_id },
      el("td", {}, el("a", { href: "#", class: "job-link", onclick: (e) => { e.preventDefault(); showDetail(j.job_id); } }, j.job_id)),
      el("td", {}, j.job_type), el("td", { class: "num" }, j.attempts), el("td", { class: "error" }, j.error),
      el("td", { class: "retried-as" }, j.retried_as || ""), actions));
  }
}

async function cancel(id) {
  try { const r = await api("DELETE", `/api/job/${encodeURIComponent(id)}`); say(`job ${id}: ${r.status}`, false); await refreshJob(id); }
  catch (e) { say(e.message); }
}
async function retry(id) {
  try { const r = await api("POST", `/api/dead/${encodeURIComponent(id)}/retry`); say(`job ${id} retried as ${r.job_id}`, false); await refreshJob(r.job_id); await loadDead(); }
  catch (e) { say(e.message); }
}
async function remove(id) {
  try { await api("DELETE", `/api/dead/${encodeURIComponent(id)}`); say(`job ${id} deleted`, false); await loadDead(); }
  catch (e) { say(e.message); }
}

const eventsSeen = new Map(); // job id -> events received, to spot stale answers
async function refreshJob(id) {
  let j;
  for (let tries = 0; tries < 3; tries++) {
    const before = eventsSeen.get(id) || 0;
    j = await api("GET", `/api/job/${encodeURIComponent(id)}/status`);
    if ((eventsSeen.get(id) || 0) === before) break;  // no event raced this answer
  }
  upsertJob(j);
  if (detailId === id) renderDetail(j);
  return j;
}

function field(dl, name, value) {
  if (value === null || value === undefined || value === "") return;
  dl.append(el("dt", {}, name), el("dd", { "data-field": name }, typeof value === "object" ? JSON.stringify(value) : value));
}

function renderDetail(j) {
  $("#detail").hidden = false;
  $("#detail-id").textContent = j.job_id;
  const dl = $("#detail-fields");
  dl.replaceChildren();
  field(dl, "status", j.status); field(dl, "type", j.job_type); field(dl, "priority", j.priority);
  field(dl, "attempts", j.attempts); field(dl, "created", j.created_at); field(dl, "started", j.started_at);
  field(dl, "finished", j.completed_at); field(dl, "processing time (s)", j.processing_time);
  field(dl, "error", j.error); field(dl, "progress", j.progress); field(dl, "correlation id", j.correlation_id);
  const h = $("#detail-history");
  h.replaceChildren();
  for (const e of history.get(j.job_id) || []) {
    h.append(el("li", {}, `${e.at} ${e.status} (attempt ${e.attempts})${e.error ? ": " + e.error : ""}`));
  }
  const links = $("#detail-links");
  links.replaceChildren();
  if (j.status === "completed") {
    links.append(el("a", { href: `/api/job/${j.job_id}/result`, id: "result-json" }, "result (JSON)"), " · ",
      el("a", { href: `/api/job/${j.job_id}/html`, id: "result-html" }, "result (HTML)"), " · ",
      el("a", { href: `/api/job/${j.job_id}/markdown`, id: "result-markdown" }, "result (Markdown)"));
  }
  const n = $("#detail-notify");
  n.replaceChildren();
  if (j.webhook) {
    field(n, "webhook", j.webhook.url); field(n, "webhook state", j.webhook.state);
    field(n, "webhook attempts", j.webhook.attempts); field(n, "last response", j.webhook.last_status_code);
    field(n, "last error", j.webhook.last_error); field(n, "next attempt", j.webhook.next_attempt_at);
  }
  if (j.email) { field(n, "email", j.email.to); field(n, "email state", j.email.state); }
  if (!j.webhook && !j.email) n.append(el("dd", {}, "none requested"));
}

async function showDetail(id) {
  detailId = id;
  try {
    renderDetail(await api("GET", `/api/job/${encodeURIComponent(id)}/status`));
    $("#detail").scrollIntoView({ block: "start" });
  } catch (e) { say(e.message); }
}

// Live updates: every status event of every job this key may see.
let refreshTimer = null;
function scheduleRefresh() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(async () => {
    refreshTimer = null;
    try { await loadStats(); await loadDead(); } catch (e) { say(e.message); }
  }, 300);
}

function connect() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const q = new URLSearchParams({ all: "true" });
  if (lastEventId !== null) q.set("last_event_id", lastEventId);
  const ws = new WebSocket(`${proto}://${location.host}/api/ws?${q}`);
  ws.onopen = () => { $("#live").textContent = "live"; $("#live").className = "live"; };
  ws.onclose = () => {
    $("#live").textContent = "offline — reconnecting"; $("#live").className = "offline";
    setTimeout(connect, 1000);
  };
  ws.onmessage = (m) => {
    const f = JSON.parse(m.data);
    if (f.type === "resync") { loadJobs().catch((e) => say(e.message)); scheduleRefresh(); return; }
    if (f.type !== "status" && f.type !== "snapshot") return;
    if (f.event_id) lastEventId = f.event_id;
    eventsSeen.set(f.job_id, (eventsSeen.get(f.job_id) || 0) + 1);
    const h = history.get(f.job_id) || [];
    if (!f.progress_update) h.push({ status: f.status, at: f.at, attempts: f.attempts, error: f.error });
    history.set(f.job_id, h.slice(-50));
    const known = jobs.get(f.job_id);
    if (known) {
      upsertJob({ ...known, status: f.status, attempts: f.attempts, error: f.error, progress: f.progress ?? known.progress });
    } else if (!f.progress_update) {
      refreshJob(f.job_id).catch(() => {});
    }
    if (detailId === f.job_id) refreshJob(f.job_id).catch(() => {});
    scheduleRefresh();
  };
}

async function upload(e) {
  e.preventDefault();
  const file = $("#upload-file").files[0];
  if (!file) return;
  const form = new FormData();
  form.append("priority", $("#upload-priority").value);
  if ($("#upload-analyze").checked) form.append("analyze", "true");
  form.append("file", file, file.name);
  try {
    const r = await api("POST", "/api/upload-async", form);
    $("#upload-result").textContent = `accepted: ${r.job_id}`;
    $("#upload-result").dataset.job = r.job_id;
    await refreshJob(r.job_id);
  } catch (err) { $("#upload-result").textContent = err.message; }
}

document.addEventListener("DOMContentLoaded", () => {
  $("#upload-form").addEventListener("submit", upload);
  $("#refresh").addEventListener("click", () => loadJobs().catch((e) => say(e.message)));
  $("#filter-status").addEventListener("change", () => loadJobs().catch((e) => say(e.message)));
  $("#filter-type").addEventListener("change", () => loadJobs().catch((e) => say(e.message)));
  $("#detail-close").addEventListener("click", () => { detailId = null; $("#detail").hidden = true; });
  Promise.all([loadStats(), loadJobs(), loadDead()]).catch((e) => say(e.message));
  connect();
  // Counters also move without events of ours (other servers' workers).
  setInterval(() => loadStats().catch(() => {}), 5000);
});
