"""Bad specs answered 422 naming the field; token auth; path confinement; uploads."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save as st_save

from tests.service.fakes import spec

BAD_SPECS: list[tuple[str, dict[str, Any], list[str]]] = [
    ("unknown top-level field", spec(colour="red"), ["body", "colour"]),
    ("unknown nested field", spec(agent={"kind": "random", "trials": 5, "episodes": 3}), ["body", "agent", "episodes"]),
    ("unknown agent", spec(agent={"kind": "alphazero"}), ["body", "agent", "kind"]),
    ("unknown criterion", spec(search_space={"criterion": "magic"}), ["body", "search_space", "criterion"]),
    ("unknown zoo model", spec(model={"zoo": "resnet9000"}), ["body", "model"]),
    ("zoo and entrypoint", spec(model={"zoo": "resnet20", "entrypoint": "a.b:c"}), ["body", "model"]),
    ("negative budget", spec(budget={"macs_ratio": -0.5}), ["body", "budget", "macs_ratio"]),
    ("ratio above one", spec(budget={"params_ratio": 1.5}), ["body", "budget", "params_ratio"]),
    ("empty budget", spec(budget={}), ["body", "budget"]),
    ("missing budget", {k: v for k, v in spec().items() if k != "budget"}, ["body", "budget"]),
    ("absurd trials", spec(agent={"kind": "random", "trials": 10**9}), ["body", "agent", "trials"]),
    ("zero trials", spec(agent={"kind": "random", "trials": 0}), ["body", "agent", "trials"]),
    ("bad metric", spec(metric="vibes"), ["body", "metric"]),
    ("unknown dataset", spec(dataset={"name": "imagenet-22k"}), ["body", "dataset", "name"]),
    ("negative workers", spec(workers=-1), ["body", "workers"]),
    ("max_ratio 1", spec(search_space={"max_ratio": 1.0}), ["body", "search_space", "max_ratio"]),
    ("round_to 0", spec(search_space={"round_to": 0}), ["body", "search_space", "round_to"]),
    ("round_to word", spec(search_space={"round_to": "big"}), ["body", "search_space", "round_to"]),
    ("unknown recovery", spec(evaluation={"recovery": "magic"}), ["body", "evaluation", "recovery"]),
    ("finetune recovery without steps", spec(evaluation={"recovery": "finetune"}), ["body", "evaluation"]),
    ("dataset path outside roots", spec(dataset={"name": "image_folder", "path": "/etc"}), ["body", "dataset", "path"]),
    ("dotdot path escape", spec(dataset={"name": "image_folder", "path": "DATA/../../etc"}), ["body", "dataset", "path"]),
    ("weights path outside roots", spec(model={"zoo": "resnet20", "weights": "/etc/passwd"}), ["body", "model", "weights"]),
]


@pytest.mark.parametrize(("case", "body", "loc"), BAD_SPECS, ids=[c[0] for c in BAD_SPECS])
def test_bad_spec_is_422_naming_the_field(client: TestClient, tmp_path: Path, case: str, body: dict[str, Any],
                                          loc: list[str]) -> None:
    if body.get("dataset", {}).get("path", "").startswith("DATA"):
        body["dataset"]["path"] = body["dataset"]["path"].replace("DATA", str(tmp_path / "data"))
    r = client.post("/api/v1/jobs", json=body)
    assert r.status_code == 422, (case, r.text)
    detail = r.json()["detail"]
    assert any(d["loc"][: len(loc)] == loc for d in detail), (case, detail)
    assert all(d["msg"] and d["type"] for d in detail)
    assert client.get("/api/v1/jobs").json()["count"] == 0


@pytest.mark.parametrize("raw", [b'{"macs_ratio": NaN}', b'{"macs_ratio": Infinity}'])
def test_nan_and_infinite_budget_422(client: TestClient, raw: bytes) -> None:
    body = spec()
    body.pop("budget")
    import json

    text = json.dumps(body)[:-1] + ', "budget": ' + raw.decode() + "}"
    r = client.post("/api/v1/jobs", content=text, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert any(d["loc"][:2] == ["body", "budget"] for d in r.json()["detail"])


def test_dataset_path_inside_roots_accepted(client: TestClient, tmp_path: Path) -> None:
    inside = tmp_path / "data" / "images"
    inside.mkdir()
    r = client.post("/api/v1/jobs", json=spec(dataset={"name": "image_folder", "path": str(inside)}))
    assert r.status_code == 201, r.text


def test_token_auth(client_factory) -> None:  # type: ignore[no-untyped-def]
    c = client_factory(api_token="s3cret")
    assert c.get("/healthz").status_code == 200  # open
    for method, url in [("get", "/api/v1/jobs"), ("post", "/api/v1/jobs"), ("get", "/api/v1/jobs/x"),
                        ("get", "/api/v1/artifacts/x/download"), ("post", "/api/v1/uploads")]:
        r = getattr(c, method)(url)
        assert r.status_code == 401, (url, r.status_code)
        assert r.headers["www-authenticate"] == "Bearer"
    assert c.get("/api/v1/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/api/v1/jobs", headers={"Authorization": "Basic s3cret"}).status_code == 401
    ok = {"Authorization": "Bearer s3cret"}
    assert c.get("/api/v1/jobs", headers=ok).status_code == 200
    assert c.post("/api/v1/jobs", json=spec(), headers=ok).status_code == 201


def _state_dict_bytes() -> bytes:
    buf = io.BytesIO()
    torch.save({"w": torch.ones(3)}, buf)
    return buf.getvalue()


def test_uploads(client: TestClient, tmp_path: Path) -> None:
    data = st_save({"w": torch.zeros(4)})
    r = client.post("/api/v1/uploads", files={"file": ("../../evil name.safetensors", data)})
    assert r.status_code == 201, r.text
    up = r.json()
    assert set(up) == {"id", "name", "size", "sha256"} and up["size"] == len(data)
    assert up["name"] == "evil name.safetensors"  # display only, never a path
    stored = list((tmp_path / "state" / "uploads").iterdir())
    assert [p.name for p in stored] == [f"{up['id']}.safetensors"]
    # referenced by id from a spec
    assert client.post("/api/v1/jobs", json=spec(model={"zoo": "resnet20", "weights": up["id"]})).status_code == 201

    r = client.post("/api/v1/uploads", files={"file": ("sd.pt", _state_dict_bytes())})
    assert r.status_code == 201, r.text

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (print, ("pwned",))

    buf = io.BytesIO()
    torch.save({"x": Evil()}, buf)
    r = client.post("/api/v1/uploads", files={"file": ("evil.pt", buf.getvalue())})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "file"]
    r = client.post("/api/v1/uploads", files={"file": ("junk.bin", b"not weights at all")})
    assert r.status_code == 422
    assert sorted(p.suffix for p in (tmp_path / "state" / "uploads").iterdir()) == [".pt", ".safetensors"]


def test_upload_size_limit(client_factory) -> None:  # type: ignore[no-untyped-def]
    c = client_factory(max_upload_bytes=4096)
    r = c.post("/api/v1/uploads", files={"file": ("big.safetensors", b"\0" * 10_000)})
    assert r.status_code == 413
