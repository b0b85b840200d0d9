"""Agents on the synthetic evaluator (known sensitivities, known optimum structure)."""

from __future__ import annotations

import pytest

from agents.registry import make_agent
from agents.sensitivity import SensitivityAgent
from agents.types import Budget
from tests.agents.synthetic import chain_space, make_evaluator, sensitivities

BUDGET = Budget(macs_ratio=0.3)


def best_quality(name, space, sens, evaluations, seed=0, options=None, n=8):
    agent = make_agent(name, space, BUDGET, seed=seed, options=options)
    evaluate = make_evaluator(space, sens)
    best, done = -1e9, 0
    while done < evaluations and not agent.finished:
        props = agent.ask(min(n, evaluations - done))
        if not props:
            break
        outs = [evaluate(p) for p in props]
        best = max([best] + [o.metrics.quality for o in outs])
        done += len(props)
        agent.tell(outs)
    return best


def test_sensitivity_beats_uniform_on_known_sensitivities():
    space = chain_space((16, 24, 32, 32, 48, 64), round_to=2)
    sens = sensitivities(space)
    agent = SensitivityAgent(space, BUDGET, ratios=3)
    evaluate = make_evaluator(space, sens)
    while not agent.finished:
        props = agent.ask(16)
        agent.tell([evaluate(p) for p in props])
    curves = agent.curves()
    assert set(curves) == set(space.names)
    uniform = best_quality("uniform", space, sens, 1)
    assert best_quality("sensitivity", space, sens, 10_000) > uniform + 0.01


@pytest.mark.slow
def test_ddpg_and_tpe_beat_uniform_and_random_within_300():
    space = chain_space((16, 16, 24, 32, 32, 48, 64, 64), round_to=2)
    sens = sensitivities(space, seed=1)
    uniform = best_quality("uniform", space, sens, 1)
    random = best_quality("random", space, sens, 300)
    tpe = best_quality("optuna-tpe", space, sens, 300)
    ddpg = best_quality("ddpg", space, sens, 300, options={"trials": 300})
    assert tpe > uniform and ddpg > uniform
    assert tpe > random, (tpe, random)
    assert ddpg > random, (ddpg, random)
