"""Hostile input: each refused with a clear 4xx, and nothing stored changed.

Every case counts jobs, trials, uploads, artifacts and files on disk before and after.
"""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from fastapi.testclient import TestClient

from service.db import repo
from tests.reliability.conftest import stored_counts
from tests.service.conftest import wait_state
from tests.service.fakes import spec


def _detail_text(r: Any) -> str:
    detail = r.json()["detail"]
    return json.dumps(detail)


def _locs(r: Any) -> list[list[Any]]:
    return [d["loc"] for d in r.json()["detail"]]


# --- job specs ---------------------------------------------------------------------------------
def _bad_specs(data_root: Path) -> list[tuple[str, Any, list[str]]]:
    outside = data_root.parent / "secrets"
    return [
        ("dataset path ../ escape", spec(dataset={"name": "image_folder", "path": f"{data_root}/../secrets"}),
         ["body", "dataset", "path"]),
        ("dataset path absolute outside", spec(dataset={"name": "image_folder", "path": str(outside)}),
         ["body", "dataset", "path"]),
        ("dataset path /etc", spec(dataset={"name": "image_folder", "path": "/etc"}), ["body", "dataset", "path"]),
        ("dataset path ~root", spec(dataset={"name": "image_folder", "path": "~root/.ssh"}),
         ["body", "dataset", "path"]),
        ("weights path traversal", spec(model={"zoo": "resnet20", "weights": "../../../../etc/shadow"}),
         ["body", "model", "weights"]),
        ("weights upload id with ..", spec(model={"zoo": "resnet20", "weights": "..%2F..%2Fetc%2Fpasswd"}),
         ["body", "model", "weights"]),
        ("trials 1e9", spec(agent={"kind": "random", "trials": 10**9}), ["body", "agent", "trials"]),
        ("trials 2**63", spec(agent={"kind": "random", "trials": 2**63}), ["body", "agent", "trials"]),
        ("trials float", spec(agent={"kind": "random", "trials": 1e30}), ["body", "agent", "trials"]),
        ("trials negative", spec(agent={"kind": "random", "trials": -5}), ["body", "agent", "trials"]),
        ("trials string", spec(agent={"kind": "random", "trials": "lots"}), ["body", "agent", "trials"]),
        ("workers absurd", spec(workers=10**6), ["body", "workers"]),
        ("negative budget", spec(budget={"macs_ratio": -0.5}), ["body", "budget", "macs_ratio"]),
        ("zero budget", spec(budget={"params_ratio": 0}), ["body", "budget", "params_ratio"]),
        ("negative latency", spec(budget={"latency_ms": -1}), ["body", "budget", "latency_ms"]),
        ("budget as string", spec(budget={"macs_ratio": "half"}), ["body", "budget", "macs_ratio"]),
        ("unknown agent", spec(agent={"kind": "rm -rf /"}), ["body", "agent", "kind"]),
        ("unknown criterion", spec(search_space={"criterion": "__import__('os')"}),
         ["body", "search_space", "criterion"]),
        ("unknown zoo", spec(model={"zoo": "../../resnet20"}), ["body", "model"]),
        ("unknown dataset", spec(dataset={"name": "../../etc/passwd"}), ["body", "dataset", "name"]),
        # foreign code: only plugins the operator registered may be named
        ("model entrypoint os:system", spec(model={"entrypoint": "os:system"}), ["body", "model", "entrypoint"]),
        ("model entrypoint builtins", spec(model={"entrypoint": "builtins:eval"}), ["body", "model", "entrypoint"]),
        ("model entrypoint through an allowed module",
         spec(model={"entrypoint": "tests.reliability.helpers:os.system"}), ["body", "model", "entrypoint"]),
        ("zoo smuggling an entrypoint", spec(model={"zoo": "entrypoint:os:system"}), ["body", "model", "zoo"]),
        ("zoo hub download", spec(model={"zoo": "timm:hf-hub:evil/model"}), ["body", "model", "zoo"]),
        ("dataset entrypoint", spec(dataset={"name": "entrypoint:subprocess:run"}), ["body", "dataset", "name"]),
        ("metric entrypoint", spec(metric="entrypoint:os:system"), ["body", "metric"]),
        ("metric entrypoint dunder", spec(metric="entrypoint:tests.reliability.helpers:__builtins__"),
         ["body", "metric"]),
        ("spec is a list", [spec()], ["body"]),
        ("spec is a string", "model: resnet20", ["body"]),
    ]


def test_bad_specs_refused_nothing_stored(app_factory: Callable[..., TestClient], tmp_path: Path) -> None:
    import sys

    c = app_factory()  # allows the tests' own plugin modules (tests.server_process.TEST_PLUGINS)
    before = stored_counts(c)
    imported_before = set(sys.modules)
    for case, body, loc in _bad_specs(tmp_path / "data"):
        r = c.post("/api/v1/jobs", json=body)
        assert r.status_code == 422, (case, r.status_code, r.text[:300])
        assert any(list(x[: len(loc)]) == loc for x in _locs(r)), (case, r.json())
        assert all(d["msg"] for d in r.json()["detail"]), case
    assert stored_counts(c) == before
    assert not {"subprocess", "tests.reliability.helpers"} & (set(sys.modules) - imported_before)


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity", "1e999", "-0.0"])
def test_non_finite_or_non_positive_budget(app_factory: Callable[..., TestClient], raw: str) -> None:
    c = app_factory()
    before = stored_counts(c)
    body = json.dumps({**spec(), "budget": "__B__"}).replace('"__B__"', f'{{"macs_ratio": {raw}}}')
    r = c.post("/api/v1/jobs", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, (raw, r.text)
    assert any(x[:2] == ["body", "budget"] for x in _locs(r))
    assert stored_counts(c) == before


def test_malformed_json_bodies(app_factory: Callable[..., TestClient]) -> None:
    c = app_factory()
    before = stored_counts(c)
    for raw in [b"{", b'{"model": {"zoo": "resnet20"}, "budget": {"macs_ratio": 0.5}', b"\xff\xfe\x00",
                b"[" * 5000 + b"]" * 5000, b'{"a":' * 2000 + b"1" + b"}" * 2000]:
        r = c.post("/api/v1/jobs", content=raw, headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500, (raw[:20], r.status_code)
    assert stored_counts(c) == before


# --- sizes -------------------------------------------------------------------------------------
def test_oversized_bodies_and_uploads(app_factory: Callable[..., TestClient]) -> None:
    c = app_factory(max_body_bytes=64 * 1024, max_upload_bytes=128 * 1024)
    before = stored_counts(c)
    big = spec(name="x" * 100, agent={"kind": "random", "trials": 4, "options": {"pad": "y" * 200_000}})
    r = c.post("/api/v1/jobs", json=big)
    assert r.status_code == 413 and "limit" in r.json()["detail"]

    def chunks() -> Any:  # no Content-Length: the limit must count streamed bytes
        yield b'{"name": "'
        for _ in range(100):
            yield b"z" * 4096
        yield b'"}'

    r = c.post("/api/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, r.status_code  # refused
    r = c.post("/api/v1/uploads", files={"file": ("w.safetensors", b"\0" * (256 * 1024))})
    assert r.status_code == 413
    assert stored_counts(c) == before  # no partial upload left behind either


def test_oversized_chunked_body_is_413(app_factory: Callable[..., TestClient]) -> None:
    c = app_factory(max_body_bytes=64 * 1024)

    def chunks() -> Any:
        yield b'{"name": "' + b"z" * (200 * 1024) + b'"}'

    r = c.post("/api/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413, (r.status_code, r.text)


# --- uploads: pickles posing as weights ---------------------------------------------------------
class _Bomb:
    """Unpickling this creates ``path``: if the file ever appears, a user pickle was loaded."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (open, (self.path, "w"))


def _payloads(marker: Path) -> dict[str, bytes]:
    buf = io.BytesIO()
    torch.save({"conv.weight": torch.zeros(2), "evil": _Bomb(marker)}, buf)
    buf2 = io.BytesIO()
    torch.save(_Bomb(marker), buf2)
    return {
        "torch.save with a reducer.pt": buf.getvalue(),
        "bare torch pickle.pt": buf2.getvalue(),
        "raw pickle.pt": pickle.dumps({"w": _Bomb(marker)}),
        "pickle named safetensors.safetensors": pickle.dumps(_Bomb(marker)),
        "fake safetensors header.safetensors": (10).to_bytes(8, "little") + b"{not json}" + pickle.dumps(_Bomb(marker)),
    }


def test_pickled_uploads_refused_and_never_loaded(app_factory: Callable[..., TestClient], tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    c = app_factory()
    before = stored_counts(c)
    for name, data in _payloads(marker).items():
        r = c.post("/api/v1/uploads", files={"file": (name, data)})
        assert r.status_code == 422, (name, r.status_code, r.text[:300])
        assert _locs(r)[0] == ["body", "file"], name
        assert not marker.exists(), f"{name}: the pickle was executed"
    assert stored_counts(c) == before


@pytest.mark.slow
def test_pickled_weights_path_never_loaded_by_a_real_job(app_factory: Callable[..., TestClient],
                                                         tmp_path: Path) -> None:
    """Weights given as a path inside the data roots: the job fails clearly, the pickle never runs."""
    from tests.reliability.helpers import tiny_spec

    marker = tmp_path / "PWNED"
    weights = tmp_path / "data" / "weights.pt"
    weights.parent.mkdir(exist_ok=True)
    weights.write_bytes(_payloads(marker)["torch.save with a reducer.pt"])
    c = app_factory(launcher=None)
    from service.runner import default_launcher

    c.app.state.runner.launcher = default_launcher(c.app.state.settings)  # type: ignore[attr-defined]
    body = tiny_spec(model={"entrypoint": "tests.reliability.helpers:tiny_net", "weights": str(weights)})
    job = c.post("/api/v1/jobs", json=body).json()
    done = wait_state(c, job["id"], ("succeeded", "failed"), timeout=120)
    assert done["state"] == "failed"
    assert "pickle" in done["error"] and "weights" in done["error"], done["error"]
    assert not marker.exists()
    assert c.get(f"/api/v1/jobs/{job['id']}/trials").json()["count"] == 0


# --- artifact ids ------------------------------------------------------------------------------
def test_artifact_id_traversal(app_factory: Callable[..., TestClient], tmp_path: Path) -> None:
    c = app_factory()
    job = c.post("/api/v1/jobs", json=spec(agent={"kind": "random", "trials": 3})).json()
    wait_state(c, job["id"], ("succeeded",))
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    before = stored_counts(c)
    for bad in ["../../../../etc/passwd", "..%2F..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
                str(secret), "..", "%00", "a" * 5000]:
        for url in (f"/api/v1/artifacts/{bad}/download", f"/api/v1/jobs/{bad}/artifacts"):
            r = c.get(url)
            assert 400 <= r.status_code < 500, (url, r.status_code)
            assert b"top secret" not in r.content and b"root:" not in r.content
    # a row pointing outside the artifacts directory (a tampered or migrated database) is not served
    db = c.app.state.db  # type: ignore[attr-defined]
    with db.session_scope() as s:
        repo.replace_artifacts(s, job_id=job["id"], items=[{
            "rank": 1, "trial_id": 0, "dir": str(tmp_path), "metrics": {},
            "files": [{"name": "secret.txt", "size": 10, "sha256": "0" * 64}]}])
        art_id = repo.list_artifacts(s, job_id=job["id"])[0].id
    r = c.get(f"/api/v1/artifacts/{art_id}/download")
    assert r.status_code == 410 and b"top secret" not in r.content
    with db.session_scope() as s:  # a file name that climbs out of a legitimate directory
        d = Path(c.app.state.settings.artifacts_dir) / job["id"] / "rank1"  # type: ignore[attr-defined]
        repo.replace_artifacts(s, job_id=job["id"], items=[{
            "rank": 1, "trial_id": 0, "dir": str(d), "metrics": {},
            "files": [{"name": f"../../../{secret.relative_to(tmp_path)}", "size": 10, "sha256": "0" * 64}]}])
        art_id = repo.list_artifacts(s, job_id=job["id"])[0].id
    r = c.get(f"/api/v1/artifacts/{art_id}/download")
    assert 400 <= r.status_code < 500 and b"top secret" not in r.content
    assert stored_counts(c)["jobs"] == before["jobs"] and stored_counts(c)["uploads"] == before["uploads"]


# --- YAML through the CLI -----------------------------------------------------------------------
def _submit(path: Path) -> Any:
    from service.cli import main

    # an unreachable server: a spec the CLI refuses must never get as far as a request
    return CliRunner().invoke(main, ["submit", str(path), "--server", "http://127.0.0.1:9"])


def test_yaml_with_python_tags_is_never_constructed(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED_YAML"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f'!!python/object/apply:os.system ["touch {marker}"]\n')
    result = _submit(evil)
    assert result.exit_code != 0
    assert "cannot reach" not in result.output
    assert not marker.exists()


@pytest.mark.parametrize("text", ["model: {zoo: resnet20\nbudget: [\n", "a: b: c\n", "- 1\n- [2\n", "\t- x\n"])
def test_malformed_yaml_is_a_clear_usage_error(tmp_path: Path, text: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    result = _submit(bad)
    assert result.exit_code == 2, (result.exit_code, result.output)  # click's usage error
    assert "SPEC" in result.output or "bad.yaml" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_yaml_that_is_not_a_mapping(tmp_path: Path) -> None:
    for i, text in enumerate(["- a\n- b\n", "42\n", "just a string\n"]):
        f = tmp_path / f"s{i}.yaml"
        f.write_text(text)
        result = _submit(f)
        assert result.exit_code == 2, (text, result.output)
        assert "must be a JSON/YAML object" in result.output
