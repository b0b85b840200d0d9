"""What the service shows of stored rows: a trial, a job's progress, metrics.

The runner's events carry these shapes and the API returns them (``service.api.schemas``
imports them), so they live below both. JSON has no NaN/inf: stored metrics pass through
:func:`finite` (they become null). No queries here: callers read the rows and summaries.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from service.db.models import JobRow, TrialRow
from service.db.repo import TrialSummary


def aware(t: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything is stored in UTC."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


def finite(x: Any) -> Any:
    """JSON has no NaN/inf: they become null."""
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [finite(v) for v in x]
    return x


#: an ISO-8601 UTC time, written as ``datetime.isoformat()`` always has been (``+00:00``)
Timestamp = Annotated[
    datetime, PlainSerializer(lambda t: aware(t).isoformat(), return_type=str, when_used="json")
]


class View(BaseModel):
    """Base of every shape the service shows: built from explicit fields, never from ORM rows."""

    model_config = ConfigDict(from_attributes=False)


class Metrics(View):
    """What an evaluation measured (``agents.types.Metrics``); ``extra`` holds evaluator notes."""

    model_config = ConfigDict(extra="allow")

    quality: float | None
    macs: int | None
    params: int | None
    macs_ratio: float | None
    params_ratio: float | None
    latency_ms: float | None = None
    latency_spread_ms: float | None = None
    latency_ratio: float | None = None
    eval_seconds: float | None = None
    node: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


class Trial(View):
    trial_id: int
    state: str = Field(description="succeeded | failed")
    policy: dict[str, float | None] = Field(description="per-group pruning ratio")
    kept: dict[str, int] = Field(description="per-group channels kept")
    metrics: Metrics | None
    feasible: bool
    error: str | None
    node: str | None
    info: dict[str, Any] = Field(description="the agent's bookkeeping (role, episode, ...)")
    cached: bool = Field(description="answered from an equal architecture evaluated earlier")
    controller: str | None = Field(None, description="the controller replica that stored it")
    finished_at: Timestamp | None

    @classmethod
    def from_row(cls, row: TrialRow) -> Trial:
        return cls(
            trial_id=row.trial_id,
            state=row.state,
            policy=finite(row.policy),
            kept=row.kept,
            metrics=finite(row.metrics),
            feasible=bool(row.feasible),
            error=row.error,
            node=row.node,
            info=finite(row.info or {}),
            cached=bool(row.cached),
            controller=row.controller,
            finished_at=row.finished_at,
        )


class Progress(View):
    trials_done: int
    trials_total: int
    eta_seconds: float | None

    @classmethod
    def of(cls, job: JobRow, summary: TrialSummary) -> Progress:
        return cls.counted(job.state, job.started_at, job.trials_total, summary)

    @classmethod
    def counted(cls, state: str, started_at: datetime | None, total: int, summary: TrialSummary) -> Progress:
        """From the job's state, start and trial total (a running job's recorder knows them)."""
        done, last = summary.count, summary.last_finished_at
        eta: float | None = None
        if state == "running" and started_at is not None and 0 < done < total and last is not None:
            elapsed = max((aware(last) - aware(started_at)).total_seconds(), 0.0)
            eta = elapsed / done * (total - done)
        return cls(trials_done=done, trials_total=total, eta_seconds=eta)
