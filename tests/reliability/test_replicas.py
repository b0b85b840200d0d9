"""Two real ``autoprune serve`` processes on one real PostgreSQL: each job runs on exactly one of
them, and when one is killed with SIGKILL mid-job the other finishes that job, losing nothing and
storing nothing twice.

Jobs are real and tiny (digits, :mod:`tests.reliability.helpers`' CNN, evaluation in the
controller process: ``workers: 0``, so no Ray). Leases are short (``AUTOPRUNE_LEASE_SECONDS=6``)
so a takeover comes within seconds. In CI a missing PostgreSQL fails these tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.process_tree import descendants
from tests.reliability.helpers import EVALUATING_DIR, tiny_spec
from tests.server_process import free_port, kill, serve, stop, wait_final, wait_healthy
from tests.service.conftest import _reset_postgres, reference_cache

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

TOKEN = "tok"
H = {"Authorization": f"Bearer {TOKEN}"}
LEASE_SECONDS = 6


class Controller:
    def __init__(self, name: str, proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.name, self.proc, self.url, self.log = name, proc, url, log

    def owns(self, controller_id: str | None) -> bool:
        """Controller ids are host:pid:random; the pid is this server process's."""
        return controller_id is not None and controller_id.split(":")[-2] == str(self.proc.pid)

    def get(self, path: str, **kw: Any) -> Any:
        r = httpx.get(f"{self.url}/api/v1{path}", headers=H, timeout=30, **kw)
        r.raise_for_status()
        return r.json()

    def submit(self, body: dict[str, Any]) -> str:
        r = httpx.post(f"{self.url}/api/v1/jobs", json=body, headers=H, timeout=30)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


@pytest.fixture
def pair(postgres_url: str, tmp_path: Path) -> Iterator[tuple[Controller, Controller]]:
    """Controllers A and B on the same (emptied) PostgreSQL database and artifacts directory."""
    _reset_postgres(postgres_url)
    root = Path(__file__).resolve().parents[2]
    shared = {"AUTOPRUNE_DATABASE_URL": postgres_url, "AUTOPRUNE_ARTIFACTS_DIR": str(tmp_path / "artifacts"),
              "AUTOPRUNE_CACHE_DIR": str(reference_cache()), "AUTOPRUNE_API_TOKEN": TOKEN,
              "AUTOPRUNE_LEASE_SECONDS": str(LEASE_SECONDS), "AUTOPRUNE_JOB_POLL_SECONDS": "0.3",
              "AUTOPRUNE_MAX_CONCURRENT_JOBS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    started: list[Controller] = []
    try:
        for name in ("A", "B"):
            port = free_port()
            env = {**os.environ, **shared, "AUTOPRUNE_DATA_DIR": str(tmp_path / name), "AUTOPRUNE_PORT": str(port)}
            log = tmp_path / f"{name}.log"
            started.append(Controller(name, serve(env, log), f"http://127.0.0.1:{port}", log))
        for c in started:
            wait_healthy(c.url, c.proc, c.log, timeout=120)
        yield started[0], started[1]
    finally:
        for c in started:
            stop(c.proc)


def _trials(c: Controller, job_id: str) -> list[dict[str, Any]]:
    body = c.get(f"/jobs/{job_id}/trials", params={"limit": 1000})
    assert body["count"] == len(body["items"])
    return list(body["items"])


def _logs(*cs: Controller) -> str:
    return "\n".join(f"--- {c.name}\n{c.log.read_text()[-2500:]}" for c in cs)


def test_each_job_runs_on_exactly_one_controller(pair: tuple[Controller, Controller]) -> None:
    a, b = pair
    trials, n_jobs = 3, 4
    body = tiny_spec(metric="agreement", agent={"kind": "random", "trials": trials}, finalize={"top_k": 0})
    # all submitted to A: an idle B must take its share (A runs one job at a time)
    ids = [a.submit({**body, "name": f"share-{i}"}) for i in range(n_jobs)]
    done = {job_id: wait_final(b.url, job_id, H, timeout=300, poll=0.3) for job_id in ids}
    assert all(j["state"] == "succeeded" for j in done.values()), (
        {k: (j["state"], j["error"]) for k, j in done.items()}, _logs(a, b))
    ran_on: dict[str, set[str]] = {}
    for job_id in ids:
        items = _trials(a, job_id)
        assert [t["trial_id"] for t in items] == list(range(trials))  # each trial stored once
        ran_on[job_id] = {t["controller"] for t in items}
        assert done[job_id]["controller"] is None  # the lease was released at the end
    assert all(len(cs) == 1 for cs in ran_on.values()), ran_on  # never two controllers on one job
    by_a = [j for j, cs in ran_on.items() if a.owns(next(iter(cs)))]
    by_b = [j for j, cs in ran_on.items() if b.owns(next(iter(cs)))]
    assert len(by_a) + len(by_b) == n_jobs, ran_on  # every job ran on A or B, and we know which
    assert by_a and by_b, ran_on  # both did work: B took jobs submitted to A


def test_sigkill_one_controller_mid_job_and_the_other_finishes_it(pair: tuple[Controller, Controller]) -> None:
    a, b = pair
    trials = 8
    # slow_metric takes ~1.5 s and leaves EVALUATING_DIR/<pid> while it runs: the kill lands mid-evaluation
    body = tiny_spec(metric="entrypoint:tests.reliability.helpers:slow_metric",
                     agent={"kind": "random", "trials": trials}, name="killed")
    job_id = a.submit(body)
    deadline = time.monotonic() + 120
    job = a.get(f"/jobs/{job_id}")
    while job["controller"] is None and time.monotonic() < deadline:
        time.sleep(0.1)
        job = a.get(f"/jobs/{job_id}")
    victim, survivor = (a, b) if a.owns(job["controller"]) else (b, a)
    assert victim.owns(job["controller"]), (job["controller"], _logs(a, b))
    def evaluating() -> list[Path]:  # slow_metric's markers of the victim's task process (its child)
        mine = set(descendants(victim.proc.pid))
        return [m for m in EVALUATING_DIR.glob("*") if m.name.isdigit() and int(m.name) in mine]

    markers: list[Path] = []
    try:
        while time.monotonic() < deadline:  # at least one trial stored and the next one evaluating
            if a.get(f"/jobs/{job_id}")["progress"]["trials_done"] >= 1:
                markers = evaluating()
                if markers:
                    break
            time.sleep(0.05)
        kill(victim.proc)
    finally:
        for marker in markers:
            marker.unlink(missing_ok=True)  # the killed process could not remove it
    killed_at = time.monotonic()
    before = _trials(survivor, job_id)  # what the victim stored (the lease keeps the survivor off for now)
    assert 1 <= len(before) < trials, (len(before), _logs(a, b))
    claimed_after = None
    while time.monotonic() - killed_at < 120:  # the lease goes stale, the survivor claims the job
        job = survivor.get(f"/jobs/{job_id}")
        if survivor.owns(job["controller"]) or job["state"] in ("succeeded", "failed", "cancelled"):
            claimed_after = time.monotonic() - killed_at
            break
        time.sleep(0.2)
    assert claimed_after is not None, _logs(survivor)
    # not before the victim's lease went stale: renewed at most a heartbeat (lease / 3) before the kill
    assert claimed_after >= LEASE_SECONDS * 2 / 3 - 1, claimed_after

    done = wait_final(survivor.url, job_id, H, timeout=300, poll=0.3)
    took = time.monotonic() - killed_at
    assert done["state"] == "succeeded", (done["state"], done["error"], _logs(a, b))
    after = _trials(survivor, job_id)
    assert [t["trial_id"] for t in after] == list(range(trials))  # none lost, none twice
    by_id = {t["trial_id"]: t for t in after}
    for t in before:  # what the victim stored is kept as it was, not re-run
        assert by_id[t["trial_id"]] == t and victim.owns(t["controller"])
    seen = {t["trial_id"] for t in before}
    resumed = [t for t in after if t["trial_id"] not in seen]
    assert resumed and all(survivor.owns(t["controller"]) for t in resumed)  # the in-flight one among them
    assert len(survivor.get(f"/jobs/{job_id}/artifacts")["items"]) == 1
    states = _state_events(survivor, job_id)
    assert states.count("succeeded") == 1 and states.count("finalizing") == 1, states
    print(f"takeover: claimed {claimed_after:.1f} s and finished {took:.1f} s after the kill "
          f"(lease {LEASE_SECONDS} s; {len(before)} of {trials} trials stored before)")


def _state_events(c: Controller, job_id: str) -> list[str]:
    with httpx.stream("GET", f"{c.url}/api/v1/jobs/{job_id}/events", headers=H, timeout=30) as r:
        text = "".join(r.iter_text())
    states = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if fields.get("event") == "state":
            states.append(json.loads(fields["data"])["state"])
    return states
