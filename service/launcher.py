"""What a launcher builds for one job (space, dense metrics, pool, finalize), and the launcher's
type: the runner consumes these, service/launch.py and the tests' fakes make them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.types import Metrics, Outcome
from search_spaces.space import SearchSpace
from workers.artifacts import ArtifactInfo
from workers.pool_base import Pool
from workers.spec import JobSpec

#: The pool a job evaluates with: the workers' one pool type (``workers.pool_base.Pool``).
EvalPool = Pool

#: finalize(candidates, out_dir, on_progress) -> the accepted artifacts, best first, each with
#: its trial id and ``dense_test_accuracy`` in its metrics.
FinalizeFn = Callable[[list[Outcome], Path, Callable[[Any], None] | None], Sequence[ArtifactInfo]]


@dataclass
class Launched:
    """What a launcher builds for one job."""

    space: SearchSpace
    dense_metrics: Metrics
    pool: Pool
    finalize: FinalizeFn


Launcher = Callable[[JobSpec], Launched]
