"""Agents by name. ``make_agent`` is the one way the rest of autoprune builds an agent."""

from __future__ import annotations

from typing import Any

from agents.base import Agent
from agents.types import Budget
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
    },
)


def make_agent(
    name: str,
    space: SearchSpace,
    budget: Budget,
    *,
    seed: int = 0,
    options: dict[str, Any] | None = None,
) -> Agent:
    """Builds the agent ``name``; ``options`` are its keyword arguments (checked by the agent)."""
    cls = AGENTS.get(name)
    try:
        return cls(space, budget, seed=seed, **(options or {}))
    except TypeError as exc:
        raise ValueError(f"agent {name!r}: bad options: {exc}") from exc
