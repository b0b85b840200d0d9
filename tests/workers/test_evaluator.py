"""The evaluator on a real (small) model: metrics, agreement, latency cache, weights loading."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import pytest
import torch

from search_spaces.registry import allow_plugins
from search_spaces.space import PolicyError
from search_spaces.training import evaluate_accuracy
from tests.workers.conftest import small_spec, variant
from workers.evaluator import Evaluator
from workers.latency import NodeLock
from workers.task import Task, WorkerSettings, load_task, load_weights, resolve_weights


@pytest.fixture(scope="module")
def evaluator(task: Task) -> Evaluator:
    return Evaluator(task, latency_rounds=5)


def test_empty_policy_has_agreement_one_and_dense_costs(evaluator: Evaluator) -> None:
    m = evaluator.evaluate({})
    assert m.quality == 1.0
    assert m.macs_ratio == 1.0 and m.params_ratio == 1.0
    dense = evaluator.dense_metrics()
    assert dense.quality == 1.0 and dense.latency_ratio == 1.0
    assert dense.latency_ms is not None and dense.latency_ms > 0
    assert dense.node and m.node == dense.node


def test_pruned_metrics_match_the_space_cost_model(evaluator: Evaluator, task: Task) -> None:
    policy = task.space.uniform(0.5)
    m = evaluator.evaluate(policy)
    assert 0.0 <= m.quality <= 1.0
    # the real pruned model's MACs equal the analytic prediction (same counting, exact channels)
    assert m.macs_ratio == pytest.approx(task.space.macs_ratio(policy), rel=0.02)
    assert m.params < evaluator.dense_metrics().params
    assert (
        m.latency_ms is not None and m.latency_ratio is not None and m.latency_spread_ms is not None
    )
    assert m.extra["signature"] == task.space.signature(policy)


def test_latency_cache_hit_skips_measurement(task: Task) -> None:
    ev = Evaluator(task, latency_rounds=3)
    policy = task.space.uniform(0.25)
    first = ev.evaluate(policy)
    assert ev.latency.measurements == 1 and first.extra["latency_cached"] is False
    # a different policy with the same architecture (rounding) hits the cache
    same_arch = {k: v + 0.01 for k, v in task.space.round(policy).items()}
    assert task.space.signature(same_arch) == task.space.signature(policy)
    second = ev.evaluate(same_arch)
    assert ev.latency.measurements == 1 and second.extra["latency_cached"] is True
    assert second.latency_ms == first.latency_ms
    ev.evaluate(task.space.uniform(0.5))
    assert ev.latency.measurements == 2


def test_zero_latency_rounds_measure_no_latency(task: Task) -> None:
    # MACs-only studies (bench/agents.py) skip timing; NSGA-II then trades quality vs MACs
    ev = Evaluator(task, latency_rounds=0)
    policy = task.space.uniform(0.25)
    m = ev.evaluate(policy)
    assert ev.latency.measurements == 0
    assert m.latency_ms is None and m.latency_ratio is None and m.latency_spread_ms is None
    assert 0 < m.macs_ratio < 1 and m.extra["signature"] == task.space.signature(policy)


def test_latency_file_cache_is_shared_between_evaluators(task: Task, tmp_path: Path) -> None:
    s = WorkerSettings(cache_dir=tmp_path)
    a = Evaluator(task, settings=s, latency_rounds=3)
    b = Evaluator(task, settings=s, latency_rounds=3)
    policy = task.space.uniform(0.375)
    ma = a.evaluate(policy)
    mb = b.evaluate(policy)
    assert a.latency.measurements == 1 and b.latency.measurements == 0
    assert mb.latency_ms == ma.latency_ms


def test_accuracy_and_entrypoint_metrics(task: Task) -> None:
    t = variant(task, metric="accuracy")
    ev = Evaluator(t, latency_rounds=3)
    want = evaluate_accuracy(t.model, ev.scoring.val_loader, device=torch.device("cpu"))
    assert ev.evaluate({}).quality == pytest.approx(want)
    assert len(ev.scoring.val_loader.dataset) == 64  # val_samples caps the val split
    assert ev.dense_metrics().quality == pytest.approx(want)

    allow_plugins(["tests.workers.fakes:mean_confidence"])  # as the operator's AUTOPRUNE_PLUGINS
    t2 = variant(task, metric="entrypoint:tests.workers.fakes:mean_confidence")
    q = Evaluator(t2, latency_rounds=3).evaluate({}).quality
    assert 0.0 < q <= 1.0


def test_finetune_steps_change_the_pruned_model(task: Task, evaluator: Evaluator) -> None:
    policy = task.space.uniform(0.5)
    plain = evaluator.prune(policy)
    evaluation = {**task.spec.evaluation.model_dump(), "finetune_steps": 2, "batch_size": 16}
    tuned = Evaluator(variant(task, evaluation=evaluation), latency_rounds=3).prune(policy)
    x = task.example_input
    with torch.no_grad():
        assert not torch.allclose(plain(x), tuned(x))


def test_finetuned_quality_does_not_depend_on_what_was_evaluated_before(task: Task) -> None:
    # fine-tuning batches restart for every policy: a search's ranking is the policies', not
    # the order they happened to be evaluated in
    evaluation = {**task.spec.evaluation.model_dump(), "finetune_steps": 3, "batch_size": 16}
    ev = Evaluator(variant(task, evaluation=evaluation), latency_rounds=0)
    policy = task.space.uniform(0.5)
    first = ev.evaluate(policy).quality
    ev.evaluate(task.space.uniform(0.25))
    assert ev.evaluate(policy).quality == first


def test_bad_policy_names_the_group(evaluator: Evaluator) -> None:
    with pytest.raises(PolicyError, match="nope"):
        evaluator.evaluate({"nope": 0.5})
    name = evaluator.space.names[0]
    with pytest.raises(PolicyError, match=name):
        evaluator.evaluate({name: 0.95})


def test_weights_pickle_is_refused_unless_allowed(task: Task, tmp_path: Path) -> None:
    torch.save(task.model, tmp_path / "whole-model.pt")  # a pickled module, not a state dict
    with pytest.raises(ValueError, match="pickle"):
        load_weights(tmp_path / "whole-model.pt")
    assert isinstance(load_weights(tmp_path / "whole-model.pt", allow_pickle=True), torch.nn.Module)
    # a weights_only state dict is fine without the flag, and load_task uses it
    torch.save({"state_dict": task.model.state_dict()}, tmp_path / "sd.pt")
    t = load_task(small_spec(str(tmp_path / "sd.pt")), WorkerSettings(cache_dir=tmp_path))
    x = task.example_input
    with torch.no_grad():
        assert torch.allclose(t.model(x), task.model(x))


def test_weights_resolution_errors(settings: WorkerSettings, tmp_path: Path) -> None:
    assert resolve_weights("resnet20-digits", settings).is_file()
    with pytest.raises(FileNotFoundError, match="model.weights"):
        resolve_weights("../etc/passwd-nope", settings)
    (tmp_path / "junk").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="model.weights"):
        load_task(small_spec(str(tmp_path / "junk")), settings)


def _hold_shared(directory: str, seconds: float, ready: mp.synchronize.Event) -> None:
    with NodeLock(Path(directory)).shared():
        ready.set()
        time.sleep(seconds)


def test_node_lock_excludes_measurement_while_other_work_runs(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_hold_shared, args=(str(tmp_path), 1.0, ready))
    proc.start()
    try:
        assert ready.wait(30)
        lock = NodeLock(tmp_path)
        with lock.shared():  # shared holders run together
            pass
        t0 = time.perf_counter()
        with lock.exclusive():
            waited = time.perf_counter() - t0
        assert waited > 0.5  # blocked until the other process released its shared hold
    finally:
        proc.join(10)


def test_make_pool_without_workers_is_in_process(settings: WorkerSettings) -> None:
    from agents.types import Proposal
    from workers.pool import InProcessPool, make_pool

    pool = make_pool(small_spec("resnet20-digits", workers=0), settings)
    assert isinstance(pool, InProcessPool)
    assert pool.dense_metrics.quality == 1.0 and pool.dense_metrics.latency_ratio == 1.0
    (out,) = pool.evaluate([Proposal(7, {"bogus": 0.1})])
    assert out.trial_id == 7 and not out.ok and "bogus" in (out.error or "")
    pool.close()


def test_each_recovery_option_is_honoured(task: Task) -> None:
    policy = task.space.uniform(0.5)
    models = {}
    for recovery in ("none", "bn", "lsq", "finetune"):
        evaluation = {
            **task.spec.evaluation.model_dump(),
            "recovery": recovery,
            "finetune_steps": 2 if recovery == "finetune" else 0,
            "batch_size": 16,
        }
        ev = Evaluator(variant(task, evaluation=evaluation), latency_rounds=0)
        assert ev.scoring.recovery == recovery
        models[recovery] = ev.prune(policy)
    bn_stats = dict(models["bn"].named_buffers())
    none_stats = dict(models["none"].named_buffers())
    # none keeps the dense statistics (of the kept channels); bn re-estimates them
    assert int(none_stats["layer1.0.bn1.num_batches_tracked"]) == 0
    assert not torch.allclose(none_stats["layer1.0.bn1.running_var"], bn_stats["layer1.0.bn1.running_var"])
    weights = {k: dict(m.named_parameters()) for k, m in models.items()}
    # bn and none share the plainly pruned weights; lsq refits the layers reading pruned channels
    assert torch.equal(weights["bn"]["layer1.0.conv2.weight"], weights["none"]["layer1.0.conv2.weight"])
    assert not torch.allclose(weights["lsq"]["layer1.0.conv2.weight"], weights["bn"]["layer1.0.conv2.weight"])
    assert not torch.allclose(weights["finetune"]["layer1.0.conv2.weight"], weights["bn"]["layer1.0.conv2.weight"])


def test_auto_recovery_is_lsq_at_every_budget_or_the_finetune_of_old_specs(task: Task) -> None:
    for budget in ({"macs_ratio": 0.5}, {"macs_ratio": 0.25}, {"latency_ratio": 0.8}):
        ev = Evaluator(variant(task, budget=budget), latency_rounds=0)
        assert ev.scoring.recovery == "lsq" and ev.scoring.dense_targets is not None
    evaluation = {**task.spec.evaluation.model_dump(), "finetune_steps": 3}
    assert Evaluator(variant(task, evaluation=evaluation), latency_rounds=0).scoring.recovery == "finetune"
    bn = {**task.spec.evaluation.model_dump(), "recovery": "bn"}
    assert Evaluator(variant(task, evaluation=bn), latency_rounds=0).scoring.dense_targets is None  # asked for
