"""Rows → the JSON shapes of the REST contract (Job, Trial, Artifact); shared by API and runner."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from service.db import repo
from service.db.models import ArtifactRow, JobRow, TrialRow

FINAL_STATES = ("succeeded", "failed", "cancelled")


def aware(t: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything is stored in UTC."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


def iso(t: datetime | None) -> str | None:
    return None if t is None else aware(t).isoformat()


def finite(x: Any) -> Any:
    """JSON has no NaN/inf: they become null."""
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [finite(v) for v in x]
    return x


def trial_view(row: TrialRow) -> dict[str, Any]:
    return finite(
        {
            "trial_id": row.trial_id,
            "state": row.state,
            "policy": row.policy,
            "kept": row.kept,
            "metrics": row.metrics,
            "feasible": bool(row.feasible),
            "error": row.error,
            "node": row.node,
            "info": row.info or {},
            "cached": bool(row.cached),
            "controller": row.controller,
            "finished_at": iso(row.finished_at),
        }
    )


def space_view(space: dict[str, Any] | None) -> dict[str, Any] | None:
    if space is None:
        return None
    keys = ("name", "index", "kind", "channels", "in_channels", "kernel", "stride", "macs", "params")
    return {
        "groups": [{k: g.get(k) for k in keys} for g in space.get("groups", [])],
        "dense_macs": space.get("dense_macs"),
        "dense_params": space.get("dense_params"),
    }


def progress_view(s: Session, job: JobRow, done: int | None = None) -> dict[str, Any]:
    done = repo.count_trials(s, job_id=job.id) if done is None else done
    eta: float | None = None
    if job.state == "running" and job.started_at is not None and 0 < done < job.trials_total:
        last = repo.last_trial_time(s, job_id=job.id)
        if last is not None:
            elapsed = max((aware(last) - aware(job.started_at)).total_seconds(), 0.0)
            eta = elapsed / done * (job.trials_total - done)
    return {"trials_done": done, "trials_total": job.trials_total, "eta_seconds": eta}


def job_view(s: Session, job: JobRow) -> dict[str, Any]:
    # a few indexed queries, never every trial: the jobs list renders up to 500 of these
    first = repo.first_trial(s, job_id=job.id)  # every agent asks the baseline first
    baseline = first if first is not None and (first.info or {}).get("role") == "baseline" else None
    best = repo.best_feasible_trial(s, job_id=job.id)
    return finite(
        {
            "id": job.id,
            "name": job.name,
            "state": job.state,
            "spec": job.spec,
            "created_at": iso(job.created_at),
            "started_at": iso(job.started_at),
            "finished_at": iso(job.finished_at),
            "progress": progress_view(s, job),
            "budget": job.spec.get("budget", {}),
            "dense": job.dense,
            "baseline": trial_view(baseline) if baseline else None,
            "best": trial_view(best) if best else None,
            "error": job.error,
            "space": space_view(job.space),
            "cost_key": job.cost_key,
            "controller": job.lease_owner,  # the controller running it now (None when none does)
        }
    )


def artifact_view(row: ArtifactRow) -> dict[str, Any]:
    return finite(
        {
            "id": row.id,
            "rank": row.rank,
            "trial_id": row.trial_id,
            "files": row.files,
            "metrics": row.metrics,
            "download_url": f"/api/v1/artifacts/{row.id}/download",
        }
    )
