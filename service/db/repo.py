"""Keyword-only repository functions over a session: the only SQL the service writes.

Routes and the runner call these inside ``Database.session_scope()``; each returns ORM rows or
plain values, never a half-committed state.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.db.models import ArtifactRow, EventRow, JobRow, TrialRow, UploadRow, utcnow
from service.db.notify import EVENT_JOBS
from service.errors import NotFoundError

_TRIAL_SORTS = {
    "trial_id": TrialRow.trial_id,
    "quality": TrialRow.quality,
    "macs": TrialRow.macs,
    "latency_ms": TrialRow.latency_ms,
}


def new_id() -> str:
    return uuid.uuid4().hex


# --- jobs -------------------------------------------------------------------------------------
def create_job(s: Session, *, spec: dict[str, Any], name: str, cost_key: str, trials_total: int) -> JobRow:
    job = JobRow(
        id=new_id(),
        name=name,
        state="queued",
        spec=spec,
        cost_key=cost_key,
        trials_total=trials_total,
        cancel_requested=False,
        created_at=utcnow(),
    )
    s.add(job)
    s.flush()
    return job


def get_job(s: Session, job_id: str, *, for_update: bool = False) -> JobRow:
    stmt = sa.select(JobRow).where(JobRow.id == job_id)
    if for_update:
        stmt = stmt.with_for_update()
    job = s.scalars(stmt).first()
    if job is None:
        raise NotFoundError(f"job {job_id!r} not found")
    return job


def job_state(s: Session, job_id: str) -> str:
    """Just the job's state (one column): for the event streams' end-of-job check."""
    state = s.scalar(sa.select(JobRow.state).where(JobRow.id == job_id))
    if state is None:
        raise NotFoundError(f"job {job_id!r} not found")
    return state


def list_jobs(s: Session, *, offset: int, limit: int) -> tuple[Sequence[JobRow], int]:
    count = s.scalar(sa.select(sa.func.count()).select_from(JobRow)) or 0
    rows = s.scalars(
        sa.select(JobRow).order_by(JobRow.created_at.desc(), JobRow.id.desc()).offset(offset).limit(limit)
    ).all()
    return rows, count


def jobs_in_states(s: Session, *, states: Sequence[str]) -> Sequence[JobRow]:
    return s.scalars(sa.select(JobRow).where(JobRow.state.in_(states)).order_by(JobRow.created_at)).all()


def set_state(s: Session, *, job: JobRow, state: str, error: str | None = None) -> None:
    """Moves ``job`` to ``state`` (stamping the times) and appends the ``state`` event."""
    job.state = state
    now = utcnow()
    if state == "running" and job.started_at is None:
        job.started_at = now
    if state in ("succeeded", "failed", "cancelled"):
        job.finished_at = now
    if error is not None:
        job.error = error
    add_event(s, job_id=job.id, type="state", data={"state": state, "error": job.error})


# --- trials -----------------------------------------------------------------------------------
def trial_exists(s: Session, *, job_id: str, trial_id: int) -> bool:
    stmt = sa.select(TrialRow.id).where(TrialRow.job_id == job_id, TrialRow.trial_id == trial_id)
    return s.scalar(stmt) is not None


def add_trial(s: Session, *, job_id: str, trial_id: int, **fields: Any) -> TrialRow:
    row = TrialRow(job_id=job_id, trial_id=trial_id, finished_at=utcnow(), on_front=False, **fields)
    s.add(row)
    s.flush()
    return row


def all_trials(s: Session, *, job_id: str) -> Sequence[TrialRow]:
    return s.scalars(sa.select(TrialRow).where(TrialRow.job_id == job_id).order_by(TrialRow.trial_id)).all()


def best_feasible_trial(s: Session, *, job_id: str) -> TrialRow | None:
    """Highest quality among feasible trials; fewer MACs, then the lower id, break ties."""
    return s.scalars(
        sa.select(TrialRow)
        .where(TrialRow.job_id == job_id, TrialRow.feasible.is_(True), TrialRow.quality.is_not(None))
        .order_by(TrialRow.quality.desc(), TrialRow.macs.asc(), TrialRow.trial_id.asc())
        .limit(1)
    ).first()


def first_trial(s: Session, *, job_id: str) -> TrialRow | None:
    return s.scalars(
        sa.select(TrialRow).where(TrialRow.job_id == job_id).order_by(TrialRow.trial_id).limit(1)
    ).first()


def count_trials(s: Session, *, job_id: str) -> int:
    return s.scalar(sa.select(sa.func.count()).select_from(TrialRow).where(TrialRow.job_id == job_id)) or 0


def last_trial_time(s: Session, *, job_id: str) -> datetime | None:
    return s.scalar(sa.select(sa.func.max(TrialRow.finished_at)).where(TrialRow.job_id == job_id))


def list_trials(
    s: Session, *, job_id: str, offset: int, limit: int, sort: str = "trial_id", order: str = "asc"
) -> tuple[Sequence[TrialRow], int]:
    col = _TRIAL_SORTS[sort]
    key = col.desc() if order == "desc" else col.asc()
    # NULLs (failed trials) last whatever the order, then trial id as a stable tie-break.
    stmt = (
        sa.select(TrialRow)
        .where(TrialRow.job_id == job_id)
        .order_by(col.is_(None), key, TrialRow.trial_id)
        .offset(offset)
        .limit(limit)
    )
    return s.scalars(stmt).all(), count_trials(s, job_id=job_id)


def get_trial(s: Session, *, job_id: str, trial_id: int) -> TrialRow | None:
    stmt = sa.select(TrialRow).where(TrialRow.job_id == job_id, TrialRow.trial_id == trial_id)
    return s.scalars(stmt).first()


def front_trials(s: Session, *, job_id: str) -> Sequence[TrialRow]:
    stmt = sa.select(TrialRow).where(TrialRow.job_id == job_id, TrialRow.on_front.is_(True))
    return s.scalars(stmt.order_by(TrialRow.trial_id)).all()


def trials_by_ids(s: Session, *, job_id: str, trial_ids: Sequence[int]) -> Sequence[TrialRow]:
    stmt = sa.select(TrialRow).where(TrialRow.job_id == job_id, TrialRow.trial_id.in_(list(trial_ids)))
    return s.scalars(stmt.order_by(TrialRow.trial_id)).all()


def measured_trials(s: Session, *, job_id: str) -> Sequence[TrialRow]:
    """Trials with metrics (the points of a front), by trial id."""
    stmt = sa.select(TrialRow).where(TrialRow.job_id == job_id, TrialRow.metrics.is_not(None))
    return s.scalars(stmt.order_by(TrialRow.trial_id)).all()


def set_front(s: Session, *, job_id: str, trial_ids: Sequence[int]) -> None:
    s.execute(sa.update(TrialRow).where(TrialRow.job_id == job_id).values(on_front=False))
    set_on_front(s, job_id=job_id, trial_ids=trial_ids, on=True)


def set_on_front(s: Session, *, job_id: str, trial_ids: Sequence[int], on: bool) -> None:
    if trial_ids:
        s.execute(
            sa.update(TrialRow)
            .where(TrialRow.job_id == job_id, TrialRow.trial_id.in_(list(trial_ids)))
            .values(on_front=on)
        )


# --- events -----------------------------------------------------------------------------------
def add_event(s: Session, *, job_id: str, type: str, data: dict[str, Any]) -> int:
    """Appends an event with the job's next sequence number (UNIQUE(job_id, seq) guards races)."""
    seq = (s.scalar(sa.select(sa.func.max(EventRow.seq)).where(EventRow.job_id == job_id)) or 0) + 1
    s.add(EventRow(job_id=job_id, seq=seq, type=type, data=data, created_at=utcnow()))
    s.flush()
    s.info.setdefault(EVENT_JOBS, set()).add(job_id)  # woken after the commit (Database)
    return seq


def events_after(s: Session, *, job_id: str, seq: int, limit: int = 500) -> Sequence[EventRow]:
    stmt = (
        sa.select(EventRow)
        .where(EventRow.job_id == job_id, EventRow.seq > seq)
        .order_by(EventRow.seq)
        .limit(limit)
    )
    return s.scalars(stmt).all()


# --- artifacts --------------------------------------------------------------------------------
def replace_artifacts(s: Session, *, job_id: str, items: Sequence[dict[str, Any]]) -> list[ArtifactRow]:
    """Stores a job's artifacts, replacing earlier ones (a resumed finalize writes them anew)."""
    s.execute(sa.delete(ArtifactRow).where(ArtifactRow.job_id == job_id))
    rows = [ArtifactRow(id=new_id(), job_id=job_id, created_at=utcnow(), **item) for item in items]
    s.add_all(rows)
    s.flush()
    return rows


def list_artifacts(s: Session, *, job_id: str) -> Sequence[ArtifactRow]:
    return s.scalars(sa.select(ArtifactRow).where(ArtifactRow.job_id == job_id).order_by(ArtifactRow.rank)).all()


def get_artifact(s: Session, artifact_id: str) -> ArtifactRow:
    row = s.get(ArtifactRow, artifact_id)
    if row is None:
        raise NotFoundError(f"artifact {artifact_id!r} not found")
    return row


# --- uploads ----------------------------------------------------------------------------------
def add_upload(s: Session, *, upload_id: str, name: str, size: int, sha256: str, format: str) -> UploadRow:
    row = UploadRow(id=upload_id, name=name, size=size, sha256=sha256, format=format, created_at=utcnow())
    s.add(row)
    s.flush()
    return row


def get_upload(s: Session, upload_id: str) -> UploadRow | None:
    return s.get(UploadRow, upload_id)
