"""With a token set, every route but the open ones refuses a missing or wrong token.

Routes are enumerated from the app itself (``app.routes``, included routers expanded), so a route
added later is covered without touching this file; a new route that should be open has to be
added to ``OPEN`` on purpose.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.service.conftest import wait_state
from tests.service.fakes import spec

TOKEN = "reliability-s3cret"
GOOD = {"Authorization": f"Bearer {TOKEN}"}
#: Routes that are open by design: health, the dashboard's static page, FastAPI's docs.
OPEN = {"/healthz", "/", "/static/plotly.min.js", "/static/{name}", "/openapi.json", "/docs",
        "/docs/oauth2-redirect", "/redoc"}
BAD_HEADERS: list[dict[str, str]] = [
    {},
    {"Authorization": "Bearer wrong"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": f"Bearer {TOKEN[:-1]}"},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": TOKEN},
    {"Authorization": "Bearer "},
    {"X-Api-Token": TOKEN},
]


def iter_routes(app: FastAPI) -> Iterator[tuple[str, str]]:
    """(method, path) of every route, expanding included routers (FastAPI keeps them nested)."""
    for route in app.routes:
        contexts = route.effective_route_contexts() if hasattr(route, "effective_route_contexts") else [route]
        for ctx in contexts:
            path: str = getattr(ctx, "path", "")
            methods = getattr(getattr(ctx, "original_route", ctx), "methods", None) or {"GET"}
            for m in sorted(methods - {"HEAD", "OPTIONS"}):
                yield m, path


def _fill(path: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: values.get(m.group(1), "x"), path)


@pytest.fixture
def finished(app_factory: Callable[..., TestClient]) -> tuple[TestClient, dict[str, str]]:
    """A client with the token set and one finished job with an artifact (real ids to try)."""
    c = app_factory(api_token=TOKEN)
    job = c.post("/api/v1/jobs", json=spec(agent={"kind": "random", "trials": 4}), headers=GOOD).json()
    wait_state(c, job["id"], ("succeeded",), headers=GOOD)
    arts = c.get(f"/api/v1/jobs/{job['id']}/artifacts", headers=GOOD).json()["items"]
    assert arts, "the fake launcher's finalize should have produced an artifact"
    return c, {"job_id": job["id"], "artifact_id": arts[0]["id"], "name": "app.js"}


def test_every_route_is_enumerated(finished: tuple[TestClient, dict[str, str]]) -> None:
    c, _ = finished
    routes = set(iter_routes(c.app))  # type: ignore[arg-type]
    # the contract's routes must all be seen, or the enumeration itself is broken
    for expected in [("POST", "/api/v1/jobs"), ("GET", "/api/v1/jobs"), ("GET", "/api/v1/jobs/{job_id}"),
                     ("GET", "/api/v1/jobs/{job_id}/events"), ("GET", "/api/v1/artifacts/{artifact_id}/download"),
                     ("POST", "/api/v1/uploads"), ("GET", "/healthz")]:
        assert expected in routes, expected
    stray = sorted(p for _, p in routes if p not in OPEN and not p.startswith("/api/v1/"))
    assert not stray, f"routes outside /api/v1 that are not declared open: {stray}"


def test_missing_or_wrong_token_refused_everywhere(finished: tuple[TestClient, dict[str, str]]) -> None:
    c, ids = finished
    before = c.get("/api/v1/jobs", headers=GOOD).json()["count"]
    checked = 0
    for method, path in iter_routes(c.app):  # type: ignore[arg-type]
        url = _fill(path, ids)
        if path in OPEN:
            r = c.request(method, url)
            assert r.status_code != 401, (method, path)
            continue
        body: dict[str, Any] = {"json": spec()} if method == "POST" else {}
        for headers in BAD_HEADERS:
            r = c.request(method, url, headers=headers, **body)
            assert r.status_code == 401, (method, path, headers, r.status_code, r.text[:200])
            assert r.headers.get("www-authenticate") == "Bearer"
            assert "token" in r.json()["detail"]
            checked += 1
    assert checked >= 10 * len(BAD_HEADERS)
    # nothing was created or cancelled by the refused calls
    assert c.get("/api/v1/jobs", headers=GOOD).json()["count"] == before
    assert c.get(f"/api/v1/jobs/{ids['job_id']}", headers=GOOD).json()["state"] == "succeeded"


def test_right_token_passes_including_downloads(finished: tuple[TestClient, dict[str, str]]) -> None:
    c, ids = finished
    r = c.get(f"/api/v1/artifacts/{ids['artifact_id']}/download")
    assert r.status_code == 401 and not r.content.startswith(b"PK")
    r = c.get(f"/api/v1/artifacts/{ids['artifact_id']}/download", headers=GOOD)
    assert r.status_code == 200 and r.content.startswith(b"PK")  # a zip
    with c.stream("GET", f"/api/v1/jobs/{ids['job_id']}/events") as s:
        assert s.status_code == 401
    with c.stream("GET", f"/api/v1/jobs/{ids['job_id']}/events", headers=GOOD) as s:
        assert s.status_code == 200
        text = "".join(s.iter_text())
    assert "event: state" in text
    assert c.get("/healthz").json()["status"] == "ok"
    assert c.get("/").status_code == 200
