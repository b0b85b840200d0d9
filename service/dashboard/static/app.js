// autoprune dashboard: plain JS, no build step. Talks only to the REST API under /api/v1.
// Views: "#/" (jobs list + submit form) and "#/jobs/<id>" (one job, live from its SSE stream).
"use strict";

const API = "/api/v1";
const TOKEN_KEY = "autoprune.token";
// the states a job never leaves: service/states.py FINAL_STATES (test_lifecycle.py checks they agree)
const FINAL = new Set(["succeeded", "failed", "cancelled"]);
const PAGE = 15;
const $ = (sel) => document.querySelector(sel);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- API client and token
class ApiError extends Error {
  constructor(status, body) {
    super(typeof body?.detail === "string" ? body.detail : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

let tokenPrompt = null; // one shared prompt, however many calls got a 401 at once

function authHeaders() {
  const t = localStorage.getItem(TOKEN_KEY);
  return t ? { Authorization: `Bearer ${t}` } : {};
}

function askToken(rejected) {
  if (tokenPrompt) return tokenPrompt;
  tokenPrompt = new Promise((resolve) => {
    const dlg = $("#token-dialog");
    $("#token-error").textContent = rejected ? "The server rejected that token." : "";
    $("#token-input").value = "";
    $("#token-form").onsubmit = (ev) => {
      ev.preventDefault();
      localStorage.setItem(TOKEN_KEY, $("#token-input").value.trim());
      $("#forget-token").classList.remove("hidden");
      dlg.close();
      tokenPrompt = null;
      resolve();
    };
    dlg.showModal();
  });
  return tokenPrompt;
}

// fetch() with the token; a 401 asks for the token (once) and retries.
async function apiFetch(url, opts = {}) {
  for (let attempt = 0; ; attempt++) {
    const res = await fetch(url, { ...opts, headers: { ...(opts.headers || {}), ...authHeaders() } });
    if (res.status !== 401 || attempt >= 3) return res;
    await askToken(attempt > 0 || !!localStorage.getItem(TOKEN_KEY));
  }
}

async function api(path, opts = {}) {
  const res = await apiFetch(API + path, opts);
  const body = res.headers.get("content-type")?.includes("json") ? await res.json() : null;
  if (!res.ok) throw new ApiError(res.status, body);
  return body;
}

// ---------------------------------------------------------------- formatting
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const pct = (x) => (x == null ? "–" : `${(100 * x).toFixed(1)}%`);
const num = (x, d = 3) => (x == null ? "–" : Number(x).toFixed(d));
function si(x) {
  if (x == null) return "–";
  const a = Math.abs(x);
  if (a >= 1e9) return `${(x / 1e9).toFixed(2)}G`;
  if (a >= 1e6) return `${(x / 1e6).toFixed(2)}M`;
  if (a >= 1e3) return `${(x / 1e3).toFixed(1)}k`;
  return String(x);
}
function duration(s) {
  if (s == null || !isFinite(s)) return "–";
  s = Math.round(s);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}
function formatBudget(b) {
  if (!b) return "–";
  const parts = [];
  if (b.macs_ratio != null) parts.push(`MACs ≤ ${pct(b.macs_ratio)}`);
  if (b.params_ratio != null) parts.push(`params ≤ ${pct(b.params_ratio)}`);
  if (b.latency_ms != null) parts.push(`latency ≤ ${b.latency_ms} ms`);
  if (b.latency_ratio != null) parts.push(`latency ≤ ${pct(b.latency_ratio)}`);
  return parts.join(", ");
}
function formatBest(job) {
  const m = job.best?.metrics;
  if (!m) return "–";
  const cost = job.cost_key === "latency_ms" && m.latency_ms != null
    ? `${num(m.latency_ms, 2)} ms` : `MACs ${pct(m.macs_ratio)}`;
  return `${num(m.quality)} · ${cost}`;
}
const modelName = (spec) => spec?.model?.zoo || spec?.model?.entrypoint || "–";
const badge = (state) => `<span class="badge ${esc(state)}">${esc(state)}</span>`;

// the latest `finalize` event: "rank 1: finetune 40/200"
function finalizeText(fin) {
  if (!fin || fin.rank == null) return "";
  const of = fin.steps ? ` ${fin.step}/${fin.steps}` : fin.prune_steps ? ` ${fin.prune_step}/${fin.prune_steps}` : "";
  return ` rank ${fin.rank}: ${fin.stage}${of}`;
}

function progressText(p, state, fin) {
  if (!p) return "";
  let t = `${p.trials_done} / ${p.trials_total} trials`;
  if (state === "finalizing") t += " · finalizing" + finalizeText(fin);
  else if (!FINAL.has(state) && p.eta_seconds != null) t += ` · ETA ${duration(p.eta_seconds)}`;
  return t;
}
const progressFrac = (p) => (p && p.trials_total ? Math.min(1, p.trials_done / p.trials_total) : 0);

// ---------------------------------------------------------------- router
let current = null; // the active view's { stop() }

function route() {
  if (current) current.stop();
  const m = location.hash.match(/^#\/jobs\/([^/?]+)/);
  document.querySelectorAll(".view").forEach((v) => v.classList.add("hidden"));
  if (m) {
    $("#view-job").classList.remove("hidden");
    current = new JobView(decodeURIComponent(m[1]));
  } else {
    $("#view-jobs").classList.remove("hidden");
    current = new JobsView();
  }
}

// ---------------------------------------------------------------- jobs list + submit form
const EXAMPLE_SPEC = `# JSON or YAML
name: digits-resnet20
model: {zoo: resnet20}
dataset: {name: digits}
budget: {macs_ratio: 0.5}
agent:
  kind: optuna-tpe
  trials: 40
finalize: {top_k: 2, finetune_epochs: 1}
workers: 1
`;

class JobsView {
  constructor() {
    this.offset = 0;
    this.alive = true;
    const input = $("#spec-input");
    if (!input.value) input.value = EXAMPLE_SPEC;
    $("#submit-form").onsubmit = (ev) => { ev.preventDefault(); this.submit(); };
    this.poll();
  }
  stop() { this.alive = false; clearTimeout(this.timer); }

  async poll() {
    try { await this.load(); } catch (e) { $("#jobs-count").textContent = `could not load jobs: ${e.message}`; }
    if (this.alive) this.timer = setTimeout(() => this.poll(), 3000);
  }

  async load() {
    const page = await api(`/jobs?offset=${this.offset}&limit=${PAGE}`);
    if (!this.alive) return;
    $("#jobs-count").textContent = `${page.count} job${page.count === 1 ? "" : "s"}`;
    $("#jobs-table tbody").innerHTML = page.items.map((j) => `
      <tr data-id="${esc(j.id)}" class="clickable">
        <td><a href="#/jobs/${encodeURIComponent(j.id)}">${esc(j.name)}</a></td>
        <td>${esc(modelName(j.spec))}</td><td>${esc(j.spec?.agent?.kind)}</td>
        <td>${esc(formatBudget(j.budget))}</td><td>${badge(j.state)}</td>
        <td><div class="progress mini"><div class="bar${FINAL.has(j.state) ? " done" : ""}" style="width:${100 * progressFrac(j.progress)}%"></div></div>
            <span class="muted">${j.progress ? `${j.progress.trials_done}/${j.progress.trials_total}` : ""}</span></td>
        <td>${esc(formatBest(j))}</td>
      </tr>`).join("") || `<tr><td colspan="7" class="muted">No jobs yet — submit one.</td></tr>`;
    $("#jobs-table tbody").querySelectorAll("tr[data-id]").forEach((tr) => {
      tr.onclick = () => { location.hash = `#/jobs/${encodeURIComponent(tr.dataset.id)}`; };
    });
    renderPager($("#jobs-pager"), this.offset, page.count, (o) => { this.offset = o; this.load(); });
  }

  async submit() {
    const errors = $("#spec-errors");
    const status = $("#submit-status");
    errors.innerHTML = "";
    status.textContent = "";
    const text = $("#spec-input").value;
    if (!text.trim()) {
      errors.innerHTML = "<li><b>spec</b>: the spec is empty</li>";
      return;
    }
    $("#submit-button").disabled = true;
    status.textContent = "submitting…";
    try {
      const job = await api("/jobs", {
        // sent as typed: the server parses YAML (JSON is YAML too) and names the line of an error
        method: "POST", headers: { "Content-Type": "application/yaml" }, body: text,
      });
      location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
    } catch (e) {
      status.textContent = "";
      errors.innerHTML = validationItems(e).join("");
    } finally {
      $("#submit-button").disabled = false;
    }
  }
}

// FastAPI's 422 shape: detail = [{loc: ["body", "budget", "macs_ratio"], msg, type}].
function validationItems(e) {
  const detail = e.body?.detail;
  if (!Array.isArray(detail)) return [`<li><b>error</b>: ${esc(e.message)}</li>`];
  return detail.map((d) => {
    const loc = (d.loc || []).filter((p, i) => !(i === 0 && p === "body")).join(" → ") || "spec";
    return `<li data-loc="${esc(loc)}"><b>${esc(loc)}</b>: ${esc(d.msg)}</li>`;
  });
}

function renderPager(el, offset, count, go) {
  if (count <= PAGE) { el.innerHTML = ""; return; }
  const page = Math.floor(offset / PAGE) + 1;
  const pages = Math.ceil(count / PAGE);
  el.innerHTML = `<button type="button" ${offset <= 0 ? "disabled" : ""}>‹ prev</button>
    <span>page ${page} / ${pages}</span>
    <button type="button" ${offset + PAGE >= count ? "disabled" : ""}>next ›</button>`;
  const [prev, next] = el.querySelectorAll("button");
  prev.onclick = () => go(Math.max(0, offset - PAGE));
  next.onclick = () => go(offset + PAGE);
}

// The job page (state, stream, charts, table) is in job.js.
