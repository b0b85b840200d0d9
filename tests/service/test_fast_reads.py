"""The fast path of GET /jobs and GET /jobs/{id} (service/api/fast_reads.py): the same answers
as FastAPI's routes, the token still required, a job's change seen at once, and everything it
does not handle left to FastAPI with FastAPI's status codes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.api import jobs
from service.api.app import App
from service.api.job_views import JobViews
from service.db import Database
from tests.service.conftest import wait_state
from tests.service.fakes import FakeLauncher, spec
from tests.service.test_jobs import _job


def _app(client: TestClient) -> App:
    app = client.app
    assert isinstance(app, App) and app.fast_reads is not None
    return app


def _answered(client: TestClient) -> int:
    fast = _app(client).fast_reads
    assert fast is not None
    return fast.answered


def _through_fastapi(client: TestClient, url: str, method: str = "GET", **kw: Any) -> Any:
    """The same request with the fast path switched off: FastAPI's own answer."""
    app = _app(client)
    fast, app.fast_reads = app.fast_reads, None
    try:
        return client.request(method, url, **kw)
    finally:
        app.fast_reads = fast


@pytest.mark.parametrize("url", ["/api/v1/jobs", "/api/v1/jobs?limit=1", "/api/v1/jobs?offset=1&limit=20",
                                 "/api/v1/jobs/{first}"])
def test_the_fast_path_answers_what_fastapi_answers(client: TestClient, url: str) -> None:
    ids = [client.post("/api/v1/jobs", json=spec(agent={"kind": "uniform", "trials": 3})).json()["id"]
           for _ in range(2)]
    for job_id in ids:
        wait_state(client, job_id, ("succeeded",))
    url = url.format(first=ids[0])
    before = _answered(client)
    fast = client.get(url)
    assert _answered(client) == before + 1  # answered before FastAPI's stack
    slow = _through_fastapi(client, url)
    assert fast.status_code == slow.status_code == 200
    assert fast.content == slow.content
    assert fast.headers["content-type"] == slow.headers["content-type"] == "application/json"
    assert int(fast.headers["content-length"]) == len(fast.content)


def test_the_fast_path_still_needs_the_token(client_factory: Callable[..., TestClient]) -> None:
    client = client_factory(api_token="s3cret")
    good = {"Authorization": "Bearer s3cret"}
    job_id = client.post("/api/v1/jobs", json=spec(), headers=good).json()["id"]
    # read with the token first: the answers are remembered, and still not given without it
    assert client.get("/api/v1/jobs", headers=good).status_code == 200
    assert client.get(f"/api/v1/jobs/{job_id}", headers=good).status_code == 200
    for url in ("/api/v1/jobs", f"/api/v1/jobs/{job_id}"):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"},
                        {"Authorization": "s3cret"}):
            r = client.get(url, headers=headers)
            assert r.status_code == 401, (url, headers)
            assert r.headers["www-authenticate"] == "Bearer"
            assert "items" not in r.text and job_id not in r.text
        before = _answered(client)
        assert client.get(url, headers={"Authorization": "bearer  s3cret "}).status_code == 200
        assert _answered(client) == before + 1


def test_a_jobs_change_is_seen_at_once_on_the_fast_path(client_factory: Callable[..., TestClient],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # remembered answers kept far longer than the test: only this process's write can end them
    monkeypatch.setattr(jobs.views, "max_stale_s", 60.0)
    client = client_factory(FakeLauncher(delay=0.2))
    job_id = client.post("/api/v1/jobs", json=spec(agent={"kind": "random", "trials": 200})).json()["id"]
    wait_state(client, job_id, ("running",))
    assert client.get(f"/api/v1/jobs/{job_id}").json()["state"] == "running"
    assert client.get("/api/v1/jobs").json()["items"][0]["state"] == "running"
    assert client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 200
    before = _answered(client)
    assert wait_state(client, job_id, ("cancelled",), timeout=20)["state"] == "cancelled"
    assert client.get("/api/v1/jobs").json()["items"][0]["state"] == "cancelled"
    assert _answered(client) > before


@pytest.mark.parametrize("url", [
    "/api/v1/jobs?limit=0", "/api/v1/jobs?limit=501", "/api/v1/jobs?limit=abc", "/api/v1/jobs?offset=-1",
    "/api/v1/jobs?offset=99999999999", "/api/v1/jobs?limit=2&limit=3", "/api/v1/jobs?sort=x", "/api/v1/jobs?limit",
    "/api/v1/jobs/unknown-id", "/api/v1/jobs/", "/api/v1/jobs/{id}?x=1", "/api/v1/jobs/{id}/nothing",
])
def test_what_the_fast_path_leaves_to_fastapi(client: TestClient, url: str) -> None:
    job_id = client.post("/api/v1/jobs", json=spec(agent={"kind": "uniform", "trials": 3})).json()["id"]
    wait_state(client, job_id, ("succeeded",))
    url = url.replace("{id}", job_id)
    before = _answered(client)
    fast = client.get(url, follow_redirects=False)
    assert _answered(client) == before  # not answered on the fast path
    slow = _through_fastapi(client, url, follow_redirects=False)
    assert (fast.status_code, fast.content) == (slow.status_code, slow.content)
    assert fast.status_code in (200, 307, 404, 422)


def test_a_body_or_another_method_goes_to_fastapi(client: TestClient) -> None:
    job_id = client.post("/api/v1/jobs", json=spec(agent={"kind": "uniform", "trials": 3})).json()["id"]
    url = f"/api/v1/jobs/{job_id}"
    before = _answered(client)
    assert client.request("GET", url, content=b"x" * 10).status_code == 200
    head = client.head(url).status_code
    assert head == _through_fastapi(client, url, method="HEAD").status_code
    assert _answered(client) == before


def test_an_answer_read_on_is_renewed_before_its_bound(db: Database, db_url: str) -> None:
    """Asked with ``refresh=True`` past half its bound, a remembered answer is still given and read
    again in the background: readers keep getting an answer without waiting for a read, each no
    older than the bound, and another process's write shows up in it."""
    views = JobViews(max_stale_s=1.0)
    first = _job(db)
    assert json.loads(views.page(db, offset=0, limit=10))["count"] == 1
    read_at = time.monotonic()
    replica = Database(db_url)  # its writes move no generation here
    try:
        second = _job(replica)
        time.sleep(max(0.0, read_at + 0.6 - time.monotonic()))  # past half the bound
        old = views.recent_page(db, offset=0, limit=10, refresh=True)
        assert old is not None and json.loads(old)["count"] == 1  # given, not waited for
        deadline = time.monotonic() + 5
        while json.loads(views.recent_page(db, offset=0, limit=10) or old)["count"] == 1:
            assert time.monotonic() < deadline, "not read again in the background"
            time.sleep(0.01)
        time.sleep(max(0.0, read_at + 1.05 - time.monotonic()))  # the first read's bound has passed
        renewed = views.recent_page(db, offset=0, limit=10)
        assert renewed is not None  # the background read renewed it
        assert [j["id"] for j in json.loads(renewed)["items"]] == [second, first]
    finally:
        replica.dispose()
