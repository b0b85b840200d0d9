"""``GET /jobs`` and ``GET /jobs/{id}`` answered before FastAPI's stack, as plain ASGI.

The two most read routes answer JSON bytes the job views already hold
(:mod:`service.api.job_views`), so what a read costs is FastAPI's path: its middleware, the
router's matching, dependency solving and the response object, several times the answer itself
(``bench/api_load.py --reads 20 --profile``; docs/benchmarks.md). :class:`FastReads` answers a
plain request for them directly — the bearer token checked as ``require_token`` checks it — and
hands everything else to the app unchanged: another route or method, a query it would have to
validate (anything but ``offset``/``limit`` as plain in-range integers), a body, a missing or
wrong token, an app with dependency overrides, other middleware or OpenTelemetry on, and any
error while reading (an unknown id, the database down), so errors keep FastAPI's status codes
and shapes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi.concurrency import run_in_threadpool
from starlette.types import Scope, Send

from service.api.deps import token_matches
from service.api.job_views import JobViews
from service.db import Database

if TYPE_CHECKING:
    from fastapi import FastAPI

#: the bounds the routes' ``Query`` declarations put on the list's parameters
OFFSET_MAX = 2**31 - 1
LIMIT_MAX = 500
LIMIT_DEFAULT = 50


class FastReads:
    """Answers the two read routes of ``app`` under ``prefix`` from ``views``; see the module."""

    def __init__(self, app: FastAPI, views: JobViews, *, prefix: str) -> None:
        self.app, self.views = app, views
        self.list_path, self.job_prefix = f"{prefix}/jobs", f"{prefix}/jobs/"
        self.middleware = len(app.user_middleware)  # what create_app installed; more: step aside
        self.answered = 0  # requests answered here (tests, and the curious)

    async def __call__(self, scope: Scope, send: Send) -> bool:
        """Sends the answer and returns True, or sends nothing and returns False (the app answers)."""
        db = self._db(scope)
        if db is None:
            return False
        path = scope["path"]
        try:
            if path == self.list_path:
                page = _page(scope["query_string"])
                if page is None:
                    return False
                body = self.views.recent_page(db, offset=page[0], limit=page[1], refresh=True)
                if body is None:
                    body = await run_in_threadpool(self.views.page, db, offset=page[0], limit=page[1])
            elif path.startswith(self.job_prefix) and "/" not in path[len(self.job_prefix):]:
                job_id = path[len(self.job_prefix):]
                if not job_id or scope["query_string"]:
                    return False
                body = self.views.recent_one(db, job_id, refresh=True)
                if body is None:
                    body = await run_in_threadpool(self.views.one, db, job_id)
            else:
                return False
        except Exception:  # noqa: BLE001 - the app reads again and answers the error its own way
            return False
        headers = [(b"content-length", b"%d" % len(body)), (b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self.answered += 1
        return True

    def _db(self, scope: Scope) -> Database | None:
        """The app's database when this request is one to answer here, else None."""
        app = self.app
        if scope["method"] != "GET" or scope.get("root_path") or app.root_path:
            return None
        if app.dependency_overrides or len(app.user_middleware) != self.middleware or _telemetry_on(app):
            return None
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization" and authorization is None:  # the first, as Starlette reads it
                authorization = value.decode("latin-1")
            elif name in (b"content-length", b"transfer-encoding") and value != b"0":
                return None  # a GET with a body: the size limit and FastAPI decide
        token = app.state.settings.api_token
        if token and not token_matches(authorization or "", token):
            return None
        db = getattr(app.state, "db", None)
        return db if isinstance(db, Database) else None


def _page(query: bytes) -> tuple[int, int] | None:
    """``offset``, ``limit`` of a list query made only of them as plain in-range integers."""
    values = {"offset": 0, "limit": LIMIT_DEFAULT}
    seen = set()
    for part in query.split(b"&") if query else ():
        key, eq, value = part.partition(b"=")
        name = key.decode("latin-1")
        if not eq or name not in values or name in seen or not value.isdigit() or len(value) > 10:
            return None
        seen.add(name)
        values[name] = int(value)
    offset, limit = values["offset"], values["limit"]
    return (offset, limit) if offset <= OFFSET_MAX and 1 <= limit <= LIMIT_MAX else None


def _telemetry_on(app: FastAPI) -> bool:
    """FastAPI's native OpenTelemetry would record these requests: let it."""
    native = getattr(app, "_native_telemetry", None)
    return bool(native is not None and native.enabled())
