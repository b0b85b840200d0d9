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


class DeliveredArtifact(View):
    """One artifact's latency promise: its published file measured in the job's runtime."""

    rank: int
    role: str | None = None
    budget_met: bool | None = Field(None, description="null when the budget has no latency term")
    budget_excess: float | None = Field(None, description="delivered / budget − 1 (the worse latency term)")
    searched_latency_ratio: float | None = None
    delivered_latency_ratio: float | None = None
    delivered_latency_ms: float | None = None
    tightened: int | None = Field(None, description="narrower policies tried before the one shipped")
    latency_to_best: float | None = Field(
        None, description="its published file's latency as a share of the best found's, the job's "
        "published files timed side by side in one run (null without baselines beside the best)")


class Delivery(View):
    """What a finalized job delivered against its latency budget, and in which runtime."""

    runtime: str | None = Field(description="where the delivered files were measured (target.runtime)")
    runtime_title: str | None = None
    budget_met: bool | None = Field(
        description="every ranked artifact's published file within the latency budget (the "
        "baselines beside them have their own); null when the budget has no latency term (or "
        "nothing was delivered)")
    budget_excess: float | None = Field(description="the worst ranked artifact's delivered / budget − 1")
    note: str | None = Field(description="a plain sentence when the budget is missed")
    artifacts: list[DeliveredArtifact]

    @classmethod
    def of(cls, runtime: str | None, artifacts: list[tuple[int, dict[str, Any]]]) -> Delivery:
        """From the job's spec runtime and its artifacts' (rank, metrics), in rank order."""
        items = [
            DeliveredArtifact(rank=rank, **{k: finite(m.get(k)) for k in DeliveredArtifact.model_fields if k != "rank"})
            for rank, m in artifacts
        ]
        runtime = next((m["runtime"] for _, m in artifacts if m.get("runtime")), runtime)
        title = next((m["runtime_title"] for _, m in artifacts if m.get("runtime_title")), None)
        # the verdict is about what the search delivered: the baselines beside it (uniform-fill,
        # quantize-only, depth-only...) are references, their own budget_met shown per artifact
        ranked = [a for a in items if a.role is None] or items
        verdicts = [a.budget_met for a in ranked if a.budget_met is not None]
        met = all(verdicts) if verdicts else None
        excesses = [a.budget_excess for a in ranked if a.budget_excess is not None]
        excess = max(excesses) if excesses else None
        return cls(runtime=runtime, runtime_title=title, budget_met=met, budget_excess=excess,
                   note=over_budget_note(runtime, ranked) if met is False else None, artifacts=items)


def over_budget_note(runtime: str | None, items: list[DeliveredArtifact]) -> str:
    """"over budget by 12.3 % in onnxruntime (rank 1: …)": the CLI and the dashboard say this."""
    missed = [a for a in items if a.budget_met is False]
    worst = max((a.budget_excess or 0.0) for a in missed)
    parts = []
    for a in missed:
        who = f"rank {a.rank}" + (f" ({a.role})" if a.role else "")
        ratio = f", {a.delivered_latency_ratio:.3f} of dense" if a.delivered_latency_ratio is not None else ""
        parts.append(f"{who} +{100 * (a.budget_excess or 0.0):.1f} %{ratio}")
    return f"over budget by {100 * worst:.1f} % in {runtime or 'its runtime'} ({'; '.join(parts)})"
