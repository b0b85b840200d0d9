// autoprune dashboard: plain JS, no build step. Talks only to the REST API under /api/v1.
// Views: "#/" (jobs list + submit form) and "#/jobs/<id>" (one job, live from its SSE stream).
"use strict";

const API = "/api/v1";
const TOKEN_KEY = "autoprune.token";
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

function progressText(p, state) {
  if (!p) return "";
  let t = `${p.trials_done} / ${p.trials_total} trials`;
  if (state === "finalizing") t += " · finalizing";
  else if (!FINAL.has(state) && p.eta_seconds != null) t += ` · ETA ${duration(p.eta_seconds)}`;
  return t;
}
const progressFrac = (p) => (p && p.trials_total ? Math.min(1, p.trials_done / p.trials_total) : 0);

// ---------------------------------------------------------------- a small YAML subset
// Block maps and lists by indentation, "- key: v" list items, flow [..] / {..}, quoted and plain
// scalars, comments. Enough for job specs; anything else is reported with its line number.
function parseYaml(text) {
  const lines = [];
  text.split("\n").forEach((raw, i) => {
    const s = stripComment(raw).replace(/\s+$/, "");
    if (!s.trim() || s.trim() === "---") return;
    const lead = s.match(/^\s*/)[0];
    if (lead.includes("\t")) throw new Error(`YAML line ${i + 1}: tabs are not allowed for indentation`);
    lines.push({ indent: lead.length, text: s.trim(), line: i + 1 });
  });
  let pos = 0;
  const fail = (ln, why) => new Error(`YAML line ${ln.line}: ${why}`);
  const isItem = (ln) => ln.text === "-" || ln.text.startsWith("- ");
  const block = () => (isItem(lines[pos]) ? list(lines[pos].indent) : map(lines[pos].indent));

  function map(indent) {
    const obj = {};
    while (pos < lines.length && lines[pos].indent === indent && !isItem(lines[pos])) {
      const ln = lines[pos++];
      const m = ln.text.match(/^("[^"]*"|'[^']*'|[^:"'][^:]*?)\s*:(?:\s+(.*))?$/);
      if (!m) throw fail(ln, "expected 'key: value'");
      const key = scalar(m[1], ln);
      if (m[2]) obj[key] = value(m[2], ln);
      else if (pos < lines.length && lines[pos].indent > indent) obj[key] = block();
      else if (pos < lines.length && lines[pos].indent === indent && isItem(lines[pos])) obj[key] = list(indent);
      else obj[key] = null;
    }
    if (pos < lines.length && lines[pos].indent > indent) throw fail(lines[pos], "unexpected indentation");
    return obj;
  }
  function list(indent) {
    const arr = [];
    while (pos < lines.length && lines[pos].indent === indent && isItem(lines[pos])) {
      const ln = lines[pos];
      const rest = ln.text.slice(1).trim();
      if (!rest) {
        pos++;
        arr.push(pos < lines.length && lines[pos].indent > indent ? block() : null);
      } else if (/^[^"'[{][^:]*:(\s|$)/.test(rest)) {
        ln.indent = indent + 2; // "- key: v": the item is a map indented past the dash
        ln.text = rest;
        arr.push(map(indent + 2));
      } else {
        pos++;
        arr.push(value(rest, ln));
      }
    }
    return arr;
  }
  function value(s, ln) {
    if (s[0] === "[" || s[0] === "{") {
      const f = flow(s, 0, ln);
      if (s.slice(f.end).trim()) throw fail(ln, "text after a flow collection");
      return f.value;
    }
    return scalar(s, ln);
  }
  function flow(s, i, ln) {
    const ws = () => { while (s[i] === " ") i++; };
    ws();
    if (s[i] === "[" || s[i] === "{") {
      const close = s[i] === "[" ? "]" : "}";
      const out = close === "]" ? [] : {};
      i++; ws();
      while (s[i] !== close) {
        if (i >= s.length) throw fail(ln, `missing '${close}'`);
        if (close === "]") {
          const v = flow(s, i, ln); out.push(v.value); i = v.end;
        } else {
          const k = flow(s, i, ln); i = k.end; ws();
          if (s[i] !== ":") throw fail(ln, "expected ':' in a flow map");
          const v = flow(s, i + 1, ln); out[k.value] = v.value; i = v.end;
        }
        ws();
        if (s[i] === ",") { i++; ws(); } else if (s[i] !== close) throw fail(ln, `expected ',' or '${close}'`);
      }
      return { value: out, end: i + 1 };
    }
    let j = i;
    if (s[i] === '"' || s[i] === "'") {
      j = s.indexOf(s[i], i + 1);
      if (j < 0) throw fail(ln, "unterminated string");
      j++;
    } else {
      while (j < s.length && !",]}".includes(s[j]) && !(s[j] === ":" && (s[j + 1] === " " || s[j + 1] === undefined))) j++;
    }
    return { value: scalar(s.slice(i, j).trim(), ln), end: j };
  }
  function scalar(s, ln) {
    if (s[0] === '"') {
      try { return JSON.parse(s); } catch { throw fail(ln, `bad string ${s}`); }
    }
    if (s[0] === "'") return s.slice(1, -1).replace(/''/g, "'");
    if (s === "null" || s === "~") return null;
    if (s === "true" || s === "false") return s === "true";
    if (/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(s)) return Number(s);
    return s;
  }
  if (!lines.length) throw new Error("the spec is empty");
  const out = block();
  if (pos < lines.length) throw fail(lines[pos], "unexpected content");
  return out;
}

function stripComment(line) {
  let q = null;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (q) { if (c === q) q = null; } else if (c === '"' || c === "'") q = c;
    else if (c === "#" && (i === 0 || /\s/.test(line[i - 1]))) return line.slice(0, i);
  }
  return line;
}

function parseSpec(text) {
  const t = text.trim();
  if (t.startsWith("{")) {
    try { return JSON.parse(t); } catch (e) { throw new Error(`JSON: ${e.message}`); }
  }
  return parseYaml(text);
}

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
    let spec;
    try {
      spec = parseSpec($("#spec-input").value);
    } catch (e) {
      errors.innerHTML = `<li><b>spec</b>: ${esc(e.message)}</li>`;
      return;
    }
    $("#submit-button").disabled = true;
    status.textContent = "submitting…";
    try {
      const job = await api("/jobs", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(spec),
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

// The job page lives in jobview.js-sized pieces below: state, stream, charts, table.
