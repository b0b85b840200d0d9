"""One contract, every registered model kind (Optuna's ``pytest_samplers`` style): each kind, on a
tiny model, loads its task, evaluates a policy and finalizes the best candidate and the baseline
with exports verified within its own tolerance.

A kind registered only as a plugin (``autoprune.kinds`` entry point) is decided and loaded
through the same registry: :func:`test_a_plugin_kind_is_one_registration`.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
from pathlib import Path
from typing import Any

import pytest

from agents.types import Metrics
from search_spaces import registry
from tests.search_spaces.tiny_text import save_tiny_hf_dir
from tests.workers.test_text_task import _corpus
from workers.evaluator import Evaluator
from workers.finalize import finalize
from workers.kinds import KINDS, get_kind, kind_of
from workers.kinds.image import ImageKind
from workers.kinds.registry import load_kind
from workers.spec import FinalizeSpec, JobSpec
from workers.task import Task, WorkerSettings, load_task

BUILTIN = ["image", "text"]


def _image_spec(**kw: Any) -> dict[str, Any]:
    return {
        "model": {"zoo": "resnet20", "weights": "resnet20-digits"},
        "dataset": {"name": "digits"},
        "metric": "agreement",
        "evaluation": {"calibration_batches": 1, "batch_size": 64, "val_samples": 64},
        **kw,
    }


@pytest.fixture(scope="module")
def kind_settings(settings: WorkerSettings, tmp_path_factory: pytest.TempPathFactory) -> dict[str, WorkerSettings]:
    root = tmp_path_factory.mktemp("kind-data")
    save_tiny_hf_dir(root / "tiny-bert")
    _corpus(root / "corpus.jsonl")
    return {"image": settings, "text": WorkerSettings(cache_dir=settings.cache_dir, data_roots=(root,))}


@pytest.fixture(scope="module")
def kind_tasks(kind_settings: dict[str, WorkerSettings]) -> dict[str, Task]:
    root = kind_settings["text"].data_roots[0]
    model_dir, corpus = root / "tiny-bert", root / "corpus.jsonl"
    common = {"budget": {"macs_ratio": 0.6}, "workers": 0, "finalize": {"top_k": 1, "baseline": True}}
    image = JobSpec.model_validate({**_image_spec(), **common})
    text = JobSpec.model_validate({
        "model": {"zoo": f"hf:{model_dir}"}, "dataset": {"name": "text_lines", "path": str(corpus)},
        "metric": "embedding_cosine", "target": {"batch_size": 2, "seq_len": 32},
        "evaluation": {"calibration_batches": 2, "batch_size": 16}, **common,
    })
    return {"image": load_task(image, kind_settings["image"]), "text": load_task(text, kind_settings["text"])}


def test_every_builtin_kind_is_registered_and_covered() -> None:
    assert set(BUILTIN) <= set(KINDS.names())
    with pytest.raises(KeyError, match="valid: image, text"):
        get_kind("audio")


@pytest.mark.parametrize("name", BUILTIN)
def test_the_kind_decides_its_defaults_and_options(name: str, kind_tasks: dict[str, Task]) -> None:
    task = kind_tasks[name]
    kind = kind_of(task.spec)
    assert kind.name == name and kind is get_kind(name)
    assert task.criterion == kind.default_criterion == kind.criterion(task.spec)
    assert kind.default_criterion in kind.criteria and kind.default_metric in kind.metrics
    assert "oneshot" in kind.schedules and kind.spec_errors(task.spec) == []
    bad = next(c for c in ("activation", "fpgm") if c not in kind.criteria)
    spec = task.spec.model_copy(update={"search_space": task.spec.search_space.model_copy(update={"criterion": bad})})
    assert [f for f, _ in kind.spec_errors(spec)] == ["search_space.criterion"]


@pytest.mark.parametrize("name", BUILTIN)
def test_the_kind_rebuilds_its_task_as_a_ray_actor_does(
    name: str, kind_tasks: dict[str, Task], kind_settings: dict[str, WorkerSettings]
) -> None:
    import torch

    from workers.task import rebuild_task

    task = kind_tasks[name]
    shipped = JobSpec.model_validate_json(task.spec.model_dump_json())  # as TaskFactory ships it
    again = rebuild_task(shipped, kind_settings[name], task.model.state_dict(), task.space.to_dict())
    assert again.criterion == task.criterion and again.space.to_dict() == task.space.to_dict()
    assert torch.equal(again.example_input, task.example_input)
    with torch.no_grad():
        assert torch.allclose(again.model(task.example_input), task.model(task.example_input), atol=1e-6)


@pytest.mark.parametrize("name", BUILTIN)
def test_the_kind_evaluates_a_policy(name: str, kind_tasks: dict[str, Task]) -> None:
    task = kind_tasks[name]
    ev = Evaluator(task, latency_rounds=2)
    dense = ev.dense_metrics()
    assert dense.quality == pytest.approx(1.0, abs=1e-6)  # agreement / cosine with itself
    m = ev.evaluate(task.space.uniform(0.5))
    assert math.isfinite(m.quality) and m.macs_ratio < 0.9 and m.latency_ms is not None
    assert ev.costs(ev.space.signature(task.space.uniform(0.5)), ev.shrink(task.space.uniform(0.5)))[0] == m.macs


@pytest.mark.slow
@pytest.mark.parametrize("name", BUILTIN)
def test_the_kind_finalizes_the_best_and_the_baseline(name: str, kind_tasks: dict[str, Task], tmp_path: Path) -> None:
    task = kind_tasks[name]
    searched = Metrics(quality=0.9, macs=1, params=1, macs_ratio=0.6, params_ratio=0.6)
    best, baseline = task.space.uniform(0.5), task.space.uniform(0.25)
    events: list[dict[str, Any]] = []
    spec = FinalizeSpec(top_k=1, baseline=True, finetune_epochs=0.0, export=["torchscript", "safetensors"])
    arts = finalize(task, [(best, searched), (baseline, searched)], spec, tmp_path, on_progress=events.append)
    assert [a.rank for a in arts] == [1, 2]  # top_k + the baseline the service appended
    for art in arts:
        m = art.metrics
        assert 0.0 <= m["test_quality"] <= 1.0 + 1e-6 and m["latency_ms"] > 0
        assert 0.0 <= m["dense_test_quality"] <= 1.0 + 1e-6
        assert set(m["export_max_abs_diff"]) == {"torchscript", "safetensors"}
        assert {"model.safetensors", "architecture.json", "metrics.json"} <= {f[0] for f in art.files}
    assert arts[1].metrics["macs_ratio"] > arts[0].metrics["macs_ratio"]  # the baseline cuts less here
    base = arts[1].metrics  # the report says whether the search beat the baseline
    assert base["role"] == "baseline" and "role" not in arts[0].metrics
    assert base["search_beat_baseline"] == (arts[0].metrics["test_quality"] > base["test_quality"])
    assert json.loads((arts[1].dir / "metrics.json").read_text())["search_beat_baseline"] == base["search_beat_baseline"]
    assert [e["stage"] for e in events if e["stage"] in ("start", "done")] == ["start", "done"] * 2
    assert not list(tmp_path.glob(".rank-*"))


class _PluginKind(ImageKind):
    """An operator's kind: the image kind under another name, claiming the synthetic dataset."""

    name = "plugin-kind"
    datasets = ("synthetic",)


def test_a_plugin_kind_is_one_registration(monkeypatch: pytest.MonkeyPatch) -> None:
    ep = importlib.metadata.EntryPoint(
        name="plugin-kind", value=f"{__name__}:_PluginKind", group="autoprune.kinds"
    )
    real = registry.entry_points
    monkeypatch.setattr(registry, "entry_points",
                        lambda group: {"plugin-kind": ep} if group == "autoprune.kinds" else real(group))
    load_kind.cache_clear()
    try:
        spec = JobSpec.model_validate({**_image_spec(), "dataset": {"name": "synthetic"},
                                       "budget": {"macs_ratio": 0.5}})
        assert "plugin-kind" in KINDS.names() and kind_of(spec).name == "plugin-kind"
        assert kind_of(JobSpec.model_validate({**_image_spec(), "budget": {"macs_ratio": 0.5}})).name == "image"
    finally:
        load_kind.cache_clear()


def test_the_baseline_alone_is_finalized_without_a_verdict(kind_tasks: dict[str, Task], tmp_path: Path) -> None:
    """``top_k: 0`` with ``baseline``: the service sends the baseline alone."""
    task = kind_tasks["text"]  # the cheaper kind; the loop is generic
    searched = Metrics(quality=0.9, macs=1, params=1, macs_ratio=0.6, params_ratio=0.6)
    spec = FinalizeSpec(top_k=0, baseline=True, finetune_epochs=0.0, export=["safetensors"])
    (art,) = finalize(task, [(task.space.uniform(0.25), searched)], spec, tmp_path)
    assert art.metrics["role"] == "baseline" and "search_beat_baseline" not in art.metrics


@pytest.fixture(scope="module")
def int8_tasks(kind_tasks: dict[str, Task]) -> dict[str, Task]:
    """The kinds' tasks with ``search_space.precision: [fp32, int8]`` (the same model, the space
    offering int8)."""
    import dataclasses

    from search_spaces.space import SearchSpace

    out = {}
    for name, task in kind_tasks.items():
        spec = JobSpec.model_validate({**task.spec.model_dump(), "search_space": {
            **task.spec.search_space.model_dump(), "precision": ["fp32", "int8"]}})
        space = SearchSpace.from_dict({**task.space.to_dict(), "precisions": ["fp32", "int8"]})
        out[name] = dataclasses.replace(task, spec=spec, space=space)
    return out


@pytest.mark.parametrize("name", BUILTIN)
def test_the_kind_scores_and_times_the_quantized_file(name: str, int8_tasks: dict[str, Task]) -> None:
    task = int8_tasks[name]
    space = task.space
    assert all(g.weights for g in space.groups if g.kind != "hidden")  # every group has layers to quantize
    ev = Evaluator(task, latency_rounds=2)
    fp32 = space.uniform(0.25)
    int8 = space.with_int8(fp32, space.names)
    m32, m8 = ev.evaluate(fp32), ev.evaluate(int8)
    assert space.signature(int8) != space.signature(fp32)  # cached apart
    assert m8.extra["int8_groups"] == len(space) and "int8_groups" not in m32.extra
    assert m8.macs == m32.macs  # int8 changes no MAC
    # scored on the quantized file: close to the fp32 model's quality (the random CNN's agreement
    # is 1.0 either way; the embedder's cosine moves)
    assert abs(m8.quality - m32.quality) < 0.25 and m8.extra["quantize_s"] > 0
    assert name == "image" or m8.quality != m32.quality
    assert m8.latency_ms is not None and m8.latency_ms > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", BUILTIN)
def test_the_kind_ships_the_quantized_model(name: str, int8_tasks: dict[str, Task], tmp_path: Path) -> None:
    import onnx

    from search_spaces.quantize import OrtModule

    task = int8_tasks[name]
    space = task.space
    half = space.names[: len(space) // 2]
    policy = space.with_int8(space.uniform(0.25), half)
    searched = Metrics(quality=0.9, macs=1, params=1, macs_ratio=0.6, params_ratio=0.6)
    only = Metrics(quality=0.9, macs=1, params=1, macs_ratio=1.0, params_ratio=1.0, extra={"role": "quantize-only"})
    spec = FinalizeSpec(top_k=1, baseline=True, finetune_epochs=0.0, export=["onnx", "safetensors"])
    best, quant = finalize(task, [(policy, searched), (space.with_int8(space.uniform(0.0), space.names), only)],
                           spec, tmp_path)
    files = {f[0] for f in best.files}
    assert {"model.onnx", "model.fp32.onnx", "precision.json", "model.safetensors"} <= files
    shipped = onnx.load(str(best.dir / "model.onnx"))
    assert any(n.op_type in ("DequantizeLinear", "MatMulInteger", "DynamicQuantizeLinear") for n in shipped.graph.node)
    precision = json.loads((best.dir / "precision.json").read_text())
    assert {g for g, p in precision["groups"].items() if p == "int8"} == set(half)
    assert all(precision["layers"][w] == "int8" for g in half for w in space.group(g).weights)
    m = best.metrics
    assert m["int8_groups"] == len(half) and "fp32_test_quality" in m and m["latency_ms"] > 0
    # the reported quality is the shipped file's
    ort = OrtModule(best.dir / "model.onnx")
    assert ort(task.example_input).shape[0] == task.example_input.shape[0]
    assert quant.metrics["role"] == "quantize-only" and quant.metrics["int8_groups"] == len(space)
    assert quant.metrics["macs_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert "search_beat_baseline" in quant.metrics


def test_a_text_depth_policy_ships_a_shallower_embedder(kind_tasks: dict[str, Task], tmp_path: Path) -> None:
    """A removed encoder layer through the text kind's finalize: its artifact names the kept
    layers (metrics and ``architecture.json``), the bundle's own loader rebuilds the shallower
    embedder and the ONNX file is checked against it (the image kind: tests/service/test_depth_job.py)."""
    import dataclasses

    from search_spaces.bundle import load_bundle
    from search_spaces.depth import units_of
    from search_spaces.transformers.model import SkippedLayer, blocks, layer_prefix

    task = kind_tasks["text"]
    layers = [layer_prefix(b.index) for b in blocks(task.model)]
    space = dataclasses.replace(task.space, units=units_of(layers, "layer", task.space.groups, task.space.costs))
    task = dataclasses.replace(task, space=space)
    policy = space.with_removed(space.uniform(0.25), layers[-1:])
    searched = Metrics(quality=0.9, macs=1, params=1, macs_ratio=0.6, params_ratio=0.6)
    spec = FinalizeSpec(top_k=1, finetune_epochs=0.0, export=["onnx", "safetensors"])
    (art,) = finalize(task, [(policy, searched)], spec, tmp_path)
    assert art.metrics["removed_units"] == layers[-1:] and art.metrics["kept_layers"] == layers[:-1]
    assert set(art.metrics["export_max_abs_diff"]) == {"onnx", "safetensors"}
    arch = json.loads((art.dir / "architecture.json").read_text())
    assert arch["kept_layers"] == layers[:-1] and arch["sizes"]["removed"] == [len(layers) - 1]
    model = load_bundle(art.dir)  # architecture.json's kind: the sentence embedder's own loader
    assert isinstance(model.get_submodule(layers[-1]), SkippedLayer)
