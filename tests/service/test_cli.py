"""The client commands against a real uvicorn server (fake launcher): submit, watch, jobs, pull, upload."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
import yaml
from click.testing import CliRunner

from service.cli import main
from tests.service.conftest import make_settings
from tests.service.fakes import FakeLauncher, spec


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    from service.api.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'cli.db'}", api_token="tok")
    srv = uvicorn.Server(uvicorn.Config(create_app(settings, launcher=FakeLauncher()), host="127.0.0.1", port=port,
                                        log_level="warning"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    while not srv.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    t.join(10)


def test_submit_watch_jobs_pull(server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOPRUNE_API_TOKEN", "tok")
    runner = CliRunner()
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(yaml.safe_dump(spec(name="from-cli")))
    r = runner.invoke(main, ["submit", str(spec_file), "--watch", "--server", server])
    assert r.exit_code == 0, r.output
    job_id = r.output.splitlines()[0].strip()
    assert "succeeded" in r.output and "8/8" in r.output

    r = runner.invoke(main, ["watch", job_id, "--server", server])
    assert r.exit_code == 0 and "succeeded" in r.output

    r = runner.invoke(main, ["jobs", "--server", server])
    assert r.exit_code == 0 and "from-cli" in r.output and "1 job(s)" in r.output

    r = runner.invoke(main, ["pull", job_id, "--rank", "1", "-o", str(tmp_path / "out"), "--server", server])
    assert r.exit_code == 0, r.output
    pulled = tmp_path / "out" / f"{job_id[:8]}-rank1" / "policy.json"
    assert json.loads(pulled.read_text())

    r = runner.invoke(main, ["pull", job_id, "--rank", "7", "--server", server])
    assert r.exit_code == 1 and "no artifact of rank 7" in r.output


def test_upload_prints_the_id_a_spec_names_and_refuses_a_file_that_is_not_weights(
        server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from safetensors.torch import save_file

    monkeypatch.setenv("AUTOPRUNE_API_TOKEN", "tok")
    weights = tmp_path / "resnet20.safetensors"
    save_file({"w": torch.zeros(2, 2)}, str(weights))
    r = CliRunner().invoke(main, ["upload", str(weights), "--server", server])
    assert r.exit_code == 0, r.output
    upload_id = r.stdout.strip()
    assert len(upload_id) == 32 and "resnet20.safetensors" in r.stderr
    bad = tmp_path / "notes.txt"
    bad.write_text("not weights")
    r = CliRunner().invoke(main, ["upload", str(bad), "--server", server])
    assert r.exit_code == 2 and "HTTP 422" in r.output and "file" in r.output  # named, and why


def test_cli_errors(server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(spec(agent={"kind": "nope"})))
    monkeypatch.setenv("AUTOPRUNE_API_TOKEN", "tok")
    r = runner.invoke(main, ["submit", str(bad), "--server", server])
    assert r.exit_code == 2 and "agent.kind" in r.output
    monkeypatch.setenv("AUTOPRUNE_API_TOKEN", "wrong")
    r = runner.invoke(main, ["jobs", "--server", server])
    assert r.exit_code == 1 and "401" in r.output
    r = runner.invoke(main, ["jobs", "--server", "http://127.0.0.1:9"])
    assert r.exit_code == 1 and "cannot reach" in r.output


def _trial(trial_id: int, quality: float, macs_ratio: float) -> dict[str, object]:
    return {"trial_id": trial_id, "metrics": {"quality": quality, "macs": int(1e6 * macs_ratio), "macs_ratio": macs_ratio,
                                               "params": 1000, "latency_ratio": 0.5}}


def _render(job: dict[str, object], arts: list[dict[str, object]]) -> str:
    from rich.console import Console

    from service.cli.jobs import demo_table

    table, verdict = demo_table(job, arts)
    console = Console(width=160, record=True)
    console.print(table)
    return console.export_text() + "\n".join(verdict)


def test_demo_table_puts_the_baseline_next_to_the_best() -> None:
    job = {"spec": {"metric": "accuracy"},
           "dense": {"quality": 0.99, "macs": 1_000_000, "params": 2000, "latency_ms": 10.0},
           "baseline": _trial(0, 0.8123, 0.249), "best": _trial(17, 0.9345, 0.248)}
    arts = [{"rank": 1, "trial_id": 17, "metrics": {"test_quality": 0.9611, "dense_test_quality": 0.99,
                                                    "latency_ms": 5.0, "latency_ratio": 0.5}},
            {"rank": 2, "trial_id": 0, "metrics": {"test_quality": 0.9444, "latency_ms": 6.0, "latency_ratio": 0.6}}]
    text = _render(job, arts)
    assert "uniform-fill baseline" in text and "best found" in text
    row = next(line for line in text.splitlines() if "accuracy at search" in line)
    assert "0.8123" in row and "0.9345" in row
    row = next(line for line in text.splitlines() if "accuracy after final" in line)
    assert "0.9444" in row and "0.9611" in row
    assert "+12.2 points" in text and "+1.7 points ahead" in text

    # the search found nothing better: said plainly
    job["best"] = job["baseline"]
    text = _render(job, arts[1:])
    assert "did NOT beat the uniform-fill baseline" in text


def test_a_transformer_jobs_table_shows_the_baseline_beside_the_best() -> None:
    """The text kind finalizes the baseline too, and reports the same kind-neutral keys."""
    job = {"spec": {"metric": "embedding_cosine"},
           "dense": {"quality": 1.0, "macs": 5_000_000, "params": 9000, "latency_ms": 20.0},
           "baseline": _trial(0, 0.8811, 0.5), "best": _trial(9, 0.9102, 0.5)}
    arts = [{"rank": 1, "trial_id": 9, "metrics": {"test_quality": 0.9050, "dense_test_quality": 1.0,
                                                   "latency_ms": 10.0, "latency_ratio": 0.5}},
            {"rank": 2, "trial_id": 0, "metrics": {"test_quality": 0.8990, "latency_ms": 10.2, "latency_ratio": 0.51,
                                                   "role": "baseline", "search_beat_baseline": True}}]
    text = _render(job, arts)
    row = next(line for line in text.splitlines() if "embedding_cosine after final" in line)
    assert "0.8990" in row and "0.9050" in row
    assert "+0.6 points ahead" in text
