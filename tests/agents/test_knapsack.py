"""The knapsack agent's pieces: exact MILP solve, cost models, latency table, refinement."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from agents.budget_fit import BudgetError, BudgetFit, LatencyModel
from agents.cost_model import analytic_cost_model, latency_cost_model
from agents.knapsack import KnapsackAgent
from agents.knapsack_solve import Knapsack, Limit
from agents.latency_table import LatencyTable
from agents.registry import make_agent
from agents.types import AgentHints, Budget
from tests.agents.synthetic import chain_space, make_evaluator, sensitivities


@pytest.fixture
def small():
    # 4 groups, 2-4 levels each: 48 architectures, brute force is instant
    return chain_space((8, 16, 16, 8), round_to=4)


def _all_kept(space):
    levels = [space.levels(g) for g in space.groups]
    for combo in itertools.product(*levels):
        yield dict(zip(space.names, combo, strict=True))


def _policy(space, kept):
    return {g: space.ratio_for(g, k) for g, k in kept.items()}


def _value(space, values, kept):
    return sum(values[g][space.levels(g).index(k)] for g, k in kept.items())


def test_cost_models_equal_the_space_analytic_costs(small):
    macs, params = analytic_cost_model(small, "macs"), analytic_cost_model(small, "params")
    prior = latency_cost_model(small, LatencyModel(small))  # nothing measured: proportional to MACs
    for kept in _all_kept(small):
        p = _policy(small, kept)
        assert macs.value(small, kept) == pytest.approx(small.macs_ratio(p), abs=1e-12)
        assert params.value(small, kept) == pytest.approx(small.params_ratio(p), abs=1e-12)
        assert prior.value(small, kept) == pytest.approx(small.macs_ratio(p), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_milp_is_exact_against_brute_force(small, seed):
    rng = np.random.default_rng(seed)
    # increasing in kept channels, like a quality estimate: more channels, more quality
    values = {g.name: list(np.cumsum(rng.uniform(0, 1, len(small.levels(g))))) for g in small.groups}
    macs, params = analytic_cost_model(small, "macs"), analytic_cost_model(small, "params")
    bm, bp = 0.5, 0.6
    solver = Knapsack(small, [Limit("macs_ratio", macs, bm), Limit("params_ratio", params, bp)])
    got = solver.solve(values)
    feasible = [
        k for k in _all_kept(small)
        if small.macs_ratio(_policy(small, k)) <= bm + 1e-12 and small.params_ratio(_policy(small, k)) <= bp + 1e-12
    ]
    best = max(_value(small, values, k) for k in feasible)
    assert got is not None
    assert small.macs_ratio(_policy(small, got)) <= bm + 1e-9
    assert small.params_ratio(_policy(small, got)) <= bp + 1e-9
    assert _value(small, values, got) == pytest.approx(best, abs=1e-9)


def test_trust_region_and_exclusions_are_respected(small):
    values = {g.name: [float(i) for i in range(len(small.levels(g)))] for g in small.groups}
    macs = analytic_cost_model(small, "macs")
    solver = Knapsack(small, [Limit("macs_ratio", macs, 0.5)])
    first = solver.solve(values)
    second = solver.solve(values, exclude=[first])
    assert second != first and macs.value(small, second) <= 0.5 + 1e-9
    center = {g.name: small.levels(g)[0] for g in small.groups}  # everything pruned hardest
    near = solver.solve(values, center=center, radius=1, exclude=[center])
    assert solver.distance(near, center) == 1  # one step away: the best within the region
    feasible_near = [
        k for k in _all_kept(small)
        if solver.distance(k, center) <= 1 and k != center and macs.value(small, k) <= 0.5 + 1e-12
    ]
    assert _value(small, values, near) == max(_value(small, values, k) for k in feasible_near)


@pytest.mark.parametrize("seed", range(6))
def test_trust_region_enumeration_equals_the_milp(monkeypatch, seed):
    """Small regions are enumerated, not solved as a MILP: same value, every limit met exactly,
    exclusions respected, None exactly when the MILP finds nothing; and on every architecture
    the region's points are those within the radius."""
    import agents.knapsack_solve as knapsack_solve

    space = chain_space((8, 16, 16, 12, 8), round_to=4)
    rng = np.random.default_rng(seed)
    limits = [Limit("macs_ratio", analytic_cost_model(space, "macs"), 0.45),
              Limit("params_ratio", analytic_cost_model(space, "params"), 0.55)]
    solver = Knapsack(space, limits)
    every = list(_all_kept(space))
    for _ in range(8):
        values = {g.name: list(np.cumsum(rng.uniform(0, 1, len(space.levels(g))))) for g in space.groups}
        center = every[int(rng.integers(len(every)))]
        radius = int(rng.integers(1, 5))
        near = [k for k in every if solver.distance(k, center) <= radius]
        assert solver.region_size(center, radius) == len(near)
        exclude = [near[int(i)] for i in rng.choice(len(near), size=min(len(near), int(rng.integers(0, 30))), replace=False)]
        enumerated = solver.solve(values, center=center, radius=radius, exclude=exclude)
        monkeypatch.setattr(knapsack_solve, "ENUMERATE_AT_MOST", 0)
        milp = solver.solve(values, center=center, radius=radius, exclude=exclude, gap=0.0)
        monkeypatch.undo()
        assert (enumerated is None) == (milp is None)
        if enumerated is not None:
            assert enumerated not in exclude and solver.distance(enumerated, center) <= radius
            assert not solver.violated(enumerated)
            assert _value(space, values, enumerated) == pytest.approx(_value(space, values, milp), abs=1e-9)


def test_unreachable_budget_gives_none_and_budget_error(small):
    macs = analytic_cost_model(small, "macs")
    assert Knapsack(small, [Limit("macs_ratio", macs, 0.01)]).solve({g.name: [0.0] * len(small.levels(g)) for g in small.groups}) is None
    with pytest.raises(BudgetError, match="unreachable"):
        KnapsackAgent(small, Budget(macs_ratio=0.01))


def test_latency_budget_the_model_thinks_unreachable_is_probed_not_refused(small):
    table = _table(small, slope=0.3)  # the table says pruning saves at most ~30 % of the time
    budget = Budget(latency_ratio=0.6)
    agent = KnapsackAgent(small, budget, hints=AgentHints(latency_table=table))
    evaluate = make_evaluator(small, sensitivities(small), latency=True)  # measured: 0.3 + 0.7·MACs
    narrowest = {g.name: small.levels(g)[0] for g in small.groups}
    baseline, probe = agent.ask(2)  # nothing fits the model: the fastest networks, to be measured
    assert small.kept(baseline.policy) == narrowest and probe.info["role"] == "fastest"
    agent.tell([evaluate(baseline), evaluate(probe)])
    roles, feasible = [], 0
    for _ in range(3):  # the measurements moved the model: the budget has room after all
        props = agent.ask(2)
        roles += [p.info["role"] for p in props]
        outs = [evaluate(p) for p in props]
        feasible += sum(budget.feasible(o.metrics) for o in outs)
        agent.tell(outs)
    assert "fastest" not in roles[-2:] and feasible >= 4


def test_after_the_fastest_probe_the_whole_knapsack_is_solved_again(small):
    """The first allocation found nothing the latency model fits and the fastest network was
    measured instead: once that measurement corrects the model, the next proposal is the knapsack
    allocation under it (the budget used), not a trust-region step around the fastest network."""
    table = _table(small, slope=0.3)
    budget = Budget(latency_ratio=0.6)
    agent = KnapsackAgent(small, budget, hints=AgentHints(latency_table=table))
    evaluate = make_evaluator(small, sensitivities(small), latency=True)  # measured: 0.3 + 0.7·MACs
    baseline, probe = agent.ask(2)
    assert probe.info["role"] == "fastest"
    told = [evaluate(baseline), evaluate(probe)]
    agent.tell(told)
    # the baseline (the narrowest network, far under the budget) is placed again first
    refit, again = agent.ask(2)
    assert refit.info["role"] == "baseline refit" and again.info["role"] == "knapsack"
    placed = evaluate(refit).metrics  # closer to the budget, still within it
    assert placed is not None and told[0].metrics.latency_ratio < placed.latency_ratio <= 0.6  # type: ignore[union-attr]
    m = evaluate(again).metrics
    assert m is not None and budget.feasible(m)
    assert m.macs_ratio > told[1].metrics.macs_ratio + 0.1, (m.macs_ratio, told[1].metrics.macs_ratio)


def _table(space, slope, overhead=0.0):
    """Synthetic measurements: ratio = 1 − slope·(1 − kept/channels) + overhead, per group."""
    entries = {}
    for g in space.groups:
        pts = [k for k in space.levels(g) if k < g.channels][:2]
        entries[g.name] = tuple((k, 1.0 - slope / len(space) * (1 - k / g.channels) + overhead) for k in pts)
    return LatencyTable(dense_ms=10.0, entries=entries)


def test_latency_table_points_and_round_trip(small):
    g = small.groups[1]  # 16 channels, levels 4, 8, 12, 16
    table = LatencyTable(dense_ms=5.0, entries={g.name: ((4, 0.6), (8, 0.8))})
    points = table.points(small)
    assert [(small.kept(p)[g.name], r) for p, r in points] == [(4, 0.6), (8, 0.8)]
    assert all(set(p) == {g.name} for p, _ in points)  # the other groups dense
    again = LatencyTable.from_dict(json.loads(json.dumps(table.to_dict())))
    assert again == table


def test_latency_cost_model_is_the_fitted_model_exactly(small):
    """What the MILP bounds is what the latency model predicts, on every architecture."""
    rng = np.random.default_rng(0)
    model = LatencyModel(small)
    policies = [_policy(small, k) for k in _all_kept(small)]
    # measured: an overhead, a slope below 1, and one group slower than its MACs say
    model.add_points(
        (p, 0.35 + 0.5 * small.macs_ratio(p) + 0.1 * small.kept(p)[small.names[2]] / 16 + rng.normal(0, 0.01))
        for p in policies[::3]
    )
    assert model.overhead > 0.1 and model.layer_weight(()) < 0.9  # the fit moved off the prior
    costs = latency_cost_model(small, model)
    for kept, p in zip(_all_kept(small), policies, strict=True):
        assert costs.value(small, kept) == pytest.approx(model.predict_ratio(p), abs=1e-9)


def test_knapsack_meets_a_latency_budget_its_noisy_table_misjudges():
    """The resnet56 failure in small: each group's own effect is below one measurement's noise, and
    time falls slower than MACs. Summing table entries misjudged the multi-group policies; the
    fitted model and the chance margin keep the measured proposals within the budget."""
    space = chain_space()
    sens = sensitivities(space)
    rng = np.random.default_rng(1)

    def true_latency(policy):
        return 0.5 + 0.5 * space.macs_ratio(policy)

    table = LatencyTable(
        dense_ms=10.0,
        entries={
            g.name: tuple(
                (k, true_latency({g.name: space.ratio_for(g, k)}) + rng.normal(0, 0.03))
                for k in space.levels(g)[: len(space.levels(g)) - 1 : 2]
            )
            for g in space.groups
        },
    )
    quality = make_evaluator(space, sens)

    def evaluate(p):
        o = quality(p)
        ratio = true_latency(p.policy) + rng.normal(0, 0.02)
        o.metrics.latency_ratio, o.metrics.latency_ms = ratio, 10.0 * ratio
        return o

    budget = Budget(latency_ratio=0.7)
    agent = make_agent("knapsack", space, budget, seed=0, hints=AgentHints(table))
    outcomes = []
    for _ in range(8):
        props = agent.ask(2)
        outs = [evaluate(p) for p in props]
        outcomes += [(p.info["role"], o) for p, o in zip(props, outs, strict=True)]
        agent.tell(outs)
    searched = [o for role, o in outcomes if role != "baseline"]
    feasible = [o for o in searched if budget.feasible(o.metrics)]
    assert len(feasible) >= 0.75 * len(searched)
    assert all(true_latency(o.policy) <= 0.7 for o in feasible)  # not luck of the noise
    baseline = next(o for role, o in outcomes if role == "baseline")
    assert max(o.metrics.quality for o in feasible) > baseline.metrics.quality


def test_latency_budget_proposals_fit_the_model_and_learn_its_offset():
    space = chain_space()
    sens = sensitivities(space)
    evaluate = make_evaluator(space, sens, latency=True)  # latency ratio = 0.3 + 0.7 · macs
    # a table that is right except for a fixed overhead it cannot see (+0.05 measured)
    table = LatencyTable(
        dense_ms=10.0,
        entries={
            g.name: tuple((k, 0.3 + 0.7 * space.macs_ratio({g.name: space.ratio_for(g, k)})) for k in space.levels(g)[:2])
            for g in space.groups
        },
    )
    budget = Budget(latency_ratio=0.6)
    agent = make_agent("knapsack", space, budget, seed=0, options={"latency_margin": 0.0}, hints=AgentHints(table))
    assert agent.table is table
    feasible = 0
    for _ in range(6):
        props = agent.ask(2)
        outs = [evaluate(p) for p in props]
        feasible += sum(budget.feasible(o.metrics) for o in outs)
        agent.tell(outs)
    assert feasible >= 8  # the table-driven solves land within the measured budget
    state = json.loads(json.dumps(agent.state_dict()))
    restored = make_agent("knapsack", space, budget, seed=0, options={"latency_margin": 0.0})  # no table given
    restored.load_state_dict(state)
    assert restored.table == table  # the table the search used comes back with its state


def test_refinement_beats_the_baseline_and_the_first_solve():
    space = chain_space()
    sens = sensitivities(space)
    evaluate = make_evaluator(space, sens)
    budget = Budget(macs_ratio=0.3)
    agent = make_agent("knapsack", space, budget, seed=0)
    seen = []
    for _ in range(10):
        props = agent.ask(3)
        outs = [evaluate(p) for p in props]
        seen += [(p.info["role"], o.metrics.quality) for p, o in zip(props, outs, strict=True)]
        agent.tell(outs)
    baseline = next(q for r, q in seen if r == "baseline")
    first = next(q for r, q in seen if r == "knapsack")
    best = max(q for _, q in seen)
    assert best > max(baseline, first) + 0.01
    assert len({space.signature(p.policy) for p in agent._pending.values()}) == 0
    fit = BudgetFit(space, budget)
    assert fit.uniform_fill() == agent.fit.uniform_fill()


def test_options_are_checked_and_hints_are_not_an_option():
    space = chain_space()
    with pytest.raises(ValueError, match="radius"):
        make_agent("knapsack", space, Budget(macs_ratio=0.5), options={"radius": 0})
    with pytest.raises(ValueError, match="table_ratios"):
        make_agent("knapsack", space, Budget(macs_ratio=0.5), options={"table_ratios": "0.5"})
    with pytest.raises(ValueError, match="hints"):
        make_agent("knapsack", space, Budget(macs_ratio=0.5), options={"hints": {}})
    assert KnapsackAgent.hint_requests(Budget(macs_ratio=0.5), {}) == []  # MACs: nothing measured
    (req,) = KnapsackAgent.hint_requests(Budget(latency_ratio=0.5), {"table_ratios": [0.5]})
    assert req.ratios == (0.5,)


def test_latency_search_resumes_exactly_from_json_state():
    space = chain_space()
    evaluate = make_evaluator(space, sensitivities(space), latency=True)
    hints = AgentHints(_table(space, slope=0.7, overhead=0.05))
    budget = Budget(latency_ratio=0.9)  # the table's floor is ~0.85

    def run(agent, rounds):
        trace = []
        for _ in range(rounds):
            props = agent.ask(2)
            trace += [(p.trial_id, p.policy) for p in props]
            agent.tell([evaluate(p) for p in props])
        return trace

    a = make_agent("knapsack", space, budget, seed=5, hints=hints)
    run(a, 3)
    pending = a.ask(2)
    saved = json.loads(json.dumps(a.state_dict()))
    b = make_agent("knapsack", space, budget, seed=5, hints=hints)
    b.load_state_dict(saved)
    assert [(p.trial_id, p.policy) for p in b.ask(2)] == [(p.trial_id, p.policy) for p in pending]
    for ag in (a, b):
        ag.tell([evaluate(p) for p in pending])
    assert run(a, 3) == run(b, 3)


def test_a_wide_region_of_a_deep_space_is_counted_without_overflow_and_not_enumerated():
    """30 groups of 64 channels stepped by 1: a radius of 200 holds far more than int64 counts
    (an overflowed count once sent such a region to enumeration and exhausted memory)."""
    from agents.knapsack_solve import ENUMERATE_AT_MOST

    space = chain_space((64,) * 30, round_to=1)
    solver = Knapsack(space, [Limit("macs_ratio", analytic_cost_model(space, "macs"), 0.5)])
    center = {g.name: space.levels(g)[len(space.levels(g)) // 2] for g in space.groups}
    assert solver.region_size(center, 200) == ENUMERATE_AT_MOST + 1
    assert solver.region_size(center, 1) == 1 + 2 * 30  # small regions are still counted exactly
