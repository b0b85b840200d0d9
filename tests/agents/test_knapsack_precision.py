"""The knapsack in a space with int8: (width, precision) options solved exactly, a latency table
with int8 entries, and int8 chosen where the table says it pays (and not where it does not)."""

from __future__ import annotations

import itertools
import json
from typing import Any

import numpy as np
import pytest

from agents.budget_fit import LatencyModel
from agents.cost_model import analytic_cost_model, latency_cost_model
from agents.knapsack import KnapsackAgent
from agents.knapsack_solve import Knapsack, Limit
from agents.latency_table import LatencyTable
from agents.registry import make_agent
from agents.types import AgentHints, Budget, Metrics, Outcome
from search_spaces.space import SearchSpace, bits_key
from tests.agents.synthetic import chain_space


def joint(space: SearchSpace) -> SearchSpace:
    return SearchSpace.from_dict({**space.to_dict(), "precisions": ["fp32", "int8"]})


@pytest.fixture
def small() -> SearchSpace:
    # 4 groups, 2-4 levels each, two precisions: 768 assignments, brute force is instant
    return joint(chain_space((8, 16, 16, 8), round_to=4))


def _assignments(space):
    levels = [space.levels(g) for g in space.groups]
    for combo in itertools.product(*levels):
        for q in itertools.product((False, True), repeat=len(space)):
            kept = dict(zip(space.names, combo, strict=True))
            kept.update({bits_key(g): 8 for g, on in zip(space.names, q, strict=True) if on})
            yield kept


def _policy(space, kept):
    widths = {g: space.ratio_for(g, kept[g]) for g in space.names}
    return space.with_int8(widths, [g for g in space.names if kept.get(bits_key(g)) == 8])


def truth(space: SearchSpace, policy, *, speedup: float = 0.4, overhead: float = 0.05,
          slow: str | None = None) -> float:
    """Latency ratio: each group's MACs share ``speedup`` times as long in int8, plus a fixed
    quantize/dequantize ``overhead`` per int8 group (so narrow groups are slower in int8); the
    ``slow`` group's int8 kernels are no faster than fp32 (a layer int8 does not suit)."""
    x = LatencyModel(space).features(policy)
    int8 = set(space.int8_groups(policy))
    shares = x[2 : 2 + len(space)]
    return float(sum(s * (speedup if g in int8 and g != slow else 1.0) for g, s in zip(space.names, shares, strict=True))
                 + overhead * len(int8))


def table_of(space: SearchSpace, **kw: Any) -> LatencyTable:
    """The table workers measure (see workers.latency_table), from ``truth``."""
    entries, int8 = {}, {}
    for g in space.groups:
        lower = [k for k in space.levels(g) if k < g.channels]
        entries[g.name] = tuple((k, truth(space, {g.name: space.ratio_for(g, k)}, **kw)) for k in lower)
        int8[g.name] = tuple((k, truth(space, {g.name: space.ratio_for(g, k), bits_key(g.name): 8.0}, **kw))
                             for k in [*lower, g.channels])
    return LatencyTable(dense_ms=10.0, entries=entries, int8=int8)


def test_joint_cost_models_equal_the_models_on_every_assignment(small):
    model = LatencyModel(small)
    model.add_points((p, truth(small, p)) for p, _ in table_of(small).points(small))
    assert all(model.int8_group_cost(g) > 0 for g in small.names)  # the overhead was learnt (the prior has none)
    macs, latency = analytic_cost_model(small, "macs"), latency_cost_model(small, model)
    for kept in _assignments(small):
        p = _policy(small, kept)
        assert macs.value(small, kept) == pytest.approx(small.macs_ratio(p), abs=1e-12)
        assert latency.value(small, kept) == pytest.approx(model.predict_ratio(p), abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_joint_milp_is_exact_against_brute_force(small, seed):
    rng = np.random.default_rng(seed)
    model = LatencyModel(small)
    model.add_points((p, truth(small, p)) for p, _ in table_of(small).points(small))
    limits = [Limit("latency", latency_cost_model(small, model), 0.55),
              Limit("params_ratio", analytic_cost_model(small, "params"), 0.7)]
    solver = Knapsack(small, limits)
    values = {}
    for g in small.groups:  # more channels more value; int8 a random loss
        fp32 = list(np.cumsum(rng.uniform(0, 1, len(small.levels(g)))))
        values[g.name] = fp32 + [v - rng.uniform(0, 0.5) for v in fp32]
    every = list(_assignments(small))
    feasible = [k for k in every if not solver.violated(k)]

    def value(k):
        return sum(values[g][solver.option(g, k)] for g in small.names)

    got = solver.solve(values)
    assert got is not None and not solver.violated(got)
    assert value(got) == pytest.approx(max(value(k) for k in feasible), abs=1e-9)
    # the trust region, enumerated and as a MILP, agree with brute force
    center = every[int(rng.integers(len(every)))]
    exclude = [got]
    near = [k for k in feasible if solver.distance(k, center) <= 2 and k not in exclude]
    enumerated = solver.solve(values, center=center, radius=2, exclude=exclude)
    assert (enumerated is None) == (not near)
    if near:
        assert enumerated is not None
        assert value(enumerated) == pytest.approx(max(value(k) for k in near), abs=1e-9)
        assert solver.distance(enumerated, center) <= 2


def test_latency_table_with_int8_entries_round_trips(small):
    table = table_of(small)
    again = LatencyTable.from_dict(json.loads(json.dumps(table.to_dict())))
    assert again == table
    points = table.points(small)
    assert sum(bool(small.int8_groups(p)) for p, _ in points) == sum(len(v) for v in table.int8.values())
    assert all(len(small.int8_groups(p)) <= 1 for p, _ in points)  # one group changed at a time
    # an fp32 table's dict is as before (no int8 key)
    assert "int8" not in LatencyTable(dense_ms=1.0, entries=table.entries).to_dict()


def _first_solve(space, table, budget):
    agent = make_agent("knapsack", space, budget, seed=0, hints=AgentHints(latency_table=table))
    props = agent.ask(4)
    assert [p.info["role"] for p in props] == ["baseline", "quantize-only", "quantize+uniform-fill", "knapsack"]
    return agent, props[-1].policy


def test_knapsack_puts_wide_groups_in_int8_and_narrow_ones_in_fp32():
    """int8 of a wide group frees much latency at a small modelled loss: chosen; a narrow group
    is slower in int8 (its fixed overhead outweighs its small MACs share): left fp32."""
    space = joint(chain_space((8, 64, 64, 8), round_to=4))
    shares = dict(zip(space.names, LatencyModel(space).features(space.uniform(0.0))[2:6], strict=True))
    wide = [g for g in space.names if 0.6 * shares[g] > 0.05 + 0.02]
    narrow = [g for g in space.names if 0.6 * shares[g] < 0.05]
    assert wide and narrow  # the space has both
    table = table_of(space)
    agent, policy = _first_solve(space, table, Budget(latency_ratio=0.6))
    int8 = space.int8_groups(policy)
    assert set(wide) <= set(int8) and not set(narrow) & set(int8)
    assert truth(space, policy) <= 0.6 + 1e-6  # the model learnt the table: within the budget
    model = agent.fit.latency
    for g in narrow:  # the table's int8 entries taught the latency model the narrow slowdown
        assert model.predict_ratio({bits_key(g): 8.0}) > model.predict_ratio({})


def test_the_table_teaches_which_group_int8_does_not_suit():
    """Two wide groups, one whose int8 kernels are no faster: the per-group int8 terms learnt from
    the table's entries send the other one to int8 and keep this one fp32 (a model with only the
    global int8 terms would prefer the wider one, which here is the slow one)."""
    space = joint(chain_space((8, 64, 64, 8), round_to=4))
    slow = space.names[1]  # the widest group
    table = table_of(space, slow=slow)
    agent, policy = _first_solve(space, table, Budget(latency_ratio=0.6))
    int8 = space.int8_groups(policy)
    assert space.names[2] in int8 and slow not in int8
    model = agent.fit.latency
    assert model.predict_ratio({bits_key(slow): 8.0}) > model.predict_ratio({bits_key(space.names[2]): 8.0})


def test_knapsack_keeps_fp32_where_int8_is_slower_or_buys_nothing():
    space = joint(chain_space((8, 64, 64, 8), round_to=4))
    slow = table_of(space, speedup=1.0, overhead=0.05)  # int8 kernels no faster: only overhead
    _, policy = _first_solve(space, slow, Budget(latency_ratio=0.6))
    assert space.int8_groups(policy) == []
    # a MACs budget: int8 changes no MAC, so it only costs quality
    agent = make_agent("knapsack", space, Budget(macs_ratio=0.5), seed=0)
    props = agent.ask(4)
    assert props[-1].info["role"] == "knapsack" and space.int8_groups(props[-1].policy) == []


def test_knapsack_learns_each_groups_int8_loss_from_outcomes():
    space = joint(chain_space((8, 64, 64, 8), round_to=4))
    fragile = space.names[1]

    def quality(p):  # int8 of ``fragile`` costs a lot; the others nothing
        return 1.0 - 0.3 * (1 - space.macs_ratio(p)) - (0.2 if fragile in space.int8_groups(p) else 0.0)

    agent = make_agent("knapsack", space, Budget(latency_ratio=0.6), seed=0,
                       hints=AgentHints(latency_table=table_of(space)))
    for _ in range(5):
        props = agent.ask(3)
        agent.tell([Outcome(p.trial_id, p.policy, Metrics(
            quality=quality(p.policy), macs=int(space.macs(p.policy)), params=int(space.params(p.policy)),
            macs_ratio=space.macs_ratio(p.policy), params_ratio=space.params_ratio(p.policy),
            latency_ms=10 * truth(space, p.policy), latency_ratio=truth(space, p.policy))) for p in props])
    assert isinstance(agent, KnapsackAgent)
    beta = dict(zip(space.names, agent.int8_weights(), strict=True))
    assert beta[fragile] > 2 * max(b for g, b in beta.items() if g != fragile)
    # resumes exactly, the learnt precision terms included
    again = make_agent("knapsack", space, Budget(latency_ratio=0.6), seed=0,
                       hints=AgentHints(latency_table=table_of(space)))
    again.load_state_dict(json.loads(json.dumps(agent.state_dict())))
    assert [p.policy for p in again.ask(2)] == [p.policy for p in agent.ask(2)]
