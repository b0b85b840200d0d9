"""The job's Pareto front in storage: kept up to date as trials arrive, read from the flags.

Each trial row carries ``on_front`` for the job's own cost axis (``JobRow.cost_key``). A new
trial is compared with the current front only (never with every trial), which gives the same
front as ``agents.pareto.pareto_front`` over all trials: a point off the front is dominated by
(or equal to) a front point, and stays so as points are added. Equal points are kept once, the
lowest trial id, as ``pareto_front`` keeps the first seen.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from sqlalchemy.orm import Session

from agents.pareto import Point, dominates, pareto_front
from service.db import repo
from service.db.models import TrialRow


def point_of(row: TrialRow, cost_key: str) -> Point:
    value = (row.metrics or {}).get(cost_key)
    cost = float(value) if value is not None else math.inf
    return Point(float(row.quality or 0.0), cost, float(row.violation or 0.0))


def add_to_front(s: Session, *, job_id: str, cost_key: str, row: TrialRow) -> list[int] | None:
    """Updates the flags for the just-added ``row``; the new front's ids if it changed, else None."""
    if row.metrics is None:
        return None
    front = list(repo.front_trials(s, job_id=job_id))
    p = point_of(row, cost_key)
    for f in front:
        q = point_of(f, cost_key)
        if dominates(q, p) or (q == p and f.trial_id < row.trial_id):
            return None
    beaten = [f.trial_id for f in front if (q := point_of(f, cost_key)) == p or dominates(p, q)]
    repo.set_on_front(s, job_id=job_id, trial_ids=beaten, on=False)
    repo.set_on_front(s, job_id=job_id, trial_ids=[row.trial_id], on=True)
    return sorted([f.trial_id for f in front if f.trial_id not in beaten] + [row.trial_id])


def by_cost(rows: Sequence[TrialRow], cost_key: str) -> list[TrialRow]:
    """Front rows in the API's order: cost ascending, quality descending on ties."""
    return sorted(rows, key=lambda t: ((p := point_of(t, cost_key)).cost, -p.quality, t.trial_id))


def front_rows(s: Session, *, job_id: str, job_cost_key: str, cost_key: str) -> list[TrialRow]:
    """The front on ``cost_key``: the stored flags on the job's own axis, computed on another."""
    if cost_key == job_cost_key:
        return by_cost(repo.front_trials(s, job_id=job_id), cost_key)
    rows = repo.measured_trials(s, job_id=job_id)
    return [rows[i] for i in pareto_front([point_of(t, cost_key) for t in rows])]
