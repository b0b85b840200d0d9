"""A small synchronous client of the REST API, used by the CLI (and handy in scripts)."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path
from typing import Any

import httpx


class ApiError(RuntimeError):
    """A non-2xx answer; ``detail`` is the server's explanation."""

    def __init__(self, status: int, detail: Any) -> None:
        self.status, self.detail = status, detail
        super().__init__(f"HTTP {status}: {format_detail(detail)}")


def format_detail(detail: Any) -> str:
    if isinstance(detail, list):  # FastAPI validation errors: name the field
        return "; ".join(f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}" for d in detail)
    return str(detail)


def default_server() -> str:
    if os.environ.get("AUTOPRUNE_SERVER"):
        return os.environ["AUTOPRUNE_SERVER"]
    host = os.environ.get("AUTOPRUNE_HOST", "127.0.0.1")
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{host}:{os.environ.get('AUTOPRUNE_PORT', '8000')}"


class Client:
    def __init__(self, server: str | None = None, token: str | None = None, timeout: float = 30.0) -> None:
        self.server = (server or default_server()).rstrip("/")
        token = token if token is not None else os.environ.get("AUTOPRUNE_API_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout)

    def _call(self, method: str, url: str, **kw: Any) -> Any:
        try:
            r = self.http.request(method, url, **kw)
        except httpx.TransportError as exc:
            raise ApiError(0, f"cannot reach {self.server}: {exc}") from None
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            raise ApiError(r.status_code, detail)
        return r.json() if r.headers.get("content-type", "").startswith("application/json") else r.content

    def health(self) -> bool:
        try:
            return self.http.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/api/v1/jobs", json=spec)

    def job(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/api/v1/jobs/{job_id}")

    def jobs(self, offset: int = 0, limit: int = 50) -> dict[str, Any]:
        return self._call("GET", "/api/v1/jobs", params={"offset": offset, "limit": limit})

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._call("POST", f"/api/v1/jobs/{job_id}/cancel")

    def trials(self, job_id: str, **params: Any) -> dict[str, Any]:
        return self._call("GET", f"/api/v1/jobs/{job_id}/trials", params=params)

    def artifacts(self, job_id: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/api/v1/jobs/{job_id}/artifacts")["items"]

    def upload(self, path: Path) -> dict[str, Any]:
        with path.open("rb") as fh:
            return self._call("POST", "/api/v1/uploads", files={"file": (path.name, fh)})

    def pull(self, job_id: str, rank: int, out_dir: Path) -> tuple[Path, dict[str, Any]]:
        """Downloads artifact ``rank`` into ``out_dir`` and checks every file's sha256."""
        items = self.artifacts(job_id)
        match = [a for a in items if a["rank"] == rank]
        if not match:
            ranks = ", ".join(str(a["rank"]) for a in items) or "none"
            raise ApiError(404, f"job {job_id} has no artifact of rank {rank} (ranks: {ranks})")
        art = match[0]
        data = self._call("GET", art["download_url"])
        target = out_dir / f"{job_id[:8]}-rank{rank}"
        target.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for f in art["files"]:
                name = Path(f["name"]).name  # the server's names, flattened: never a path outside
                blob = zf.read(f["name"])
                if hashlib.sha256(blob).hexdigest() != f["sha256"]:
                    raise ApiError(0, f"checksum mismatch for {f['name']}")
                (target / name).write_bytes(blob)
        return target, art
