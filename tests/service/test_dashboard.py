"""The dashboard's files are served by the app itself, offline, without the API token."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.dashboard import STATIC_DIR, plotly_js_path, router


@pytest.fixture()
def client() -> TestClient:
    app = FastAPI()
    app.include_router(router)
    return TestClient(app)


def test_page_and_its_files_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    for src in ("/static/plotly.min.js", "/static/app.js", "/static/job.js", "/static/style.css"):
        assert src in page.text
        res = client.get(src)
        assert res.status_code == 200, src
        assert res.content, src


def test_plotly_comes_from_the_installed_package(client: TestClient) -> None:
    res = client.get("/static/plotly.min.js")
    assert res.status_code == 200
    assert "javascript" in res.headers["content-type"]
    assert res.content == plotly_js_path().read_bytes()
    assert b"plotly" in res.content[:2000].lower()


def test_nothing_is_fetched_from_elsewhere() -> None:
    """Works offline: no CDN, no absolute URL in the page's own files."""
    for f in STATIC_DIR.iterdir():
        text = f.read_text()
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), f.name
        assert "cdn." not in text.lower(), f.name


@pytest.mark.parametrize("name", ["nope.js", "..%2Fapi%2F__init__.py", "__init__.py", "%2E%2E"])
def test_unknown_or_escaping_names_are_404(client: TestClient, name: str) -> None:
    assert client.get(f"/static/{name}").status_code == 404


def test_real_app_serves_the_dashboard_open_while_api_needs_the_token(tmp_path: Path) -> None:
    from service.api.app import create_app
    from service.config import Settings

    app = create_app(Settings(data_dir=tmp_path, api_token="s3cret"))
    with TestClient(app) as c:
        assert c.get("/").status_code == 200
        assert c.get("/static/plotly.min.js").status_code == 200
        assert c.get("/static/app.js").status_code == 200
        assert c.get("/api/v1/jobs").status_code == 401
        ok = c.get("/api/v1/jobs", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert ok.json()["count"] == 0


def test_the_per_layer_view_draws_the_removed_blocks() -> None:
    """A depth policy's ``"<unit>@keep": 0`` entries: the job's space lists its units (with the
    groups inside them), and the page's ``removedLayers`` says which went and took which groups."""
    import json
    import shutil
    import subprocess

    from service.api.schemas import Space

    raw = {"groups": [{"name": "stem"}, {"name": "layer1.0.conv1"}, {"name": "layer1.1.conv1"}],
           "dense_macs": 10, "dense_params": 5,
           "units": [{"name": "layer1.0", "index": 0, "kind": "block", "groups": ["layer1.0.conv1"],
                      "costs": ["layer1.0.conv1"], "macs": 4, "params": 2},
                     {"name": "layer1.1", "index": 1, "kind": "block", "groups": ["layer1.1.conv1"],
                      "costs": [], "macs": 4, "params": 2}]}
    space = Space.from_dict(raw).model_dump()
    assert [(u["name"], u["groups"]) for u in space["units"]] == [
        ("layer1.0", ["layer1.0.conv1"]), ("layer1.1", ["layer1.1.conv1"])]
    assert Space.from_dict({"groups": []}).units == []  # a widths-only space, as before
    js = (STATIC_DIR / "job.js").read_text()
    for needle in ("removedLayers(this.job.space, t.policy)", "REMOVED_COLOR", "removed_units", "kept_layers"):
        assert needle in js, needle
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the page's function is not run")
    policy = {"stem": 0.5, "layer1.0.conv1": 0.25, "layer1.1@keep": 0.0}
    script = (
        "const vm = require('vm'); const fs = require('fs');"
        "const stub = { addEventListener() {} };"
        "const ctx = vm.createContext({ window: stub, document: stub, localStorage: {}, route() {} });"
        f"vm.runInContext(fs.readFileSync({json.dumps(str(STATIC_DIR / 'job.js'))}, 'utf8'), ctx);"
        f"const r = vm.runInContext('removedLayers({json.dumps(space)}, {json.dumps(policy)})', ctx);"
        "process.stdout.write(JSON.stringify(r));"
    )
    out = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=30, check=True)
    assert json.loads(out.stdout) == {"units": ["layer1.1"], "groups": {"layer1.1.conv1": "layer1.1"}}
