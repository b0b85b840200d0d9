"""Finalization: AGP schedule, unwritable directories, verified bundles on a real model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from tests.workers.conftest import shrunk, variant
from workers.finalize import FinalizeError, finalize
from workers.kinds.image.finalize import agp_ratios
from workers.spec import FinalizeSpec
from workers.task import Task


def test_agp_schedule_is_cubic_from_dense_to_target() -> None:
    final = {"a": 0.8, "b": 0.4}
    steps = [agp_ratios(final, k, 5) for k in range(0, 6)]
    assert steps[0] == {"a": 0.0, "b": 0.0}
    assert steps[-1] == pytest.approx(final)
    a = [s["a"] for s in steps]
    assert all(x < y for x, y in zip(a, a[1:], strict=False))
    # cubic: most of the pruning happens early (Zhu & Gupta), increments shrink
    inc = [y - x for x, y in zip(a, a[1:], strict=False)]
    assert all(x > y for x, y in zip(inc, inc[1:], strict=False))
    assert a[1] == pytest.approx(0.8 * (1 - 0.8**3))


def test_unwritable_out_dir_is_a_clear_error(task: Task, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(FinalizeError, match="not writable"):
        finalize(task, [(task.space.uniform(0.5), None)], FinalizeSpec(top_k=1), blocker / "out")  # type: ignore[list-item]


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["oneshot", "agp"])
def test_finalize_exports_verified_bundles(task: Task, tmp_path: Path, schedule: str) -> None:
    from agents.types import Metrics

    t = shrunk(variant(task, metric="accuracy"))
    policy = t.space.uniform(0.5)
    searched = Metrics(quality=0.1, macs=1, params=1, macs_ratio=0.5, params_ratio=0.5)
    events: list[dict] = []
    # ONNX export and its (pure-Python reference) check are exercised once, with AGP
    export = (
        ["torchscript", "onnx", "safetensors"]
        if schedule == "agp"
        else ["torchscript", "safetensors"]
    )
    spec = FinalizeSpec(top_k=1, finetune_epochs=2, schedule=schedule, export=export)
    arts = finalize(
        t,
        [(policy, searched), (t.space.uniform(0.25), searched)],
        spec,
        tmp_path,
        on_progress=events.append,
    )
    assert len(arts) == 1  # top_k
    art = arts[0]
    assert art.rank == 1 and art.dir.is_dir()
    names = {name for name, _, _ in art.files}
    assert {
        "model.ts",
        "model.safetensors",
        "architecture.json",
        "policy.json",
        "metrics.json",
    } <= names
    assert ("model.onnx" in names) == (schedule == "agp")
    for name, size, sha in art.files:
        data = (art.dir / name).read_bytes()
        assert len(data) == size and hashlib.sha256(data).hexdigest() == sha
    m = art.metrics
    assert 0.0 <= m["test_accuracy"] <= 1.0 and m["latency_ms"] > 0
    assert m["macs_ratio"] == pytest.approx(t.space.macs_ratio(policy), rel=0.02)
    assert all(v < 1e-3 for v in m["export_max_abs_diff"].values())
    assert json.loads((art.dir / "metrics.json").read_text())["schedule"] == schedule
    ts = torch.jit.load(str(art.dir / "model.ts"))
    assert ts(t.example_input).shape == (1, 10)
    assert events[0]["stage"] == "start" and events[-1]["stage"] == "done"
    if schedule == "agp":
        assert any(e["stage"] == "agp" for e in events)
    assert not list(tmp_path.glob(".rank-*"))  # no half-written bundle left behind


def test_a_fine_tune_that_loses_validation_quality_does_not_ship(
    task: Task, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A narrow network's fine-tune can diverge (a resnet56 at 0.12 of the MACs fell to chance
    accuracy): the recovered weights ship instead, and the metrics say so."""
    import workers.kinds.image.finalize as image_finalize
    from agents.types import Metrics
    from search_spaces.bundle import load_bundle
    from workers.kinds.image.scoring import ImageScoring

    def diverging(model: torch.nn.Module, *args: object, **kwargs: object) -> None:
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(0.0)

    def alive(m: torch.nn.Module) -> float:  # validation quality: 1 unless the weights are gone
        return float(any(bool(p.abs().sum() > 0) for p in m.parameters() if p.dim() == 4))

    monkeypatch.setattr(image_finalize, "train_steps", diverging)
    monkeypatch.setattr(ImageScoring, "metric", lambda self, name: alive)
    t = shrunk(variant(task, metric="accuracy"))
    searched = Metrics(quality=0.1, macs=1, params=1, macs_ratio=0.5, params_ratio=0.5)
    spec = FinalizeSpec(top_k=1, finetune_epochs=1, export=["safetensors"])
    (art,) = finalize(t, [(t.space.uniform(0.5), searched)], spec, tmp_path)
    assert art.metrics["finetune_kept"] is False and art.metrics["recovered_val_quality"] == 1.0
    assert art.metrics["val_quality"] == 1.0
    assert alive(load_bundle(art.dir)) == 1.0  # the shipped file holds the recovered weights
