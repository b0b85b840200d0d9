"""Agents in a space with int8: the zero-search baselines first, then width and precision searched
together, every proposal within the budget."""

from __future__ import annotations

import numpy as np
import pytest

from agents.budget_fit import LatencyModel
from agents.latency_table import LatencyTable
from agents.registry import make_agent
from agents.types import AgentHints, Budget, Metrics, Outcome
from search_spaces.space import SearchSpace, bits_key
from tests.agents.conftest import FAST_OPTIONS
from tests.agents.synthetic import chain_space as toy_space

JOINT = ["random", "optuna-tpe", "optuna-nsga2", "ddpg", "sensitivity"]


def joint(space: SearchSpace) -> SearchSpace:
    return SearchSpace.from_dict({**space.to_dict(), "precisions": ["fp32", "int8"]})


def _metrics(space: SearchSpace, policy: dict[str, float]) -> Metrics:
    macs = space.macs_ratio(policy)
    int8 = len(space.int8_groups(policy)) / len(space)
    # an int8 group costs a little quality and halves its share of the time
    return Metrics(quality=1.0 - 0.3 * (1 - macs) - 0.02 * int8, macs=int(space.macs(policy)),
                   params=int(space.params(policy)), macs_ratio=macs, params_ratio=space.params_ratio(policy),
                   latency_ms=macs * (1 - 0.5 * int8), latency_ratio=macs * (1 - 0.5 * int8))


def _latency_table(space: SearchSpace) -> LatencyTable:
    """The table workers would measure for ``_metrics``' latency: each group narrowed, and each
    group in int8 (narrowed and unpruned), the rest dense fp32."""
    entries, int8 = {}, {}
    for g in space.groups:
        lower = [k for k in space.levels(g) if k < g.channels][:2]
        entries[g.name] = tuple((k, _metrics(space, {g.name: space.ratio_for(g, k)}).latency_ratio) for k in lower)
        int8[g.name] = tuple((k, _metrics(space, {g.name: space.ratio_for(g, k), bits_key(g.name): 8.0}).latency_ratio)
                             for k in [*lower, g.channels])
    return LatencyTable(dense_ms=1.0, entries=entries, int8=int8)  # type: ignore[arg-type]


def _agent(name: str, space: SearchSpace, budget: Budget, seed: int):
    hints = AgentHints(latency_table=_latency_table(space)) if name == "knapsack" else None
    return make_agent(name, space, budget, seed=seed, options=FAST_OPTIONS.get(name, {}), hints=hints)


@pytest.mark.parametrize("name", [*JOINT, "knapsack", "uniform"])
def test_every_agent_opens_with_the_three_baselines(name: str) -> None:
    space = joint(toy_space())
    agent = _agent(name, space, Budget(macs_ratio=0.5), seed=0)
    first = [agent.ask(1)[0] for _ in range(3)]  # one at a time, as a one-worker job asks
    assert [p.info["role"] for p in first] == ["baseline", "quantize-only", "quantize+uniform-fill"]
    base, only, both = (p.policy for p in first)
    assert space.int8_groups(base) == [] and space.int8_groups(only) == space.names == space.int8_groups(both)
    assert space.macs_ratio(only) == pytest.approx(1.0)
    assert space.macs_ratio(both) <= 0.5 + 1e-9 and space.kept(both) == space.kept(base)  # MACs: int8 is free
    for p in first:
        agent.tell([Outcome(p.trial_id, p.policy, _metrics(space, p.policy))])
    if name == "uniform":
        assert agent.finished and agent.ask(4) == []


@pytest.mark.parametrize("name", JOINT)
def test_searching_agents_choose_precision_per_group(name: str) -> None:
    space = joint(toy_space())
    agent = _agent(name, space, Budget(macs_ratio=0.5), seed=1)
    seen: set[tuple[str, ...]] = set()
    for _ in range(6):
        props = agent.ask(4)
        for p in props:
            assert space.validate(p.policy) == p.policy
            if p.info.get("role") == "quantize-only":  # the unpruned model in int8, a reference
                continue
            assert space.macs_ratio(p.policy) <= 0.5 + 1e-9
            seen.add(tuple(space.int8_groups(p.policy)))
        agent.tell([Outcome(p.trial_id, p.policy, _metrics(space, p.policy)) for p in props])
    mixed = [s for s in seen if 0 < len(s) < len(space)]
    assert len(mixed) >= 3  # per group, not all-or-nothing

    resumed = _agent(name, space, Budget(macs_ratio=0.5), seed=1)
    first = resumed.ask(4)  # within NSGA-II's first generation (its in-memory resume is exact there)
    resumed.tell([Outcome(p.trial_id, p.policy, _metrics(space, p.policy)) for p in first])
    again = _agent(name, space, Budget(macs_ratio=0.5), seed=1)
    again.load_state_dict(resumed.state_dict())  # resumes with the precision params
    assert [p.policy for p in again.ask(2)] == [p.policy for p in resumed.ask(2)]


def test_a_fp32_space_proposes_as_before() -> None:
    space = toy_space()
    agent = make_agent("random", space, Budget(macs_ratio=0.5), seed=0)
    props = agent.ask(5)
    assert [p.info.get("role") for p in props] == ["baseline", None, None, None, None]
    assert all(space.int8_groups(p.policy) == [] for p in props)


def test_the_latency_model_learns_what_int8_does() -> None:
    space = joint(toy_space())
    model = LatencyModel(space)
    rng = np.random.default_rng(0)
    for _ in range(30):
        policy = {n: float(r) for n, r in zip(space.names, rng.uniform(0, 0.8, len(space)), strict=True)}
        int8 = [n for n in space.names if rng.random() < 0.5]
        p = space.with_int8(policy, int8)
        macs = space.macs_ratio(p)
        # int8 here is *slower* per group (a quantize/dequantize overhead), the prior says faster
        model.add(p, 0.1 + 0.9 * macs + 0.05 * len(int8) / len(space) * 4)
    dense = space.uniform(0.0)
    assert model.predict_ratio(space.with_int8(dense, space.names)) > model.predict_ratio(dense) + 0.1


@pytest.mark.parametrize("name", ["optuna-tpe", "optuna-nsga2"])
def test_optuna_starts_from_the_baselines_in_a_joint_space(name: str) -> None:
    """Each baseline is a completed trial of the study (its ratios and precisions as params), so
    the sampler's model starts from quantize + uniform-fill rather than from nothing."""
    space = joint(toy_space())
    agent = make_agent(name, space, Budget(macs_ratio=0.5), seed=0)
    first = [agent.ask(1)[0] for _ in range(3)]
    agent.tell([Outcome(p.trial_id, p.policy, _metrics(space, p.policy)) for p in first])
    trials = agent.study.trials  # type: ignore[attr-defined]
    assert len(trials) == 3
    both = next(t for t in trials if t.user_attrs["autoprune_trial_id"] == first[2].trial_id)
    assert all(both.params[f"p:{n}"] == "int8" for n in space.names)
    kept = space.kept({n: both.params[f"r:{n}"] for n in space.names})
    assert kept == space.kept(first[2].policy)


@pytest.mark.parametrize("name", [*JOINT, "knapsack"])
def test_agents_search_precision_under_a_latency_budget(name: str) -> None:
    """Under a latency budget int8 buys time (a MACs budget it does not: there the knapsack rightly
    keeps fp32): every agent proposes int8 for some groups beyond the baselines, mixed per group,
    and the proposals the latency model put within the budget are within it as measured."""
    space = joint(toy_space())
    budget = Budget(latency_ratio=0.4)
    agent = _agent(name, space, budget, seed=2)
    seen: set[tuple[str, ...]] = set()
    feasible = 0
    for _ in range(6):
        props = agent.ask(4)
        outs = [Outcome(p.trial_id, p.policy, _metrics(space, p.policy)) for p in props]
        for p, o in zip(props, outs, strict=True):
            assert space.validate(p.policy) == p.policy
            if p.info.get("role") not in ("baseline", "quantize-only", "quantize+uniform-fill"):
                seen.add(tuple(space.int8_groups(p.policy)))
                feasible += budget.feasible(o.metrics)  # type: ignore[arg-type]
        agent.tell(outs)
    assert any(seen), seen  # int8 chosen beyond the baselines
    assert feasible >= 3


def test_sensitivity_keeps_fp32_where_its_int8_probe_lost_quality() -> None:
    """Under a latency budget, int8 is the cheap way to time: every group goes int8 except the
    one whose int8 probe measured a large quality drop."""
    space = joint(toy_space())
    fragile = space.names[3]

    def metrics(policy: dict[str, float]) -> Metrics:
        m = _metrics(space, policy)
        int8 = space.int8_groups(policy)
        m.quality = 1.0 - 0.3 * (1 - m.macs_ratio) - 0.001 * len(int8) - (0.2 if fragile in int8 else 0.0)
        return m

    agent = make_agent("sensitivity", space, Budget(latency_ratio=0.45), seed=0, options={"ratios": 2})
    allocation = None
    while not agent.finished:
        props = agent.ask(4)
        assert props
        for p in props:
            if p.info.get("role") == "allocation":
                allocation = p.policy
        agent.tell([Outcome(p.trial_id, p.policy, metrics(p.policy)) for p in props])
    probes = {p for p in agent.state_dict()["extra"]["results"] if p.endswith("@int8")}
    assert probes == {f"{g}@int8" for g in space.names}  # each group probed in int8
    assert allocation is not None
    assert fragile not in space.int8_groups(allocation) and len(space.int8_groups(allocation)) >= 3


def test_ddpg_env_picks_precision_with_a_second_action() -> None:
    from gymnasium.utils.env_checker import check_env

    from agents.budget_fit import BudgetFit
    from agents.ddpg import PruningEnv

    space = joint(toy_space())
    fit = BudgetFit(space, Budget(macs_ratio=0.5))
    env = PruningEnv(space, fit)
    check_env(env, skip_render_check=True)
    obs, _ = env.reset()
    assert obs.shape == (12,) and env.action_space.shape == (2,)
    wanted = [0.7 if i % 2 else 0.2 for i in range(len(space))]  # int8 on every other group
    done = False
    for q in wanted:
        obs, _, done, _, info = env.step(np.array([0.5, q], np.float32))
        assert obs[-1] == (1.0 if q >= 0.5 else 0.0)  # the previous precision, observed
    assert done and fit.fits(info["policy"])
    assert space.int8_groups(info["policy"]) == [n for n, q in zip(space.names, wanted, strict=True) if q >= 0.5]


def test_ddpg_env_falls_back_to_fp32_where_int8_would_break_the_budget() -> None:
    from agents.budget_fit import BudgetFit
    from agents.ddpg import PruningEnv

    space = joint(toy_space())
    fit = BudgetFit(space, Budget(latency_ratio=0.35))
    rng = np.random.default_rng(0)
    points = []
    for _ in range(40):  # int8 here is much slower: a large overhead per int8 group
        p = space.with_int8({n: float(r) for n, r in zip(space.names, rng.uniform(0, 0.8, len(space)), strict=True)},
                            [n for n in space.names if rng.random() < 0.5])
        points.append((p, space.macs_ratio(p) + 0.1 * len(space.int8_groups(p))))
    fit.latency.add_points(points)
    env = PruningEnv(space, fit)
    env.reset()
    done = False
    while not done:  # int8 asked for everywhere
        _, _, done, _, info = env.step(np.array([0.0, 1.0], np.float32))
    assert fit.fits(info["policy"]) and len(space.int8_groups(info["policy"])) < len(space)


@pytest.mark.parametrize("budget", [Budget(latency_ratio=0.4), Budget(latency_ms=0.4)], ids=["ratio", "ms"])
def test_tpe_spends_half_its_searched_trials_on_mutations_of_the_best_feasible_one(budget: Budget) -> None:
    """Independent per-group precision draws almost never draw "every group int8" again once
    quantize + uniform-fill has shown it; a mutation of the best trial that met the budget keeps
    the structure and moves a little of it (one precision flip expected, widths jittered), placed
    under the budget by the measurement's spread (3 % here) so that it is not measured just over,
    whichever term the budget has (dense runs at 1 ms here)."""
    space = joint(toy_space((16,) * 4 + (32,) * 4 + (64,) * 4))
    agent = make_agent("optuna-tpe", space, budget, seed=0)

    def measured(policy: dict[str, float]) -> Metrics:
        m = _metrics(space, policy)
        m.latency_spread_ms = 0.03 * m.latency_ms  # type: ignore[operator]
        return m

    told: dict[int, tuple[dict[str, float], Metrics]] = {}
    searched = mutations = 0
    for _ in range(8):
        props = agent.ask(3)
        for p in props:
            if p.info.get("role") is not None:
                continue
            searched += 1
            if "mutated_from" not in p.info:
                continue
            mutations += 1
            feasible = {t: m.quality for t, (_, m) in told.items() if budget.feasible(m)}
            assert p.info["mutated_from"] == max(feasible, key=feasible.__getitem__)  # the incumbent
            parent = told[p.info["mutated_from"]][0]
            flipped = set(space.int8_groups(parent)) ^ set(space.int8_groups(p.policy))
            assert len(flipped) <= 3
            assert agent.fit.latency.predict_ratio(p.policy) <= 0.4 * (1 - 0.03) + 1e-9
        outs = [Outcome(p.trial_id, p.policy, measured(p.policy)) for p in props]
        told |= {o.trial_id: (o.policy, o.metrics) for o in outs}  # type: ignore[misc]
        agent.tell(outs)
    assert 0.25 * searched <= mutations <= 0.75 * searched

    saved = agent.state_dict()
    restored = make_agent("optuna-tpe", space, budget, seed=0)
    restored.load_state_dict(saved)
    ahead = agent.ask(4)
    assert any("mutated_from" in p.info for p in ahead)
    assert [(p.policy, p.info) for p in restored.ask(4)] == [(p.policy, p.info) for p in ahead]


@pytest.mark.parametrize("options, space", [({"mutation_share": 0.0}, joint(toy_space())), ({}, toy_space())])
def test_no_mutations_when_turned_off_or_in_a_widths_only_space(options: dict, space: SearchSpace) -> None:
    agent = make_agent("optuna-tpe", space, Budget(macs_ratio=0.5), seed=0, options=options)
    for _ in range(6):
        props = agent.ask(3)
        assert not any("mutated_from" in p.info for p in props)
        agent.tell([Outcome(p.trial_id, p.policy, _metrics(space, p.policy)) for p in props])


def test_a_bad_mutation_share_names_the_option() -> None:
    with pytest.raises(ValueError, match="options.mutation_share"):
        make_agent("optuna-tpe", joint(toy_space()), Budget(macs_ratio=0.5), options={"mutation_share": 1.5})
    # asked for where it cannot act: said, not silently ignored
    with pytest.raises(ValueError, match="options.mutation_share needs a joint space"):
        make_agent("optuna-tpe", toy_space(), Budget(macs_ratio=0.5), options={"mutation_share": 0.5})
