"""Routes for files: artifact listing and zip download, weight uploads."""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, BinaryIO

from fastapi import APIRouter, File, HTTPException, UploadFile, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse

from search_spaces.paths import inside
from service.api.deps import DbDep, SettingsDep, errors
from service.api.schemas import Artifact, ArtifactList, Upload
from service.db import repo
from service.errors import NotFoundError

router = APIRouter(tags=["files"])
_CHUNK = 1 << 20


@router.get("/jobs/{job_id}/artifacts", response_model=ArtifactList, responses=errors(404, 410))
def list_artifacts(job_id: str, db: DbDep) -> ArtifactList:
    with db.session_scope() as s:
        try:
            repo.get_job(s, job_id)
        except NotFoundError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
        return ArtifactList(items=[Artifact.from_row(a) for a in repo.list_artifacts(s, job_id=job_id)])


def _zip(directory: Path, names: list[str]) -> BinaryIO:
    spool: BinaryIO = tempfile.SpooledTemporaryFile(max_size=64 << 20)  # type: ignore[assignment]  # noqa: SIM115 - returned open
    with zipfile.ZipFile(spool, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in names:
            path = inside(directory / name, [directory])
            if path is None or path == directory or not path.is_file():
                raise HTTPException(status.HTTP_410_GONE, f"artifact file {name!r} is missing")
            zf.write(path, arcname=name)
    spool.seek(0)
    return spool


def _chunks(fh: BinaryIO) -> Iterator[bytes]:
    try:
        while chunk := fh.read(_CHUNK):
            yield chunk
    finally:
        fh.close()


@router.get(
    "/artifacts/{artifact_id}/download",
    response_class=StreamingResponse,
    responses={200: {"description": "the bundle as a zip", "content": {"application/zip": {}}}, **errors(404, 410)},
)
def download(artifact_id: str, db: DbDep, settings: SettingsDep) -> StreamingResponse:
    with db.session_scope() as s:
        try:
            row = repo.get_artifact(s, artifact_id)
        except NotFoundError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
        directory, files, rank, job_id = Path(row.dir).resolve(), list(row.files), row.rank, row.job_id
    assert settings.artifacts_dir is not None
    if settings.artifacts_dir not in directory.parents:
        raise HTTPException(status.HTTP_410_GONE, "artifact lies outside the artifacts directory")
    fh = _zip(directory, [f["name"] for f in files])
    filename = f"{job_id[:8]}-rank{rank}.zip"
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    return StreamingResponse(_chunks(fh), media_type="application/zip", headers=headers)


def _invalid_file(msg: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ["body", "file"], "msg": msg, "type": "value_error"}])


def _sniff_format(path: Path, allow_pickle: bool) -> str:
    """'safetensors' or 'state_dict' (weights-only torch file); anything else is refused."""
    from workers.task import load_weights

    try:
        obj = load_weights(path, allow_pickle=allow_pickle)
    except Exception as exc:  # noqa: BLE001 - any failure to read weights is the client's file
        raise _invalid_file(str(exc).replace("model.weights: ", "")) from None
    with path.open("rb") as fh:
        head = fh.read(9)
    if len(head) > 8 and head[8:9] == b"{":
        return "safetensors"
    return "state_dict" if isinstance(obj, dict) else "module"


@router.post("/uploads", status_code=status.HTTP_201_CREATED, response_model=Upload, responses=errors(413))
def upload(file: Annotated[UploadFile, File()], db: DbDep, settings: SettingsDep) -> Upload:
    """Stores weights under a generated id (the client's file name is kept for display only)."""
    assert settings.uploads_dir is not None
    settings.uploads_dir.mkdir(parents=True, exist_ok=True)
    upload_id = repo.new_id()
    digest, size = hashlib.sha256(), 0
    fd, tmp_name = tempfile.mkstemp(dir=settings.uploads_dir, prefix=".incoming-")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := file.file.read(_CHUNK):
                size += len(chunk)
                if size > settings.max_upload_bytes:
                    raise HTTPException(
                        status.HTTP_413_CONTENT_TOO_LARGE, f"upload exceeds {settings.max_upload_bytes} bytes"
                    )
                digest.update(chunk)
                out.write(chunk)
        if size == 0:
            raise _invalid_file("the file is empty")
        fmt = _sniff_format(tmp, settings.allow_pickle)
        final = settings.uploads_dir / f"{upload_id}.{'safetensors' if fmt == 'safetensors' else 'pt'}"
        tmp.rename(final)
    finally:
        tmp.unlink(missing_ok=True)
    name = Path(file.filename or "weights").name[:255]
    with db.session_scope() as s:
        repo.add_upload(s, upload_id=upload_id, name=name, size=size, sha256=digest.hexdigest(), format=fmt)
    return Upload(id=upload_id, name=name, size=size, sha256=digest.hexdigest())
