"""Runner lifecycle on both backends: states, concurrency limit, cancel, stop-and-resume."""

from __future__ import annotations

import re
import time
from pathlib import Path

from fastapi.testclient import TestClient

from service.db import Database, repo
from service.states import FINAL_STATES, JobState
from tests.service.conftest import wait_state
from tests.service.fakes import FakeLauncher, spec


def test_state_enum() -> None:
    assert [s for s in JobState if s.is_finished()] == [JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED]


def test_dashboard_final_states_match_the_server() -> None:
    """app.js keeps its own copy of the final states (no build step); it must not drift."""
    app_js = (Path(__file__).parents[2] / "service/dashboard/static/app.js").read_text()
    found = re.search(r"const FINAL = new Set\(\[([^\]]*)\]\)", app_js)
    assert found, "app.js no longer declares FINAL"
    assert set(re.findall(r'"([a-z]+)"', found.group(1))) == set(FINAL_STATES)


def test_one_job_at_a_time_and_trials_visible_while_running(client_factory) -> None:  # type: ignore[no-untyped-def]
    c: TestClient = client_factory(FakeLauncher(delay=0.05))
    a = c.post("/api/v1/jobs", json=spec(agent={"kind": "random", "trials": 12})).json()
    b = c.post("/api/v1/jobs", json=spec(agent={"kind": "random", "trials": 4})).json()
    deadline = time.monotonic() + 20
    seen_running_trials = False
    while time.monotonic() < deadline:
        ja, jb = (c.get(f"/api/v1/jobs/{j['id']}").json() for j in (a, b))
        assert not (ja["state"] == "running" and jb["state"] == "running")  # max_concurrent_jobs = 1
        if ja["state"] == "running" and 0 < c.get(f"/api/v1/jobs/{a['id']}/trials").json()["count"] < 12:
            seen_running_trials = True
            assert ja["progress"]["eta_seconds"] is None or ja["progress"]["eta_seconds"] >= 0
        if jb["state"] == "succeeded":
            break
        time.sleep(0.02)
    assert seen_running_trials
    assert wait_state(c, a["id"], ("succeeded",))["progress"]["trials_done"] == 12
    assert wait_state(c, b["id"], ("succeeded",))["started_at"] >= c.get(f"/api/v1/jobs/{a['id']}").json()["finished_at"]


def test_two_concurrent_jobs(client_factory) -> None:  # type: ignore[no-untyped-def]
    c: TestClient = client_factory(FakeLauncher(delay=0.05), max_concurrent_jobs=2)
    ids = [c.post("/api/v1/jobs", json=spec(agent={"kind": "random", "trials": 10})).json()["id"] for _ in range(2)]
    deadline = time.monotonic() + 10
    both = False
    while time.monotonic() < deadline and not both:
        both = all(c.get(f"/api/v1/jobs/{i}").json()["state"] == "running" for i in ids)
        time.sleep(0.02)
    assert both
    for i in ids:
        wait_state(c, i, ("succeeded",))


def test_cancel_running_queued_and_finished(client_factory) -> None:  # type: ignore[no-untyped-def]
    launcher = FakeLauncher(delay=0.1)
    c: TestClient = client_factory(launcher)
    running = c.post("/api/v1/jobs", json=spec(agent={"kind": "random", "trials": 200})).json()
    queued = c.post("/api/v1/jobs", json=spec()).json()
    wait_state(c, running["id"], ("running",))
    while c.get(f"/api/v1/jobs/{running['id']}/trials").json()["count"] < 2:
        time.sleep(0.02)
    r = c.post(f"/api/v1/jobs/{queued['id']}/cancel")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    r = c.post(f"/api/v1/jobs/{running['id']}/cancel")
    assert r.status_code == 200 and r.json()["state"] in ("running", "cancelled")
    done = wait_state(c, running["id"], ("cancelled", "succeeded", "failed"), timeout=10)
    assert done["state"] == "cancelled" and done["finished_at"]
    assert done["progress"]["trials_done"] < 200
    assert c.get(f"/api/v1/jobs/{running['id']}/artifacts").json()["items"] == []
    assert launcher.pools[0].closed
    assert len(launcher.pools) == 1  # the queued job never launched
    assert c.post(f"/api/v1/jobs/{running['id']}/cancel").status_code == 409
    assert c.post(f"/api/v1/jobs/{queued['id']}/cancel").status_code == 409


def test_stop_and_resume_in_process(client_factory) -> None:  # type: ignore[no-untyped-def]
    """A controller stopped mid-job leaves it running; the next one resumes without duplicates."""
    first = FakeLauncher(delay=0.05)
    c1: TestClient = client_factory(first)
    job = c1.post("/api/v1/jobs", json=spec(agent={"kind": "random", "trials": 20})).json()
    while c1.get(f"/api/v1/jobs/{job['id']}/trials").json()["count"] < 5:
        time.sleep(0.02)
    c1.__exit__(None, None, None)  # lifespan shutdown: runner.stop()
    assert first.pools[0].closed
    assert 0 < len(first.pools[0].evaluated) < 20
    db = Database(c1.app.state.settings.db_url)
    with db.session_scope() as s:
        left = repo.get_job(s, job["id"])
        assert left.state == "running" and left.agent_state is not None  # resumable, not cancelled
    db.dispose()

    second = FakeLauncher()
    c2: TestClient = client_factory(second)
    done = wait_state(c2, job["id"], ("succeeded", "failed"))
    assert done["state"] == "succeeded", done["error"]
    trials = c2.get(f"/api/v1/jobs/{job['id']}/trials", params={"limit": 100}).json()
    ids = [t["trial_id"] for t in trials["items"]]
    assert ids == list(range(20))
    # nothing the first controller evaluated was evaluated again
    assert not set(first.pools[0].evaluated) & set(second.pools[0].evaluated)
    assert len(first.pools[0].evaluated) + len(second.pools[0].evaluated) <= 20
