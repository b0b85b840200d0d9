"""Routes for jobs: submit, list, get, cancel, trials, Pareto front, Server-Sent Events."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse

from service.api.deps import DbDep, RunnerDep, SettingsDep, errors
from service.api.job_views import JobViews
from service.api.schemas import Job, Page, ParetoFront, ParetoPoint, Trial
from service.api.spec_body import job_spec_body, request_body_openapi
from service.config import Settings
from service.db import Database, repo
from service.errors import ConflictError, NotFoundError
from service.front import front_rows
from service.states import FINAL_STATES
from workers.spec import JobSpec

router = APIRouter(tags=["jobs"])
#: how often an event stream re-reads the database with no wake-up (writes of other processes)
FALLBACK_POLL_S = 2.0
KEEPALIVE_S = 15.0


def _invalid(loc: list[str], msg: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ["body", *loc], "msg": msg, "type": "value_error"}])


def check_paths(spec: JobSpec, settings: Settings, db: Database) -> None:
    """Dataset paths (and weights given as paths) must lie inside the configured data roots."""
    if spec.dataset.path is not None and not settings.is_confined(spec.dataset.path):
        roots = ", ".join(map(str, settings.data_roots)) or "none configured (AUTOPRUNE_DATA_ROOTS)"
        raise _invalid(["dataset", "path"], f"path is outside the allowed data roots: {roots}")
    weights = spec.model.weights
    if weights is not None:
        with db.session_scope() as s:
            known = repo.get_upload(s, weights) is not None
        if not known and not settings.is_confined(weights):
            raise _invalid(["model", "weights"], "not an upload id, and not a path inside the data roots")


#: views of jobs; those of finished jobs (most of a listing) kept as JSON bytes
views = JobViews()


def _json(body: bytes, status_code: int = status.HTTP_200_OK) -> Response:
    # the bytes are already ``Job`` / ``Page[Job]`` JSON: returned as they are (the routes'
    # response_model still documents them in /openapi.json)
    return Response(body, status_code=status_code, media_type="application/json")


def _job(db: Database, job_id: str) -> bytes:
    try:
        return views.one(db, job_id)
    except NotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None


@router.post(
    "/jobs",
    status_code=status.HTTP_201_CREATED,
    response_model=Job,
    responses=errors(413, 415),
    openapi_extra=request_body_openapi(),
)
def submit_job(
    spec: Annotated[JobSpec, Depends(job_spec_body)], db: DbDep, runner: RunnerDep, settings: SettingsDep
) -> Response:
    """Submits a job spec, as JSON or YAML (``Content-Type: application/yaml``)."""
    check_paths(spec, settings, db)
    return _json(_job(db, runner.submit(spec)), status.HTTP_201_CREATED)


# The two most read routes are coroutines: a finished job's view, and any answer unchanged since
# this process last wrote (service/api/job_views.py), come from memory on the event loop; only
# what needs the database goes to a worker thread.
@router.get("/jobs", response_model=Page[Job])
async def list_jobs(
    db: DbDep,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    body = views.recent_page(db, offset=offset, limit=limit, refresh=True)
    return _json(body if body is not None else await run_in_threadpool(views.page, db, offset=offset, limit=limit))


@router.get("/jobs/{job_id}", response_model=Job, responses=errors(404))
async def get_job(job_id: str, db: DbDep) -> Response:
    body = views.recent_one(db, job_id, refresh=True)
    return _json(body if body is not None else await run_in_threadpool(_job, db, job_id))


@router.post("/jobs/{job_id}/cancel", response_model=Job, responses=errors(404, 409))
def cancel_job(job_id: str, db: DbDep, runner: RunnerDep) -> Response:
    try:
        runner.cancel(job_id)
    except NotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except ConflictError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    return _json(_job(db, job_id))


def _require_job(s: Any, job_id: str) -> Any:
    try:
        return repo.get_job(s, job_id)
    except NotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None


@router.get("/jobs/{job_id}/trials", response_model=Page[Trial], responses=errors(404))
def list_trials(
    job_id: str,
    db: DbDep,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    sort: Literal["trial_id", "quality", "macs", "latency_ms"] = "trial_id",
    order: Literal["asc", "desc"] = "asc",
) -> Page[Trial]:
    with db.session_scope() as s:
        _require_job(s, job_id)
        rows, count = repo.list_trials(s, job_id=job_id, offset=offset, limit=limit, sort=sort, order=order)
        return Page[Trial](items=[Trial.from_row(t) for t in rows], count=count, offset=offset, limit=limit)


@router.get("/jobs/{job_id}/pareto", response_model=ParetoFront, responses=errors(404))
def pareto(
    job_id: str, db: DbDep, cost: Literal["latency_ms", "macs", "params"] | None = None
) -> ParetoFront:
    """The constraint-aware front (quality up, ``cost`` down), ordered by cost ascending.

    On the job's own cost axis it is read from the flags the runner keeps as trials arrive.
    """
    with db.session_scope() as s:
        job = _require_job(s, job_id)
        key = cost or job.cost_key
        rows = front_rows(s, job_id=job_id, job_cost_key=job.cost_key, cost_key=key)
        return ParetoFront(cost=key, items=[ParetoPoint.from_row(t) for t in rows])


def _exists(db: Database, job_id: str) -> None:
    with db.session_scope() as s:
        _require_job(s, job_id)


@router.get(
    "/jobs/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {"description": "Server-Sent Events", "content": {"text/event-stream": {}}},
        **errors(400, 404),
    },
)
async def events(
    job_id: str,
    request: Request,
    db: DbDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Server-Sent Events: replays stored events after ``Last-Event-ID``, then follows the job."""
    await run_in_threadpool(_exists, db, job_id)
    try:
        after = int(last_event_id) if last_event_id else 0
    except ValueError:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "Last-Event-ID must be an integer") from None

    def poll(seq: int) -> tuple[list[tuple[int, str, dict[str, Any]]], bool]:
        with db.session_scope() as s:
            # State first: a final state read here was committed with its ``state`` event, so the
            # events read after it include that event (read the other way round, a job finishing
            # between the two reads ended the stream without its final event).
            done = repo.job_state(s, job_id) in FINAL_STATES
            rows = repo.events_after(s, job_id=job_id, seq=seq)
            return [(e.seq, e.type, e.data) for e in rows], done

    async def stream() -> AsyncIterator[str]:
        # Woken by this process's commits of the job's events; the events themselves are always
        # read from the database (resume from Last-Event-ID; replicas' writes, at the slow poll).
        seq = after
        quiet = 0.0
        yield "retry: 2000\n\n"
        with db.events.subscribe(job_id) as woken:
            while True:
                woken.clear()  # before the read: a commit after it sets the flag again
                batch, done = await run_in_threadpool(poll, seq)
                for seq, kind, data in batch:
                    yield f"id: {seq}\nevent: {kind}\ndata: {json.dumps(data, default=str)}\n\n"
                if done and not batch:
                    return
                if batch:
                    quiet = 0.0
                    continue
                if await request.is_disconnected():
                    return
                waited = asyncio.get_running_loop().time()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), timeout=FALLBACK_POLL_S)
                quiet += asyncio.get_running_loop().time() - waited
                if quiet >= KEEPALIVE_S:  # a comment keeps proxies from closing a quiet stream
                    quiet = 0.0
                    yield ": keep-alive\n\n"

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)
