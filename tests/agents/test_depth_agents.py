"""Depth in the agents (issue 22): the depth-only baseline, and every agent proposing removals."""

from __future__ import annotations

import dataclasses
import itertools
import json

import numpy as np
import pytest

from agents.budget_fit import BudgetError, BudgetFit, LatencyModel
from agents.cost_model import analytic_cost_model, option_levels
from agents.knapsack_solve import Knapsack, Limit
from agents.latency_table import LatencyTable
from agents.registry import make_agent
from agents.types import AgentHints, Budget, Proposal
from search_spaces.space import Unit, keep_key
from tests.agents.conftest import FAST_OPTIONS
from tests.agents.synthetic import (
    chain_space,
    make_evaluator,
    residual_space,
    sensitivities,
    unit_sensitivities,
)

BUDGET = Budget(macs_ratio=0.5)


def _run(agent, evaluate, rounds, n=4):  # type: ignore[no-untyped-def]
    seen = []
    for _ in range(rounds):
        if agent.finished:
            break
        props = agent.ask(n)
        seen += props
        agent.tell([evaluate(p) for p in props])
    return seen


def test_depth_only_removes_fewest_units_spread_over_stages_and_fits() -> None:
    space = residual_space()
    fit = BudgetFit(space, BUDGET)
    policy = fit.depth_only()
    removed = space.removed_units(policy)
    assert removed and fit.fits(policy) and space.validate(policy) == policy
    assert space.signature(policy).split("|")[0] == space.signature(space.uniform(0.0))  # full width
    # the fewest: with one unit less removed the full-width network is over the budget
    order = fit.removal_order()
    assert set(removed) == set(order[: len(removed)])
    assert not fit.fits(space.with_removed(space.uniform(0.0), order[: len(removed) - 1]))
    # spread: every stage loses a unit before any stage loses a second one
    first = [u.rpartition(".")[0] for u in order[:3]]
    assert sorted(first) == ["s0", "s1", "s2"]
    # a budget the removals cannot reach alone: every unit removed, the widths uniform and filled
    tight = BudgetFit(space, Budget(macs_ratio=0.12))
    narrow = tight.depth_only()
    assert len(space.removed_units(narrow)) == len(space.units) and tight.fits(narrow)
    assert 0 < max(narrow[g] for g in space.names) <= tight.uniform_ratio(removed=space.removed_units(narrow)) + 1e-6


def test_a_budget_only_removal_reaches_is_accepted_with_depth_and_refused_without() -> None:
    space = residual_space()
    budget = Budget(macs_ratio=0.03)  # every group at max_ratio gives 0.065; with every unit removed, 0.014
    with pytest.raises(BudgetError, match="unreachable"):
        BudgetFit(dataclasses.replace(space, units=()), budget)
    fit = BudgetFit(space, budget)
    for policy in (fit.depth_only(), fit.project(space.uniform(0.0))):
        assert fit.fits(policy) and space.removed_units(policy)
    for name in ("random", "ddpg"):  # ddpg: its clamp removes the units the widths cannot spare
        agent = make_agent(name, space, budget, seed=0, options=FAST_OPTIONS.get(name))
        assert all(space.macs_ratio(p.policy) <= 0.03 + 1e-9 for p in agent.ask(6)[2:])


def test_every_agent_opens_with_depth_only_in_a_depth_space_only() -> None:
    space, chain = residual_space(), chain_space()
    agent = make_agent("uniform", space, BUDGET)
    first = agent.ask(4)
    assert [p.info["role"] for p in first] == ["baseline", "depth-only"]
    assert first[1].policy == BudgetFit(space, BUDGET).depth_only()
    assert not space.removed_units(first[0].policy)  # the uniform-fill baseline stays width-only
    assert make_agent("uniform", chain, BUDGET).baselines() == ["baseline"]


@pytest.mark.parametrize("name", ["random", "optuna-tpe", "optuna-nsga2", "ddpg"])
def test_search_agents_propose_removals_within_the_budget(name: str) -> None:
    space = residual_space()
    # ddpg: warm-up episodes only (its updates are the contract's business; seconds here)
    options = {**FAST_OPTIONS["ddpg"], "warmup": 30} if name == "ddpg" else None
    agent = make_agent(name, space, BUDGET, seed=0, options=options)
    seen = _run(agent, make_evaluator(space, sensitivities(space)), rounds=5)
    searched = [p for p in seen if p.info.get("role") not in ("baseline", "depth-only")]
    assert len(searched) >= 12
    removals = [tuple(space.removed_units(p.policy)) for p in searched]
    assert sum(bool(r) for r in removals) >= len(searched) // 4  # removal is explored...
    assert len(set(removals)) >= 3  # ...in several combinations
    for p in seen:
        assert space.validate(p.policy) == p.policy
        assert space.macs_ratio(p.policy) <= BUDGET.macs_ratio + 1e-9


def test_optuna_study_holds_the_baselines_removals_and_survives_resume() -> None:
    space = residual_space()
    evaluate = make_evaluator(space, sensitivities(space))
    agent = make_agent("optuna-tpe", space, BUDGET, seed=2)
    _run(agent, evaluate, rounds=2)
    trials = agent.study.get_trials(deepcopy=False)
    depth_only = BudgetFit(space, BUDGET).depth_only()
    told = [t for t in trials if t.user_attrs.get("autoprune_trial_id") == 1]
    assert told and {u for u in space.removed_units(depth_only)} == {
        k[2:] for k, v in told[0].params.items() if k.startswith("k:") and v == 0}
    saved = json.loads(json.dumps(agent.state_dict()))
    restored = make_agent("optuna-tpe", space, BUDGET, seed=2)
    restored.load_state_dict(saved)
    a, b = agent.ask(3), restored.ask(3)
    assert [p.policy for p in a] == [p.policy for p in b]


def test_latency_model_learns_what_removal_saves_beyond_macs() -> None:
    """Narrowing keeps each layer's fixed cost, removal takes it away: fitted on measured points,
    the model predicts a removal faster than a narrowing of the same MACs."""
    space = residual_space()
    evaluate = make_evaluator(space, sensitivities(space), latency=True, unit_ms=1.0)
    model = LatencyModel(space)
    agent = make_agent("random", space, Budget(macs_ratio=0.6), seed=0)
    for p in agent.ask(24):
        m = evaluate(p).metrics
        assert m is not None and m.latency_ratio is not None
        model.add(p.policy, m.latency_ratio)
    removed = space.with_removed(space.uniform(0.0), ["s1.b1", "s2.b1"])
    narrowed = BudgetFit(space, Budget(macs_ratio=space.macs_ratio(removed))).uniform_fill()
    truth = {k: evaluate(Proposal(0, p)).metrics.latency_ratio for k, p in (("r", removed), ("n", narrowed))}
    assert truth["r"] < truth["n"]  # the synthetic truth: removal is the faster
    # most of the measured gap is learnt (a MACs-only model puts the two within 0.01)
    assert model.predict_ratio(narrowed) - model.predict_ratio(removed) > 0.5 * (truth["n"] - truth["r"])
    assert LatencyModel(space).predict_ratio(removed) == pytest.approx(space.macs_ratio(removed))  # the prior
    assert model.unit_cost("s1.b1") < 0
    assert keep_key("s1.b1") in removed


@pytest.mark.parametrize("budget", [Budget(macs_ratio=0.5), Budget(latency_ratio=0.5)])
def test_sensitivity_probes_each_removal_and_removes_the_cheapest_units(budget: Budget) -> None:
    space = residual_space()
    unit_sens = unit_sensitivities(space)
    evaluate = make_evaluator(space, sensitivities(space), latency=True, unit_ms=1.0, unit_sens=unit_sens)
    agent = make_agent("sensitivity", space, budget, options={"ratios": 2})
    seen = _run(agent, evaluate, rounds=20, n=8)
    assert agent.finished
    probes = [p for p in seen if p.info.get("role") == "probe" and space.removed_units(p.policy)]
    assert sorted(u for p in probes for u in space.removed_units(p.policy)) == sorted(unit_sens)  # one each
    quality = {p.info["role"]: evaluate(p).metrics.quality for p in seen if p.info["role"] != "probe"}
    allocation = [p for p in seen if p.info["role"] == "allocation"][-1]
    removed = space.removed_units(allocation.policy)
    assert removed and set(removed) == set(sorted(unit_sens, key=unit_sens.__getitem__)[: len(removed)])  # the cheapest
    assert quality["allocation"] > max(quality["baseline"], quality["depth-only"]) + 0.02
    m = evaluate(allocation).metrics
    assert m is not None and budget.feasible(m)


def _unit_chain():  # type: ignore[no-untyped-def]
    """A small chain whose middle two convs form one removable unit (two groups inside it):
    every cost of the unit is scaled by one of its groups, so the knapsack's model is exact."""
    space = chain_space((8, 16, 16, 8), round_to=4)
    inside = [c for c in space.costs if c.name in ("conv1", "bn1", "conv2", "bn2")]
    unit = Unit("mid", 0, "block", ("conv1", "conv2"), tuple(c.name for c in inside),
                sum(c.macs for c in inside), sum(c.params for c in inside))
    return dataclasses.replace(space, units=(unit,))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_knapsack_milp_with_removal_is_exact_against_brute_force(seed: int) -> None:
    space = _unit_chain()
    levels = option_levels(space)
    assert levels["conv1"][0] == 0 and levels["conv0"][0] > 0  # removal is an option inside the unit only
    rng = np.random.default_rng(seed)
    values = {g: list(np.cumsum(rng.uniform(0, 1, len(lv)))) for g, lv in levels.items()}
    values["conv1"][0] = float(rng.uniform(1, 3))  # removal worth something, sometimes much
    solver = Knapsack(space, [Limit("macs_ratio", analytic_cost_model(space, "macs"), 0.4)])

    def policy(kept: dict[str, int]) -> dict[str, float]:
        widths = {g: space.ratio_for(g, k) if k else 0.0 for g, k in kept.items()}
        return space.with_removed(widths, ["mid"]) if kept["conv1"] == 0 else widths

    best = None
    for combo in itertools.product(*levels.values()):
        kept = dict(zip(levels, combo, strict=True))
        if (kept["conv1"] == 0) != (kept["conv2"] == 0) or space.macs_ratio(policy(kept)) > 0.4 + 1e-12:
            continue
        v = sum(values[g][levels[g].index(k)] for g, k in kept.items())
        best = v if best is None else max(best, v)
    got = solver.solve(values)
    assert got is not None and not solver.inconsistent(got)
    assert space.macs_ratio(policy(got)) <= 0.4 + 1e-9
    assert sum(values[g][levels[g].index(k)] for g, k in got.items()) == pytest.approx(best, abs=1e-9)
    # the trust region (enumerated) keeps the unit whole too
    near = solver.solve(values, center=got, radius=2, exclude=[got])
    assert near is not None and not solver.inconsistent(near)


def test_knapsack_removes_the_unit_that_is_cheap_in_quality_and_costly_in_latency() -> None:
    """Every kept block costs a fixed 3 ms of 31 that no narrowing removes (the latency table's
    removal entries show it); one block is nearly free to remove. The knapsack removes blocks to
    meet the latency budget (uniform width cannot: its fixed costs stay), learns which block is
    cheap, and its best network removes it."""
    space = residual_space((8, 16, 32))  # narrow: few widths, quick solves
    unit_sens = {u.name: 0.2 for u in space.units} | {"s2.b1": 0.001}
    evaluate = make_evaluator(space, sensitivities(space), latency=True, unit_ms=3.0, unit_sens=unit_sens)

    def ratio(policy: dict[str, float]) -> float:
        m = evaluate(Proposal(0, space.validate(policy))).metrics
        assert m is not None and m.latency_ratio is not None
        return m.latency_ratio

    table = LatencyTable(
        dense_ms=10.0,
        entries={g: ((k := space.kept_channels(g, 0.5), ratio({g: space.ratio_for(g, k)})),) for g in space.names},
        removed={u.name: ratio({keep_key(u.name): 0.0}) for u in space.units},
    )
    budget = Budget(latency_ratio=0.6)
    agent = make_agent("knapsack", space, budget, options={"gap": 0.01}, hints=AgentHints(latency_table=table))
    outcomes = [evaluate(p) for p in _run(agent, evaluate, rounds=3)]
    searched = [o for o in outcomes if o.metrics is not None and o.trial_id > 1]
    assert all(space.removed_units(o.policy) for o in searched)
    best = max((o for o in outcomes if o.metrics is not None and budget.feasible(o.metrics)),
               key=lambda o: o.metrics.quality)  # type: ignore[union-attr]
    assert "s2.b1" in space.removed_units(best.policy)
    gamma = dict(zip(agent.anchors, agent.removal_weights(), strict=True))
    assert min(gamma, key=gamma.__getitem__) == "s2.b1"
    # the table's removal entries reached the latency model, and survive a resume
    saved = json.loads(json.dumps(agent.state_dict()))
    assert saved["extra"]["latency_table"]["removed"] == table.removed


def test_ddpg_env_removes_a_unit_on_its_first_groups_removal_action() -> None:
    from agents.ddpg.env import REMOVE_FROM, PruningEnv, action_dim, obs_dim, removal_steps

    space = residual_space()
    assert action_dim(space) == 2 and obs_dim(space) == obs_dim(chain_space()) + 1
    steps = removal_steps(space)
    assert steps == {u.groups[0]: u.name for u in space.units}
    env = PruningEnv(space, BudgetFit(space, BUDGET))
    obs, _ = env.reset()
    done, info, decided = False, {}, []
    while not done:
        group = space.groups[env._t].name
        assert obs[-1] == (1.0 if group in steps else 0.0)  # the actor sees where removal is decided
        remove = steps.get(group) == "s1.b1"
        obs, _, done, _, info = env.step([0.2, REMOVE_FROM if remove else REMOVE_FROM - 0.01])
        decided.append((group, info["action"]))
    policy = info["policy"]
    assert space.removed_units(policy) == ["s1.b1"] and BudgetFit(space, BUDGET).fits(policy)
    assert dict(decided)["s1.b1.conv1"] == [0.0, 1.0]  # its group skipped, the removal recorded


@pytest.mark.slow  # a few MILP solves over (width, precision) pairs and removals: seconds
def test_knapsack_searches_depth_width_and_precision_together() -> None:
    """In a space with int8 and depth the MILP's options are (width, precision) pairs plus the
    removal: proposals remove units, run groups in int8, and a removed unit has no precision."""
    space = dataclasses.replace(residual_space((8, 16, 32)), precisions=("fp32", "int8"))
    evaluate = make_evaluator(space, sensitivities(space), latency=True, unit_ms=1.0)
    agent = make_agent("knapsack", space, Budget(latency_ratio=0.5), seed=0)
    seen = [p for p in _run(agent, evaluate, rounds=2) if p.info["role"] in ("knapsack", "refine", "fastest")]
    assert seen and any(space.removed_units(p.policy) for p in seen) and any(space.int8_groups(p.policy) for p in seen)
    for p in seen:
        assert space.validate(p.policy) == p.policy
        gone = space.removed_groups(p.policy)
        assert not any(p.policy.get(f"{g}@bits") for g in gone)
