"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against a real server.

A real ``autoprune`` app (uvicorn subprocess, temporary SQLite database, the real workers
in-process) serves the page. The test types the token once, submits a tiny job through the form,
watches it finish without a reload, checks the plotted points against the API's trial count,
clicks a point, and saves a screenshot of the job page to ``test-artifacts/dashboard-job.png``.
A second test opens a finished transformer job (a tiny BERT) and reads its per-layer chart.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server_process import free_port, wait_final, wait_healthy

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "test-artifacts" / "dashboard-job.png"
TOKEN = "dashboard-test-token"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

# Typed into the form as YAML; the page sends the text as it is and the server parses it.
# The weights are uploaded by the test (seeded, untrained: training a reference would take minutes
# on a busy 2-core machine), so quality is top-1 agreement with that dense model.
JOB_YAML = """\
name: browser-tiny
model: {zoo: resnet20, weights: "WEIGHTS"}
dataset: {name: digits}
metric: agreement
budget: {macs_ratio: 0.5}
agent:
  kind: random   # the first proposal is the uniform baseline
  trials: 8
evaluation: {calibration_batches: 1, val_samples: 128, batch_size: 64}
finalize:
  top_k: 1
  finetune_epochs: 0.1
  export: [safetensors]
workers: 0
"""


@pytest.fixture(scope="module")
def text_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's data root: a tiny BERT model directory and a small JSONL corpus."""
    from tests.search_spaces.tiny_text import save_tiny_hf_dir

    root = tmp_path_factory.mktemp("data")
    save_tiny_hf_dir(root / "tiny-bert")
    words = ["river", "stone", "light", "music", "window", "garden", "paper", "city", "cloud", "bread"]
    lines = [json.dumps({"text": f"Line {i} tells of {' '.join(words[(i * k) % 10] for k in range(1, 5 + i % 6))}."})
             for i in range(160)]
    (root / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, text_data: Path) -> Iterator[str]:
    """A real server process on a free loopback port; always terminated."""
    state = tmp_path_factory.mktemp("dashboard")
    port = free_port()
    env = {
        **os.environ,
        "AUTOPRUNE_DATA_DIR": str(state),
        "AUTOPRUNE_DATA_ROOTS": str(text_data),
        "AUTOPRUNE_DATABASE_URL": f"sqlite:///{state / 'autoprune.db'}",
        # Trained references are shared with the other tests (trained once per machine).
        "AUTOPRUNE_CACHE_DIR": str(ROOT / ".cache" / "autoprune" / "cache"),
        "AUTOPRUNE_API_TOKEN": TOKEN,
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    log = (state / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "service.api.app:create_app",
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc, state / "server.log", timeout=30)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        if proc.returncode not in (0, -15):
            print((state / "server.log").read_text()[-3000:])


@pytest.fixture(scope="module")
def weights_id(server: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A resnet20 for digits (seeded init) uploaded through POST /uploads as safetensors."""
    import torch
    from safetensors.torch import save_file

    from search_spaces.zoo import build_model

    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=10, in_channels=1)
    path = tmp_path_factory.mktemp("weights") / "resnet20-digits.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    with path.open("rb") as fh:
        res = httpx.post(f"{server}/api/v1/uploads", files={"file": (path.name, fh)},
                         headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert res.status_code == 201, res.text
    return str(res.json()["id"])


def _api(base: str, path: str) -> Any:
    res = httpx.get(f"{base}/api/v1{path}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    res.raise_for_status()
    return res.json()


def drive(page: Any, base: str, job_yaml: str = JOB_YAML, finish_timeout_s: float = 300) -> dict[str, Any]:
    """The whole user journey; returns what the page and the API showed, for the asserts."""
    page.goto(base + "/")
    # The first API call answers 401: the page asks for the token once and keeps it.
    page.wait_for_selector("#token-dialog[open]", timeout=10_000)
    page.fill("#token-input", TOKEN)
    page.click("#token-form button[type=submit]")
    page.wait_for_selector("#jobs-table tbody tr", timeout=10_000)
    assert page.evaluate("localStorage.getItem('autoprune.token')") == TOKEN
    page.evaluate("window.__sameDocument = true")  # a reload would drop this

    # The page parses no YAML itself: the server's PyYAML does, and a syntax error names its line.
    assert page.evaluate("typeof parseYaml === 'undefined' && typeof parseSpec === 'undefined'")
    page.fill("#spec-input", job_yaml.replace("agent:\n", "agent: [\n", 1))
    page.click("#submit-button")
    page.wait_for_selector("#spec-errors li", timeout=10_000)
    errors = page.inner_text("#spec-errors")
    assert "YAML at line" in errors and "column" in errors, errors

    # A bad spec: the 422 is shown next to the form, naming the field.
    page.fill("#spec-input", job_yaml.replace("macs_ratio: 0.5", "macs_ratio: 1.5"))
    page.click("#submit-button")
    page.wait_for_selector("#spec-errors li", timeout=10_000)
    errors = page.inner_text("#spec-errors")
    assert "budget → macs_ratio" in errors, errors

    page.fill("#spec-input", job_yaml)
    page.click("#submit-button")
    page.wait_for_url("**/#/jobs/*", timeout=10_000)
    job_id = page.url.rsplit("/", 1)[1]
    # About 40 s on an idle 2-core machine; the ceiling allows for other suites running beside it.
    try:
        page.wait_for_function(
            "() => ['succeeded', 'failed', 'cancelled'].includes(document.querySelector('#job-state').textContent)",
            timeout=finish_timeout_s * 1000, polling=250,
        )
    except Exception:
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT.with_name("dashboard-job-timeout.png")), full_page=True)
        raise
    state = page.inner_text("#job-state")
    job = _api(base, f"/jobs/{job_id}")
    assert state == "succeeded", f"job ended {state}: {job.get('error')}"
    assert page.evaluate("window.__sameDocument === true"), "the page reloaded"

    trials = _api(base, f"/jobs/{job_id}/trials?limit=100")
    with_metrics = sum(1 for t in trials["items"] if t["metrics"] is not None)
    # Points drawn = trials with metrics (each once; front/baseline overlays are extra markers).
    page.wait_for_function(
        "(n) => document.querySelector('#pareto-plot').dataset.points === String(n)", arg=with_metrics,
        timeout=10_000,
    )
    drawn = page.evaluate(
        "() => { const d = document.querySelector('#pareto-plot').data;"
        " return d.filter(t => t.name === 'feasible' || t.name === 'over budget')"
        ".reduce((n, t) => n + t.x.length, 0); }"
    )
    svg_points = page.locator(
        "#pareto-plot g.tracefeasible .point, #pareto-plot g.traceoverbudget .point"
    ).count()
    has_budget_line = page.evaluate(
        "() => document.querySelector('#pareto-plot').layout.shapes.some(s => s.type === 'line')"
    )
    baseline_marked = page.evaluate(
        "() => document.querySelector('#pareto-plot').data.find(t => t.name === 'uniform baseline').x.length"
    )

    # Click a feasible point: its per-layer ratio chart and metrics appear.
    point = page.locator("#pareto-plot g.tracefeasible .point").first
    box = point.bounding_box()
    assert box is not None
    # The page pre-selects the best point: forget that, so only the click can bring a chart back.
    page.evaluate("delete document.querySelector('#layer-plot').dataset.trial")
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_selector("#layer-plot[data-trial]", timeout=10_000)
    clicked = int(page.get_attribute("#layer-plot", "data-trial") or -1)
    bars = page.locator("#layer-plot .barlayer .point").count()
    assert page.inner_text("#layer-title").startswith(f"Trial #{clicked}")
    assert "quality" in page.inner_text("#trial-metrics")

    page.wait_for_selector("#artifacts .artifact", timeout=20_000)
    page.mouse.move(0, 0)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    print(f"dashboard screenshot: {SCREENSHOT}")

    with page.expect_download(timeout=20_000) as dl:
        page.click("#artifacts button[data-url]")
    download = dl.value.path()
    return {
        "job": job, "trials": trials, "with_metrics": with_metrics, "drawn": drawn, "svg_points": svg_points,
        "has_budget_line": has_budget_line, "baseline_marked": baseline_marked, "clicked": clicked, "bars": bars,
        "download_size": Path(download).stat().st_size if download else 0,
        "groups": len((job.get("space") or {}).get("groups") or []),
    }


def test_submit_watch_and_explore_a_job(server: str, weights_id: str, chromium_path: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000}, accept_downloads=True)
            console_errors: list[str] = []
            page.on("pageerror", lambda e: console_errors.append(str(e)))
            seen = drive(page, server, JOB_YAML.replace("WEIGHTS", weights_id))
        finally:
            browser.close()

    assert not console_errors, console_errors
    spec = seen["job"]["spec"]  # the YAML as the server read it
    assert spec["agent"]["kind"] == "random" and spec["agent"]["trials"] == 8
    assert spec["finalize"]["export"] == ["safetensors"] and spec["workers"] == 0
    assert seen["trials"]["count"] == 8
    assert seen["with_metrics"] == seen["trials"]["count"]  # no trial failed
    assert seen["drawn"] == seen["trials"]["count"]
    assert seen["svg_points"] == seen["trials"]["count"]
    assert seen["has_budget_line"]
    assert seen["baseline_marked"] == 1
    assert seen["clicked"] in {t["trial_id"] for t in seen["trials"]["items"]}
    assert seen["groups"] > 0 and seen["bars"] == seen["groups"]
    assert seen["download_size"] > 0
    assert SCREENSHOT.stat().st_size > 10_000
    print(json.dumps({k: seen[k] for k in ("drawn", "bars", "clicked", "download_size")}))


def test_a_transformer_int8_job_shows_each_layers_heads_mlp_width_and_precision(
    server: str, text_data: Path, chromium_path: str,
) -> None:
    """A text job (a tiny BERT from a model directory in the data roots) with ``search_space.
    precision: [fp32, int8]`` over REST: the per-layer chart labels each group by layer and kind,
    says how many heads / MLP channels a trial keeps and each group's precision, and the best
    artifact ships a quantized ``model.onnx`` with its precision map."""
    import io
    import zipfile

    import onnx
    from playwright.sync_api import sync_playwright

    auth = {"Authorization": f"Bearer {TOKEN}"}
    body = {
        "name": "browser-int8",
        "model": {"zoo": f"hf:{text_data / 'tiny-bert'}"},
        "dataset": {"name": "text_lines", "path": str(text_data / "corpus.jsonl")},
        "metric": "embedding_cosine",
        "budget": {"macs_ratio": 0.6},
        "target": {"batch_size": 2, "seq_len": 32},
        "agent": {"kind": "random", "trials": 6},
        "search_space": {"precision": ["fp32", "int8"]},
        "evaluation": {"calibration_batches": 1, "batch_size": 16},
        "finalize": {"top_k": 1, "baseline": True, "finetune_epochs": 0.2, "export": ["onnx", "safetensors"]},
        "workers": 0,
    }
    res = httpx.post(f"{server}/api/v1/jobs", json=body, headers=auth, timeout=30)
    assert res.status_code == 201, res.text
    job = wait_final(server, res.json()["id"], auth, timeout=300)
    job_id = job["id"]
    assert job["state"] == "succeeded", job["error"]
    trials = _api(server, f"/jobs/{job_id}/trials?limit=100")["items"]
    kinds = [g["kind"] for g in job["space"]["groups"]]
    assert kinds == ["heads", "mlp", "heads", "mlp"]
    roles = [t["info"].get("role") for t in trials[:3]]
    assert roles == ["baseline", "quantize-only", "quantize+uniform-fill"]
    mixed = next(t for t in trials[3:] if 0 < sum(k.endswith("@bits") for k in t["policy"]) < 4)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            console_errors: list[str] = []
            page.on("pageerror", lambda e: console_errors.append(str(e)))
            page.goto(server + "/")
            page.evaluate(f"localStorage.setItem('autoprune.token', {json.dumps(TOKEN)})")
            page.goto(f"{server}/#/jobs/{job_id}")
            page.reload()
            page.wait_for_selector("#layer-plot[data-trial]", timeout=20_000)
            row = f"#trials-table tbody tr[data-id=\"{mixed['trial_id']}\"]"
            page.wait_for_selector(row, timeout=10_000)  # the table loads after the plot, on its own request
            page.evaluate(f"document.querySelector('{row}').click()")
            page.wait_for_function(f"() => document.querySelector('#layer-plot').dataset.trial === '{mixed['trial_id']}'",
                                   timeout=10_000)
            chart = page.evaluate(
                "() => { const t = document.querySelector('#layer-plot').data[0]; return {x: t.x, text: t.text}; }"
            )
            title = page.inner_text("#layer-title")
            artifacts = page.inner_text("#artifacts")
        finally:
            browser.close()

    assert not console_errors, console_errors
    names = [g["name"] for g in job["space"]["groups"]]
    want = ["int8" if mixed["policy"].get(f"{n}@bits") == 8 else "fp32" for n in names]
    assert [x.rsplit(" · ", 1)[0] for x in chart["x"]] == ["layer 0 heads", "layer 0 mlp", "layer 1 heads", "layer 1 mlp"]
    assert [x.rsplit(" · ", 1)[1] for x in chart["x"]] == want
    for name, text, kind in zip(names, chart["text"], kinds, strict=True):
        unit = "heads" if kind == "heads" else "MLP channels"
        assert f"kept {mixed['kept'][name]} / {4 if kind == 'heads' else 128} {unit}" in text, text
    assert all(text.endswith(p) for text, p in zip(chart["text"], want, strict=True))
    assert f"{want.count('int8')} of 4 groups int8" in title
    assert "quantize-only" in artifacts and "quantize+uniform-fill" in artifacts
    assert "the best's latency (files timed side by side)" in artifacts  # each baseline's, from one timing
    arts = _api(server, f"/jobs/{job_id}/artifacts")["items"]
    best = arts[0]
    r = httpx.get(server + best["download_url"], headers=auth, timeout=60)
    z = zipfile.ZipFile(io.BytesIO(r.content))
    precision = json.loads(z.read("precision.json"))  # every artifact of a joint search has its map
    int8 = {g for g, p in precision["groups"].items() if p == "int8"}
    assert ("model.fp32.onnx" in z.namelist()) == bool(int8)  # int8: the fp32 file kept beside
    shipped = onnx.load_from_string(z.read("model.onnx"))
    assert bool(int8) == any(n.op_type in ("MatMulInteger", "DynamicQuantizeLinear") for n in shipped.graph.node)
    assert best["metrics"].get("int8_groups", 0) == len(int8)
