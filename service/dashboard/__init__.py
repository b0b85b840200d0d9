"""The web dashboard: one static page (plain JS, no build step) talking to the REST API.

``router`` serves the page at ``/`` and its files at ``/static/...``. plotly.js comes from the
installed ``plotly`` Python package's bundled copy, so the dashboard works offline (no CDN).
These routes are deliberately open: they hold no data; every data call the page makes goes to
``/api/v1`` with the bearer token the user typed once (kept in the browser's localStorage).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

__all__ = ["STATIC_DIR", "plotly_js_path", "router"]

#: The page's own files (index.html, app.js, style.css).
STATIC_DIR = Path(__file__).resolve().parent / "static"

_MEDIA = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}
# The page's files change with the code; plotly.js only with the package version.
_NO_CACHE = {"Cache-Control": "no-cache"}
_LONG_CACHE = {"Cache-Control": "public, max-age=86400"}

router = APIRouter(tags=["dashboard"])


@lru_cache(maxsize=1)
def plotly_js_path() -> Path:
    """The minified plotly.js bundled in the ``plotly`` package (raises if the file is missing)."""
    path = Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))
    if not path.is_file():
        raise FileNotFoundError(f"plotly.min.js not found in the plotly package at {path}")
    return path


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    """The single page; the hash (``#/jobs/<id>``) picks the view client-side."""
    return FileResponse(STATIC_DIR / "index.html", media_type=_MEDIA[".html"], headers=_NO_CACHE)


@router.get("/static/plotly.min.js", include_in_schema=False)
def plotly_js() -> FileResponse:
    return FileResponse(plotly_js_path(), media_type=_MEDIA[".js"], headers=_LONG_CACHE)


@router.get("/static/{name}", include_in_schema=False)
def static_file(name: str) -> FileResponse:
    """One of the page's own files; names are flat, so no path can leave ``STATIC_DIR``."""
    path = (STATIC_DIR / name).resolve()
    if path.parent != STATIC_DIR or not path.is_file() or path.suffix not in _MEDIA:
        raise HTTPException(status_code=404, detail=f"no dashboard file {name!r}")
    return FileResponse(path, media_type=_MEDIA[path.suffix], headers=_NO_CACHE)
