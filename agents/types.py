"""Values agents exchange with the rest of autoprune: budgets, metrics, proposals, outcomes."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from agents.latency_table import LatencyTable
from search_spaces.space import Policy, SearchSpace


@dataclass(frozen=True)
class Budget:
    """Upper bounds on the pruned model's cost; any subset may be set.

    ``macs_ratio`` / ``params_ratio`` are fractions of the dense model's; ``latency_ms`` is an
    absolute bound measured on the target; ``latency_ratio`` is relative to the dense model
    measured in the same session.
    """

    macs_ratio: float | None = None
    params_ratio: float | None = None
    latency_ms: float | None = None
    latency_ratio: float | None = None

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value is None:
                continue
            if not isinstance(value, int | float) or math.isnan(value) or value <= 0:
                raise ValueError(f"budget.{name} must be a positive number, got {value!r}")
            if name.endswith("_ratio") and value > 1:
                raise ValueError(f"budget.{name} must be at most 1, got {value!r}")

    @property
    def is_empty(self) -> bool:
        return all(v is None for v in asdict(self).values())

    @property
    def uses_latency(self) -> bool:
        return self.latency_ms is not None or self.latency_ratio is not None

    def analytic_violation(self, space: SearchSpace, policy: Mapping[str, float]) -> float:
        """Largest violation of the MACs/params bounds predicted by the space (<= 0: feasible)."""
        v = [-math.inf]
        if self.macs_ratio is not None:
            v.append(space.macs_ratio(policy) - self.macs_ratio)
        if self.params_ratio is not None:
            v.append(space.params_ratio(policy) - self.params_ratio)
        return max(v)

    def violations(self, metrics: Metrics) -> list[float]:
        """One number per set bound, <= 0 when met (Optuna's constraint convention)."""
        v: list[float] = []
        if self.macs_ratio is not None:
            v.append(metrics.macs_ratio - self.macs_ratio)
        if self.params_ratio is not None:
            v.append(metrics.params_ratio - self.params_ratio)
        if self.latency_ms is not None:
            v.append((metrics.latency_ms if metrics.latency_ms is not None else math.inf) - self.latency_ms)
        if self.latency_ratio is not None:
            lr = metrics.latency_ratio if metrics.latency_ratio is not None else math.inf
            v.append(lr - self.latency_ratio)
        return v

    def feasible(self, metrics: Metrics) -> bool:
        return all(x <= 1e-9 for x in self.violations(metrics))

    def to_dict(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class Metrics:
    """What an evaluation measured for one policy."""

    quality: float
    macs: int
    params: int
    macs_ratio: float
    params_ratio: float
    latency_ms: float | None = None
    latency_spread_ms: float | None = None  # interquartile range of the rounds
    latency_ratio: float | None = None
    eval_seconds: float = 0.0
    node: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Metrics:
        return cls(**data)


@dataclass(frozen=True)
class Proposal:
    """A policy an agent wants evaluated. ``info`` carries agent bookkeeping (episode, role)."""

    trial_id: int
    policy: Policy
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """The evaluation of a proposal: metrics, or the error that stopped it."""

    trial_id: int
    policy: Policy
    metrics: Metrics | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.metrics is not None


@dataclass(frozen=True)
class AgentHints:
    """Measurements workers make for an agent before its search, handed over as values (agents
    never touch a model). Which ones an agent wants: ``Agent.hint_requests``."""

    latency_table: LatencyTable | None = None
