"""The typed contract: named schemas for every 2xx answer, YAML job specs read by PyYAML, and a
client generated from the live /openapi.json (openapi-python-client) running a job end to end."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from tests.service.conftest import wait_state
from tests.service.fakes import spec

YAML = {"Content-Type": "application/yaml"}
# media types that carry bytes, not JSON: the event stream and the artifact zip
STREAMS = {"text/event-stream", "application/zip"}


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = doc["components"]["schemas"][name]
    return schema


def test_every_2xx_answer_of_the_api_has_a_schema_with_named_properties(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    checked = 0
    for path, item in doc["paths"].items():
        if not path.startswith("/api/v1"):
            continue
        for method, op in item.items():
            for code, response in op["responses"].items():
                if not code.startswith("2"):
                    continue
                content = response.get("content")
                assert content, (method, path, code, "no content declared")
                for media, body in content.items():
                    if media in STREAMS:
                        continue
                    assert media == "application/json", (method, path, media)
                    schema = _resolve(doc, body.get("schema", {}))
                    assert schema.get("type") == "object" and schema.get("properties"), (method, path, schema)
                    checked += 1
    assert checked >= 8  # jobs (list, submit, get, cancel), trials, pareto, artifacts, upload
    # nested shapes are named too: a page of jobs is a list of Job, whose best is a Trial
    page = _resolve(doc, doc["paths"]["/api/v1/jobs"]["get"]["responses"]["200"]["content"]
                    ["application/json"]["schema"])
    job = _resolve(doc, page["properties"]["items"]["items"])
    assert {"id", "state", "progress", "best", "space"} <= set(job["properties"])
    request = doc["paths"]["/api/v1/jobs"]["post"]["requestBody"]["content"]
    assert set(request) == {"application/json", "application/yaml"}
    assert "budget" in _resolve(doc, request["application/yaml"]["schema"])["properties"]


SPEC_YAML = """\
# a job spec as a user writes it
name: |
  two
  lines
model: {zoo: resnet20}
dataset: {name: digits}
budget: &budget
  macs_ratio: 0.6
agent:
  kind: global        # the uniform baseline, then the global-ranking policy
  trials: &n 4
  options: {fill: no}
finalize:
  top_k: 1
  export: [safetensors]
workers: 0
"""


def test_yaml_spec_runs_and_reads_as_pyyaml_does(client: TestClient) -> None:
    r = client.post("/api/v1/jobs", content=SPEC_YAML, headers=YAML)
    assert r.status_code == 201, r.text
    job = r.json()
    stored = job["spec"]
    assert stored["name"] == "two\nlines\n"  # block scalar, with its final newline
    assert stored["agent"]["options"] == {"fill": False}  # YAML 1.1: no is false
    assert stored["agent"]["trials"] == 4 and stored["budget"]["macs_ratio"] == 0.6
    loaded = yaml.safe_load(SPEC_YAML)  # what the CLI's PyYAML reads from the same text
    assert stored["name"] == loaded["name"] and stored["agent"] == loaded["agent"]
    done = wait_state(client, job["id"], ("succeeded", "failed"))
    assert done["state"] == "succeeded", done["error"]
    assert done["progress"]["trials_done"] == 2  # the agent finished after its two proposals

    # an alias reuses an anchored value; text/yaml is YAML too
    aliased = SPEC_YAML.replace("  top_k: 1", "  top_k: *n")
    r = client.post("/api/v1/jobs", content=aliased, headers={"Content-Type": "text/yaml; charset=utf-8"})
    assert r.status_code == 201, r.text
    assert r.json()["spec"]["finalize"]["top_k"] == 4


def test_yaml_errors_are_422_naming_line_and_column(client: TestClient) -> None:
    broken = SPEC_YAML.replace("agent:\n", "agent: [\n", 1)
    r = client.post("/api/v1/jobs", content=broken, headers=YAML)
    assert r.status_code == 422, r.text
    (err,) = r.json()["detail"]
    assert err["loc"] == ["body"] and err["type"] == "yaml_invalid"
    assert "line" in err["msg"] and "column" in err["msg"], err
    assert err["ctx"]["line"] >= 10 and err["ctx"]["column"] >= 1

    # a valid document that is a bad spec: the field is named, as for JSON
    r = client.post("/api/v1/jobs", content=SPEC_YAML.replace("0.6", "1.5"), headers=YAML)
    assert r.status_code == 422
    assert ["body", "budget", "macs_ratio"] in [d["loc"] for d in r.json()["detail"]]
    r = client.post("/api/v1/jobs", content="- just\n- a list\n", headers=YAML)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body"]

    # no Python objects from YAML tags, and no alias bombs
    r = client.post("/api/v1/jobs", content="name: !!python/object/apply:os.system [id]\n", headers=YAML)
    assert r.status_code == 422 and "line 1" in r.json()["detail"][0]["msg"]
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(6))
    r = client.post("/api/v1/jobs", content=bomb, headers=YAML)
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "yaml_too_large"

    for deep in ("[" * 5000 + "]" * 5000, "{a: " * 3000 + "1" + "}" * 3000):  # RecursionError inside
        r = client.post("/api/v1/jobs", content=deep, headers=YAML)
        assert r.status_code == 422, (deep[:10], r.status_code)

    r = client.post("/api/v1/jobs", content=b"name: x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415


def test_yaml_body_has_the_json_size_limit(client_factory) -> None:  # type: ignore[no-untyped-def]
    c = client_factory(max_body_bytes=2048)
    big = SPEC_YAML + "".join(f"# padding {i}\n" for i in range(400))
    r = c.post("/api/v1/jobs", content=big, headers=YAML)
    assert r.status_code == 413


@pytest.mark.slow
def test_generated_client_runs_a_job_end_to_end(client: TestClient, tmp_path: Path) -> None:
    """openapi-python-client builds a client from the live document; it submits, follows and
    reads a job through the in-process app (its httpx client is the TestClient's transport)."""
    if shutil.which("openapi-python-client") is None and not Path(sys.executable).with_name(
            "openapi-python-client").exists():
        pytest.fail("openapi-python-client is in the test extra; install it")
    exe = shutil.which("openapi-python-client") or str(Path(sys.executable).with_name("openapi-python-client"))
    doc = tmp_path / "openapi.json"
    doc.write_text(client.get("/openapi.json").text)
    subprocess.run([exe, "generate", "--path", str(doc), "--output-path", str(tmp_path / "gen"),
                    "--meta", "none"], check=True, capture_output=True, text=True, cwd=tmp_path)
    sys.path.insert(0, str(tmp_path))
    try:
        pkg = "gen"
        gen_client = importlib.import_module(f"{pkg}.client")
        models = importlib.import_module(f"{pkg}.models")
        submit = importlib.import_module(f"{pkg}.api.jobs.submit_job_api_v1_jobs_post")
        get_job = importlib.import_module(f"{pkg}.api.jobs.get_job_api_v1_jobs_job_id_get")
        list_trials = importlib.import_module(f"{pkg}.api.jobs.list_trials_api_v1_jobs_job_id_trials_get")
        pareto = importlib.import_module(f"{pkg}.api.jobs.pareto_api_v1_jobs_job_id_pareto_get")
        artifacts = importlib.import_module(f"{pkg}.api.files.list_artifacts_api_v1_jobs_job_id_artifacts_get")

        api = gen_client.Client(base_url=str(client.base_url))
        api.set_httpx_client(client)  # the TestClient is an httpx.Client over the ASGI app
        body = models.JobSpec.from_dict(spec(agent={"kind": "random", "trials": 6}, workers=0))
        job = submit.sync(client=api, body=body)
        assert isinstance(job, models.Job), job
        deadline = time.monotonic() + 30
        while job.state not in ("succeeded", "failed", "cancelled"):
            assert time.monotonic() < deadline, job.state
            time.sleep(0.05)
            job = get_job.sync(job_id=job.id, client=api)
        assert job.state == "succeeded", job.error
        assert job.progress.trials_done == 6 and job.best is not None and job.best.feasible

        page = list_trials.sync(job_id=job.id, client=api, limit=100)
        assert page.count == 6 and [t.trial_id for t in page.items] == sorted(t.trial_id for t in page.items)
        front = pareto.sync(job_id=job.id, client=api)
        assert front.cost == "macs" and front.items
        assert {p.trial_id for p in front.items} <= {t.trial_id for t in page.items}
        arts = artifacts.sync(job_id=job.id, client=api)
        assert arts.items and arts.items[0].download_url.endswith("/download")
        assert arts.items[0].files[0].sha256
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == "gen" or m.startswith("gen.")]:
            del sys.modules[name]


def test_event_stream_is_fed_by_commits_not_by_polling(client: TestClient, monkeypatch: pytest.MonkeyPatch,
                                                       launcher) -> None:  # type: ignore[no-untyped-def]
    """With the fallback poll pushed to a minute, a stream still follows a job to its end: each
    commit of the runner wakes it."""
    import service.api.jobs as jobs_routes

    monkeypatch.setattr(jobs_routes, "FALLBACK_POLL_S", 60.0)
    launcher.delay = 0.2
    job = client.post("/api/v1/jobs", json=spec(agent={"kind": "random", "trials": 5}, workers=1)).json()
    t0 = time.monotonic()
    kinds = []
    with client.stream("GET", f"/api/v1/jobs/{job['id']}/events") as r:
        for line in r.iter_lines():
            if line.startswith("event:"):
                kinds.append(line.split(":", 1)[1].strip())
    assert time.monotonic() - t0 < 45, "the stream waited for the fallback poll"
    assert kinds.count("trial") == 5 and kinds[-1] == "state"
