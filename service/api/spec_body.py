"""The ``POST /jobs`` body: a job spec as JSON or YAML, parsed once, on the server.

JSON text is YAML too, so the dashboard sends whatever the user typed as ``application/yaml``;
the CLI sends JSON. YAML is read with ``yaml.safe_load`` (no Python objects), and a document
whose aliases expand past :data:`MAX_NODES` values is refused before it is validated or stored.
Errors are 422s in FastAPI's shape; a syntax error names its line and column.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from fastapi import HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from workers.spec import KIND_ERROR, JobSpec

JSON_TYPES = ("application/json",)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
MAX_NODES = 100_000  # a job spec has a few dozen values; anchors must not multiply them


def _invalid(msg: str, kind: str, **ctx: Any) -> RequestValidationError:
    error: dict[str, Any] = {"loc": ["body"], "msg": msg, "type": kind}
    if ctx:
        error["ctx"] = ctx
    return RequestValidationError([error])


def _expanded_size(obj: Any, memo: dict[int, int]) -> int:
    """Values in ``obj`` once aliases are expanded (shared sub-trees counted at every use)."""
    key = id(obj)
    if key in memo:
        return memo[key]
    memo[key] = 1  # guards a recursive alias (``&a [*a]``): counted once while in progress
    children = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, list) else ()
    size = 1 + sum(_expanded_size(c, memo) for c in children)
    memo[key] = size
    return size


def parse_yaml(text: str) -> Any:
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
        problem = exc.problem or exc.context or "invalid YAML"
        where = f" at line {line}, column {column}" if line is not None else ""
        raise _invalid(f"YAML{where}: {problem}", "yaml_invalid", line=line, column=column) from None
    except yaml.YAMLError as exc:
        raise _invalid(f"YAML: {exc}", "yaml_invalid") from None
    except RecursionError:
        raise _invalid("YAML: nested too deeply", "yaml_invalid") from None
    try:
        too_large = _expanded_size(data, {}) > MAX_NODES
    except RecursionError:
        raise _invalid("YAML: nested too deeply", "yaml_invalid") from None
    if too_large:
        raise _invalid(f"YAML: aliases expand to more than {MAX_NODES} values", "yaml_too_large")
    return data


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except RecursionError:
        raise _invalid("JSON: nested too deeply", "json_invalid") from None
    except (ValueError, UnicodeDecodeError) as exc:
        line, column = getattr(exc, "lineno", None), getattr(exc, "colno", None)
        where = f" at line {line}, column {column}" if line is not None else ""
        msg = getattr(exc, "msg", str(exc))
        raise _invalid(f"JSON{where}: {msg}", "json_invalid", line=line, column=column) from None


def validate_spec(data: Any) -> JobSpec:
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise RequestValidationError([{**e, "loc": ("body", *_loc(e))} for e in errors]) from None


def _loc(error: Any) -> tuple[Any, ...]:
    """Where an error points; an option the model kind refuses names its own field."""
    if error["type"] == KIND_ERROR and not error["loc"]:
        return tuple(str(error["ctx"]["field"]).split("."))
    return tuple(error["loc"])


async def job_spec_body(request: Request) -> JobSpec:
    """A FastAPI dependency: the request body as a validated :class:`JobSpec`."""
    media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    raw = await request.body()  # the body-limit middleware has already capped its size
    if media in YAML_TYPES:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _invalid("YAML: the body is not UTF-8 text", "yaml_invalid") from None
        return validate_spec(parse_yaml(text))
    if media in JSON_TYPES or media.endswith("+json") or not media:
        return validate_spec(parse_json(raw))
    raise HTTPException(
        status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
        f"send the job spec as application/json or application/yaml, not {media}",
    )


def request_body_openapi() -> dict[str, Any]:
    """The request body as OpenAPI declares it: one JobSpec schema (a component: Job embeds it)."""
    ref = {"$ref": "#/components/schemas/JobSpec"}
    content = {t: {"schema": ref} for t in ("application/json", "application/yaml")}
    return {"requestBody": {"required": True, "content": content}}
