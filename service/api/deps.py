"""Request dependencies: the database, the runner, the settings, and the bearer-token check.

Coroutines although nothing in them waits: FastAPI runs a plain function dependency in a worker
thread, a hop per dependency per request that cost more than the dependencies themselves."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status

from service.config import Settings
from service.db import Database
from service.runner import Runner


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_db(request: Request) -> Database:
    return request.app.state.db


async def get_runner(request: Request) -> Runner:
    return request.app.state.runner


SettingsDep = Annotated[Settings, Depends(get_settings)]
DbDep = Annotated[Database, Depends(get_db)]
RunnerDep = Annotated[Runner, Depends(get_runner)]


async def require_token(request: Request, settings: SettingsDep) -> None:
    """With ``api_token`` set, every /api/v1 call needs ``Authorization: Bearer <token>``."""
    token = settings.api_token
    if token and not token_matches(request.headers.get("authorization", ""), token):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing or wrong bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )


def token_matches(authorization: str, token: str) -> bool:
    """Whether an ``Authorization`` header's value is ``Bearer <token>``."""
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(given.strip().encode(), token.encode())


_ERROR_TEXT = {
    400: "malformed header",
    401: "missing or wrong bearer token",
    404: "unknown id",
    409: "the job is already finished",
    410: "the artifact's files are gone",
    413: "body or upload over the size limit",
    415: "the body is neither JSON nor YAML",
    503: "database unavailable; retry later",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the error codes a route can answer."""
    return {code: {"description": _ERROR_TEXT[code]} for code in codes}
