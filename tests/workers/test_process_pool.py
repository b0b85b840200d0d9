"""The task process's finalize result and the message types (the pool contract is elsewhere)."""

from __future__ import annotations

import dataclasses
import importlib
import pickle
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import workers.messages as messages
from agents.types import Metrics, Outcome
from workers.artifacts import ArtifactInfo
from workers.process_pool import finalize_outcomes


def _metrics(q: float) -> Metrics:
    return Metrics(quality=q, macs=1, params=1, macs_ratio=0.5, params_ratio=0.5)


def test_finalize_outcomes_returns_artifact_infos_with_trial_ids(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}

    def fake_finalize(task: Any, pairs: list[Any], options: Any, out_dir: Path, on_progress: Any = None) -> list[ArtifactInfo]:
        seen["pairs"] = pairs
        # the second candidate did not pass export: ranks follow the candidates' order
        return [ArtifactInfo(1, out_dir / "r1", [("model.onnx", 3, "ab")], {"quality": 0.9}, pairs[0][0]),
                ArtifactInfo(3, out_dir / "r3", [], {"quality": 0.7}, pairs[2][0])]

    # the module, not ``workers.finalize`` (the package exports the function under that name)
    monkeypatch.setattr(importlib.import_module("workers.finalize"), "finalize", fake_finalize)
    task = SimpleNamespace(spec=SimpleNamespace(finalize=None, metric="agreement"),
                           info={"reference": {"test_accuracy": 0.93}})
    candidates = [Outcome(7, {"g0": 0.5}, _metrics(0.9)), Outcome(8, {"g0": 0.6}, None, "failed"),
                  Outcome(4, {"g0": 0.25}, _metrics(0.8)), Outcome(9, {"g0": 0.75}, _metrics(0.7))]
    out = finalize_outcomes(task, candidates, tmp_path, None)  # type: ignore[arg-type]
    assert len(seen["pairs"]) == 3  # the failed candidate is not finalized
    assert all(isinstance(a, ArtifactInfo) for a in out)
    assert [(a.rank, a.trial_id) for a in out] == [(1, 7), (3, 9)]
    assert [a.metrics["dense_test_accuracy"] for a in out] == [0.93, 0.93]
    assert out[0].metrics["quality"] == 0.9 and out[0].dir == tmp_path / "r1"


def test_messages_are_frozen_picklable_dataclasses() -> None:
    types = [t for t in vars(messages).values()
             if isinstance(t, type) and t.__module__ == messages.__name__]
    assert len(types) >= 15
    for t in types:
        assert dataclasses.is_dataclass(t) and t.__dataclass_params__.frozen, t  # type: ignore[attr-defined]
    failed = messages.Failed("ValueError: x", ValueError("x"))
    back = pickle.loads(pickle.dumps(failed))
    assert back == failed and isinstance(back.error(), ValueError)
    assert isinstance(messages.Failed("RuntimeError: y").error(), RuntimeError)
