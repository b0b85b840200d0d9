"""The GPU path without a GPU where possible: CUDA synchronisation around every timed region
(an injected sync and a patched ``torch.cuda.synchronize``), and finalize on one device.

The finalize test on ``cuda`` needs a CUDA device and is skipped without one (CI has none).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from search_spaces import measure
from search_spaces.measure import measure_latency, synchronizer
from tests.workers.conftest import shrunk, variant
from workers.latency import MIN_CALLS, measure_pair
from workers.runtimes import torch_eager
from workers.task import Task


class Recorder:
    """Logs forward passes and syncs in order."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def sync(self) -> None:
        self.events.append("sync")

    def watch(self, model: nn.Module, name: str) -> nn.Module:
        model.register_forward_hook(lambda *_: self.events.append(name))
        return model


def _timed_regions(events: list[str]) -> list[list[str]]:
    """The forward passes between each pair of syncs (sync, ..., sync)."""
    regions, current, inside = [], [], False
    for e in events:
        if e == "sync":
            if inside:
                regions.append(current)
            current, inside = [], not inside
        elif inside:
            current.append(e)
    assert not inside, "a timed region was opened and never closed"
    return regions


def test_measure_latency_brackets_every_timed_region_with_sync() -> None:
    rec = Recorder()
    a, b = rec.watch(nn.Linear(4, 4), "a"), rec.watch(nn.Linear(4, 2), "b")
    measure_latency([a, b], torch.zeros(1, 4), warmup=2, rounds=3, repeat=2, sync=rec.sync)
    regions = _timed_regions(rec.events)
    assert regions == [["a", "a"], ["b", "b"]] * 3  # each model's repeats, between two syncs
    assert rec.events[:4] == ["a", "b", "a", "b"]  # warm-up is not timed


def test_measure_pair_syncs_its_sizing_run_too(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder()
    devices: list[torch.device] = []

    def fake_synchronizer(device: torch.device):  # type: ignore[no-untyped-def]
        devices.append(device)
        return rec.sync

    monkeypatch.setattr(torch_eager, "synchronizer", fake_synchronizer)
    dense, pruned = rec.watch(nn.Linear(8, 8), "dense"), rec.watch(nn.Linear(8, 2), "pruned")
    lat = measure_pair(dense, pruned, torch.zeros(1, 8), rounds=2, min_round_s=0.0)
    regions = _timed_regions(rec.events)
    assert regions[0] == ["dense"]  # the single pass that sizes ``repeat`` is timed with syncs
    # then each call of a round timed on its own (the round keeps its fastest), MIN_CALLS each;
    # microsecond timings may not settle, and each timing again repeats the same synced rounds
    one_timing = ([["dense"]] * MIN_CALLS + [["pruned"]] * MIN_CALLS) * 2
    assert lat.attempts >= 1
    assert regions[1:] == one_timing * lat.attempts
    assert devices == [torch.device("cpu")]


def test_cuda_device_selects_torch_cuda_synchronize(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    synchronizer(torch.device("cpu"))()
    assert calls == []  # no CUDA call on a CPU measurement
    synchronizer(torch.device("cuda", 0))()
    assert calls == [torch.device("cuda", 0)]


def test_measure_latency_on_a_cuda_input_syncs_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default sync follows the input's device: a CUDA input gets ``torch.cuda.synchronize``."""
    calls: list[object] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    real = measure.synchronizer
    monkeypatch.setattr(measure, "synchronizer", lambda _device: real(torch.device("cuda")))
    measure_latency([nn.Linear(4, 4)], torch.zeros(1, 4), warmup=0, rounds=5)
    assert len(calls) == 2 * 5


@pytest.mark.slow
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_finalize_on_cuda_measures_on_the_device_and_exports_on_cpu(task: Task, tmp_path: Path) -> None:
    from agents.types import Metrics
    from workers.finalize import finalize

    t = shrunk(variant(task, target={"device": "cuda"}))
    searched = Metrics(quality=0.1, macs=1, params=1, macs_ratio=0.5, params_ratio=0.5)
    spec_kw = {"top_k": 1, "finetune_epochs": 1, "export": ["torchscript", "safetensors"]}
    from workers.spec import FinalizeSpec

    (art,) = finalize(t, [(t.space.uniform(0.5), searched)], FinalizeSpec(**spec_kw), tmp_path)
    assert art.metrics["latency_ms"] > 0 and 0 <= art.metrics["test_accuracy"] <= 1
    assert max(art.metrics["export_max_abs_diff"].values()) < 1e-3


def _onnx_file(tmp_path: Path) -> Path:
    path = tmp_path / "m.onnx"
    torch.onnx.export(nn.Linear(4, 2).eval(), (torch.zeros(1, 4),), str(path), dynamo=False)
    return path


def test_onnxruntime_on_cuda_without_a_cuda_build_names_the_package(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime as ort

    from workers.runtimes.onnx_runtime import session

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(RuntimeError, match="onnxruntime-gpu"):
        session(_onnx_file(tmp_path), threads=1, device="cuda")


def test_onnxruntime_that_falls_back_to_the_cpu_is_not_timed_as_the_gpu(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime starts a session on the CPU, with a warning only, when the CUDA provider's
    libraries are missing: a latency measured so would be the CPU's, reported as the GPU's."""
    import onnxruntime as ort

    from workers.runtimes.onnx_runtime import session

    real_session = ort.InferenceSession
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "preload_dlls", lambda *a, **k: None, raising=False)
    monkeypatch.setattr(ort, "InferenceSession",
                        lambda path, opts, providers: real_session(path, opts, providers=["CPUExecutionProvider"]))
    with pytest.raises(RuntimeError, match="could not start CUDAExecutionProvider"):
        session(_onnx_file(tmp_path), threads=1, device="cuda")
