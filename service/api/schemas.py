"""The REST contract as pydantic models (Job, Trial, ParetoPoint, Artifact, Upload, Page[T]).

Routes declare these as ``response_model``, so ``/openapi.json`` names every property a client
reads; the runner stores the same shapes as event data. ``from_row`` builds each from its ORM row.
JSON has no NaN/inf: stored metrics pass through :func:`finite` (they become null).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer
from sqlalchemy.orm import Session

from service.db import repo
from service.db.models import ArtifactRow, JobRow, TrialRow
from workers.spec import BudgetSpec, JobSpec


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

T = TypeVar("T")


class _Model(BaseModel):
    model_config = ConfigDict(from_attributes=False)


class Page(_Model, Generic[T]):
    """One page of a listing: ``count`` is the total, ``offset``/``limit`` what was asked."""

    items: list[T]
    count: int
    offset: int
    limit: int


class Metrics(_Model):
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


class Trial(_Model):
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


class ParetoPoint(Trial):
    """A trial on the constraint-aware front (no other trial is better on quality and cost)."""


class ParetoFront(_Model):
    cost: str = Field(description="the cost axis: latency_ms, macs or params")
    items: list[ParetoPoint] = Field(description="ordered by cost ascending")


class Progress(_Model):
    trials_done: int
    trials_total: int
    eta_seconds: float | None

    @classmethod
    def of(cls, job: JobRow, summary: repo.TrialSummary) -> Progress:
        done, last = summary.count, summary.last_finished_at
        eta: float | None = None
        if job.state == "running" and job.started_at is not None and 0 < done < job.trials_total and last is not None:
            elapsed = max((aware(last) - aware(job.started_at)).total_seconds(), 0.0)
            eta = elapsed / done * (job.trials_total - done)
        return cls(trials_done=done, trials_total=job.trials_total, eta_seconds=eta)


class SpaceGroup(_Model):
    """One prunable group of coupled channels."""

    name: str | None
    index: int | None
    kind: str | None
    channels: int | None
    in_channels: int | None
    kernel: int | None
    stride: int | None
    macs: int | None
    params: int | None


class Space(_Model):
    groups: list[SpaceGroup]
    dense_macs: int | None
    dense_params: int | None

    @classmethod
    def from_dict(cls, space: dict[str, Any]) -> Space:
        keys = SpaceGroup.model_fields
        return cls(
            groups=[SpaceGroup(**{k: g.get(k) for k in keys}) for g in space.get("groups", [])],
            dense_macs=space.get("dense_macs"),
            dense_params=space.get("dense_params"),
        )


class Job(_Model):
    id: str
    name: str
    state: str = Field(description="queued | running | finalizing | succeeded | failed | cancelled")
    spec: JobSpec | dict[str, Any] = Field(
        union_mode="left_to_right",
        description="the job spec as accepted (defaults filled in); as stored when it no longer "
        "validates (e.g. the operator withdrew its plugin), so the job stays readable",
    )
    created_at: Timestamp | None
    started_at: Timestamp | None
    finished_at: Timestamp | None
    progress: Progress
    budget: BudgetSpec
    dense: Metrics | None = Field(description="the dense model's metrics, once launched")
    baseline: Trial | None = Field(description="the first trial, when it is the agent's baseline")
    best: Trial | None = Field(description="highest-quality feasible trial")
    error: str | None
    space: Space | None
    cost_key: str
    controller: str | None = Field(None, description="the controller running it now (none when none does)")

    @classmethod
    def from_row(cls, s: Session, job: JobRow, summary: repo.TrialSummary | None = None) -> Job:
        # never every trial: the jobs list renders up to 500 of these (one summary for its page)
        summary = summary or repo.trial_summaries(s, job_ids=[job.id])[job.id]
        first, best = summary.first, summary.best  # every agent asks the baseline first
        baseline = first if first is not None and (first.info or {}).get("role") == "baseline" else None
        return cls(
            id=job.id,
            name=job.name,
            state=job.state,
            spec=job.spec,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            progress=Progress.of(job, summary),
            budget=job.spec.get("budget", {}),
            dense=finite(job.dense),
            baseline=Trial.from_row(baseline) if baseline else None,
            best=Trial.from_row(best) if best else None,
            error=job.error,
            space=Space.from_dict(job.space) if job.space is not None else None,
            cost_key=job.cost_key,
            controller=job.lease_owner,
        )


class ArtifactFile(_Model):
    name: str
    size: int
    sha256: str


class Artifact(_Model):
    id: str
    rank: int
    trial_id: int
    files: list[ArtifactFile]
    metrics: dict[str, Any] = Field(description="final metrics after fine-tuning (test split)")
    download_url: str

    @classmethod
    def from_row(cls, row: ArtifactRow) -> Artifact:
        return cls(
            id=row.id,
            rank=row.rank,
            trial_id=row.trial_id,
            files=row.files,
            metrics=finite(row.metrics),
            download_url=f"/api/v1/artifacts/{row.id}/download",
        )


class ArtifactList(_Model):
    items: list[Artifact] = Field(description="ordered by rank")


class Upload(_Model):
    id: str = Field(description="pass as model.weights in a job spec")
    name: str
    size: int
    sha256: str


class Health(_Model):
    status: str
    ray: str = "not_started"  # not_started | starting | running | down
    ray_error: str | None = None

