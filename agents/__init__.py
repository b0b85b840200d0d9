"""autoprune: agents — how the next pruning policy is chosen.

Light on import: the agents themselves (Optuna, torch) load through the registry on first use.
"""

from __future__ import annotations

from agents.base import Agent
from agents.budget_fit import BudgetError, BudgetFit, LatencyModel
from agents.latency_table import LatencyTable, LatencyTableRequest
from agents.pareto import Point, dominates, hypervolume_2d, pareto_front
from agents.registry import AGENTS, make_agent
from agents.types import AgentHints, Budget, Metrics, Outcome, Proposal

__all__ = [
    "AGENTS",
    "Agent",
    "AgentHints",
    "Budget",
    "BudgetError",
    "BudgetFit",
    "LatencyModel",
    "LatencyTable",
    "LatencyTableRequest",
    "Metrics",
    "Outcome",
    "Point",
    "Proposal",
    "dominates",
    "hypervolume_2d",
    "make_agent",
    "pareto_front",
]
