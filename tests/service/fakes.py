"""A tiny in-process launcher for service tests: a hand-built space, analytic 'evaluations'.

It exercises the real runner, agents, run loop, storage and API without torch or Ray.
``delay`` slows each evaluation so tests can observe a running job; ``fail_on`` makes chosen
trials fail.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

from agents.latency_table import LatencyTable
from agents.types import Metrics, Outcome, Proposal
from search_spaces.space import Group, LayerCost, SearchSpace
from service.launcher import Launched
from workers.artifacts import ArtifactInfo
from workers.pool_base import Pool
from workers.spec import JobSpec


def tiny_space() -> SearchSpace:
    groups = tuple(
        Group(name=f"layer{i}", index=i, kind="conv", channels=16, in_channels=16, kernel=3, stride=1,
              macs=1000 * (i + 1), params=100 * (i + 1))
        for i in range(3)
    )
    costs = (
        LayerCost("stem", 500, 50, ("layer0",)),
        LayerCost("c1", 2000, 200, ("layer0", "layer1")),
        LayerCost("c2", 2000, 200, ("layer1", "layer2")),
        LayerCost("head", 300, 30, ("layer2",)),
    )
    return SearchSpace(groups=groups, costs=costs, dense_macs=4800, dense_params=480, input_shape=(3, 8, 8),
                       max_ratio=0.8, round_to=4)


class FakePool(Pool):
    """A pool on the analytic space: quality falls with the mean ratio, latency is MACs."""

    def __init__(self, space: SearchSpace, delay: float, fail_on: set[int]) -> None:
        super().__init__()
        self._space, self.delay, self.fail_on = space, delay, fail_on
        self.evaluated: list[int] = []

    @property
    def space(self) -> SearchSpace:
        return self._space

    @property
    def dense_metrics(self) -> Metrics:
        return self.metrics({})

    def metrics(self, policy: dict[str, float]) -> Metrics:
        s = self._space
        mean = sum(policy.values()) / max(len(policy), 1)
        return Metrics(quality=round(0.95 - 0.4 * mean * mean, 6), macs=int(s.macs(policy)), params=int(s.params(policy)),
                       macs_ratio=s.macs_ratio(policy), params_ratio=s.params_ratio(policy),
                       latency_ms=1.0 * s.macs_ratio(policy), latency_ratio=s.macs_ratio(policy), node="fake")

    def latency_table(self, ratios: tuple[float, ...]) -> LatencyTable:
        raise NotImplementedError("the fake pool measures no latency table")

    def _evaluate(self, proposals: list[Proposal]) -> Generator[Outcome, None, None]:
        for p in proposals:
            time.sleep(self.delay)
            self.evaluated.append(p.trial_id)
            if p.trial_id in self.fail_on:
                yield Outcome(p.trial_id, p.policy, None, "RuntimeError: injected failure")
            else:
                yield Outcome(p.trial_id, p.policy, self.metrics(self._space.validate(p.policy)), None)

    def _close(self) -> None:
        pass  # nothing to release; Pool.closed records it


class FakeLauncher:
    """Callable launcher recording what it built."""

    def __init__(self, delay: float = 0.0, fail_on: set[int] | None = None, fail_launch: bool = False) -> None:
        self.delay, self.fail_on, self.fail_launch = delay, fail_on or set(), fail_launch
        self.pools: list[FakePool] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, spec: JobSpec) -> Launched:
        if self.fail_launch:
            raise RuntimeError("cannot build the model")
        pool = FakePool(tiny_space(), self.delay, self.fail_on)
        self.pools.append(pool)

        def finalize(candidates: list[Outcome], out_dir: Path, on_progress: Any = None) -> list[ArtifactInfo]:
            out = []
            for rank, c in enumerate(candidates, start=1):
                if on_progress is not None:  # as workers' finalize reports its steps
                    on_progress({"rank": rank, "stage": "start", "policy": c.policy})
                d = out_dir / f"rank{rank}"
                d.mkdir(parents=True, exist_ok=True)
                data = json.dumps(c.policy).encode()
                (d / "policy.json").write_bytes(data)
                out.append(ArtifactInfo(rank=rank, dir=d, trial_id=c.trial_id, policy=dict(c.policy),
                                        files=[("policy.json", len(data), hashlib.sha256(data).hexdigest())],
                                        metrics=c.metrics.to_dict() if c.metrics else {}))
                if on_progress is not None:
                    on_progress({"rank": rank, "stage": "done", "dir": str(d)})
            return out

        return Launched(space=pool.space, dense_metrics=pool.dense_metrics, pool=pool, finalize=finalize)


def spec(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "t",
        "model": {"zoo": "resnet20"},
        "dataset": {"name": "digits"},
        "budget": {"macs_ratio": 0.6},
        "agent": {"kind": "random", "trials": 8},
        "finalize": {"top_k": 2},
        "workers": 2,
    }
    base.update(overrides)
    return base
