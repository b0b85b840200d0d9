from __future__ import annotations

import json
import shutil

import optuna
import pytest

from agents.budget_fit import BudgetFit
from agents.optuna_agents import NSGA2Agent, TPEAgent
from agents.types import Budget
from tests.agents.synthetic import chain_space, make_evaluator, sensitivities


def _rounds(agent, evaluate, k, n=3):
    trace = []
    for _ in range(k):
        props = agent.ask(n)
        trace += [(p.trial_id, p.policy) for p in props]
        agent.tell([evaluate(p) for p in props])
    return trace


@pytest.mark.parametrize("cls", [TPEAgent, NSGA2Agent])
def test_sql_storage_resumes_the_study(tmp_path, cls):
    space = chain_space()
    evaluate = make_evaluator(space, sensitivities(space), latency=True)
    url = f"sqlite:///{tmp_path / 'a.db'}"
    agent = cls(space, Budget(macs_ratio=0.5), seed=0, storage=url, study_name="job-1")
    _rounds(agent, evaluate, 3)
    state = json.loads(json.dumps(agent.state_dict()))
    shutil.copy(tmp_path / "a.db", tmp_path / "b.db")  # two worlds from one saved point

    original = _rounds(agent, evaluate, 2)
    restored = cls(space, Budget(macs_ratio=0.5), seed=0, storage=f"sqlite:///{tmp_path / 'b.db'}", study_name="job-1")
    assert len(restored.study.trials) == 8  # 9 proposals, the baseline is not an Optuna trial
    restored.load_state_dict(state)
    assert _rounds(restored, evaluate, 2) == original
    study = optuna.load_study(study_name="job-1", storage=url)
    assert len(study.trials) == 8 + 6


def test_tpe_constraints_are_measured_violations():
    space = chain_space()
    evaluate = make_evaluator(space, sensitivities(space), latency=True)
    agent = TPEAgent(space, Budget(macs_ratio=0.5, latency_ms=6.0), seed=0)
    policies = dict(_rounds(agent, evaluate, 3))
    trials = agent.study.trials
    # 9 proposals: the baseline, measured over 6 ms, and its refit are not Optuna trials
    assert len(trials) == 7 and all(len(t.constraints) == 2 for t in trials)
    for t in trials:
        policy = policies[t.user_attrs["autoprune_trial_id"]]
        measured = 10.0 * (0.3 + 0.7 * space.macs_ratio(policy))  # the synthetic latency
        assert t.constraints["c1"] == pytest.approx(measured - 6.0)
        assert t.constraints["c0"] == pytest.approx(space.macs_ratio(policy) - 0.5)
        assert t.constraints["c0"] <= 1e-9  # MACs always met: projected by construction


def test_nsga2_costs_span_below_the_budget():
    space = chain_space()
    evaluate = make_evaluator(space, sensitivities(space))
    agent = NSGA2Agent(space, Budget(macs_ratio=0.6), seed=0, population_size=8)
    trace = _rounds(agent, evaluate, 6, n=4)
    ratios = [space.macs_ratio(p) for _, p in trace]
    assert max(ratios) <= 0.6 + 1e-9 and min(ratios) < 0.4
    assert all(len(t.values) == 2 for t in agent.study.trials)


def test_bad_sampler_option_names_the_option():
    with pytest.raises(ValueError, match="not a TPESampler option"):
        TPEAgent(chain_space(), Budget(macs_ratio=0.5), population_size=3)


def test_nsga2_first_generation_holds_the_uniform_sweep():
    # the front starts from the baseline's trade-off curve: every sweep point is proposed
    space, budget = chain_space(), Budget(macs_ratio=0.6)
    sweep = BudgetFit(space, budget).sweep(8)
    agent = NSGA2Agent(space, budget, seed=0, population_size=8)
    proposed = {space.signature(p.policy) for p in agent.ask(len(sweep) + 2)}
    assert {space.signature(p) for p in sweep} <= proposed
    off = NSGA2Agent(space, budget, seed=0, population_size=8, sweep_points=0).ask(len(sweep))
    assert len({space.signature(p.policy) for p in off} & {space.signature(p) for p in sweep}) <= 1
    with pytest.raises(ValueError, match="sweep_points"):
        NSGA2Agent(space, budget, sweep_points=-1)


def test_a_baseline_measured_over_a_latency_budget_is_placed_again_until_it_fits(tmp_path):
    """The uniform-fill baseline, placed by a latency model that has seen no whole network,
    measures over the budget: the refitted model places it again, aiming under the budget by the
    share it missed (at most twice), so the search has it as a feasible candidate; a resumed
    agent carries on where it was."""
    space = chain_space()
    evaluate = make_evaluator(space, sensitivities(space), latency=True)
    budget = Budget(latency_ms=6.0)
    agent = TPEAgent(space, budget, seed=0)
    first = agent.ask(3)
    agent.tell(outcomes := [evaluate(p) for p in first])
    assert not budget.feasible(outcomes[0].metrics)  # the baseline, over
    saved = json.loads(json.dumps(agent.state_dict()))
    refits = []
    for _ in range(3):
        props = agent.ask(3)
        refits += [p for p in props if p.info.get("role") == "baseline refit"]
        agent.tell([evaluate(p) for p in props])
    assert 1 <= len(refits) <= TPEAgent.BASELINE_REFITS
    measured = [evaluate(p).metrics.latency_ms for p in refits]
    assert measured[-1] <= 6.0 and all(ms > 6.0 for ms in measured[:-1])  # stops once one fits
    assert measured[-1] > 0.9 * 6.0  # under the budget, not far under it
    restored = TPEAgent(space, budget, seed=0)
    restored.load_state_dict(saved)
    assert restored.ask(3)[0].info == {"role": "baseline refit", "refit": 1}
