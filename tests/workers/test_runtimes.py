"""``target.runtime``: latency measured in the runtime the model ships in.

The default is onnxruntime; each architecture is exported by its model kind's own ONNX export
(the function that writes the published ``model.onnx``) and timed in an ``InferenceSession``
interleaved with the dense model's. A runtime registered as a plugin is named and used the same
way.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from search_spaces import registry
from search_spaces.bundle import export_onnx
from workers.latency import LatencyMeter, NodeLock
from workers.runtimes import RUNTIMES, get_runtime
from workers.runtimes.base import OnnxExport, Run
from workers.runtimes.torch_eager import TorchEager
from workers.spec import JobSpec

SPEC: dict[str, Any] = {"model": {"zoo": "resnet20"}, "budget": {"latency_ratio": 0.5}}


def _convnet(width: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10)).eval()


def test_onnxruntime_is_the_default_and_an_unknown_runtime_is_refused_naming_the_field() -> None:
    assert JobSpec.model_validate(SPEC).target.runtime == "onnxruntime"
    assert JobSpec.model_validate({**SPEC, "target": {"runtime": "torch"}}).target.runtime == "torch"
    with pytest.raises(ValidationError) as err:
        JobSpec.model_validate({**SPEC, "target": {"runtime": "tensorrt"}})
    (e,) = err.value.errors()
    assert e["loc"] == ("target", "runtime") and "unknown runtime 'tensorrt'" in e["msg"]
    assert "onnxruntime" in e["msg"] and "torch" in e["msg"]


def test_the_meter_times_onnx_sessions_of_the_kinds_export(tmp_path: Path) -> None:
    """Each architecture is exported once by the given export (the dense one kept) and timed in
    onnxruntime at the meter's batch; a narrower network measures faster than the dense one."""
    exported: list[tuple[int, int]] = []

    def export(model: nn.Module, example: torch.Tensor, path: Path) -> None:
        exported.append((model[0].out_channels, int(example.shape[0])))
        export_onnx(model, example, path)

    dense, narrow = _convnet(64), _convnet(8)
    meter = LatencyMeter(dense, torch.randn(4, 3, 32, 32), runtime=get_runtime("onnxruntime"), export=export,
                         rounds=9, lock=NodeLock(tmp_path))
    lat = meter.measure("narrow", narrow)
    assert exported == [(8, 4), (64, 4)]  # at the job's batch, each once
    assert 0 < lat.ratio < 1 and lat.dense_ms > lat.ms
    meter.measure("narrow-again", narrow)
    assert exported == [(8, 4), (64, 4), (8, 4)]  # a new signature: exported; the dense run is kept


def test_an_evaluator_measures_in_the_jobs_runtime() -> None:
    from workers.evaluator import Evaluator
    from workers.task import WorkerSettings, load_task

    spec = JobSpec.model_validate({
        "model": {"zoo": "resnet20"}, "dataset": {"name": "digits"}, "metric": "agreement",
        "budget": {"latency_ratio": 0.5}, "target": {"runtime": "torch"},
        "evaluation": {"calibration_batches": 1, "batch_size": 32, "val_samples": 32},
    })
    task = load_task(spec, WorkerSettings(cache_dir=Path(".cache/autoprune")))
    ev = Evaluator(task)
    assert ev.runtime.name == "torch" and ev.latency.runtime is ev.runtime
    ort_spec = spec.model_copy(update={"target": spec.target.model_copy(update={"runtime": "onnxruntime"})})
    ev_ort = Evaluator(dataclasses.replace(task, spec=ort_spec))
    assert ev_ort.latency.runtime.name == "onnxruntime"
    assert ev_ort.latency.export == ev_ort.kind.export_onnx  # what the kind publishes is what is timed
    assert ev_ort.latency.scope != ev.latency.scope  # cached latencies never cross runtimes


class _CountingRuntime(TorchEager):
    name = "counting"
    prepared = 0

    def prepare(self, model: nn.Module, example: torch.Tensor, *, threads: int, export: OnnxExport) -> Run:
        type(self).prepared += 1
        return super().prepare(model, example, threads=threads, export=export)


def test_a_plugin_runtime_is_one_registration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ep = importlib.metadata.EntryPoint(name="counting", value=f"{__name__}:_CountingRuntime",
                                       group="autoprune.runtimes")
    real = registry.entry_points
    monkeypatch.setattr(registry, "entry_points",
                        lambda group: {"counting": ep} if group == "autoprune.runtimes" else real(group))
    get_runtime.cache_clear()
    try:
        assert "counting" in RUNTIMES.names()
        assert JobSpec.model_validate({**SPEC, "target": {"runtime": "counting"}}).target.runtime == "counting"
        meter = LatencyMeter(_convnet(16), torch.randn(1, 3, 16, 16), runtime=get_runtime("counting"), rounds=3,
                             lock=NodeLock(tmp_path))
        meter.measure("n", _convnet(4))
        assert _CountingRuntime.prepared == 2
    finally:
        get_runtime.cache_clear()
