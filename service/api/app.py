"""The FastAPI application: ``create_app(settings=None, launcher=None)``.

On start-up it migrates the database (Alembic), then starts the job runner, which resumes the
jobs a previous controller left unfinished. The dashboard, when installed, is served at ``/``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from search_spaces.registry import allow_plugins
from service.api import files, jobs
from service.api.deps import errors, require_token
from service.api.fast_reads import FastReads
from service.api.middleware import BodyLimitMiddleware
from service.api.schemas import Health, finite
from service.config import Settings
from service.db import Database, upgrade
from service.errors import StorageError
from service.launcher import Launcher
from service.runner import Runner
from workers.ray_driver import ray_state, shutdown_shared

API_PREFIX = "/api/v1"
log = logging.getLogger("autoprune.api")


class App(FastAPI):
    """FastAPI, with the two most read routes answered first from remembered JSON
    (:mod:`service.api.fast_reads`) when nothing in the request needs FastAPI."""

    fast_reads: FastReads | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.fast_reads is not None and await self.fast_reads(scope, send):
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None, launcher: Launcher | None = None) -> FastAPI:
    """Builds the app; ``launcher`` replaces the real workers (tests inject a small one)."""
    settings = settings or Settings()
    # every JobSpec this process validates (requests, resumed jobs) checks plugins against it
    allow_plugins(settings.plugins)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.ensure_dirs()
        upgrade(settings.db_url)
        db = Database(settings.db_url)
        runner = Runner(db, settings, launcher)
        app.state.db, app.state.runner = db, runner
        runner.start()
        try:
            yield
        finally:
            runner.stop()
            shutdown_shared()  # the controller's Ray, if a job started it
            db.dispose()

    app = App(
        title="autoprune",
        version="0.1.0",
        description="Pruning-policy search: submit a job, follow its trials and front, pull artifacts.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    api = APIRouter(prefix=API_PREFIX, dependencies=[Depends(require_token)], responses=errors(401, 503))
    api.include_router(jobs.router)
    api.include_router(files.router)
    app.include_router(api)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's shape, but JSON-safe: a NaN the client sent is echoed back as null, not a 500.
        return JSONResponse(status_code=422, content={"detail": finite(jsonable_encoder(exc.errors()))})

    @app.exception_handler(StorageError)
    async def _storage(_request: Request, exc: StorageError) -> JSONResponse:
        if not exc.transient:  # a bug (bad SQL, schema out of date): retrying will not help
            log.error("storage error: %s", exc)
            return JSONResponse(status_code=500, content={"detail": f"database error: {exc}"})
        # The database is down or locked: say so and let the client retry; nothing was changed.
        log.warning("storage unavailable: %s", exc)
        return JSONResponse(
            status_code=503, content={"detail": f"database unavailable: {exc}"}, headers={"Retry-After": "5"}
        )

    @app.get("/healthz", tags=["health"], response_model=Health, response_model_exclude_none=True)
    def healthz() -> Health:
        # "ok" means the API answers; Ray's state is reported beside it, never instead of it
        return Health(status="ok", **ray_state())

    try:
        from service.dashboard import router as dashboard_router
    except ImportError as exc:  # the dashboard is optional: the API works without it
        log.info("dashboard not available: %s", exc)
    else:
        app.include_router(dashboard_router)

    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        upload_bytes=settings.max_upload_bytes,
        upload_prefix=f"{API_PREFIX}/uploads",
    )
    app.fast_reads = FastReads(app, jobs.views, prefix=API_PREFIX)  # after the middleware it counts
    return app

