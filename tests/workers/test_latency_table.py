"""The per-group latency table measured by a real evaluator, handed to the knapsack agent."""

from __future__ import annotations

import dataclasses
import math

import pytest

from agents.registry import make_agent
from agents.types import AgentHints, Budget
from workers.evaluator import Evaluator
from workers.hints import agent_hints
from workers.latency_table import (
    RUNTIME_STEPS,
    choose_step,
    int8_table_policies,
    measure_latency_table,
    removal_policies,
    resolve_round_to,
    step_probe_policies,
    table_policies,
)
from workers.loop import run_search
from workers.pool import InProcessPool
from workers.task import Task, WorkerSettings


@pytest.fixture(scope="module")
def evaluator(task: Task) -> Evaluator:
    return Evaluator(task, latency_rounds=1)  # the mechanics, not the figures: one round


def test_table_policies_prune_one_group_each(task: Task) -> None:
    space = task.space
    plan = table_policies(space, (0.5, 0.8, 0.99))
    assert set(plan) == set(space.names)
    for name, policies in plan.items():
        kept = [space.kept(p)[name] for p in policies]
        assert len(set(kept)) == len(kept) and all(k < space.group(name).channels for k in kept)
        for p in policies:  # every other group dense
            assert set(p) == {name}


@pytest.mark.slow
def test_measured_table_is_cached_and_reaches_the_agent(evaluator: Evaluator, task: Task) -> None:
    table = measure_latency_table(evaluator, (0.5,))
    assert set(table.entries) == set(task.space.names)
    assert table.dense_ms > 0
    for name, entries in table.entries.items():
        for kept, ratio in entries:
            assert kept < task.space.group(name).channels and math.isfinite(ratio) and ratio > 0
    timed = evaluator.latency.measurements
    pool = InProcessPool(evaluator)
    budget = Budget(latency_ratio=0.8)
    hints = agent_hints("knapsack", budget, {"table_ratios": [0.5]}, pool)
    assert evaluator.latency.measurements == timed  # every entry came from the latency cache
    assert hints.latency_table == table
    assert agent_hints("optuna-tpe", budget, {}, pool).latency_table is None  # asks for nothing
    assert agent_hints("knapsack", Budget(macs_ratio=0.5), {}, pool).latency_table is None

    # the agent end to end, in process: the service's loop, real pruned models, measured latency
    agent = make_agent("knapsack", task.space, budget, seed=0, options={"table_ratios": [0.5]}, hints=hints)
    done = []
    summary = run_search(
        agent,
        pool,
        trials=3,
        batch_size=3,
        on_outcome=lambda p, o, _cached: done.append((p, o)),
        on_state=lambda _s: None,
        should_stop=lambda: False,
    )
    assert summary.answered == 3 and summary.failed == 0
    roles = [p.info["role"] for p, _ in sorted(done, key=lambda po: po[0].trial_id)]
    # the first solve, or — where this one-round (noisy) table's model admits nothing — the
    # fastest untried network; then refinement
    assert roles[0] == "baseline" and roles[1] in ("knapsack", "fastest")
    assert set(roles[2:]) <= {"refine", "fastest"}
    assert all(o.metrics is not None and o.metrics.latency_ratio is not None for _, o in done)
    assert len({task.space.signature(p.policy) for p, _ in done}) == 3  # never the same twice
    assert agent.state_dict()["extra"]["latency_table"] == table.to_dict()


@pytest.mark.slow
def test_task_process_measures_the_table_in_its_child(settings: WorkerSettings) -> None:
    """``workers: 0`` jobs evaluate in a child process: the knapsack's table comes from there too."""
    from tests.workers.conftest import small_spec
    from workers.process_pool import TaskProcess

    spec = small_spec("resnet20-digits", budget={"latency_ratio": 0.8}, agent={"kind": "knapsack"})
    proc = TaskProcess(spec, settings)
    try:
        hints = agent_hints("knapsack", Budget(latency_ratio=0.8), {"table_ratios": [0.5]}, proc)
        table = hints.latency_table
        assert table is not None and set(table.entries) == set(proc.space.names)
        assert table.dense_ms > 0
        assert all(ratio > 0 for entries in table.entries.values() for _, ratio in entries)
    finally:
        proc.close()


def _int8_task(task: Task) -> Task:
    """The task with ``search_space.precision: [fp32, int8]`` timed in onnxruntime."""
    from search_spaces.space import SearchSpace
    from tests.workers.conftest import small_spec

    spec = small_spec("resnet20-digits", search_space={"precision": ["fp32", "int8"]},
                      target={"runtime": "onnxruntime"})
    space = SearchSpace.from_dict({**task.space.to_dict(), "precisions": ["fp32", "int8"]})
    return dataclasses.replace(task, spec=spec, space=space)


def test_int8_table_policies_put_one_group_in_int8(task: Task) -> None:
    assert int8_table_policies(task.space, (0.5,)) == {}  # an fp32 space times no int8
    space = _int8_task(task).space
    ratios = (0.25, 0.5, 0.75)
    plan = int8_table_policies(space, ratios)
    assert set(plan) == set(space.names)
    for name, policies in plan.items():
        assert [space.int8_groups(p) for p in policies] == [[name]] * len(policies)
        kept = [space.kept(p)[name] for p in policies]
        widths = [space.kept(p)[name] for p in table_policies(space, ratios)[name]]
        # int8 alone, then the middle of the table's widths (two int8 entries a group at most)
        assert kept[0] == space.group(name).channels
        assert kept[1:] == widths[(len(widths) - 1) // 2 :][:1]
        assert all(set(space.widths(p)) == {name} for p in policies)  # every other group dense fp32


@pytest.mark.slow
def test_measured_table_times_each_group_in_int8(task: Task, monkeypatch: pytest.MonkeyPatch) -> None:
    """A quantizable space's table has int8 entries, timed on the quantized file and cached by the
    signature an evaluation of that policy uses; the knapsack's latency model learns from them."""
    import workers.latency_table as latency_table

    int8_task = _int8_task(task)
    space = int8_task.space
    some = space.names[:3]  # the table of three groups: the mechanics, in seconds
    every = latency_table.table_policies
    monkeypatch.setattr(latency_table, "table_policies",
                        lambda sp, ratios: {g: p for g, p in every(sp, ratios).items() if g in some})
    evaluator = Evaluator(int8_task, latency_rounds=1)
    table = measure_latency_table(evaluator, (0.5,))
    assert set(table.int8) == set(table.entries) == set(some)
    for name in some:
        (dense_kept, _), *narrowed = table.int8[name]
        assert dense_kept == space.group(name).channels
        assert [k for k, _ in narrowed] == [k for k, _ in table.entries[name]]
    assert all(math.isfinite(r) and r > 0 for rows in table.int8.values() for _, r in rows)
    timed = evaluator.latency.measurements
    assert measure_latency_table(evaluator, (0.5,)) == table  # every entry from the latency cache
    assert evaluator.latency.measurements == timed
    first = space.with_int8({some[0]: 0.0}, [some[0]])
    assert evaluator.latency.cached(space.signature(space.validate(first))) is not None
    agent = make_agent("knapsack", space, Budget(latency_ratio=0.8), seed=0, hints=AgentHints(latency_table=table))
    assert len(agent.fit.latency.points) == len(table.points(space))
    assert any(space.int8_groups(p) for p, _ in table.points(space))


def test_removal_policies_remove_one_unit_each_and_reach_the_latency_model() -> None:
    """A depth space's table times each unit removed, the rest dense; the entries survive the
    table's JSON and become latency-model points."""
    from agents.latency_table import LatencyTable
    from tests.agents.synthetic import chain_space, residual_space

    assert removal_policies(chain_space()) == {}  # no depth: nothing to time
    space = residual_space()
    plan = removal_policies(space)
    assert list(plan) == [u.name for u in space.units]
    for unit, policy in plan.items():
        assert space.removed_units(policy) == [unit] and space.macs_ratio(policy) < 1
        assert all(policy[g] == 0.0 for g in space.names)  # every group dense
    table = LatencyTable(dense_ms=2.0, removed={u: 0.9 for u in plan})
    assert LatencyTable.from_dict(table.to_dict()) == table
    assert [space.removed_units(p) for p, _ in table.points(space)] == [[u] for u in plan]


@pytest.mark.slow
def test_measured_table_times_each_unit_removed(task: Task, monkeypatch: pytest.MonkeyPatch) -> None:
    """A depth space's table has a removal entry per unit, timed on the model with that block
    gone (faster than dense) and cached by the signature an evaluation of that policy uses."""
    import workers.latency_table as latency_table
    from search_spaces.build import build_space

    space = build_space(task.model, task.example_input, max_ratio=task.space.max_ratio,
                        round_to=task.space.round_to, ignore=task.space.ignored, depth=True)
    assert removal_policies(space)  # resnet20 has removable blocks
    removals = latency_table.removal_policies
    # no widths and two units: the mechanics, in seconds
    monkeypatch.setattr(latency_table, "table_policies", lambda sp, ratios: {})
    monkeypatch.setattr(latency_table, "removal_policies", lambda sp: dict(list(removals(sp).items())[:2]))
    evaluator = Evaluator(dataclasses.replace(task, space=space), latency_rounds=1)
    table = measure_latency_table(evaluator, (0.5,))
    assert list(table.removed) == [u.name for u in space.units[:2]]
    assert all(math.isfinite(r) and 0 < r < 1.2 for r in table.removed.values())
    first = space.validate({f"{space.units[0].name}@keep": 0.0})
    assert evaluator.latency.cached(space.signature(first)) is not None


# --- round_to: "runtime" ---------------------------------------------------------------------------
def test_choose_step_finds_the_runtime_block() -> None:
    # every width costs its channels (no block): the finest step
    assert choose_step({0: 0.4, 1: 0.4 + 0.2 / 16, 4: 0.45, 8: 0.5, 16: 0.6})[0] == 1
    # widths padded to blocks of 8: 16m+1 and 16m+4 cost as 16m+8
    step, excess = choose_step({0: 0.4, 1: 0.5, 4: 0.5, 8: 0.5, 16: 0.6})
    assert step == 8 and excess[1] > excess[4] > excess[8] == 0.0
    # padded to 16: everything above 16m costs as 16m+16
    assert choose_step({0: 0.4, 1: 0.6, 4: 0.6, 8: 0.6, 16: 0.6})[0] == 16
    # no measurable width effect (noise put 16 below 0): nothing to round for
    assert choose_step({0: 0.5, 1: 0.5, 4: 0.5, 8: 0.5, 16: 0.49})[0] == 1


def test_step_probes_put_every_wide_group_at_one_offset(task: Task) -> None:
    space = dataclasses.replace(task.space, round_to=1)
    plan = step_probe_policies(task.space)
    assert sorted(plan) == [0, *RUNTIME_STEPS]
    wide = [g.name for g in task.space.groups if g.channels >= 32 and g.kind != "heads"]
    assert wide and set(plan[0]) == set(wide)
    for s, policy in plan.items():
        for name, ratio in policy.items():
            assert space.kept_channels(name, ratio) == 16 * (space.group(name).channels // 32) + s


@pytest.mark.slow
def test_round_to_runtime_is_resolved_when_the_task_loads(settings: WorkerSettings) -> None:
    from tests.workers.conftest import small_spec
    from workers.task import load_task

    spec = small_spec("resnet20-digits", search_space={"round_to": "runtime"}, target={"runtime": "onnxruntime"})
    task = load_task(spec, settings)
    found = task.info["runtime_step"]
    assert task.space.round_to == "runtime" and task.space.runtime_step == found["step"] in RUNTIME_STEPS
    assert sorted(found["latency"]) == [0, *RUNTIME_STEPS] and found["groups"] > 0
    assert all(k % found["step"] == 0 or k == g.channels
               for g in task.space.groups if g.channels >= 2 * found["step"] for k in task.space.levels(g))
    # a space given as auto or a number is left alone (nothing measured)
    auto = dataclasses.replace(task, space=dataclasses.replace(task.space, round_to="auto"), info={})
    assert resolve_round_to(auto).info.get("runtime_step") is None


def test_spec_takes_round_to_runtime() -> None:
    from pydantic import ValidationError

    from tests.workers.conftest import small_spec

    assert small_spec("w", search_space={"round_to": "runtime"}).search_space.round_to == "runtime"
    with pytest.raises(ValidationError, match="round_to"):
        small_spec("w", search_space={"round_to": "fastest"})
