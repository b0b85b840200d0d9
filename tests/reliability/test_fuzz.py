"""Schemathesis against the app's own OpenAPI schema, in-process (ASGI, no network).

The app runs with the service's fake launcher, so fuzzed jobs run the real runner, agents and
storage but never train a model. Checks: no 5xx; every response conforms to its declared content
type, headers and schema (the routes' pydantic response models: Job, Page[Trial], ParetoFront,
...), so a field of the wrong type or a missing one fails here. ``POST /jobs`` is fuzzed with
JSON and YAML bodies. A separate test checks that the error statuses the routes can answer
(404/409/413) are declared.

A second pass fuzzes the job routes with the id of a real, finished job, so trials/pareto/events/
artifacts are exercised on data rather than only on 404s.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi import checks

from tests.service.conftest import make_settings
from tests.service.fakes import FakeLauncher, spec

BASE = f"http://{asgi.HOST}"
EXAMPLES = 30  # per operation; the whole module stays well under 90 s
FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                         suppress_health_check=list(HealthCheck))
STRICT_CHECKS = [checks.content_type_conformance, checks.response_schema_conformance,
                 checks.response_headers_conformance]


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from service.api.app import create_app

    tmp: Path = tmp_path_factory.mktemp("fuzz")
    app = create_app(make_settings(tmp, f"sqlite:///{tmp / 'fuzz.db'}", max_upload_bytes=64 * 1024),
                     launcher=FakeLauncher())
    yield app
    asgi.shutdown_lifespans()  # stops the runner the ASGI client started


@pytest.fixture(scope="module")
def session(fuzz_app: Any) -> Iterator[Any]:
    """Schemathesis' in-process ASGI session (a requests.Session); starts the app's lifespan once."""
    with asgi.get_client(fuzz_app) as client:
        yield client


@pytest.fixture(scope="module")
def real_job(session: Any) -> str:
    """A finished job with trials and an artifact (submitted through the same in-process client)."""
    import time

    job = session.post("/api/v1/jobs", json=spec(agent={"kind": "random", "trials": 5})).json()
    deadline = time.monotonic() + 30
    while session.get(f"/api/v1/jobs/{job['id']}").json()["state"] != "succeeded":
        assert time.monotonic() < deadline, "seed job did not finish"
        time.sleep(0.05)
    return str(job["id"])


def _openapi() -> dict[str, Any]:
    """The schema, read at collection without starting anything (create_app does no I/O)."""
    from service.api.app import create_app
    from service.config import Settings

    return create_app(Settings(data_dir=Path("/nonexistent/autoprune-fuzz")), launcher=FakeLauncher()).openapi()


schema = schemathesis.openapi.from_dict(_openapi())


@pytest.fixture(scope="module")
def api_schema() -> Any:
    return schema


@schema.parametrize()
@FUZZ_SETTINGS
def test_fuzz_no_server_errors_and_schema_conformance(case: Any, session: Any) -> None:
    strict = STRICT_CHECKS
    response = case.call(session=session, base_url=BASE, timeout=10)
    assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])
    case.validate_response(response, checks=[not_a_server_error, *strict])


@schema.include(path_regex=r"\{job_id\}").parametrize()
@FUZZ_SETTINGS
def test_fuzz_job_routes_on_a_real_job(case: Any, session: Any, real_job: str) -> None:
    case.path_parameters = {**(case.path_parameters or {}), "job_id": real_job}
    strict = STRICT_CHECKS
    response = case.call(session=session, base_url=BASE, timeout=10)
    assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])
    case.validate_response(response, checks=[not_a_server_error, *strict])


def test_huge_offset_is_422_not_500(session: Any, real_job: str) -> None:
    for url in ("/api/v1/jobs", f"/api/v1/jobs/{real_job}/trials"):
        r = session.get(url, params={"offset": 2**63})
        assert r.status_code == 422, (url, r.status_code)


def test_events_content_type_is_documented(session: Any, real_job: str) -> None:
    op = schema.raw_schema["paths"]["/api/v1/jobs/{job_id}/events"]["get"]
    r = session.get(f"/api/v1/jobs/{real_job}/events", timeout=10)
    assert r.headers["content-type"].startswith("text/event-stream")
    assert "text/event-stream" in op["responses"]["200"].get("content", {}), op["responses"]["200"]


def test_every_returned_status_code_is_documented(api_schema: Any) -> None:
    documented = {
        (method.upper(), path): set(op.get("responses", {}))
        for path, item in api_schema.raw_schema["paths"].items() for method, op in item.items()
    }
    for key in [("GET", "/api/v1/jobs/{job_id}"), ("GET", "/api/v1/artifacts/{artifact_id}/download"),
                ("POST", "/api/v1/jobs/{job_id}/cancel")]:
        assert "404" in documented[key], (key, documented[key])
    assert "409" in documented[("POST", "/api/v1/jobs/{job_id}/cancel")]
    assert "413" in documented[("POST", "/api/v1/uploads")]
