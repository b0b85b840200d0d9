"""The REST contract as pydantic models (Job, Trial, ParetoPoint, Artifact, Upload, Page[T]).

Routes declare these as ``response_model``, so ``/openapi.json`` names every property a client
reads. The shapes the runner's events carry too (Trial, Progress, Metrics) live in
:mod:`service.views` and are re-exported here. ``from_row`` builds each from its ORM row (and the
summaries the caller read: no queries here). JSON has no NaN/inf: see :func:`finite`.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import Field

from service.db.models import ArtifactRow, JobRow
from service.db.repo import TrialSummary
from service.views import Delivery, Metrics, Progress, Timestamp, Trial, View, aware, finite
from workers.spec import BudgetSpec, JobSpec, TargetSpec

__all__ = [
    "Artifact", "ArtifactFile", "ArtifactList", "Health", "Job", "Metrics", "Page", "ParetoFront", "ParetoPoint",
    "Progress", "Space", "SpaceGroup", "Timestamp", "Trial", "Upload", "aware", "finite",
]


T = TypeVar("T")


class Page(View, Generic[T]):
    """One page of a listing: ``count`` is the total, ``offset``/``limit`` what was asked."""

    items: list[T]
    count: int
    offset: int
    limit: int


class ParetoPoint(Trial):
    """A trial on the constraint-aware front (no other trial is better on quality and cost)."""


class ParetoFront(View):
    cost: str = Field(description="the cost axis: latency_ms, macs or params")
    items: list[ParetoPoint] = Field(description="ordered by cost ascending")


class SpaceGroup(View):
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


class SpaceUnit(View):
    """A block or layer a depth policy may remove whole (``search_space.depth``): removed when
    the policy has ``"<name>@keep": 0``."""

    name: str
    index: int | None
    kind: str | None = Field(description="'block' (a CNN residual block) or 'layer' (an encoder layer)")
    groups: list[str] = Field(description="the groups inside it, removed with it")
    macs: int | None
    params: int | None


class Space(View):
    groups: list[SpaceGroup]
    dense_macs: int | None
    dense_params: int | None
    units: list[SpaceUnit] = Field(default_factory=list, description="removable blocks/layers "
                                   "(search_space.depth); empty: widths only")

    @classmethod
    def from_dict(cls, space: dict[str, Any]) -> Space:
        keys = SpaceGroup.model_fields
        return cls(
            groups=[SpaceGroup(**{k: g.get(k) for k in keys}) for g in space.get("groups", [])],
            dense_macs=space.get("dense_macs"),
            dense_params=space.get("dense_params"),
            units=[SpaceUnit(name=u["name"], index=u.get("index"), kind=u.get("kind"),
                             groups=list(u.get("groups", ())), macs=u.get("macs"), params=u.get("params"))
                   for u in space.get("units", ())],
        )


class Job(View):
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
    runtime: str | None = Field(None, description="where latency is measured and promised (target.runtime)")
    delivery: Delivery | None = Field(
        None, description="once finalized: each published file's latency measured in the runtime, "
        "beside the search-time figure, and whether the latency budget is met (budget_met)")

    @classmethod
    def from_row(cls, job: JobRow, summary: TrialSummary, delivery: Delivery | None = None) -> Job:
        # the summary, never every trial: the jobs list renders up to 500 of these (one batch a page)
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
            runtime=spec_runtime(job.spec),
            delivery=delivery,
        )


def spec_runtime(spec: dict[str, Any]) -> str | None:
    """The runtime a stored spec names (its default when the spec was stored without one)."""
    target = spec.get("target") if isinstance(spec, dict) else None
    runtime = target.get("runtime") if isinstance(target, dict) else None
    return runtime if isinstance(runtime, str) else TargetSpec.model_fields["runtime"].default


class ArtifactFile(View):
    name: str
    size: int
    sha256: str


class Artifact(View):
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


class ArtifactList(View):
    items: list[Artifact] = Field(description="ordered by rank")


class Upload(View):
    id: str = Field(description="pass as model.weights in a job spec")
    name: str
    size: int
    sha256: str


class Health(View):
    status: str
    ray: str = "not_started"  # not_started | starting | running | down
    ray_error: str | None = None

