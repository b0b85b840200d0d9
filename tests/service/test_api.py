"""The REST contract with the fake launcher, on SQLite and PostgreSQL: status codes and fields."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from tests.service.conftest import wait_state
from tests.service.fakes import FakeLauncher, spec

JOB_FIELDS = {"id", "name", "state", "spec", "created_at", "started_at", "finished_at", "progress", "budget",
              "dense", "baseline", "best", "error", "space", "cost_key", "controller", "runtime", "delivery"}
TRIAL_FIELDS = {"trial_id", "state", "policy", "kept", "metrics", "feasible", "error", "node", "info", "cached",
                "controller", "finished_at"}
METRIC_FIELDS = {"quality", "macs", "params", "macs_ratio", "params_ratio", "latency_ms", "latency_spread_ms",
                 "latency_ratio", "eval_seconds", "node", "extra"}


def test_healthz_and_openapi(client: TestClient) -> None:
    # the API is alive; no job has needed Ray, so none was started
    assert client.get("/healthz").json() == {"status": "ok", "ray": "not_started"}
    assert "/api/v1/jobs" in client.get("/openapi.json").json()["paths"]


def test_job_lifecycle_contract(client: TestClient) -> None:
    r = client.post("/api/v1/jobs", json=spec(agent={"kind": "uniform", "trials": 6}))
    assert r.status_code == 201, r.text
    job = r.json()
    assert set(job) == JOB_FIELDS
    assert job["state"] in ("queued", "running")
    assert job["progress"]["trials_total"] == 6
    assert job["cost_key"] == "macs"
    assert job["budget"] == {"macs_ratio": 0.6, "params_ratio": None, "latency_ms": None, "latency_ratio": None}

    done = wait_state(client, job["id"], ("succeeded", "failed"))
    assert done["state"] == "succeeded", done["error"]
    assert done["finished_at"] and done["started_at"]
    assert set(done["dense"]) == METRIC_FIELDS
    assert done["space"]["dense_macs"] == 4800 and len(done["space"]["groups"]) == 3
    assert set(done["space"]["groups"][0]) == {"name", "index", "kind", "channels", "in_channels", "kernel",
                                                "stride", "macs", "params"}
    best = done["best"]
    assert best is not None and set(best) == TRIAL_FIELDS and best["feasible"]
    assert best["metrics"]["macs_ratio"] <= 0.6 + 1e-9
    assert done["baseline"] is not None and done["baseline"]["info"]["role"] == "baseline"

    trials = client.get(f"/api/v1/jobs/{job['id']}/trials").json()
    assert trials["count"] == done["progress"]["trials_done"] >= 1
    ids = [t["trial_id"] for t in trials["items"]]
    assert ids == sorted(set(ids))
    by_q = client.get(f"/api/v1/jobs/{job['id']}/trials", params={"sort": "quality", "order": "desc"}).json()
    qs = [t["metrics"]["quality"] for t in by_q["items"] if t["metrics"]]
    assert qs == sorted(qs, reverse=True)
    page = client.get(f"/api/v1/jobs/{job['id']}/trials", params={"offset": 1, "limit": 1}).json()
    assert len(page["items"]) == min(1, trials["count"] - 1) and page["count"] == trials["count"]


def test_random_job_front_artifacts_download(client: TestClient) -> None:
    job = client.post("/api/v1/jobs", json=spec()).json()
    done = wait_state(client, job["id"], ("succeeded", "failed"))
    assert done["state"] == "succeeded", done["error"]
    assert done["progress"] == {"trials_done": 8, "trials_total": 8, "eta_seconds": None}

    front = client.get(f"/api/v1/jobs/{job['id']}/pareto").json()
    assert front["cost"] == "macs" and front["items"]
    costs = [t["metrics"]["macs"] for t in front["items"]]
    assert costs == sorted(costs)
    assert all(t["feasible"] for t in front["items"])
    by_params = client.get(f"/api/v1/jobs/{job['id']}/pareto", params={"cost": "params"}).json()
    assert by_params["cost"] == "params"
    assert client.get(f"/api/v1/jobs/{job['id']}/pareto", params={"cost": "bogus"}).status_code == 422

    arts = client.get(f"/api/v1/jobs/{job['id']}/artifacts").json()["items"]
    assert [a["rank"] for a in arts] == list(range(1, min(2, len(front["items"])) + 1))
    a = arts[0]
    assert set(a) == {"id", "rank", "trial_id", "files", "metrics", "download_url"}
    assert a["download_url"] == f"/api/v1/artifacts/{a['id']}/download"
    assert a["trial_id"] == done["best"]["trial_id"]
    r = client.get(a["download_url"])
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    import io
    import zipfile

    names = zipfile.ZipFile(io.BytesIO(r.content)).namelist()
    assert names == ["policy.json"]
    assert client.get("/api/v1/artifacts/nope/download").status_code == 404


def test_list_jobs_newest_first_and_404(client: TestClient) -> None:
    ids = [client.post("/api/v1/jobs", json=spec(name=f"j{i}")).json()["id"] for i in range(3)]
    page = client.get("/api/v1/jobs", params={"limit": 2}).json()
    assert page["count"] == 3 and page["offset"] == 0 and page["limit"] == 2
    assert [j["id"] for j in page["items"]] == ids[::-1][:2]
    assert client.get("/api/v1/jobs", params={"offset": 2}).json()["items"][0]["id"] == ids[0]
    assert client.get("/api/v1/jobs/unknown").status_code == 404
    assert client.get("/api/v1/jobs/unknown/trials").status_code == 404
    assert client.post("/api/v1/jobs/unknown/cancel").status_code == 404
    assert client.get("/api/v1/jobs", params={"limit": 0}).status_code == 422


def test_failed_trials_and_failed_launch(client_factory) -> None:  # type: ignore[no-untyped-def]
    c = client_factory(FakeLauncher(fail_on={1, 2}))
    job = c.post("/api/v1/jobs", json=spec()).json()
    done = wait_state(c, job["id"], ("succeeded", "failed"))
    assert done["state"] == "succeeded"
    failed = [t for t in c.get(f"/api/v1/jobs/{job['id']}/trials").json()["items"] if t["state"] == "failed"]
    assert {t["trial_id"] for t in failed} == {1, 2}
    assert all(t["metrics"] is None and "injected" in t["error"] and not t["feasible"] for t in failed)

    c2 = client_factory(FakeLauncher(fail_launch=True))
    job = c2.post("/api/v1/jobs", json=spec()).json()
    done = wait_state(c2, job["id"], ("succeeded", "failed"))
    assert done["state"] == "failed" and "cannot build the model" in done["error"]


def test_events_stream_and_replay(client: TestClient) -> None:
    job = client.post("/api/v1/jobs", json=spec()).json()
    wait_state(client, job["id"], ("succeeded",))
    with client.stream("GET", f"/api/v1/jobs/{job['id']}/events") as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        text = "".join(r.iter_text())
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "event" in fields:
            events.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
    seqs = [e[0] for e in events]
    assert seqs == list(range(1, len(seqs) + 1))
    kinds = [e[1] for e in events]
    assert kinds.count("trial") == 8 and "front" in kinds and "progress" in kinds
    states = [e[2]["state"] for e in events if e[1] == "state"]
    assert states == ["queued", "running", "finalizing", "succeeded"]
    assert set(next(e[2] for e in events if e[1] == "trial")) == TRIAL_FIELDS
    # finalize's steps reach the stream, between the finalizing and succeeded states
    fin = [(i, e[2]) for i, e in enumerate(events) if e[1] == "finalize"]
    ranks = len(client.get(f"/api/v1/jobs/{job['id']}/artifacts").json()["items"])
    assert ranks >= 1 and [(d["rank"], d["stage"]) for _, d in fin] == [
        (r, stage) for r in range(1, ranks + 1) for stage in ("start", "done")
    ]
    state_at = {e[2]["state"]: i for i, e in enumerate(events) if e[1] == "state"}
    assert all(state_at["finalizing"] < i < state_at["succeeded"] for i, _ in fin)
    assert all("policy" not in d for _, d in fin)  # the event stays small: the artifact holds the rest
    # Last-Event-ID replays only what comes after it
    with client.stream("GET", f"/api/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": str(seqs[-3])}) as r:
        tail = "".join(r.iter_text())
    assert [int(line[4:]) for line in tail.splitlines() if line.startswith("id: ")] == seqs[-2:]


def test_event_stream_of_a_job_finishing_mid_read_ends_with_its_final_state(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job finishes between the stream's reads of its events and of its state: the stream
    still ends with the final ``state`` event (it once ended on "running": a client following the
    stream never learned the outcome)."""
    from datetime import timedelta

    from service.db import repo

    db = client.app.state.db  # type: ignore[attr-defined]
    with db.session_scope() as s:  # a job another controller runs: this server's runner leaves it be
        row = repo.create_job(s, spec=spec(), name="elsewhere", cost_key="macs", trials_total=1)
        row.lease_owner, row.lease_expires_at = "other-controller", repo.utcnow() + timedelta(hours=1)
        repo.set_state(s, job=row, state="running")
        job_id = row.id
    read = repo.events_after
    finished = []

    def events_then_finish(s, **kw):  # type: ignore[no-untyped-def]
        rows = read(s, **kw)
        if not rows and not finished:  # the other controller commits the job's end just after
            finished.append(True)
            with db.session_scope() as other:
                repo.set_state(other, job=repo.get_job(other, job_id), state="succeeded")
        return rows

    monkeypatch.setattr(repo, "events_after", events_then_finish)
    with client.stream("GET", f"/api/v1/jobs/{job_id}/events") as r:
        states = [json.loads(line[5:])["state"] for line in r.iter_lines()
                  if line.startswith("data:") and '"state"' in line]
    assert states == ["running", "succeeded"]


def test_body_size_limit(client_factory) -> None:  # type: ignore[no-untyped-def]
    c = client_factory(max_body_bytes=2048)
    r = c.post("/api/v1/jobs", content=b"{" + b" " * 4000 + b"}", headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert c.post("/api/v1/jobs", json=spec()).status_code == 201


def test_cost_key_follows_latency_budget_and_nsga2(client: TestClient) -> None:
    lat = client.post("/api/v1/jobs", json=spec(budget={"macs_ratio": 0.6, "latency_ratio": 0.9})).json()
    nsga = client.post("/api/v1/jobs", json=spec(agent={"kind": "optuna-nsga2", "trials": 4})).json()
    assert lat["cost_key"] == "latency_ms" and nsga["cost_key"] == "latency_ms"
    done = wait_state(client, lat["id"], ("succeeded", "failed"))
    assert done["state"] == "succeeded", done["error"]
    front = client.get(f"/api/v1/jobs/{lat['id']}/pareto").json()
    assert front["cost"] == "latency_ms"
    lats = [t["metrics"]["latency_ms"] for t in front["items"]]
    assert lats == sorted(lats)
