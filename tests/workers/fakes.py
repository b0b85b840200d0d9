"""A model-free evaluator and agent for testing pools and the loop fast."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agents.base import Agent
from agents.latency_table import LatencyTable
from agents.types import Budget, Metrics, Outcome, Proposal
from search_spaces.space import Group, LayerCost, SearchSpace


def tiny_space() -> SearchSpace:
    groups = tuple(
        Group(
            name=f"g{i}",
            index=i,
            kind="conv",
            channels=16,
            in_channels=16,
            kernel=3,
            stride=1,
            macs=100,
            params=10,
        )
        for i in range(3)
    )
    costs = tuple(
        LayerCost(name=f"g{i}", macs=100, params=10, scale_by=(f"g{i}",)) for i in range(3)
    )
    return SearchSpace(
        groups, costs, dense_macs=300, dense_params=30, input_shape=(1, 8), round_to=4
    )


class FakeEvaluator:
    """Quality falls with the pruned fraction; ``fail_on`` ratios raise; ``delay_s`` sleeps.

    ``die_on``: a policy with that ratio kills this process (SIGKILL) the first ``die_times``
    times it is evaluated, counted in the file ``die_marker`` (shared by every worker process),
    then evaluates normally: a worker dying mid-batch, deterministically.
    """

    def __init__(self, delay_s: float = 0.0, fail_on: float | None = None, *,
                 die_on: float | None = None, die_marker: str | None = None, die_times: int = 1) -> None:
        self.space = tiny_space()
        self.delay_s = delay_s
        self.fail_on = fail_on
        self.die_on, self.die_marker, self.die_times = die_on, die_marker, die_times
        self.calls: list[dict[str, float]] = []

    def _maybe_die(self, policy: dict[str, float]) -> None:
        if self.die_on is None or self.die_marker is None:
            return
        if not any(abs(r - self.die_on) < 1e-9 for r in policy.values()):
            return
        marker = Path(self.die_marker)
        deaths = len(marker.read_text()) if marker.exists() else 0
        if deaths < self.die_times:
            with marker.open("a") as fh:
                fh.write("x")
            os.kill(os.getpid(), signal.SIGKILL)

    def latency_table(self, ratios: Sequence[float]) -> LatencyTable:
        """Latency proportional to kept channels, one group at a time (the contract's table)."""
        entries = {}
        for g in self.space.groups:
            kept = sorted({self.space.kept_channels(g, min(r, self.space.max_ratio)) for r in ratios})
            entries[g.name] = tuple((k, k / g.channels) for k in kept if k != g.channels)
        return LatencyTable(dense_ms=1.0, entries=entries)

    def dense_metrics(self) -> Metrics:
        return self.evaluate({})

    def evaluate(self, policy: dict[str, float]) -> Metrics:
        policy = self.space.validate(policy)
        self.calls.append(policy)
        self._maybe_die(policy)
        if self.fail_on is not None and any(abs(r - self.fail_on) < 1e-9 for r in policy.values()):
            raise RuntimeError(f"cannot evaluate ratio {self.fail_on}")
        time.sleep(self.delay_s)
        mr = self.space.macs_ratio(policy)
        return Metrics(
            quality=1.0 - 0.5 * (1 - mr),
            macs=int(self.space.macs(policy)),
            params=int(self.space.params(policy)),
            macs_ratio=mr,
            params_ratio=self.space.params_ratio(policy),
            node="fake",
            extra={"pid": os.getpid()},
        )


class FakeFactory:
    """Picklable factory for Ray actors."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs

    def __call__(self) -> FakeEvaluator:
        return FakeEvaluator(**self.kwargs)


class FakeTaskFactory:
    """Picklable task source for a ``TaskProcess``: the 'task' is a FakeEvaluator (it has a space)."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs

    def task(self) -> FakeEvaluator:
        return FakeEvaluator(**self.kwargs)

    def evaluator(self, task: FakeEvaluator) -> FakeEvaluator:
        return task


class ListAgent(Agent):
    """Proposes a fixed list of policies in order; records what it was told."""

    name = "list"
    proposes_baseline = False  # the list is the whole script

    def __init__(self, space: SearchSpace, policies: list[dict[str, float]], seed: int = 0) -> None:
        super().__init__(space, Budget(macs_ratio=1.0), seed=seed)
        self.policies = policies
        self.told: list[Outcome] = []

    def propose(self, n: int) -> list[Proposal]:
        start = self._next_trial_id
        return [self._proposal(p) for p in self.policies[start : start + n]]

    def observe(self, outcomes: list[Outcome]) -> None:
        self.told += outcomes

    @property
    def finished(self) -> bool:
        return self._next_trial_id >= len(self.policies) and not self.outstanding()


def mean_confidence(model: Any, loader: Any) -> float:
    """A user metric for the ``entrypoint:`` form: mean top-1 softmax probability."""
    import torch

    with torch.no_grad():
        probs = [torch.softmax(model(x), 1).max(1).values for x, _ in loader]
    return float(torch.cat(probs).mean())
