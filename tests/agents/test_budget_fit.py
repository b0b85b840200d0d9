from __future__ import annotations

import numpy as np
import pytest

from agents.budget_fit import BudgetError, BudgetFit, LatencyModel
from agents.global_ranking import GlobalAgent, global_policy
from agents.types import Budget, Metrics, Outcome
from tests.agents.synthetic import chain_space, make_evaluator, sensitivities


@pytest.mark.parametrize("budget", [Budget(macs_ratio=0.25), Budget(macs_ratio=0.5), Budget(params_ratio=0.3), Budget(macs_ratio=0.4, params_ratio=0.35)])
def test_uniform_fill_fits_and_no_single_step_more_fits(budget):
    space = chain_space((16, 24, 32, 40, 48, 64), round_to=1)
    fit = BudgetFit(space, budget)
    plain = space.uniform(fit.uniform_ratio())
    filled = fit.uniform_fill()
    assert fit.fits(plain) and fit.fits(filled)
    assert space.macs(filled) >= space.macs(plain)
    # The fill is maximal: adding one more channel step to any group breaks the budget.
    kept = space.kept(filled)
    for g in space.groups:
        up = [k for k in space.levels(g) if k > kept[g.name]]
        if up:
            assert not fit.fits({**filled, g.name: space.ratio_for(g, up[0])})
    # The bisected ratio is the smallest that fits: a bit less does not.
    assert not fit.fits(space.uniform(max(0.0, fit.uniform_ratio() - 0.02)))


def test_fill_uses_budget_that_plain_uniform_leaves():
    space = chain_space((16, 24, 32, 40, 48, 64), round_to=1)
    fit = BudgetFit(space, Budget(macs_ratio=0.25))
    plain = space.macs_ratio(space.uniform(fit.uniform_ratio()))
    filled = space.macs_ratio(fit.uniform_fill())
    assert plain < filled <= 0.25 + 1e-12


def test_project_keeps_shape_and_fits():
    space = chain_space()
    fit = BudgetFit(space, Budget(macs_ratio=0.3))
    rng = np.random.default_rng(0)
    for _ in range(30):
        raw = dict(zip(space.names, rng.uniform(0, space.max_ratio, len(space)).tolist(), strict=True))
        p = fit.project(raw)
        assert fit.fits(p)
        assert space.validate(p) == p
    # A light policy is pruned more where it was pruned more (order of ratios kept, up to rounding).
    raw = {n: 0.1 * i / len(space) for i, n in enumerate(space.names)}
    p = fit.project(raw, fill=False)
    ratios = [p[n] for n in space.names]
    assert ratios[-1] >= ratios[0]
    # Already-feasible policies are left alone with grow=False.
    heavy = space.round(space.uniform(0.8))
    assert fit.project(heavy, fill=False, grow=False) == heavy


def test_min_ratio_keeps_budget_reachable():
    space = chain_space()
    fit = BudgetFit(space, Budget(macs_ratio=0.3))
    decided: dict[str, float] = {}
    for g in space.groups:  # greedily keep everything the clamp allows: must still end feasible
        decided[g.name] = fit.min_ratio(decided, g.name)
    assert fit.fits(decided)
    full = {n: space.max_ratio for n in space.names}
    assert fit.min_ratio({}, space.names[0]) <= space.max_ratio
    assert fit.fits({**full, space.names[0]: fit.min_ratio({}, space.names[0])})


def test_unreachable_budget_names_the_numbers():
    with pytest.raises(BudgetError, match=r"unreachable.*macs_ratio=0\.0"):
        BudgetFit(chain_space(), Budget(macs_ratio=0.01))


def test_global_policy_follows_importances():
    space = chain_space()
    fit = BudgetFit(space, Budget(macs_ratio=0.4))
    p = global_policy(space, fit)
    assert fit.fits(p)
    assert p != fit.uniform_fill()  # importances differ between groups, so the allocation does


def test_the_global_ranking_measured_over_a_latency_budget_is_placed_again_until_it_fits():
    """The global policy's first placement comes from a latency model that has measured nothing:
    measured over the budget it is placed again by the refitted model (like the baselines),
    until one fits, so a ``global`` job ships Torch-Pruning's ranking and not only uniform-fill."""
    space = chain_space()
    evaluate = make_evaluator(space, sensitivities(space), latency=True)
    budget = Budget(latency_ms=6.0)
    agent = GlobalAgent(space, budget, seed=0)
    placed = []
    while not agent.finished:
        props = agent.ask(2)
        placed += [p for p in props if p.info["role"].startswith("global")]
        agent.tell([evaluate(p) for p in props])
    measured = [evaluate(p).metrics.latency_ms for p in placed]
    assert placed[0].info == {"role": "global"} and measured[0] > 6.0  # the first placement, over
    assert [p.info["role"] for p in placed[1:]] == ["global refit"] * (len(placed) - 1)
    assert 2 <= len(placed) <= 1 + GlobalAgent.BASELINE_REFITS
    assert measured[-1] <= 6.0 and all(ms > 6.0 for ms in measured[:-1])  # stops once one fits
    # still the global ranking's shape: groups pruned unequally, unlike uniform-fill
    assert len(set(placed[-1].policy.values())) > 1 and agent.ask(2) == []


def test_latency_model_learns_and_steers_projection():
    space = chain_space()
    model = LatencyModel(space)
    full = space.uniform(0.0)
    assert model.predict_ratio(full) == pytest.approx(1.0, abs=1e-9)  # prior: latency ∝ MACs
    # Truth: latency is dominated by a fixed overhead (0.6) + 0.4 × MACs ratio.
    rng = np.random.default_rng(0)
    for _ in range(30):
        p = dict(zip(space.names, rng.uniform(0, 0.8, len(space)).tolist(), strict=True))
        model.add(p, 0.6 + 0.4 * space.macs_ratio(p), latency_ms=None)
    p = space.uniform(0.5)
    assert model.predict_ratio(p) == pytest.approx(0.6 + 0.4 * space.macs_ratio(p), abs=0.05)

    budget = Budget(latency_ratio=0.75)
    fit = BudgetFit(space, budget)
    outcomes = []
    for i in range(30):
        p = dict(zip(space.names, rng.uniform(0, 0.8, len(space)).tolist(), strict=True))
        lr = 0.6 + 0.4 * space.macs_ratio(p)
        m = Metrics(0.5, 0, 0, space.macs_ratio(p), 0.0, latency_ms=20 * lr, latency_ratio=lr)
        outcomes.append(Outcome(i, p, m))
    fit.observe(outcomes)
    assert fit.latency.dense_ms == pytest.approx(20.0)
    base = fit.uniform_fill()
    true_lr = 0.6 + 0.4 * space.macs_ratio(base)
    assert true_lr <= 0.75 + 0.03  # steered to the measured bound (prior alone would give 0.75 MACs)
    assert space.macs_ratio(base) < 0.5


@pytest.mark.parametrize("budget", [Budget(macs_ratio=0.5), Budget(params_ratio=0.4), Budget(latency_ratio=0.5)])
def test_sweep_is_the_uniform_fill_curve_cheapest_first(budget):
    space = chain_space()
    sweep = BudgetFit(space, budget).sweep(6)
    macs = [space.macs_ratio(p) for p in sweep]
    assert len(sweep) >= 3 and macs == sorted(macs)
    assert len({space.signature(p) for p in sweep}) == len(sweep)
    if not budget.uses_latency:  # the top of the curve is this budget's own baseline
        assert sweep[-1] == BudgetFit(space, budget).uniform_fill()
        assert all(BudgetFit(space, budget).fits(p) for p in sweep)
