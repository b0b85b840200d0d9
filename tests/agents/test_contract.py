"""The contract every registered agent passes (Optuna's testing/pytest_samplers.py style)."""

from __future__ import annotations

import json

import pytest

from agents.base import Agent
from agents.budget_fit import BudgetError, BudgetFit
from agents.registry import AGENTS, make_agent
from agents.types import Budget
from search_spaces.registry import UnknownNameError
from search_spaces.space import keep_key
from tests.agents.conftest import FAST_OPTIONS
from tests.agents.synthetic import chain_space, make_evaluator, residual_space

BUDGET = Budget(macs_ratio=0.5, params_ratio=0.6)


@pytest.fixture(params=["chain", "transformer", "depth"])
def space(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Every agent on a conv chain, on a transformer space (heads and MLP widths per layer) and
    on a residual space with depth (removable blocks beside the widths)."""
    if request.param == "chain":
        return chain_space()
    if request.param == "depth":
        return residual_space()
    from tests.search_spaces.tiny_text import tiny_transformer_space

    return tiny_transformer_space()


def _make(name, space, seed=0, budget=BUDGET):
    return make_agent(name, space, budget, seed=seed, options=FAST_OPTIONS.get(name))


def _run(agent, evaluate, rounds, n=4, trace=None):
    for _ in range(rounds):
        if agent.finished:
            break
        props = agent.ask(n)
        if trace is not None:
            trace.extend((p.trial_id, p.policy) for p in props)
        agent.tell([evaluate(p) for p in props])


def test_first_proposal_is_uniform_fill_baseline(agent_name, space):
    agent = _make(agent_name, space)
    first = agent.ask(1)
    assert len(first) == 1
    assert first[0].info.get("role") == "baseline"
    assert first[0].policy == BudgetFit(space, BUDGET).uniform_fill()


def test_every_proposal_feasible_and_failures_tolerated(agent_name, space, sens):
    agent = _make(agent_name, space)
    evaluate = make_evaluator(space, sens, fail_every=3)
    seen = []
    _run(agent, evaluate, rounds=8, trace=seen)
    assert len(seen) >= (1 if agent.finished else 8)
    assert len({tid for tid, _ in seen}) == len(seen)  # trial ids unique
    for _, policy in seen:
        assert space.validate(policy) == policy  # complete, in bounds
        assert space.macs_ratio(policy) <= BUDGET.macs_ratio + 1e-9
        assert space.params_ratio(policy) <= BUDGET.params_ratio + 1e-9


def test_same_seed_same_proposals(agent_name, space, sens):
    evaluate = make_evaluator(space, sens)
    traces = []
    for _ in range(2):
        trace: list = []
        _run(_make(agent_name, space, seed=3), evaluate, rounds=5, n=3, trace=trace)
        traces.append(trace)
    assert traces[0] == traces[1]


def test_resume_after_ask_and_after_tell(agent_name, space, sens):
    evaluate = make_evaluator(space, sens, fail_every=5)
    agent = _make(agent_name, space, seed=1)
    _run(agent, evaluate, rounds=3, n=3)
    pending = agent.ask(3)
    saved = json.loads(json.dumps(agent.state_dict()))  # must survive JSON

    restored = _make(agent_name, space, seed=1)
    restored.load_state_dict(saved)
    replayed = restored.ask(3)
    assert [(p.trial_id, p.policy) for p in replayed] == [(p.trial_id, p.policy) for p in pending]

    # Told (in another order), both go on identically; and a post-tell save restores exactly.
    agent.tell([evaluate(p) for p in reversed(pending)])
    restored.tell([evaluate(p) for p in reversed(replayed)])
    after_tell = json.loads(json.dumps(agent.state_dict()))
    again = _make(agent_name, space, seed=1)
    again.load_state_dict(after_tell)
    a, b, c = [], [], []
    for ag, tr in ((agent, a), (restored, b), (again, c)):
        _run(ag, evaluate, rounds=3, n=2, trace=tr)
    assert a == b == c


def test_tell_rejects_unknown_or_repeated_trials(agent_name, space, sens):
    agent = _make(agent_name, space)
    evaluate = make_evaluator(space, sens)
    props = agent.ask(2)
    agent.tell([evaluate(props[0])])
    with pytest.raises(ValueError, match="not asked or was already told"):
        agent.tell([evaluate(props[0])])


def test_finished_is_honoured(agent_name, space, sens):
    # a never-finishing agent's 60 rounds are a crash test, run long on the widths-only spaces
    never_finishes = AGENTS.get(agent_name).finished is Agent.finished
    agent = _make(agent_name, space)
    evaluate = make_evaluator(space, sens)
    _run(agent, evaluate, rounds=10 if space.depth and never_finishes else 60, n=4)
    if agent.finished:
        assert agent.ask(4) == []


def test_unreachable_budget_and_bad_options(agent_name, space):
    with pytest.raises(BudgetError, match="unreachable"):
        _make(agent_name, space, budget=Budget(macs_ratio=0.01))
    with pytest.raises(ValueError, match="bad options|options"):
        make_agent(agent_name, space, BUDGET, options={"no_such_option": 1})


def test_a_latency_budget_the_model_cannot_reach_is_searched_not_refused(agent_name, space):
    """Latency is measured, not known up front: the agent proposes (finalize reports budget_met)."""
    agent = _make(agent_name, space, budget=Budget(latency_ratio=0.01))
    proposals = agent.ask(2)
    keys = set(space.names) | {keep_key(u.name) for u in space.units}
    assert proposals and all(set(p.policy) <= keys for p in proposals)


def test_unknown_agent_lists_valid_names(space):
    with pytest.raises(UnknownNameError, match="valid: uniform, random"):
        make_agent("amc", space, BUDGET)
