"""Keyword-only repository functions over a session: the only SQL the service writes.

Routes and the runner call these inside ``Database.session_scope()``; each returns ORM rows or
plain values, never a half-committed state.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.db.models import ArtifactRow, EventRow, JobRow, TrialRow, UploadRow, utcnow
from service.db.notify import EVENT_JOBS
from service.errors import NotFoundError
from service.states import FINAL_STATES, JobState

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


def job_by_prefix(s: Session, prefix: str) -> JobRow:
    """The one job whose id starts with ``prefix`` (for tools that take a short id)."""
    jobs = s.scalars(sa.select(JobRow).where(JobRow.id.startswith(prefix, autoescape=True)).limit(2)).all()
    if len(jobs) != 1:
        raise NotFoundError(f"{prefix!r} matches {'no job' if not jobs else 'more than one job'}")
    return jobs[0]


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


class JobVersion(NamedTuple):
    """What a job's view depends on that can change: its state, its lease's owner, whether it
    was launched (space and dense stored), and its last event's sequence number (every trial,
    and every change of state, appends an event). Equal versions, equal views."""

    id: str
    state: str
    owner: str | None
    launched: bool
    last_seq: int | None


def job_page(s: Session, *, offset: int, limit: int) -> tuple[list[JobVersion], int]:
    """A page of the jobs list as versions, newest first, and the total: the listing reads the
    stored spec/space columns only of the jobs whose view it has to build."""
    count = s.scalar(_JOB_COUNT) or 0
    rows = s.execute(_JOB_PAGE, {"offset": offset, "limit": limit}).all()
    return [JobVersion(*row) for row in rows], count


def job_version(s: Session, job_id: str) -> JobVersion:
    row = s.execute(_JOB_VERSION, {"job_id": job_id}).first()
    if row is None:
        raise NotFoundError(f"job {job_id!r} not found")
    return JobVersion(*row)


def jobs_by_ids(s: Session, *, job_ids: Sequence[str]) -> dict[str, JobRow]:
    if not job_ids:
        return {}
    return {row.id: row for row in s.scalars(_JOBS_BY_IDS, {"job_ids": list(job_ids)})}


# built once (building a statement costs more Python than SQLite spends running it)
_JOB_COUNT = sa.select(sa.func.count()).select_from(JobRow)
_LAST_SEQ = (  # on the (job_id, seq) index: one probe per job
    sa.select(sa.func.max(EventRow.seq)).where(EventRow.job_id == JobRow.id).correlate(JobRow).scalar_subquery()
)
_VERSION = sa.select(JobRow.id, JobRow.state, JobRow.lease_owner, JobRow.space.is_not(None), _LAST_SEQ)
_JOB_PAGE = (
    _VERSION.order_by(JobRow.created_at.desc(), JobRow.id.desc())
    .offset(sa.bindparam("offset"))
    .limit(sa.bindparam("limit"))
)
_JOB_VERSION = _VERSION.where(JobRow.id == sa.bindparam("job_id"))
_JOBS_BY_IDS = sa.select(JobRow).where(JobRow.id.in_(sa.bindparam("job_ids", expanding=True)))


def set_state(s: Session, *, job: JobRow, state: str, error: str | None = None) -> None:
    """Moves ``job`` to ``state`` (stamping the times) and appends the ``state`` event."""
    job.state = state
    now = utcnow()
    if state == "running" and job.started_at is None:
        job.started_at = now
    if state in FINAL_STATES:
        job.finished_at = now
    if error is not None:
        job.error = error
    add_event(s, job_id=job.id, type="state", data={"state": state, "error": job.error})


# --- job leases -------------------------------------------------------------------------------
# A controller runs a job only while it holds the job's lease (owner id + expiry). Every lease
# change is one conditional UPDATE, so two controllers can never both hold it: on PostgreSQL the
# second UPDATE waits for the first's row lock and re-checks its WHERE; SQLite has one writer.
UNFINISHED_STATES = tuple(s.value for s in JobState if not s.is_finished())


def db_now(s: Session) -> datetime:
    """The clock leases are judged by: PostgreSQL's (replicas on skewed clocks still agree);
    for SQLite, whose controllers all share one machine, this process's."""
    if s.get_bind().dialect.name == "postgresql":
        now = s.scalar(sa.select(sa.func.clock_timestamp()))
        assert isinstance(now, datetime)
        return now
    return utcnow()


def _free_or_stale(now: datetime) -> sa.ColumnElement[bool]:
    return sa.or_(JobRow.lease_owner.is_(None), JobRow.lease_expires_at.is_(None), JobRow.lease_expires_at < now)


def _update_lease(s: Session, where: sa.ColumnElement[bool], **values: Any) -> bool:
    # Core, on the session's connection: the ORM's bulk-update bookkeeping is not needed here
    return s.connection().execute(sa.update(JobRow).where(where).values(**values)).rowcount == 1


# the fence before each of a job's writes: built once, its values bound per call
_RENEW = (
    sa.update(JobRow)
    .where(JobRow.id == sa.bindparam("b_job"), JobRow.lease_owner == sa.bindparam("b_owner"))
    .values(lease_expires_at=sa.bindparam("b_expires"))
)


def take_lease(s: Session, *, job_id: str, owner: str, seconds: float) -> bool:
    """Takes the lease of an unfinished job when it is free, stale, or already ``owner``'s."""
    now = db_now(s)
    where = sa.and_(
        JobRow.id == job_id,
        JobRow.state.in_(UNFINISHED_STATES),
        sa.or_(_free_or_stale(now), JobRow.lease_owner == owner),
    )
    return _update_lease(s, where, lease_owner=owner, lease_expires_at=now + timedelta(seconds=seconds))


def claim_next_job(s: Session, *, owner: str, seconds: float, exclude: Sequence[str] = ()) -> str | None:
    """Claims the oldest unfinished job whose lease is free or stale; None when there is none.

    ``FOR UPDATE SKIP LOCKED`` (PostgreSQL) lets replicas polling at once pass over the rows
    another is claiming instead of queueing behind it; the conditional UPDATE decides.
    """
    now = db_now(s)
    stmt = (
        sa.select(JobRow.id)
        .where(JobRow.state.in_(UNFINISHED_STATES), _free_or_stale(now))
        .order_by(JobRow.created_at, JobRow.id)
        .limit(8)
        .with_for_update(skip_locked=True)
    )
    if exclude:
        stmt = stmt.where(JobRow.id.not_in(list(exclude)))
    for job_id in s.scalars(stmt).all():
        if take_lease(s, job_id=job_id, owner=owner, seconds=seconds):
            return job_id
    return None


def renew_lease(s: Session, *, job_id: str, owner: str, seconds: float) -> bool:
    """Extends ``owner``'s lease; False when another controller holds it now (or nobody).

    Also the fence before each of a job's writes: in the same transaction, the UPDATE's row lock
    (PostgreSQL) or write lock (SQLite) keeps a rival from taking the lease until it commits.
    An expired lease nobody took yet is still ``owner``'s.
    """
    expires = db_now(s) + timedelta(seconds=seconds)
    bound = {"b_job": job_id, "b_owner": owner, "b_expires": expires}
    return s.connection().execute(_RENEW, bound).rowcount == 1


def release_lease(s: Session, *, job_id: str, owner: str) -> bool:
    """Frees ``owner``'s lease (job finished, or the controller stops); False if not held."""
    where = sa.and_(JobRow.id == job_id, JobRow.lease_owner == owner)
    return _update_lease(s, where, lease_owner=None, lease_expires_at=None)


def save_agent_state(s: Session, *, job_id: str, state: dict[str, Any]) -> None:
    """Stores the agent's state for resume (one UPDATE: the job row is not loaded)."""
    s.connection().execute(_SAVE_STATE, {"b_job": job_id, "b_state": state})


# A running job's commits run these many times a second: each built once, values bound per call
# (building a statement and its cache key costs more Python than SQLite spends running it).
_SAVE_STATE = (
    sa.update(JobRow).where(JobRow.id == sa.bindparam("b_job")).values(agent_state=sa.bindparam("b_state"))
)
_TRIAL_EXISTS = sa.select(TrialRow.id).where(
    TrialRow.job_id == sa.bindparam("job_id"), TrialRow.trial_id == sa.bindparam("trial_id")
)
_COUNT_TRIALS = sa.select(sa.func.count()).select_from(TrialRow).where(TrialRow.job_id == sa.bindparam("job_id"))
_FRONT_TRIALS = (
    sa.select(TrialRow)
    .where(TrialRow.job_id == sa.bindparam("job_id"), TrialRow.on_front.is_(True))
    .order_by(TrialRow.trial_id)
)
_LAST_EVENT = sa.select(sa.func.max(EventRow.seq)).where(EventRow.job_id == sa.bindparam("job_id"))
_ADD_EVENTS = sa.insert(EventRow)


def cancel_requested_among(s: Session, *, job_ids: Sequence[str]) -> list[str]:
    if not job_ids:
        return []
    stmt = sa.select(JobRow.id).where(JobRow.id.in_(list(job_ids)), JobRow.cancel_requested.is_(True))
    return list(s.scalars(stmt).all())


# --- trials -----------------------------------------------------------------------------------
def trial_exists(s: Session, *, job_id: str, trial_id: int) -> bool:
    return s.scalar(_TRIAL_EXISTS, {"job_id": job_id, "trial_id": trial_id}) is not None


def add_trial(s: Session, *, job_id: str, trial_id: int, **fields: Any) -> TrialRow:
    row = TrialRow(job_id=job_id, trial_id=trial_id, finished_at=utcnow(), on_front=False, **fields)
    s.add(row)
    s.flush()
    return row


def all_trials(s: Session, *, job_id: str) -> Sequence[TrialRow]:
    return s.scalars(sa.select(TrialRow).where(TrialRow.job_id == job_id).order_by(TrialRow.trial_id)).all()


def first_trials(s: Session, *, job_id: str, n: int) -> list[TrialRow]:
    return list(s.scalars(
        sa.select(TrialRow).where(TrialRow.job_id == job_id).order_by(TrialRow.trial_id).limit(n)
    ))


# The jobs' views read these on every poll: built once (building a statement costs more Python
# than SQLite spends running it), the job ids bound per call.
_per_job = (
    sa.select(
        TrialRow.job_id,
        sa.func.count().label("n"),
        sa.func.max(TrialRow.finished_at).label("last"),
        sa.func.min(TrialRow.trial_id).label("lowest"),
    )
    .where(TrialRow.job_id.in_(sa.bindparam("job_ids", expanding=True)))
    .group_by(TrialRow.job_id)
    .subquery()
)
_FIRST_TRIALS = sa.select(TrialRow, _per_job.c.n, _per_job.c.last).join(
    _per_job, sa.and_(TrialRow.job_id == _per_job.c.job_id, TrialRow.trial_id == _per_job.c.lowest)
)
_ranked_feasible = (
    sa.select(
        TrialRow.id,
        sa.func.row_number()
        .over(
            partition_by=TrialRow.job_id,
            order_by=[TrialRow.quality.desc(), TrialRow.macs.asc(), TrialRow.trial_id.asc()],
        )
        .label("rank"),
    )
    .where(
        TrialRow.job_id.in_(sa.bindparam("job_ids", expanding=True)),
        TrialRow.feasible.is_(True),
        TrialRow.quality.is_not(None),
    )
    .subquery()
)
_BEST_TRIALS = (
    sa.select(TrialRow)
    .join(_ranked_feasible, TrialRow.id == _ranked_feasible.c.id)
    .where(_ranked_feasible.c.rank == 1)
)


@dataclass(frozen=True)
class TrialSummary:
    """What a job's view shows of its trials: the first (the baseline), the best feasible, how
    many, and when the latest finished."""

    first: TrialRow | None = None
    best: TrialRow | None = None
    count: int = 0
    last_finished_at: datetime | None = None


def trial_summaries(s: Session, *, job_ids: Sequence[str]) -> dict[str, TrialSummary]:
    """``TrialSummary`` of each job in two queries, whatever their number (a page of the jobs
    list used to cost four queries per unfinished job). The best is the feasible trial of highest
    quality; fewer MACs, then the lower id, break ties."""
    if not job_ids:
        return {}
    bound = {"job_ids": list(job_ids)}
    firsts = {row.job_id: (row, n, last) for row, n, last in s.execute(_FIRST_TRIALS, bound)}
    best = {row.job_id: row for row in s.scalars(_BEST_TRIALS, bound)}
    summaries = {}
    for job_id in job_ids:
        first, n, last = firsts.get(job_id, (None, 0, None))
        summaries[job_id] = TrialSummary(first, best.get(job_id), n, last)
    return summaries


def count_trials(s: Session, *, job_id: str) -> int:
    return s.scalar(_COUNT_TRIALS, {"job_id": job_id}) or 0


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


def front_trials(s: Session, *, job_id: str) -> Sequence[TrialRow]:
    return s.scalars(_FRONT_TRIALS, {"job_id": job_id}).all()


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
    return add_events(s, job_id=job_id, events=[(type, data)])[0]


def add_events(s: Session, *, job_id: str, events: Sequence[tuple[str, dict[str, Any]]]) -> list[int]:
    """Appends several events in order with one sequence read (a trial's commit writes three)."""
    if not events:
        return []
    first = (s.scalar(_LAST_EVENT, {"job_id": job_id}) or 0) + 1
    now = utcnow()
    rows = [{"job_id": job_id, "seq": first + i, "type": type, "data": data, "created_at": now}
            for i, (type, data) in enumerate(events)]
    s.connection().execute(_ADD_EVENTS, rows)  # Core executemany: no unit of work to flush
    s.info.setdefault(EVENT_JOBS, set()).add(job_id)  # woken after the commit (Database)
    return list(range(first, first + len(events)))


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
