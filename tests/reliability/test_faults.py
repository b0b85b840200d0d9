"""Faults during real jobs: trials that raise or run out of memory, an artifact directory that
cannot be written, the controller SIGKILLed while finalizing, a Ray worker SIGKILLed mid-evaluation.

Jobs are real (digits, :mod:`tests.reliability.helpers`' tiny CNN, Torch-Pruning, the real
evaluator and finalize) but small; none trains a reference.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from service.runner import default_launcher
from service.states import FINAL_STATES
from tests.process_tree import descendants
from tests.reliability.helpers import EVALUATING_DIR, tiny_spec
from tests.server_process import free_port, kill, serve, stop, wait_final, wait_healthy
from tests.service.conftest import reference_cache, wait_state


def _real(app_factory: Callable[..., TestClient], **kw: Any) -> TestClient:
    """An in-process app whose runner uses the real workers (no fake launcher)."""
    c = app_factory(**kw)
    c.app.state.runner.launcher = default_launcher(c.app.state.settings)  # type: ignore[attr-defined]
    return c


def _trials(c: TestClient, job_id: str, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    body = c.get(f"/api/v1/jobs/{job_id}/trials", params={"limit": 1000}, headers=headers).json()
    assert body["count"] == len(body["items"])
    return list(body["items"])


@pytest.mark.slow
def test_trials_that_raise_or_run_out_of_memory_are_recorded_and_the_job_goes_on(
    app_factory: Callable[..., TestClient],
) -> None:
    c = _real(app_factory)
    trials = 10
    body = tiny_spec(budget={"macs_ratio": 0.6}, agent={"kind": "random", "trials": trials},
                     finalize={"top_k": 0})
    job = c.post("/api/v1/jobs", json=body).json()
    done = wait_state(c, job["id"], FINAL_STATES, timeout=300)
    assert done["state"] == "succeeded", done["error"]
    items = _trials(c, job["id"])
    assert [t["trial_id"] for t in items] == list(range(trials))  # every trial recorded, once
    failed = [t for t in items if t["state"] == "failed"]
    ok = [t for t in items if t["state"] == "succeeded"]
    errors = " | ".join(t["error"] for t in failed)
    assert ok and failed, [(t["kept"], t["state"]) for t in items]
    for t in failed:
        assert t["metrics"] is None and not t["feasible"] and t["error"]
        assert "injected metric failure" in t["error"] or "can't allocate memory" in t["error"], t["error"]
    assert "can't allocate memory" in errors, "no trial hit the real allocation failure"
    assert "injected metric failure" in errors
    assert done["progress"]["trials_done"] == trials
    assert done["best"] is None or done["best"]["state"] == "succeeded"


@pytest.mark.slow
def test_unwritable_artifact_directory_fails_clearly_and_keeps_trials(
    app_factory: Callable[..., TestClient], tmp_path: Path,
) -> None:
    art = tmp_path / "artifacts"
    c = _real(app_factory, artifacts_dir=art)
    assert art.is_dir()  # created at start-up; now make it unwritable even for root: a file in its place
    shutil.rmtree(art)
    art.write_text("not a directory")
    trials = 4
    body = tiny_spec(metric="agreement", agent={"kind": "random", "trials": trials})
    job = c.post("/api/v1/jobs", json=body).json()
    done = wait_state(c, job["id"], FINAL_STATES, timeout=300)
    assert done["state"] == "failed", done
    assert done["error"] and str(art) in done["error"], done["error"]  # names the directory
    items = _trials(c, job["id"])
    assert [t["trial_id"] for t in items] == list(range(trials))  # the search's results are kept
    assert sum(t["state"] == "succeeded" for t in items) >= 1
    assert c.get(f"/api/v1/jobs/{job['id']}/artifacts").json()["items"] == []
    assert art.read_text() == "not a directory"


@pytest.mark.slow
def test_sigkill_while_finalizing_then_restart(tmp_path: Path) -> None:
    """The controller dies during finalize: on restart the job finalizes again, trials untouched,
    exactly ``top_k`` artifacts (no leftovers from the killed attempt), downloadable."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "AUTOPRUNE_DATA_DIR": str(tmp_path / "state"), "AUTOPRUNE_PORT": str(port),
           "AUTOPRUNE_DATABASE_URL": f"sqlite:///{tmp_path / 'state' / 'kill.db'}",
           "AUTOPRUNE_CACHE_DIR": str(reference_cache()), "AUTOPRUNE_API_TOKEN": "tok",
           "AUTOPRUNE_TEST_SLOW_TRAIN": "0.3", "PYTHONPATH": str(root),
           # the killed controller's lease must go stale before the restarted one resumes
           "AUTOPRUNE_LEASE_SECONDS": "3"}
    h = {"Authorization": "Bearer tok"}
    log = tmp_path / "server.log"
    trials = 4
    body = tiny_spec(metric="agreement", agent={"kind": "random", "trials": trials},
                     finalize={"top_k": 1, "finetune_epochs": 2, "export": ["safetensors"]})

    proc = serve(env, log)
    try:
        wait_healthy(url, proc, log)
        job = httpx.post(f"{url}/api/v1/jobs", json=body, headers=h, timeout=30).json()
        deadline = time.monotonic() + 300
        state = "queued"
        while time.monotonic() < deadline and state not in ("finalizing", *FINAL_STATES):
            state = httpx.get(f"{url}/api/v1/jobs/{job['id']}", headers=h, timeout=30).json()["state"]
            time.sleep(0.1)
        before = httpx.get(f"{url}/api/v1/jobs/{job['id']}/trials", headers=h, timeout=30).json()["items"]
        kill(proc)
    finally:
        kill(proc)
    assert state == "finalizing", (state, log.read_text()[-2000:])
    assert len(before) == trials

    # the restarted controller trains at full speed: only the killed attempt had to be slow
    proc = serve({**env, "AUTOPRUNE_TEST_SLOW_TRAIN": "0"}, log)
    try:
        wait_healthy(url, proc, log)
        done = wait_final(url, job["id"], h, timeout=300, poll=0.3)
        after = httpx.get(f"{url}/api/v1/jobs/{job['id']}/trials", params={"limit": 100}, headers=h,
                          timeout=30).json()["items"]
        arts = httpx.get(f"{url}/api/v1/jobs/{job['id']}/artifacts", headers=h, timeout=30).json()["items"]
        zipped = httpx.get(f"{url}{arts[0]['download_url']}", headers=h, timeout=60) if arts else None
    finally:
        stop(proc)
    assert done["state"] == "succeeded", (done["state"], done["error"], log.read_text()[-3000:])
    assert after == before  # not one trial re-run, lost or duplicated
    assert len(arts) == 1 and arts[0]["rank"] == 1
    assert zipped is not None and zipped.status_code == 200 and zipped.content.startswith(b"PK")


def _kill_one_evaluating(c: TestClient, job_id: str, what: str) -> int:
    """SIGKILLs a process that ``slow_metric`` marks as evaluating a trial (once the dense
    model's own evaluation is done), failing if the job ends or 240 s pass first."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        view = c.get(f"/api/v1/jobs/{job_id}").json()
        assert view["state"] not in FINAL_STATES, view["error"]
        # only this test's evaluators (below this process): the directory is shared by every
        # xdist worker, and a killed process's marker stays behind
        mine = descendants(os.getpid())
        for marker in EVALUATING_DIR.iterdir():
            pid = int(marker.name)
            if pid in mine and view["dense"] is not None:
                os.kill(pid, signal.SIGKILL)
                return pid
        time.sleep(0.1)
    raise AssertionError(f"never saw {what} mid-evaluation")


def _job_with_one_evaluator_killed(c: TestClient, *, workers: int, trials: int, who: str) -> tuple[list[Any], int]:
    """Runs a slow-metric job, SIGKILLs the process evaluating one of its trials, and checks the
    job completes with every trial stored once (retried, or recorded failed); returns the trials
    and the killed pid."""
    EVALUATING_DIR.mkdir(parents=True, exist_ok=True)  # not emptied: other workers' tests use it
    body = tiny_spec(metric="entrypoint:tests.reliability.helpers:slow_metric",
                     agent={"kind": "random", "trials": trials}, finalize={"top_k": 0}, workers=workers)
    job = c.post("/api/v1/jobs", json=body).json()
    killed = _kill_one_evaluating(c, job["id"], who)
    done = wait_state(c, job["id"], FINAL_STATES, timeout=240)
    assert done["state"] == "succeeded", done["error"]
    items = _trials(c, job["id"])
    assert [t["trial_id"] for t in items] == list(range(trials))
    for t in items:
        assert t["state"] == "succeeded" or "worker died" in (t["error"] or ""), t
    return items, killed


@pytest.mark.slow
def test_task_process_killed_mid_evaluation(app_factory: Callable[..., TestClient]) -> None:
    """``workers: 0`` evaluates in a child process: SIGKILL it mid-trial and the child is started
    again, the trial retried (or recorded failed); the API's process is untouched."""
    items, killed = _job_with_one_evaluator_killed(_real(app_factory), workers=0, trials=3, who="the task process")
    for t in items:
        if t["metrics"] and not t["cached"]:
            assert t["metrics"]["extra"]["worker_pid"] not in (killed, os.getpid())


@pytest.mark.slow
@pytest.mark.ray
def test_ray_worker_killed_mid_evaluation(app_factory: Callable[..., TestClient]) -> None:
    """SIGKILL of the actor process while it evaluates: the trial is retried (or recorded failed),
    and the job completes with every trial stored once. (The app starts its own Ray, in its
    driver process: no session-wide ``ray_cluster`` is needed.)"""
    items, killed = _job_with_one_evaluator_killed(_real(app_factory), workers=1, trials=4, who="a worker")
    for t in items:
        if t["metrics"]:
            assert t["metrics"]["extra"].get("worker_pid") != killed or t["cached"]
