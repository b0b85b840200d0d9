"""Agents by name. ``make_agent`` is the one way the rest of autoprune builds an agent."""

from __future__ import annotations

from typing import Any

from agents.base import Agent
from agents.types import AgentHints, Budget
from search_spaces.registry import Registry
from search_spaces.space import SearchSpace

AGENTS = Registry(
    "agent",
    {
        "uniform": "agents.baselines:UniformAgent",
        "random": "agents.baselines:RandomAgent",
        "global": "agents.global_ranking:GlobalAgent",
        "sensitivity": "agents.sensitivity:SensitivityAgent",
        "optuna-tpe": "agents.optuna_agents:TPEAgent",
        "optuna-nsga2": "agents.optuna_agents:NSGA2Agent",
        "ddpg": "agents.ddpg:DDPGAgent",
        "knapsack": "agents.knapsack:KnapsackAgent",
    },
)


def make_agent(
    name: str,
    space: SearchSpace,
    budget: Budget,
    *,
    seed: int = 0,
    options: dict[str, Any] | None = None,
    hints: AgentHints | None = None,
) -> Agent:
    """Builds the agent ``name``; ``options`` are its keyword arguments (checked by the agent).

    ``hints``: what workers measured for it (``workers.hints.agent_hints``); agents that take
    none ignore it, agents that do work without it (from their priors).
    """
    cls = AGENTS.get(name)
    kwargs = dict(options or {})
    if "hints" in kwargs:
        raise ValueError(f"agent {name!r}: bad options: 'hints' is measured by workers, not an option")
    if cls.accepts_hints:
        kwargs["hints"] = hints
    try:
        return cls(space, budget, seed=seed, **kwargs)
    except TypeError as exc:
        raise ValueError(f"agent {name!r}: bad options: {exc}") from exc
