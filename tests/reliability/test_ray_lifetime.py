"""One real ``autoprune serve`` and the real local Ray across many jobs (issue 12).

The controller must outlive every job and every Ray failure: three consecutive ``workers: 2``
jobs, then two jobs at once (``AUTOPRUNE_MAX_CONCURRENT_JOBS=2``), then Ray's own processes
(the raylet and GCS of *this* server's Ray session, found among the server's descendants)
SIGKILLed between jobs and one more job. ``/healthz`` is polled every 0.25 s all along and
must answer every time; every job succeeds with trial ids exactly ``0..n-1``.

Jobs are tiny: :mod:`tests.reliability.helpers`' CNN on digits, 4 random trials, no finalize.
The tests run in file order on one server (module fixture) and each is self-sufficient.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.process_tree import alive, descendants, name_of, ray_daemons
from tests.reliability.helpers import tiny_spec
from tests.server_process import free_port, serve, stop, wait_final, wait_healthy
from tests.service.conftest import reference_cache

pytestmark = [pytest.mark.slow, pytest.mark.ray]

TRIALS = 4
HEADERS = {"Authorization": "Bearer tok"}


def job_spec(name: str, workers: int) -> dict[str, Any]:
    # the tiny CNN: what is tested is the controller and its Ray, not the model (a zoo model
    # would also wait for its reference to be trained on a fresh clone)
    return tiny_spec(name=name, metric="agreement", budget={"macs_ratio": 0.5},
                     agent={"kind": "random", "trials": TRIALS}, finalize={"top_k": 0},
                     workers=workers)


@dataclass
class HealthWatch:
    """Polls ``/healthz`` in a thread; remembers every failure and every Ray state seen."""

    url: str
    failures: list[str] = field(default_factory=list)
    ray_states: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                r = httpx.get(f"{self.url}/healthz", timeout=5)
                body = r.json()
                if r.status_code != 200 or body.get("status") != "ok":
                    self.failures.append(f"{r.status_code} {body}")
                elif not self.ray_states or self.ray_states[-1] != str(body.get("ray")):
                    self.ray_states.append(str(body.get("ray")))
            except Exception as exc:  # noqa: BLE001 - any failure to answer is what we look for
                self.failures.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(0.25)


@dataclass
class Server:
    url: str
    proc: Any
    log: Path
    health: HealthWatch

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def submit(self, spec: dict[str, Any]) -> str:
        r = httpx.post(f"{self.url}/api/v1/jobs", json=spec, headers=HEADERS, timeout=30)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def healthz(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/healthz", timeout=5).json())

    def assert_succeeded(self, job_id: str, timeout: float = 600) -> dict[str, Any]:
        try:
            job = wait_final(self.url, job_id, HEADERS, timeout=timeout)
        except httpx.TransportError as exc:
            raise AssertionError(f"server gone ({exc}); exit {self.proc.poll()}: {self.tail()}") from exc
        assert job["state"] == "succeeded", (job["state"], job["error"], self.tail())
        body = httpx.get(f"{self.url}/api/v1/jobs/{job_id}/trials", params={"limit": 1000},
                         headers=HEADERS, timeout=30).json()
        ids = [t["trial_id"] for t in body["items"]]
        assert ids == list(range(TRIALS)) and body["count"] == TRIALS, ids  # none lost, none twice
        assert all(t["state"] == "succeeded" for t in body["items"]), [t["error"] for t in body["items"]]
        assert job["progress"]["trials_done"] == TRIALS
        return job

    def assert_alive(self) -> None:
        assert self.proc.poll() is None, f"server exited with {self.proc.returncode}: {self.tail()}"
        assert not self.health.failures, (self.health.failures[:5], self.tail())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("ray-lifetime")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "AUTOPRUNE_DATA_DIR": str(tmp / "state"), "AUTOPRUNE_PORT": str(port),
           "AUTOPRUNE_DATABASE_URL": f"sqlite:///{tmp / 'state' / 'ray.db'}",
           "AUTOPRUNE_CACHE_DIR": str(reference_cache()), "AUTOPRUNE_API_TOKEN": "tok",
           "AUTOPRUNE_MAX_CONCURRENT_JOBS": "2", "PYTHONPATH": str(root)}
    env.pop("RAY_ADDRESS", None)
    env.pop("AUTOPRUNE_RAY_ADDRESS", None)
    log = tmp / "server.log"
    proc = serve(env, log)
    health = HealthWatch(url)
    watcher = threading.Thread(target=health.run, daemon=True)
    ray_pids: list[int] = []
    try:
        wait_healthy(url, proc, log)
        watcher.start()
        yield Server(url, proc, log, health)
        # a clean stop (SIGTERM to the server alone, not its group) shuts its Ray down too
        health._stop.set()
        ray_pids = [*descendants(proc.pid)]
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        deadline = time.monotonic() + 30
        while any(alive(p) for p in ray_pids) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        health._stop.set()
        left = [(p, name_of(p)) for p in ray_pids if alive(p)]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        stop(proc)
    assert not left, f"processes outlived the server: {left}"


def test_consecutive_jobs_on_one_server(server: Server) -> None:
    t0 = time.monotonic()
    for i in range(3):
        job_id = server.submit(job_spec(f"consecutive-{i}", workers=2))
        server.assert_succeeded(job_id)
        time.sleep(3)  # where the controller used to die: a few seconds after a job ends
        server.assert_alive()
        assert server.healthz()["ray"] == "running"
    print(f"3 consecutive workers=2 jobs x {TRIALS} trials: {time.monotonic() - t0:.1f} s")


def test_two_jobs_at_once(server: Server) -> None:
    t0 = time.monotonic()
    ids = [server.submit(job_spec(f"concurrent-{i}", workers=1)) for i in range(2)]
    deadline = time.monotonic() + 120
    seen_both_running = False
    while time.monotonic() < deadline and not seen_both_running:
        states = [httpx.get(f"{server.url}/api/v1/jobs/{j}", headers=HEADERS, timeout=30).json()["state"]
                  for j in ids]
        seen_both_running = states == ["running", "running"]
        if any(s not in ("queued", "running") for s in states):
            break
        time.sleep(0.2)
    for job_id in ids:
        server.assert_succeeded(job_id)
    assert seen_both_running, "the two jobs never ran at the same time"
    time.sleep(3)
    server.assert_alive()
    print(f"2 concurrent workers=1 jobs x {TRIALS} trials: {time.monotonic() - t0:.1f} s")


def test_ray_killed_between_jobs(server: Server) -> None:
    t0 = time.monotonic()
    if server.healthz()["ray"] != "running":  # run alone: start the server's Ray with a job first
        server.assert_succeeded(server.submit(job_spec("warm-up", workers=2)))
    victims = ray_daemons(server.proc.pid)  # this server's Ray only, never another test's
    assert sorted(victims.values()) == ["gcs_server", "raylet"], victims
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while server.healthz()["ray"] != "down" and time.monotonic() < deadline:
        time.sleep(0.25)
    assert server.healthz()["ray"] == "down"
    time.sleep(3)
    server.assert_alive()

    job_id = server.submit(job_spec("after-kill", workers=2))
    server.assert_succeeded(job_id)
    server.assert_alive()
    assert server.healthz()["ray"] == "running"
    fresh = ray_daemons(server.proc.pid)
    assert fresh and not set(fresh) & set(victims)  # a new Ray
    print(f"Ray killed, next workers=2 job x {TRIALS} trials: {time.monotonic() - t0:.1f} s")
