"""Real jobs (digits / resnet20, Torch-Pruning, in-process workers): in-process API, and a real
``autoprune serve`` process killed with SIGKILL mid-job, restarted, finishing with every trial
stored once."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import REFERENCE_GROUP
from tests.server_process import free_port, kill, serve, stop, wait_final, wait_healthy
from tests.service.conftest import reference_cache, wait_state

pytestmark = pytest.mark.xdist_group(REFERENCE_GROUP)  # the zoo reference: trained on a fresh clone

REAL_SPEC: dict[str, Any] = {
    "name": "real",
    "model": {"zoo": "resnet20"},
    "dataset": {"name": "digits"},
    "budget": {"macs_ratio": 0.5},
    "agent": {"kind": "random", "trials": 4},
    "evaluation": {"calibration_batches": 2, "val_samples": 200},
    "finalize": {"top_k": 1, "finetune_epochs": 0, "export": ["safetensors"]},
    "workers": 0,
}


@pytest.mark.slow
def test_real_job_in_process(tmp_path: Path) -> None:
    """No launcher injected: the real workers build, evaluate and finalize the job."""
    from service.api.app import create_app
    from tests.service.conftest import make_settings

    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'real.db'}")
    with TestClient(create_app(settings)) as c:
        job = c.post("/api/v1/jobs", json=REAL_SPEC).json()
        done = wait_state(c, job["id"], ("succeeded", "failed"), timeout=900)
        assert done["state"] == "succeeded", (done["state"], done["error"])
        assert done["dense"]["quality"] > 0.5
        best = done["best"]
        assert best["feasible"] and best["metrics"]["macs_ratio"] <= 0.5 + 1e-6
        # workers: 0 evaluates in a child process, never in the one serving the API
        assert best["metrics"]["extra"]["worker_pid"] not in (None, os.getpid())
        assert done["space"]["groups"] and done["progress"]["trials_done"] == 4
        arts = c.get(f"/api/v1/jobs/{job['id']}/artifacts").json()["items"]
        assert len(arts) == 1 and arts[0]["files"]
        r = c.get(arts[0]["download_url"])
        assert r.status_code == 200
    import io
    import zipfile

    out = tmp_path / "pulled"
    zipfile.ZipFile(io.BytesIO(r.content)).extractall(out)
    import json

    import torch

    from search_spaces.bundle import load_bundle

    model = load_bundle(out)  # rebuilt from architecture.json + safetensors: no pickle
    arch = json.loads((out / "architecture.json").read_text())
    assert model(torch.zeros(2, *arch["input_shape"])).shape == (2, 10)


@pytest.mark.slow
def test_sigkill_mid_job_then_resume(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "AUTOPRUNE_DATA_DIR": str(tmp_path / "state"), "AUTOPRUNE_PORT": str(port),
           "AUTOPRUNE_DATABASE_URL": f"sqlite:///{tmp_path / 'state' / 'kill.db'}",
           "AUTOPRUNE_CACHE_DIR": str(reference_cache()), "AUTOPRUNE_API_TOKEN": "tok",
           # the killed controller's lease must go stale before the restarted one resumes
           "AUTOPRUNE_LEASE_SECONDS": "3"}
    headers = {"Authorization": "Bearer tok"}
    log = tmp_path / "server.log"
    trials = 10
    spec = {**REAL_SPEC, "agent": {"kind": "random", "trials": trials}}

    proc = serve(env, log)
    try:
        wait_healthy(url, proc, log)
        job = httpx.post(f"{url}/api/v1/jobs", json=spec, headers=headers, timeout=30).json()
        deadline = time.monotonic() + 900
        before: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            before = httpx.get(f"{url}/api/v1/jobs/{job['id']}/trials", headers=headers, timeout=30).json()["items"]
            if len(before) >= 2:
                break
            first = httpx.get(f"{url}/api/v1/jobs/{job['id']}", headers=headers, timeout=30).json()
            assert first["state"] in ("queued", "running"), (first["state"], first["error"], log.read_text()[-3000:])
            time.sleep(0.5)
        state = httpx.get(f"{url}/api/v1/jobs/{job['id']}", headers=headers, timeout=30).json()["state"]
        kill(proc)
    finally:
        kill(proc)
    assert state == "running" and 2 <= len(before) < trials, (state, len(before))

    proc = serve(env, log)
    try:
        wait_healthy(url, proc, log)
        done = wait_final(url, job["id"], headers, timeout=900)
        assert done["state"] == "succeeded", (done["state"], done["error"], log.read_text()[-3000:])
        after = httpx.get(f"{url}/api/v1/jobs/{job['id']}/trials", params={"limit": 1000}, headers=headers,
                          timeout=30).json()
    finally:
        stop(proc)
    ids = [t["trial_id"] for t in after["items"]]
    assert ids == list(range(trials)) and after["count"] == trials  # none lost, none twice
    by_id = {t["trial_id"]: t for t in after["items"]}
    for t in before:  # what was stored before the kill was kept, not re-run
        assert by_id[t["trial_id"]]["finished_at"] == t["finished_at"]
        assert by_id[t["trial_id"]]["metrics"] == t["metrics"]
