// The job page: header, progress, Pareto scatter, per-layer chart, best-so-far, trials, artifacts.
// Live updates come from GET /jobs/<id>/events, read with fetch() (EventSource cannot send the
// bearer token) and parsed here; a dropped stream reconnects with Last-Event-ID.
"use strict";

const COST_LABEL = { latency_ms: "latency (ms)", macs: "MACs", params: "parameters" };
const COLORS = { feasible: "#2563eb", infeasible: "#b8bec9", front: "#0f172a", dense: "#16a34a",
  baseline: "#ea580c", budget: "#dc2626", selected: "#db2777" };
const PLOT_CONFIG = { displaylogo: false, responsive: true,
  modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d"] };
const REMOVED_COLOR = "#9ca3af"; // a removed block/layer's groups in the per-layer chart
const FONT = { family: "Inter, system-ui, sans-serif", size: 12, color: "#334155" };

class JobView {
  constructor(id) {
    this.id = id;
    this.job = null;
    this.trials = new Map(); // trial_id -> Trial
    this.front = new Set(); // trial ids on the front for this.cost
    this.cost = null;
    this.selected = null;
    this.picked = false;
    this.lastEventId = null;
    this.sort = { key: "trial_id", order: "desc" };
    this.offset = 0;
    this.abort = new AbortController();
    this.timers = {};
    this.alive = true;
    this.bindControls();
    this.start().catch((e) => this.showError(e));
  }

  stop() {
    this.alive = false;
    this.abort.abort();
    Object.values(this.timers).forEach(clearTimeout);
    ["#pareto-plot", "#layer-plot", "#progress-plot"].forEach((s) => Plotly.purge($(s)));
  }

  showError(e) { $("#job-error").textContent = e.status === 404 ? `No job ${this.id}.` : `Error: ${e.message}`; }

  bindControls() {
    $("#cost-select").onchange = (ev) => { this.cost = ev.target.value; this.loadFront().then(() => this.renderPareto()); };
    const cancel = $("#cancel-button");
    cancel.textContent = "Cancel job";
    cancel.onclick = () => this.cancel();
    document.querySelectorAll("#trials-table th[data-sort]").forEach((th) => {
      th.onclick = () => {
        const key = th.dataset.sort;
        this.sort = { key, order: this.sort.key === key && this.sort.order === "desc" ? "asc" : "desc" };
        this.offset = 0;
        this.loadTable();
      };
    });
    $("#trial-metrics").innerHTML = `<p class="muted">No point selected.</p>`;
    $("#artifacts").innerHTML = `<p class="muted">Artifacts appear once the job is finalized.</p>`;
    $("#job-error").textContent = "";
  }

  async start() {
    this.job = await api(`/jobs/${encodeURIComponent(this.id)}`);
    this.cost = this.job.cost_key || "macs";
    $("#cost-select").value = this.cost;
    // Every trial so far (the stream then adds new ones; duplicates merge by trial_id).
    for (let offset = 0; ; offset += 100) {
      const page = await api(`/jobs/${this.id}/trials?offset=${offset}&limit=100&sort=trial_id&order=asc`);
      page.items.forEach((t) => this.trials.set(t.trial_id, t));
      if (!page.items.length || offset + page.items.length >= page.count) break;
    }
    await this.loadFront();
    if (!this.alive) return;
    this.renderHeader();
    this.renderAll();
    this.loadTable();
    if (this.job.state === "succeeded") this.loadArtifacts();
    if (!FINAL.has(this.job.state)) this.stream();
  }

  async loadFront() {
    const res = await api(`/jobs/${this.id}/pareto?cost=${this.cost}`);
    this.front = new Set(res.items.map((t) => t.trial_id));
    res.items.forEach((t) => this.trials.set(t.trial_id, t));
  }

  // -------------------------------------------------------------- the event stream
  async stream() {
    let wait = 500;
    while (this.alive) {
      try {
        const headers = { Accept: "text/event-stream", ...authHeaders() };
        if (this.lastEventId != null) headers["Last-Event-ID"] = String(this.lastEventId);
        const res = await fetch(`${API}/jobs/${this.id}/events`, { headers, signal: this.abort.signal });
        if (res.status === 401) { await askToken(true); continue; }
        if (!res.ok) throw new Error(`events: HTTP ${res.status}`);
        this.setLive(true);
        wait = 500;
        await this.readEvents(res.body);
      } catch (e) {
        if (!this.alive) return;
        console.warn("event stream:", e);
      }
      this.setLive(false);
      if (!this.alive) return;
      // The server ends the stream once the job is final; otherwise reconnect.
      try { this.job = await api(`/jobs/${this.id}`); } catch { /* retry below */ }
      if (FINAL.has(this.job.state)) { this.onFinal(); return; }
      await sleep(wait);
      wait = Math.min(wait * 2, 8000);
    }
  }

  async readEvents(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value.replace(/\r\n?/g, "\n");
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const ev = parseSse(buf.slice(0, cut));
        buf = buf.slice(cut + 2);
        if (ev) this.onEvent(ev);
      }
    }
  }

  onEvent(ev) {
    if (ev.id != null) this.lastEventId = ev.id;
    const d = ev.data;
    if (ev.type === "trial") {
      this.trials.set(d.trial_id, d);
      if (this.cost !== this.job.cost_key) this.later("front", 1500, () => this.loadFront().then(() => this.renderPareto()));
      this.later("render", 250, () => this.renderAll());
      this.later("table", 1500, () => this.loadTable());
      this.later("job", 2000, () => this.refreshJob());
    } else if (ev.type === "front") {
      if (this.cost === this.job.cost_key) this.front = new Set(d.trial_ids);
      this.later("render", 250, () => this.renderAll());
    } else if (ev.type === "progress") {
      this.job.progress = d;
      this.renderProgress();
    } else if (ev.type === "finalize") {
      this.finalizeStep = d;
      this.renderProgress();
    } else if (ev.type === "state") {
      this.job.state = d.state;
      this.job.error = d.error;
      this.renderHeader();
      if (FINAL.has(d.state)) this.onFinal();
    }
  }

  // Runs fn once after ms, however many times it is asked meanwhile (coalesces bursts).
  later(name, ms, fn) {
    if (this.timers[name]) return;
    this.timers[name] = setTimeout(() => { this.timers[name] = null; if (this.alive) fn(); }, ms);
  }

  async refreshJob() {
    this.job = await api(`/jobs/${this.id}`);
    this.renderHeader();
  }

  async onFinal() {
    if (this.finalized) return;
    this.finalized = true;
    await this.refreshJob();
    await this.loadFront();
    this.renderAll();
    this.loadTable();
    if (this.job.state === "succeeded") this.loadArtifacts();
  }

  setLive(on) { $("#job-live").classList.toggle("hidden", !on); }

  async cancel() {
    const btn = $("#cancel-button");
    if (!btn.dataset.armed) { // two clicks: a stray click must not kill an hour of search
      btn.dataset.armed = "1";
      btn.textContent = "Click again to cancel";
      setTimeout(() => { delete btn.dataset.armed; btn.textContent = "Cancel job"; }, 4000);
      return;
    }
    delete btn.dataset.armed;
    btn.disabled = true;
    try {
      this.job = await api(`/jobs/${this.id}/cancel`, { method: "POST" });
      this.renderHeader();
    } catch (e) {
      $("#job-error").textContent = `Cancel failed: ${e.message}`;
    } finally {
      btn.disabled = false;
      btn.textContent = "Cancel job";
    }
  }

  // -------------------------------------------------------------- header and progress
  renderHeader() {
    const j = this.job;
    $("#job-name").textContent = j.name;
    const st = $("#job-state");
    st.textContent = j.state;
    st.className = `badge ${j.state}`;
    $("#cancel-button").classList.toggle("hidden", FINAL.has(j.state));
    $("#job-error").textContent = j.error ? `Error: ${j.error}` : "";
    const d = j.dense;
    const best = j.best?.metrics;
    const item = (k, v) => `<div><span class="k">${k}</span><span class="v">${v}</span></div>`;
    $("#job-summary").innerHTML = [
      item("model", esc(modelName(j.spec))),
      item("dataset", esc(j.spec?.dataset?.name)),
      item("agent", esc(j.spec?.agent?.kind)),
      item("budget", esc(formatBudget(j.budget))),
      item("dense", d ? `${num(d.quality)} · ${si(d.macs)} MACs${d.latency_ms != null ? ` · ${num(d.latency_ms, 2)} ms` : ""}` : "–"),
      item("best feasible", best ? `<b>${num(best.quality)}</b> · MACs ${pct(best.macs_ratio)} · params ${pct(best.params_ratio)}${best.latency_ratio != null ? ` · latency ${pct(best.latency_ratio)}` : ""} <span class="muted">(#${j.best.trial_id})</span>` : "–"),
      item("runtime", esc(j.delivery?.runtime_title || j.delivery?.runtime || j.runtime || j.spec?.target?.runtime || "–")),
      ...(j.delivery ? [item("latency budget", deliveryText(j.delivery))] : []),
    ].join("");
    this.renderProgress();
  }

  renderProgress() {
    const p = this.job.progress;
    $("#job-progress-bar").style.width = `${100 * progressFrac(p)}%`;
    $("#job-progress-bar").classList.toggle("done", FINAL.has(this.job.state));
    $("#job-progress-text").textContent = progressText(p, this.job.state, this.finalizeStep);
  }

  renderAll() {
    // Until the user picks a point, show the best feasible one's layers.
    if (!this.picked && this.job.best && this.trials.has(this.job.best.trial_id)) this.selected = this.job.best.trial_id;
    this.renderPareto();
    this.renderBestSoFar();
    if (this.selected != null) this.renderLayers(this.selected);
  }

  // -------------------------------------------------------------- Pareto scatter
  costOf(m) {
    if (!m) return null;
    return this.cost === "latency_ms" ? m.latency_ms : m[this.cost];
  }

  budgetLine() {
    const b = this.job.budget || {};
    const dense = this.job.dense;
    const space = this.job.space;
    if (this.cost === "macs" && b.macs_ratio != null) {
      const base = space?.dense_macs ?? dense?.macs;
      return base ? b.macs_ratio * base : null;
    }
    if (this.cost === "params" && b.params_ratio != null) {
      const base = space?.dense_params ?? dense?.params;
      return base ? b.params_ratio * base : null;
    }
    if (this.cost === "latency_ms") {
      if (b.latency_ms != null) return b.latency_ms;
      if (b.latency_ratio != null && dense?.latency_ms != null) return b.latency_ratio * dense.latency_ms;
    }
    return null;
  }

  renderPareto() {
    const el = $("#pareto-plot");
    const pts = [...this.trials.values()].filter((t) => t.metrics && this.costOf(t.metrics) != null);
    const hover = (t) => {
      const m = t.metrics;
      const role = t.info?.role ? ` (${t.info.role})` : "";
      return `trial #${t.trial_id}${role}<br>quality ${num(m.quality)}<br>MACs ${si(m.macs)} (${pct(m.macs_ratio)})` +
        `<br>params ${si(m.params)} (${pct(m.params_ratio)})` +
        (m.latency_ms != null ? `<br>latency ${num(m.latency_ms, 3)} ms` : "") +
        `<br>${t.feasible ? "feasible" : "over budget"}`;
    };
    // uid names each trace's SVG group (class "trace<uid>"), which the browser test counts.
    const scatter = (list, name, marker, extra = {}) => ({
      type: "scatter", mode: "markers", name, uid: name.replace(/\W/g, ""), x: list.map((t) => this.costOf(t.metrics)),
      y: list.map((t) => t.metrics.quality), customdata: list.map((t) => t.trial_id),
      text: list.map(hover), hoverinfo: "text", marker, ...extra,
    });
    const feasible = pts.filter((t) => t.feasible);
    const infeasible = pts.filter((t) => !t.feasible);
    const front = pts.filter((t) => this.front.has(t.trial_id))
      .sort((a, b) => this.costOf(a.metrics) - this.costOf(b.metrics));
    const baseline = pts.filter((t) => t.info?.role === "baseline");
    const selected = pts.filter((t) => t.trial_id === this.selected);
    const traces = [
      scatter(infeasible, "over budget", { color: COLORS.infeasible, size: 7, opacity: 0.8 }),
      scatter(feasible, "feasible", { color: COLORS.feasible, size: 8, opacity: 0.75, line: { color: "#fff", width: 0.5 } }),
      scatter(front, "Pareto front", { color: COLORS.front, size: 11, symbol: "circle-open", line: { width: 2 } },
        { mode: "lines+markers", line: { color: COLORS.front, width: 1.5, shape: "hv" } }),
      scatter(baseline, "uniform baseline", { color: COLORS.baseline, size: 15, symbol: "diamond", line: { color: "#fff", width: 1.5 } }),
      scatter(selected, "selected", { color: "rgba(0,0,0,0)", size: 20, symbol: "circle-open", line: { color: COLORS.selected, width: 3 } },
        { hoverinfo: "skip", showlegend: false }),
    ];
    const dense = this.job.dense;
    if (dense && this.costOf(dense) != null) {
      traces.push({ type: "scatter", mode: "markers+text", name: "dense model", uid: "dense", x: [this.costOf(dense)], y: [dense.quality],
        text: ["dense"], textposition: "top center", textfont: { color: COLORS.dense },
        hovertext: [`dense model<br>quality ${num(dense.quality)}<br>MACs ${si(dense.macs)}<br>params ${si(dense.params)}` +
          (dense.latency_ms != null ? `<br>latency ${num(dense.latency_ms, 3)} ms` : "")],
        hoverinfo: "text", customdata: [null],
        marker: { color: COLORS.dense, size: 16, symbol: "star", line: { color: "#fff", width: 1 } } });
    }
    const budget = this.budgetLine();
    const shapes = [];
    const annotations = [];
    if (budget != null) {
      shapes.push({ type: "line", xref: "x", yref: "paper", x0: budget, x1: budget, y0: 0, y1: 1,
        line: { color: COLORS.budget, width: 2, dash: "dash" } });
      annotations.push({ x: budget, xref: "x", y: 1, yref: "paper", text: "budget", showarrow: false,
        xanchor: "left", yanchor: "top", xshift: 4, font: { color: COLORS.budget } });
    } else {
      annotations.push({ x: 1, xref: "paper", y: 0, yref: "paper", text: "no budget on this axis",
        showarrow: false, xanchor: "right", yanchor: "bottom", font: { color: "#94a3b8", size: 11 } });
    }
    const layout = {
      font: FONT, margin: { l: 56, r: 16, t: 10, b: 46 }, hovermode: "closest",
      xaxis: { title: { text: COST_LABEL[this.cost] }, tickformat: this.cost === "latency_ms" ? "" : ".3~s", zeroline: false, gridcolor: "#eef1f5" },
      yaxis: { title: { text: this.job.spec?.metric || "quality" }, zeroline: false, gridcolor: "#eef1f5" },
      legend: { orientation: "h", y: -0.2, x: 0 }, shapes, annotations,
      plot_bgcolor: "#fff", paper_bgcolor: "#fff", uirevision: this.cost,
    };
    Plotly.react(el, traces, layout, PLOT_CONFIG);
    el.dataset.points = String(pts.length); // each trial once (the overlays repeat some)
    if (!el.dataset.bound) {
      el.dataset.bound = "1";
      el.on("plotly_click", (ev) => {
        const id = ev.points?.[0]?.customdata;
        if (id != null) this.select(id);
      });
    }
  }

  // -------------------------------------------------------------- one trial: layers + metrics
  select(id) {
    this.picked = true; // from now on the user's choice, not the best point, is shown
    this.selected = id;
    this.renderLayers(id);
    this.renderPareto();
    document.querySelectorAll("#trials-table tbody tr[data-id]")
      .forEach((r) => r.classList.toggle("selected", Number(r.dataset.id) === id));
  }

  renderLayers(id) {
    const t = this.trials.get(id);
    if (!t) return;
    const groups = this.job.space?.groups?.map((g) => g.name) ?? Object.keys(t.policy || {});
    const channels = Object.fromEntries((this.job.space?.groups || []).map((g) => [g.name, g.channels]));
    // a depth search: the blocks/layers the policy removed, and the groups that went with them
    const depth = removedLayers(this.job.space, t.policy);
    const removedIn = groups.map((g) => depth.groups[g]);
    const ratios = groups.map((g, i) => (removedIn[i] ? 1 : t.policy?.[g] ?? 0));
    const kept = groups.map((g, i) => (removedIn[i] ? 0 : t.kept?.[g]));
    // a group's precision: "<group>@bits" is 8 for int8 (absent: fp32)
    const precision = groups.map((g) => (t.policy?.[`${g}@bits`] === 8 ? "int8" : "fp32"));
    const anyInt8 = precision.includes("int8");
    // transformer groups: per-layer attention heads and MLP widths, labelled as such
    const kinds = Object.fromEntries((this.job.space?.groups || []).map((g) => [g.name, g.kind]));
    const unit = (g) => ({ heads: "heads", mlp: "MLP channels", hidden: "hidden channels" })[kinds[g]] || "channels";
    const label = (g) => {
      const layer = /layer\.(\d+)\./.exec(g);
      return kinds[g] in { heads: 1, mlp: 1 } && layer ? `layer ${layer[1]} ${kinds[g]}` : g;
    };
    const x = groups.map((g, i) => (removedIn[i] ? `${label(g)} · removed`
      : anyInt8 ? `${label(g)} · ${precision[i]}` : label(g)));
    const traces = [{
      type: "bar", name: `trial #${id}`, x, y: ratios,
      // a removed unit's groups: a full grey bar (all of it gone), whatever the width it had
      marker: anyInt8 || depth.units.length
        ? { color: groups.map((g, i) => (removedIn[i] ? REMOVED_COLOR : precision[i] === "int8" ? "#d97706" : "#1e40af")) }
        : { color: ratios, colorscale: [[0, "#bfdbfe"], [1, "#1e3a8a"]], cmin: 0, cmax: 1 },
      text: groups.map((g, i) => removedIn[i] ? `${g}<br><b>removed</b> with ${removedIn[i]}` : `${g}<br>ratio ${num(ratios[i], 2)}` +
        (kept[i] != null ? `<br>kept ${kept[i]}${channels[g] ? ` / ${channels[g]}` : ""} ${unit(g)}` : "") +
        `<br>${precision[i]}`),
      hoverinfo: "text", textposition: "none",
    }];
    const base = this.job.baseline;
    if (base && base.trial_id !== id) {
      traces.push({ type: "scatter", mode: "markers", name: "uniform baseline", x,
        y: groups.map((g) => base.policy?.[g] ?? 0), hoverinfo: "y",
        marker: { color: COLORS.baseline, symbol: "line-ew-open", size: 14, line: { width: 2.5, color: COLORS.baseline } } });
    }
    Plotly.react($("#layer-plot"), traces, {
      font: FONT, margin: { l: 50, r: 10, t: 8, b: 90 }, bargap: 0.25, showlegend: traces.length > 1,
      legend: { orientation: "h", y: 1.12, x: 0 },
      xaxis: { tickangle: -45, automargin: true, tickfont: { size: 10 } },
      yaxis: { title: { text: "pruning ratio" }, range: [0, 1], gridcolor: "#eef1f5" },
      plot_bgcolor: "#fff", paper_bgcolor: "#fff",
    }, PLOT_CONFIG);
    $("#layer-plot").dataset.trial = String(id);
    const units = this.job.space?.units || [];
    $("#layer-title").textContent = `Trial #${id} — per-layer pruning ratios` +
      (anyInt8 ? ` and precision (${precision.filter((p) => p === "int8").length} of ${groups.length} groups int8, amber)` : "") +
      (units.length ? `; ${depth.units.length} of ${units.length} ${unitNoun(units)} removed${depth.units.length ? " (grey)" : ""}` : "");
    const m = t.metrics || {};
    const row = (k, v) => `<tr><th>${k}</th><td>${v}</td></tr>`;
    $("#trial-metrics").innerHTML = `<table class="kv">${[
      row("quality", `<b>${num(m.quality)}</b>`),
      row("MACs", `${si(m.macs)} (${pct(m.macs_ratio)})`),
      row("params", `${si(m.params)} (${pct(m.params_ratio)})`),
      row("latency", m.latency_ms != null ? `${num(m.latency_ms, 3)} ms${m.latency_spread_ms != null ? ` ± ${num(m.latency_spread_ms, 3)}` : ""} (${pct(m.latency_ratio)} of dense)` : "–"),
      row("feasible", t.feasible ? "yes" : "<span class='bad'>no — over budget</span>"),
      units.length ? row("removed", depth.units.length ? depth.units.map((u) => `<code>${esc(u)}</code>`).join(", ") : "none") : "",
      row("role", esc(t.info?.role || "search")),
      row("evaluated", `${num(m.eval_seconds, 2)} s on ${esc(t.node || m.node || "–")}${t.cached ? " (cached)" : ""}`),
      t.error ? row("error", `<span class="bad">${esc(t.error)}</span>`) : "",
    ].join("")}</table>`;
  }

  // -------------------------------------------------------------- best so far (and DDPG episodes)
  renderBestSoFar() {
    const done = [...this.trials.values()].sort((a, b) => a.trial_id - b.trial_id);
    let best = null;
    const xs = [], bestY = [], q = [], qx = [], rx = [], ry = [];
    done.forEach((t, i) => {
      const m = t.metrics;
      if (m && t.feasible && (best == null || m.quality > best)) best = m.quality;
      xs.push(i + 1);
      bestY.push(best);
      if (m) { qx.push(i + 1); q.push(m.quality); }
      if (typeof t.info?.reward === "number") { rx.push(i + 1); ry.push(t.info.reward); }
    });
    const ddpg = this.job.spec?.agent?.kind === "ddpg";
    // DDPG: one trial per episode; random warm-up episodes grey, learned ones orange.
    const warm = done.map((t) => t.metrics && t.info?.role === "warmup");
    const traces = [
      { type: "scatter", mode: "markers", name: ddpg ? "quality per episode" : "quality per trial", x: qx, y: q,
        marker: { color: ddpg ? qx.map((x) => (warm[x - 1] ? "#94a3b8" : COLORS.baseline)) : "#94a3b8", size: 5 } },
      { type: "scatter", mode: "lines", name: "best feasible so far", x: xs, y: bestY,
        line: { color: COLORS.feasible, width: 2.5, shape: "hv" } },
    ];
    if (ry.length) traces.push({ type: "scatter", mode: "lines", name: "episode reward", x: rx, y: ry, yaxis: "y2",
      line: { color: COLORS.baseline, width: 1.5 } });
    Plotly.react($("#progress-plot"), traces, {
      font: FONT, margin: { l: 56, r: ry.length ? 50 : 16, t: 10, b: 40 },
      xaxis: { title: { text: "evaluations" }, gridcolor: "#eef1f5", rangemode: "tozero" },
      yaxis: { title: { text: "quality" }, gridcolor: "#eef1f5" },
      yaxis2: { overlaying: "y", side: "right", title: { text: "reward" }, showgrid: false, visible: ry.length > 0 },
      legend: { orientation: "h", y: -0.3, x: 0 }, plot_bgcolor: "#fff", paper_bgcolor: "#fff",
    }, PLOT_CONFIG);
  }

  // -------------------------------------------------------------- trials table (server-side paging)
  async loadTable() {
    const { key, order } = this.sort;
    const page = await api(`/jobs/${this.id}/trials?offset=${this.offset}&limit=${PAGE}&sort=${key}&order=${order}`);
    if (!this.alive) return;
    $("#trials-count").textContent = `${page.count} evaluated`;
    document.querySelectorAll("#trials-table th[data-sort]").forEach((th) => {
      th.classList.toggle("sorted", th.dataset.sort === key);
      th.dataset.order = th.dataset.sort === key ? order : "";
    });
    const tbody = $("#trials-table tbody");
    tbody.innerHTML = page.items.map((t) => {
      const m = t.metrics || {};
      return `<tr data-id="${t.trial_id}" class="clickable${t.trial_id === this.selected ? " selected" : ""}">
        <td>${t.trial_id}</td><td>${badge(t.state)}</td><td>${num(m.quality)}</td>
        <td>${si(m.macs)} <span class="muted">${pct(m.macs_ratio)}</span></td>
        <td>${si(m.params)} <span class="muted">${pct(m.params_ratio)}</span></td>
        <td>${num(m.latency_ms, 3)}</td><td>${t.feasible ? "✓" : "<span class='bad'>✗</span>"}</td>
        <td>${esc(t.info?.role || "")}</td><td>${esc(t.node || "")}</td>
        <td class="err" title="${esc(t.error || "")}">${esc(t.error || "")}</td></tr>`;
    }).join("") || `<tr><td colspan="10" class="muted">No trials yet.</td></tr>`;
    tbody.querySelectorAll("tr[data-id]").forEach((tr) => {
      tr.onclick = () => {
        const id = Number(tr.dataset.id);
        page.items.forEach((t) => { if (!this.trials.has(t.trial_id)) this.trials.set(t.trial_id, t); });
        this.select(id);
      };
    });
    renderPager($("#trials-pager"), this.offset, page.count, (o) => { this.offset = o; this.loadTable(); });
  }

  // -------------------------------------------------------------- artifacts
  async loadArtifacts() {
    const res = await api(`/jobs/${this.id}/artifacts`);
    const el = $("#artifacts");
    if (!res.items.length) { el.innerHTML = `<p class="muted">No artifacts were exported.</p>`; return; }
    el.innerHTML = res.items.sort((a, b) => a.rank - b.rank).map((a) => {
      const m = a.metrics || {};
      const size = (a.files || []).reduce((s, f) => s + (f.size || 0), 0);
      // the figures every kind reports first (test_quality is the spec's metric on the test split)
      const first = ["test_quality", "dense_test_quality", "val_quality", "latency_ratio", "macs_ratio", "params_ratio"];
      const keys = [...first.filter((k) => typeof m[k] === "number"),
        ...Object.keys(m).filter((k) => !first.includes(k) && typeof m[k] === "number")].slice(0, 8);
      const facts = keys.map((k) => `<span>${esc(k)} <b>${Number.isInteger(m[k]) ? si(m[k]) : num(m[k])}</b></span>`).join("");
      const isBaseline = m.role === "baseline" || (!m.role && this.job.baseline && a.trial_id === this.job.baseline.trial_id);
      const roleName = isBaseline ? "uniform-fill baseline" : m.role ? `${m.role} baseline` : "";
      const role = roleName ? ` <span class="tag baseline">${esc(roleName)}</span>` : "";
      // an int8 artifact ships its quantized file: say so, and the fp32 pruned model's quality
      const int8 = typeof m.int8_groups === "number" && m.int8_groups > 0
        ? `<div class="muted">ships int8: ${m.int8_groups} group${m.int8_groups === 1 ? "" : "s"} quantized (precision.json) · fp32 test quality ${num(m.fp32_test_quality)}</div>` : "";
      const removed = Array.isArray(m.removed_units)
        ? `<div class="muted">removed ${m.removed_units.length ? m.removed_units.map((u) => `<code>${esc(u)}</code>`).join(", ") : "nothing"} · kept ${(m.kept_layers || []).length} (architecture.json: kept_layers)</div>` : "";
      const delivered = m.delivered_latency_ratio != null ? `<div class="delivered">latency in <b>${esc(m.runtime_title || m.runtime || "its runtime")}</b>: searched ${m.searched_latency_ratio != null ? pct(m.searched_latency_ratio) : "–"} · delivered <b>${pct(m.delivered_latency_ratio)}</b> of dense (${num(m.delivered_latency_ms, 3)} ms, the published file)${m.tightened ? ` · tightened ${m.tightened}×` : ""}${m.role && typeof m.latency_to_best === "number" ? ` · <b>${num(m.latency_to_best, 3)}×</b> the best's latency (files timed side by side)` : ""}${m.budget_met === true ? ` · <span class="ok">budget met</span>` : m.budget_met === false ? ` · <span class="bad">over budget by ${num(100 * m.budget_excess, 1)} % in ${esc(m.runtime || "its runtime")}</span>` : ""}</div>` : "";
      const verdict = typeof m.search_beat_baseline === "boolean"
        ? `<div class="muted">after the same final fine-tune the search ${m.search_beat_baseline ? "beat" : "did NOT beat"} this baseline on the test split</div>` : "";
      return `<div class="artifact">
        <div class="artifact-head"><b>rank ${a.rank}</b>${role} <span class="muted">trial #${a.trial_id} · ${(a.files || []).length} files · ${si(size)}B</span>
          <button type="button" data-url="${esc(a.download_url)}" data-name="${esc(`${this.job.name}-rank${a.rank}.zip`)}">Download .zip</button></div>
        <div class="facts">${facts}</div>${int8}${removed}${delivered}${verdict}
        <details><summary>files</summary><ul class="files">${(a.files || []).map((f) =>
          `<li><code>${esc(f.name)}</code> ${si(f.size)}B <span class="muted" title="sha256">${esc((f.sha256 || "").slice(0, 12))}…</span></li>`).join("")}</ul></details>
      </div>`;
    }).join("");
    el.querySelectorAll("button[data-url]").forEach((b) => { b.onclick = () => download(b.dataset.url, b.dataset.name); });
  }
}

// A depth policy's removed units ("<unit>@keep": 0, in the space's order) and, for each group
// inside one of them, the unit it went with: {units: [name], groups: {group: unit}}.
function removedLayers(space, policy) {
  const units = (space?.units || []).filter((u) => policy?.[`${u.name}@keep`] === 0);
  const groups = {};
  units.forEach((u) => (u.groups || []).forEach((g) => { groups[g] = u.name; }));
  return { units: units.map((u) => u.name), groups };
}

const unitNoun = (units) => (units.every((u) => u.kind === "layer") ? "layers" : "blocks");

// The job's latency promise: met, or "over budget by X % in onnxruntime (...)".
function deliveryText(d) {
  if (d.budget_met === true) return `<span class="ok">met</span> <span class="muted">(the published files, measured in ${esc(d.runtime)})</span>`;
  if (d.budget_met === false) return `<span class="bad">${esc(d.note || `over budget by ${num(100 * d.budget_excess, 1)} % in ${d.runtime}`)}</span>`;
  return `<span class="muted">no latency term</span>`;
}

// A download needs the token, so it goes through fetch() and a blob URL, not a plain link.
async function download(url, name) {
  const res = await apiFetch(url);
  if (!res.ok) { $("#job-error").textContent = `Download failed: HTTP ${res.status}`; return; }
  const href = URL.createObjectURL(await res.blob());
  const a = document.createElement("a");
  a.href = href;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(href), 10000);
}

// One SSE block ("id: ..\nevent: ..\ndata: ..") → {id, type, data}; comments/keep-alives → null.
function parseSse(block) {
  let id = null, type = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const i = line.indexOf(":");
    const field = i < 0 ? line : line.slice(0, i);
    let val = i < 0 ? "" : line.slice(i + 1);
    if (val.startsWith(" ")) val = val.slice(1);
    if (field === "id") id = val;
    else if (field === "event") type = val;
    else if (field === "data") data.push(val);
  }
  if (!data.length) return null;
  try { return { id, type, data: JSON.parse(data.join("\n")) }; } catch { return null; }
}

window.addEventListener("hashchange", route);
document.addEventListener("DOMContentLoaded", () => {
  if (localStorage.getItem(TOKEN_KEY)) $("#forget-token").classList.remove("hidden");
  $("#forget-token").onclick = () => { localStorage.removeItem(TOKEN_KEY); $("#forget-token").classList.add("hidden"); };
  route();
});
