"""Routes for jobs: submit, list, get, cancel, trials, Pareto front, Server-Sent Events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse

from agents.pareto import Point, pareto_front
from service.api.deps import DbDep, RunnerDep, SettingsDep, errors
from service.config import Settings
from service.db import Database, repo
from service.errors import ConflictError, NotFoundError
from service.views import FINAL_STATES, job_view, trial_view
from workers.spec import JobSpec

router = APIRouter(tags=["jobs"])


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


def _job(db: Database, job_id: str) -> dict[str, Any]:
    with db.session_scope() as s:
        try:
            return job_view(s, repo.get_job(s, job_id))
        except NotFoundError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None


@router.post("/jobs", status_code=status.HTTP_201_CREATED, responses=errors(413))
def submit_job(spec: JobSpec, db: DbDep, runner: RunnerDep, settings: SettingsDep) -> dict[str, Any]:
    check_paths(spec, settings, db)
    return _job(db, runner.submit(spec))


@router.get("/jobs")
def list_jobs(
    db: DbDep,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    with db.session_scope() as s:
        rows, count = repo.list_jobs(s, offset=offset, limit=limit)
        return {"items": [job_view(s, j) for j in rows], "count": count, "offset": offset, "limit": limit}


@router.get("/jobs/{job_id}", responses=errors(404))
def get_job(job_id: str, db: DbDep) -> dict[str, Any]:
    return _job(db, job_id)


@router.post("/jobs/{job_id}/cancel", responses=errors(404, 409))
def cancel_job(job_id: str, db: DbDep, runner: RunnerDep) -> dict[str, Any]:
    try:
        runner.cancel(job_id)
    except NotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except ConflictError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    return _job(db, job_id)


@router.get("/jobs/{job_id}/trials", responses=errors(404))
def list_trials(
    job_id: str,
    db: DbDep,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    sort: Literal["trial_id", "quality", "macs", "latency_ms"] = "trial_id",
    order: Literal["asc", "desc"] = "asc",
) -> dict[str, Any]:
    _job(db, job_id)
    with db.session_scope() as s:
        rows, count = repo.list_trials(s, job_id=job_id, offset=offset, limit=limit, sort=sort, order=order)
        return {"items": [trial_view(t) for t in rows], "count": count}


@router.get("/jobs/{job_id}/pareto", responses=errors(404))
def pareto(
    job_id: str, db: DbDep, cost: Literal["latency_ms", "macs", "params"] | None = None
) -> dict[str, Any]:
    """The constraint-aware front (quality up, ``cost`` down), ordered by cost ascending."""
    job = _job(db, job_id)
    key = cost or job["cost_key"]
    with db.session_scope() as s:
        rows = [t for t in repo.all_trials(s, job_id=job_id) if t.metrics is not None]
        points = []
        for t in rows:
            c = (t.metrics or {}).get(key)
            points.append(Point(float(t.quality or 0.0), float(c) if c is not None else float("inf"), float(t.violation or 0.0)))
        return {"cost": key, "items": [trial_view(rows[i]) for i in pareto_front(points)]}


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
    await run_in_threadpool(_job, db, job_id)
    try:
        after = int(last_event_id) if last_event_id else 0
    except ValueError:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "Last-Event-ID must be an integer") from None

    def poll(seq: int) -> tuple[list[tuple[int, str, dict[str, Any]]], bool]:
        with db.session_scope() as s:
            rows = repo.events_after(s, job_id=job_id, seq=seq)
            done = repo.get_job(s, job_id).state in FINAL_STATES
            return [(e.seq, e.type, e.data) for e in rows], done

    async def stream() -> AsyncIterator[str]:
        seq = after
        idle = 0.0
        yield "retry: 2000\n\n"
        while True:
            batch, done = await run_in_threadpool(poll, seq)
            for seq, kind, data in batch:
                yield f"id: {seq}\nevent: {kind}\ndata: {json.dumps(data, default=str)}\n\n"
            if done and not batch:
                return
            if batch:
                idle = 0.0
                continue
            if await request.is_disconnected():
                return
            await asyncio.sleep(0.25)
            idle += 0.25
            if idle >= 15.0:  # a comment keeps proxies from closing a quiet stream
                idle = 0.0
                yield ": keep-alive\n\n"

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)
