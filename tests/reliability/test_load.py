"""Load on loopback: 50 concurrent clients polling status and following events while 20 jobs are
queued and run (fake launcher: real server, runner, store and agents; no training).

Asserts that every job finishes and no request fails; timing is reported by ``bench/api_load.py``
(docs/reliability.md), not asserted: this 2-core machine is shared and its timings are noisy.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_api_load", ROOT / "bench" / "api_load.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_50_clients_while_20_jobs_run(tmp_path: Path) -> None:
    summary = _bench().run_load(jobs=20, clients=50, trials=6, delay=0.05, interval=0.2, timeout=180,
                                data_dir=tmp_path)
    assert summary["errors"] == 0, summary["error_samples"]  # a GET retried once on a closed kept-alive connection is not one
    assert summary["jobs_succeeded"] == 20, summary["states"]
    assert summary["sse_streams_ended"] == 20  # every event stream ended with the job's final state
    assert summary["requests"] >= 100  # the clients really polled while the jobs ran
    assert summary["p50_ms"] is not None and summary["p99_ms"] >= summary["p50_ms"]
