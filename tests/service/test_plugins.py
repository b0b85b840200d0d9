"""Only the operator's code runs: a REST spec names a registered plugin or gets a 422.

Registered means an entry point of an installed package (``autoprune.models`` / ``.datasets`` /
``.metrics``) or a target on the operator's allowlist (``AUTOPRUNE_PLUGINS``). Every path that
accepts a spec enforces it: POST /jobs, ``autoprune submit`` (through the API), and the resume
of a stored job after a restart. A refused spec imports nothing and stores nothing.
"""

from __future__ import annotations

import io
import json
import socket
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import yaml
from click.testing import CliRunner
from fastapi.testclient import TestClient

from tests.plugin_dist import MODULE, forget, write_plugin_dist, write_tripwire
from tests.service.conftest import make_settings, started_clients, wait_state
from tests.service.fakes import FakeLauncher, spec

TRIPWIRE = "autoprune_tripwire"


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on sys.path with the test plugin package ("installed": it has a dist-info) and a
    tripwire module that is importable but registered nowhere; ``calls.txt`` notes plugin calls."""
    root = write_plugin_dist(tmp_path / "site")
    write_tripwire(root, TRIPWIRE, tmp_path / "TRIPPED")
    monkeypatch.setenv("PLUGIN_CALLS", str(tmp_path / "calls.txt"))
    monkeypatch.syspath_prepend(str(root))
    forget(MODULE, TRIPWIRE)
    yield root
    forget(MODULE, TRIPWIRE)


@pytest.fixture
def clients(tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    yield from started_clients(tmp_path, f"sqlite:///{tmp_path / 'plugins.db'}")


def _jobs(c: TestClient) -> int:
    return int(c.get("/api/v1/jobs").json()["count"])


def _only_error(r: Any) -> dict[str, Any]:
    assert r.status_code == 422, (r.status_code, r.text[:500])
    detail = r.json()["detail"]
    assert len(detail) == 1, detail
    return dict(detail[0])


FOREIGN = [
    ("model entrypoint", {"model": {"entrypoint": "os:system"}}, ["body", "model", "entrypoint"], "quadnet"),
    ("dataset entrypoint", {"dataset": {"name": "entrypoint:os:system"}}, ["body", "dataset", "name"],
     "entrypoint:four_digits"),
    ("metric entrypoint", {"metric": "entrypoint:os:system"}, ["body", "metric"], "entrypoint:counted_accuracy"),
    ("entrypoint in model.zoo", {"model": {"zoo": "entrypoint:os:system"}}, ["body", "model", "zoo"], "resnet20"),
]


@pytest.mark.parametrize(("case", "override", "loc", "listed"), FOREIGN, ids=[f[0] for f in FOREIGN])
def test_os_system_is_422_naming_the_field_and_the_registered_names(
    clients: Callable[..., TestClient], site: Path, case: str, override: dict[str, Any], loc: list[str], listed: str
) -> None:
    c = clients(plugins=["tests.reliability.helpers:tiny_net", "tests.workers."])
    err = _only_error(c.post("/api/v1/jobs", json=spec(**override)))
    assert err["loc"] == loc, err
    assert "os:system" in err["msg"] and listed in err["msg"], err["msg"]
    if case != "entrypoint in model.zoo":  # the plugin fields list every registered name
        for name in ("tests.reliability.helpers:tiny_net", "tests.workers.*"):
            assert name in err["msg"], err["msg"]
        assert "AUTOPRUNE_PLUGINS" in err["msg"] and "entry point" in err["msg"]
    assert _jobs(c) == 0


@pytest.mark.parametrize("override", [
    {"model": {"entrypoint": f"{TRIPWIRE}:build"}},
    {"dataset": {"name": f"entrypoint:{TRIPWIRE}:load"}},
    {"metric": f"entrypoint:{TRIPWIRE}:metric"},
    {"model": {"entrypoint": f"{MODULE}:build_quadnet"}},  # an installed package, but not by that name
], ids=["model", "dataset", "metric", "installed-module-by-target"])
def test_a_refused_spec_imports_nothing(clients: Callable[..., TestClient], site: Path, tmp_path: Path,
                                        override: dict[str, Any]) -> None:
    c = clients()
    err = _only_error(c.post("/api/v1/jobs", json=spec(**override)))
    assert "not a registered" in err["msg"]
    assert TRIPWIRE not in sys.modules and MODULE not in sys.modules
    assert not (tmp_path / "TRIPPED").exists() and not (tmp_path / "calls.txt").exists()
    assert _jobs(c) == 0


def test_operator_allowlist_exact_target_and_prefix(clients: Callable[..., TestClient], site: Path,
                                                    tmp_path: Path) -> None:
    c = clients(plugins=[f"{TRIPWIRE}:build", "tests.reliability."])
    ok = [
        {"model": {"entrypoint": f"{TRIPWIRE}:build"}},  # exact target
        {"model": {"entrypoint": "tests.reliability.helpers:tiny_net"}},  # under the prefix
        {"metric": "entrypoint:tests.reliability.helpers:flaky_metric"},
        {"model": {"entrypoint": "quadnet"}, "dataset": {"name": "entrypoint:four_digits"},
         "metric": "entrypoint:counted_accuracy"},  # entry points need no allowlist entry
    ]
    for override in ok:
        r = c.post("/api/v1/jobs", json=spec(**override, agent={"kind": "random", "trials": 2}))
        assert r.status_code == 201, (override, r.text)
    refused = [
        ({"model": {"entrypoint": f"{TRIPWIRE}:load"}}, ["body", "model", "entrypoint"]),  # not that one
        ({"metric": "entrypoint:tests.reliabilityx.helpers:fn"}, ["body", "metric"]),  # not a submodule
        ({"metric": "entrypoint:tests.reliability.helpers:torch.load"}, ["body", "metric"]),  # not a path
        ({"model": {"entrypoint": "tests.reliability.helpers:_finite_fraction"}}, ["body", "model", "entrypoint"]),
        ({"model": {"entrypoint": "tests.workers.fakes:mean_confidence"}}, ["body", "model", "entrypoint"]),
    ]
    before = _jobs(c)
    for override, loc in refused:
        err = _only_error(c.post("/api/v1/jobs", json=spec(**override)))
        assert err["loc"] == loc and f"{TRIPWIRE}:build" in err["msg"] and "tests.reliability.*" in err["msg"]
    assert _jobs(c) == before == len(ok)
    assert not (tmp_path / "TRIPPED").exists() and TRIPWIRE not in sys.modules  # the fake launcher imports nothing


def test_pretrained_names_are_refused_at_submit(clients: Callable[..., TestClient]) -> None:
    c = clients()
    for model, loc in (({"zoo": "timm:resnet50.a1_in1k"}, ["body", "model", "zoo"]),
                       ({"zoo": "timm:hf-hub:timm/resnet50.a1_in1k"}, ["body", "model", "zoo"]),
                       ({"zoo": "torchvision:resnet18", "weights": "IMAGENET1K_V1"}, ["body", "model", "weights"]),
                       ({"zoo": "torchvision:resnet18", "weights": "ResNet18_Weights.DEFAULT"},
                        ["body", "model", "weights"])):
        err = _only_error(c.post("/api/v1/jobs", json=spec(model=model)))
        assert err["loc"] == loc and "download" in err["msg"] and "never downloads" in err["msg"], err
    assert _jobs(c) == 0


def test_resumed_job_is_checked_against_the_current_allowlist(clients: Callable[..., TestClient], site: Path,
                                                              tmp_path: Path) -> None:
    """A job accepted under an allowlist, then the operator withdraws the entry and restarts:
    the stored job fails with the reason; its code is never imported, its trials are kept."""
    from service.api.app import create_app
    from service.db import Database, repo

    url = f"sqlite:///{tmp_path / 'plugins.db'}"
    settings = make_settings(tmp_path, url, plugins=[f"{TRIPWIRE}:build"])
    body = spec(model={"entrypoint": f"{TRIPWIRE}:build"}, agent={"kind": "random", "trials": 40})
    with TestClient(create_app(settings, launcher=FakeLauncher(delay=0.3))) as first:
        job = first.post("/api/v1/jobs", json=body).json()
        wait_state(first, job["id"], ("running",))
        time.sleep(1.0)
    # that controller stopped: the job stays resumable
    db = Database(url)
    with db.session_scope() as s:
        row = repo.get_job(s, job["id"])
        kept = len(repo.all_trials(s, job_id=job["id"]))
        assert row.state == "running" and 0 < kept < 40
    db.dispose()

    launcher = FakeLauncher()
    second = clients(launcher, plugins=[])
    done = wait_state(second, job["id"], ("failed", "succeeded"))
    assert done["state"] == "failed"
    assert f"{TRIPWIRE}:build" in done["error"] and "not a registered model plugin" in done["error"], done["error"]
    assert not launcher.pools  # nothing was built
    assert second.get(f"/api/v1/jobs/{job['id']}/trials").json()["count"] == kept
    assert not (tmp_path / "TRIPPED").exists() and TRIPWIRE not in sys.modules


def test_cli_submit_goes_through_the_same_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from service.api.app import create_app
    from service.cli import main

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'cli.db'}", plugins=[])
    srv = uvicorn.Server(uvicorn.Config(create_app(settings, launcher=FakeLauncher()), host="127.0.0.1", port=port,
                                        log_level="warning"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    try:
        while not srv.started:
            time.sleep(0.05)
        monkeypatch.delenv("AUTOPRUNE_API_TOKEN", raising=False)
        f = tmp_path / "job.yaml"
        f.write_text(yaml.safe_dump(spec(model={"entrypoint": "os:system"})))
        r = CliRunner().invoke(main, ["submit", str(f), "--server", f"http://127.0.0.1:{port}"])
        assert r.exit_code != 0
        assert "entrypoint" in r.output and "os:system" in r.output and "not a registered" in r.output, r.output
        r = CliRunner().invoke(main, ["jobs", "--server", f"http://127.0.0.1:{port}"])
        assert "0 job(s)" in r.output, r.output
    finally:
        srv.should_exit = True
        t.join(10)


def test_plugins_command_lists_what_specs_may_name(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from service.cli import main

    monkeypatch.setenv("AUTOPRUNE_PLUGINS", "mypkg.models:build,otherpkg.")
    r = CliRunner().invoke(main, ["plugins", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == {
        "models": ["quadnet", "mypkg.models:build", "otherpkg.*"],
        "datasets": ["four_digits", "mypkg.models:build", "otherpkg.*"],
        "metrics": ["counted_accuracy", "mypkg.models:build", "otherpkg.*"],
    }
    assert MODULE not in sys.modules


# --- a real job on the plugins ---------------------------------------------------------------
@pytest.mark.slow
def test_registered_plugins_run_a_real_job_end_to_end(clients: Callable[..., TestClient], site: Path,
                                                      tmp_path: Path) -> None:
    """Entry-point model, dataset and metric, accepted and used by the real workers (in-process):
    the space has the plugin model's layers, the classes come from the plugin dataset (4), every
    quality is the plugin metric's, and the bundle reloads from the entry-point name."""
    from service.runner import default_launcher

    c = clients(plugins=[])
    c.app.state.runner.launcher = default_launcher(c.app.state.settings)  # type: ignore[attr-defined]
    trials = 3
    body = {
        "name": "plugins",
        "model": {"entrypoint": "quadnet"},
        "dataset": {"name": "entrypoint:four_digits"},
        "metric": "entrypoint:counted_accuracy",
        "budget": {"macs_ratio": 0.8},
        "agent": {"kind": "random", "trials": trials},
        "search_space": {"round_to": 2},
        "evaluation": {"calibration_batches": 1, "val_samples": 64},
        "finalize": {"top_k": 1, "finetune_epochs": 0, "export": ["safetensors"]},
        "workers": 0,
    }
    r = c.post("/api/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    done = wait_state(c, r.json()["id"], ("succeeded", "failed"), timeout=300)
    assert done["state"] == "succeeded", done["error"]
    assert [g["name"] for g in done["space"]["groups"]] == ["stem", "body"]
    items = c.get(f"/api/v1/jobs/{done['id']}/trials").json()["items"]
    assert [t["trial_id"] for t in items] == list(range(trials))
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert calls[0] == "imported" and calls.count("imported") == 1
    # the dense model and every trial were scored by the plugin metric
    assert calls.count("metric") >= trials + 1
    assert all(t["state"] == "succeeded" and 0.0 <= t["metrics"]["quality"] <= 1.0 for t in items)

    art = c.get(f"/api/v1/jobs/{done['id']}/artifacts").json()["items"][0]
    out = tmp_path / "pulled"
    zipfile.ZipFile(io.BytesIO(c.get(art["download_url"]).content)).extractall(out)
    arch = json.loads((out / "architecture.json").read_text())
    assert arch["source"] == "entrypoint:quadnet" and arch["num_classes"] == 4 and arch["in_channels"] == 1

    import torch

    from search_spaces.bundle import load_bundle

    model = load_bundle(out)  # a registered entry point: no trust needed
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 4)


@pytest.mark.slow
@pytest.mark.ray
def test_ray_workers_get_the_operator_allowlist(clients: Callable[..., TestClient]) -> None:
    """Ray actors validate the spec again in their own process: the allowlist travels with them.
    (The app starts its own Ray in its driver process, as a controller does: the session-wide
    ``ray_cluster`` would be a second Ray nobody uses, and would tie this test to its xdist group.)"""
    from service.runner import default_launcher
    from tests.reliability.helpers import tiny_spec

    c = clients(plugins=["tests.reliability.helpers:tiny_net"])
    c.app.state.runner.launcher = default_launcher(c.app.state.settings)  # type: ignore[attr-defined]
    body = tiny_spec(metric="agreement", agent={"kind": "random", "trials": 2}, finalize={"top_k": 0}, workers=1)
    job = c.post("/api/v1/jobs", json=body).json()
    done = wait_state(c, job["id"], ("succeeded", "failed"), timeout=300)
    assert done["state"] == "succeeded", done["error"]
    items = c.get(f"/api/v1/jobs/{job['id']}/trials").json()["items"]
    assert [t["trial_id"] for t in items] == [0, 1] and all(t["state"] == "succeeded" for t in items)
