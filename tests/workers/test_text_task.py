"""Text jobs end to end in-process: a tiny BERT from a model directory on a text_lines corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from tests.search_spaces.tiny_text import save_tiny_hf_dir
from workers.spec import JobSpec
from workers.task import WorkerSettings, load_task

WORDS = ["alpha", "beta", "gamma", "delta", "river", "stone", "light", "music", "window", "garden", "paper", "city"]


def _corpus(path: Path, n: int = 120) -> Path:
    lines = []
    for i in range(n):
        words = [WORDS[(i * 7 + j * (i % 5 + 1)) % len(WORDS)] for j in range(4 + i % 9)]
        lines.append(json.dumps({"text": f"Sentence {i} is about {' '.join(words)}."}))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def text_env(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("data")
    model_dir = save_tiny_hf_dir(root / "tiny-bert")  # hf: directories must lie in the data roots
    corpus = _corpus(root / "corpus.jsonl")
    settings = WorkerSettings(cache_dir=tmp_path_factory.mktemp("cache"), data_roots=(root,))
    return model_dir, corpus, settings


def _spec(model_dir: Path, corpus: Path, **overrides) -> JobSpec:  # type: ignore[no-untyped-def]
    data = {
        "model": {"zoo": f"hf:{model_dir}"},
        "dataset": {"name": "text_lines", "path": str(corpus)},
        "metric": "embedding_cosine",
        "budget": {"latency_ratio": 0.8},
        "target": {"batch_size": 2, "seq_len": 32},
        "evaluation": {"calibration_batches": 2, "batch_size": 16},
        "finalize": {"top_k": 1, "finetune_epochs": 1},
        "workers": 0,
    }
    data.update(overrides)
    return JobSpec.model_validate(data)


@pytest.fixture(scope="module")
def text_task(text_env):  # type: ignore[no-untyped-def]
    model_dir, corpus, settings = text_env
    return load_task(_spec(model_dir, corpus), settings)


def test_hf_directory_outside_the_data_roots_is_refused(text_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A REST caller names ``hf:<dir>``: only model directories the operator's data roots hold."""
    model_dir, corpus, settings = text_env
    outside = save_tiny_hf_dir(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="outside the configured data roots"):
        load_task(_spec(outside, corpus), settings)
    assert model_dir.is_relative_to(settings.data_roots[0])


def test_text_task_tokenizes_with_the_models_tokenizer(text_task) -> None:  # type: ignore[no-untyped-def]
    t = text_task
    assert t.criterion == "activation"  # the default for text when the job names none
    assert t.example_input.shape == (1, 32) and t.example_input.dtype == torch.long
    assert (t.example_input != 0).all()  # latency is measured on real tokens, no padding
    assert len(t.splits.train) + len(t.splits.val) + len(t.splits.test) == 120
    assert [g.kind for g in t.space.groups] == ["heads", "mlp"] * 2


@pytest.mark.slow
def test_evaluator_scores_cosine_fidelity_and_latency(text_task) -> None:  # type: ignore[no-untyped-def]
    from workers.evaluator import Evaluator

    ev = Evaluator(text_task, latency_rounds=3)
    dense = ev.dense_metrics()
    assert dense.quality == pytest.approx(1.0, abs=1e-6)
    policy = {g.name: 0.5 for g in text_task.space.groups}
    m = ev.evaluate(policy)
    assert 0.0 < m.quality < 0.99
    assert -1.0 <= m.extra["spearman_pairwise"] < 1.0
    assert 0.0 <= m.extra["knn10_overlap"] <= 1.0
    assert m.latency_ratio is not None and m.macs_ratio < 0.7
    # distillation to the dense embeddings moves the pruned model back towards them
    import dataclasses

    tuned = dataclasses.replace(
        text_task, spec=text_task.spec.model_copy(update={"evaluation": text_task.spec.evaluation.model_copy(update={"finetune_steps": 30})})
    )
    assert Evaluator(tuned, latency_rounds=0).evaluate(policy).quality > m.quality


@pytest.mark.slow
def test_finalize_writes_a_verified_bundle(text_task, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from agents.types import Metrics
    from search_spaces.transformers.bundle import load_sentence_embedder
    from workers.finalize import finalize

    policy = {g.name: 0.25 for g in text_task.space.groups}
    searched = Metrics(quality=0.9, macs=1, params=1, macs_ratio=0.7, params_ratio=0.9)
    (art,) = finalize(text_task, [(policy, searched)], text_task.spec.finalize, tmp_path)
    names = {f[0] for f in art.files}
    assert {"model.safetensors", "architecture.json", "model.onnx", "tokenizer.json", "metrics.json"} <= names
    assert 0.0 < art.metrics["test_cosine"] <= 1.0
    assert set(art.metrics["export_max_abs_diff"]) == {"onnx", "safetensors", "torchscript"}
    model = load_sentence_embedder(art.dir)
    ids = model.tokenizer()(["Sentence one is here.", "Two."], padding=True, return_tensors="pt")["input_ids"]
    assert model(ids).shape == (2, 32)


def test_spec_rejects_mismatched_text_parts(text_env) -> None:  # type: ignore[no-untyped-def]
    model_dir, corpus, _ = text_env
    with pytest.raises(ValidationError, match="is a sentence embedder: it needs a text dataset"):
        _spec(model_dir, corpus, dataset={"name": "digits"})
    with pytest.raises(ValidationError, match="embedding_cosine' needs a text dataset"):
        _spec(model_dir, corpus, model={"zoo": "resnet20"}, dataset={"name": "digits"})
    with pytest.raises(ValidationError, match="is text: use metric"):
        _spec(model_dir, corpus, metric="accuracy")
    with pytest.raises(ValidationError, match="sentence embedder"):
        JobSpec.model_validate(
            {"model": {"zoo": "all-minilm-l6-v2"}, "dataset": {"name": "digits"}, "budget": {"macs_ratio": 0.5}}
        )
    with pytest.raises(ValidationError, match="finalize.schedule: 'agp'.*use 'oneshot'"):
        _spec(model_dir, corpus, finalize={"top_k": 1, "schedule": "agp"})


def test_text_lines_path_is_confined_and_jsonl_needs_text(text_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from search_spaces.data import load_dataset

    _, corpus, settings = text_env
    with pytest.raises(ValueError, match="outside the configured data roots"):
        load_dataset("text_lines", path=str(tmp_path / "x.txt"), roots=settings.data_roots)
    bad = corpus.parent / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"body": "no text"}\n')
    with pytest.raises(ValueError, match="line 2: no string field 'text'"):
        load_dataset("text_lines", path=str(bad), roots=settings.data_roots)
    plain = corpus.parent / "plain.txt"
    plain.write_text("\n".join(f"Line number {i} of the file." for i in range(30)))
    a = load_dataset("text_lines", path=str(plain), roots=settings.data_roots, seed=1)
    b = load_dataset("text_lines", path=str(plain), roots=settings.data_roots, seed=1)
    assert (a.train, a.val, a.test) == (b.train, b.val, b.test)
    assert len(a.val) == len(a.test) == 3 and not set(a.train) & set(a.test)


def test_seq_len_beyond_the_models_positions_is_refused(text_env) -> None:  # type: ignore[no-untyped-def]
    model_dir, corpus, settings = text_env
    with pytest.raises(ValueError, match="target.seq_len 512 exceeds"):
        load_task(_spec(model_dir, corpus, target={"seq_len": 512}), settings)


def test_ray_actors_get_the_same_criterion_as_the_controller(text_task) -> None:  # type: ignore[no-untyped-def]
    from workers.kinds import kind_of

    # the service stores the spec and TaskFactory ships it as JSON: the default must survive that
    shipped = JobSpec.model_validate(json.loads(text_task.spec.model_dump_json()))
    assert kind_of(shipped).criterion(shipped) == text_task.criterion == "activation"


def test_a_text_tasks_latency_table_prunes_heads_and_mlp_the_text_way(text_task) -> None:  # type: ignore[no-untyped-def]
    """The knapsack's table under a latency budget: each entry is the embedder with one group
    narrowed by the text kind's surgery (CNN surgery on an embedder failed), timed against dense."""
    from workers.evaluator import Evaluator
    from workers.latency_table import measure_latency_table

    ev = Evaluator(text_task, latency_rounds=1)
    table = measure_latency_table(ev, (0.5,))
    assert set(table.entries) == {g.name for g in text_task.space.groups}
    for group in text_task.space.groups:
        (kept, ratio), *_ = table.entries[group.name]
        assert kept < group.channels and ratio > 0


def test_layer_distillation_pulls_the_kept_layers_toward_the_dense_model(text_task) -> None:  # type: ignore[no-untyped-def]
    """``finalize.distil_layers``: the hidden states entering each kept layer are distilled to
    those entering the same layer of the dense model, as well as the final embedding."""
    from search_spaces.transformers.model import layer_outputs
    from workers.evaluator import Evaluator
    from workers.kinds.text.scoring import LayerTargets

    scoring = Evaluator(text_task, latency_rounds=0).scoring
    policy = {g.name: 0.5 for g in text_task.space.groups}
    ids = scoring.val_batches[0]

    def layer0_error(model: torch.nn.Module) -> float:
        with torch.no_grad(), layer_outputs(model, [0]) as got, layer_outputs(scoring.ctx.dense, [0]) as want:
            model(ids), scoring.ctx.dense(ids)
        return float(((got[0] - want[0]) ** 2).mean() / (want[0] ** 2).mean())

    torch.manual_seed(0)
    plain = scoring.prune(policy, steps=40)
    torch.manual_seed(0)
    layered = scoring.prune(policy, steps=40, layer_weight=1.0)
    assert scoring.layer_targets(layered, 1.0).pairs == ((0, 0),)  # the last layer's output is pooled
    # after removed layers the kept layer before them stands in for them: 0 learns 0..2's output
    assert LayerTargets.kept(scoring.ctx.dense, [0, 3, 4, 5], 1.0, 0).pairs == ((0, 2), (3, 3), (4, 4))
    assert layer0_error(layered) < 0.9 * layer0_error(plain)
    assert scoring.quality(layered) > scoring.quality(scoring.prune(policy, steps=0))


def test_layer_distillation_is_refused_for_a_cnn() -> None:
    with pytest.raises(ValidationError, match="finalize.distil_layers: layer-wise distillation is for sentence embedders, not an image model"):
        JobSpec.model_validate({"model": {"zoo": "resnet20"}, "dataset": {"name": "digits"},
                                "budget": {"macs_ratio": 0.5}, "finalize": {"distil_layers": 1.0}})
