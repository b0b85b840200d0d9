"""Which trials a job's finalize gets, and its artifacts as stored.

The rule: the ``top_k`` feasible points of the front, best quality first, then the agent's
uniform-fill baseline (its first trial) when ``finalize.baseline`` asks for it, feasible and not
chosen already: the last artifact, fine-tuned like the best, says whether the search beat it.
Under a latency budget nothing met, the closest point (see :func:`choose`); and the baseline
even when the search measured it over the budget (its uniform ratio came from a latency model
still learning): finalize narrows it until its architecture meets the budget, so the comparison
is at equal measured cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from agents.types import Metrics, Outcome
from service.db.models import ArtifactRow, TrialRow
from service.views import Delivery
from workers.artifacts import ArtifactInfo

#: the roles of the zero-search proposals every agent makes first (``Agent.baselines``): uniform-fill;
#: in a space with int8, quantize-only and quantize+uniform-fill; in a space with depth
#: (``search_space.depth``), depth-only (the best-scoring blocks/layers kept, uniform width)
BASELINE_ROLES = ("baseline", "quantize-only", "quantize+uniform-fill", "depth-only")


def choose(front: Sequence[TrialRow], baselines: Sequence[TrialRow], *, top_k: int, baseline: bool,
           closest: bool = False) -> list[TrialRow]:
    """Finalize's candidates, in artifact rank order, from the job's front and its first trials
    (the agent's baselines: uniform-fill, in a space with int8 quantize-only and
    quantize+uniform-fill, in a space with depth depth-only).

    ``closest`` (a budget with a latency term): when no trial is feasible, the front's closest
    one (the least violation: the constraint-aware front holds only those) is finalized all the
    same — finalize tightens it, and when it still misses, publishes it marked ``budget_met:
    false`` with its measured figures, instead of a job that ends with nothing to show."""
    ranked, appended = _choose(front, baselines, top_k=top_k, baseline=baseline, closest=closest)
    return ranked + appended


def _choose(front: Sequence[TrialRow], baselines: Sequence[TrialRow], *, top_k: int, baseline: bool,
            closest: bool) -> tuple[list[TrialRow], list[TrialRow]]:
    """(the ranked candidates, the baselines appended after them)."""
    usable = sorted((t for t in front if t.feasible and t.metrics), key=lambda t: (-(t.quality or 0.0), t.trial_id))
    if not usable and closest and top_k > 0:
        nearest = sorted((t for t in front if t.metrics),
                         key=lambda t: (t.violation if t.violation is not None else float("inf"),
                                        -(t.quality or 0.0), t.trial_id))
        return nearest[:1], []
    chosen = usable[:top_k]
    appended: list[TrialRow] = []
    if not baseline:
        return chosen, appended
    for first in baselines:
        role = (first.info or {}).get("role")
        if (
            role in BASELINE_ROLES
            # over a latency budget: finalize narrows the pruned baselines (depth-only included,
            # its removed units kept) to it; quantize-only is reported as it is, whatever the budget
            and (first.feasible or closest or role == "quantize-only")
            and first.metrics
            and all(t.trial_id != first.trial_id for t in chosen)
        ):
            appended.append(first)
    return chosen, appended


def finalize_candidates(front: Sequence[TrialRow], baselines: Sequence[TrialRow], *, top_k: int,
                        baseline: bool, closest: bool = False) -> list[Outcome]:
    """:func:`choose`'s trials as finalize takes them: each appended baseline's role in its
    metrics' ``extra["role"]`` (finalize reports it beside the best found)."""
    ranked, appended = _choose(front, baselines, top_k=top_k, baseline=baseline, closest=closest)
    out = [outcome_of(t) for t in ranked]
    for t in appended:
        o = outcome_of(t)
        if o.metrics is not None:
            o.metrics.extra["role"] = (t.info or {}).get("role")
        out.append(o)
    return out


def outcome_of(t: TrialRow) -> Outcome:
    """A stored trial as the search loop and finalize know it."""
    metrics = Metrics.from_dict(t.metrics) if t.metrics else None
    return Outcome(t.trial_id, dict(t.policy), metrics, t.error)


def artifact_fields(a: ArtifactInfo) -> dict[str, Any]:
    """An artifact row's fields from finalize's result (its trial id set by the task process)."""
    if a.trial_id is None:
        raise ValueError(f"finalize's artifact of rank {a.rank} names no trial")
    return {
        "rank": int(a.rank),
        "trial_id": int(a.trial_id),
        "dir": str(a.dir),
        "files": [{"name": str(name), "size": int(size), "sha256": str(sha)} for name, size, sha in a.files],
        "metrics": dict(a.metrics),
    }


_ARTIFACT_METRICS = (
    sa.select(ArtifactRow.job_id, ArtifactRow.rank, ArtifactRow.metrics)
    .where(ArtifactRow.job_id.in_(sa.bindparam("job_ids", expanding=True)))
    .order_by(ArtifactRow.job_id, ArtifactRow.rank)
)


def deliveries(s: Session, *, runtimes: dict[str, str | None]) -> dict[str, Delivery]:
    """The :class:`~service.views.Delivery` of each job in ``runtimes`` (job id → the runtime
    its spec names) that has artifacts, from their stored metrics, in one query."""
    if not runtimes:
        return {}
    by_job: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for job_id, rank, metrics in s.execute(_ARTIFACT_METRICS, {"job_ids": list(runtimes)}):
        by_job.setdefault(job_id, []).append((int(rank), dict(metrics or {})))
    return {job_id: Delivery.of(runtimes[job_id], arts) for job_id, arts in by_job.items()}
