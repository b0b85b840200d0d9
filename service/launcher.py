"""What a launcher builds for one job (space, dense metrics, pool, finalize), and the launcher's
type: the runner consumes these, service/launch.py and the tests' fakes make them."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agents.types import Metrics, Outcome, Proposal
from search_spaces.space import SearchSpace
from workers.spec import JobSpec


class EvalPool(Protocol):
    @property
    def space(self) -> SearchSpace: ...

    def evaluate(self, proposals: list[Proposal]) -> Iterator[Outcome]: ...

    def close(self) -> None: ...


#: finalize(candidates, out_dir, on_progress) -> artifacts, each with rank, dir, files, metrics.
FinalizeFn = Callable[[list[Outcome], Path, Callable[[str], None] | None], Sequence[Any]]


@dataclass
class Launched:
    """What a launcher builds for one job."""

    space: SearchSpace
    dense_metrics: Metrics
    pool: EvalPool
    finalize: FinalizeFn


Launcher = Callable[[JobSpec], Launched]
