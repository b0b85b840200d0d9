"""Dense weights a job names: an upload id or a path; safetensors, or a ``weights_only`` state
dict; a pickled module only with ``allow_pickle`` (an operator's flag)."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from workers.task_types import WorkerSettings

_UPLOAD_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def resolve_weights(ref: str, settings: WorkerSettings) -> Path:
    """An upload id (a plain name under ``uploads_dir``) or a path to an existing file."""
    if settings.uploads_dir is not None and _UPLOAD_ID.match(ref) and ".." not in ref:
        for candidate in (settings.uploads_dir / ref, *settings.uploads_dir.glob(f"{ref}.*")):
            if candidate.is_file():
                return candidate
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    raise FileNotFoundError(f"model.weights: no upload or file named {ref!r}")


def load_weights(path: Path, *, allow_pickle: bool = False) -> dict[str, torch.Tensor] | nn.Module:
    """A state dict from safetensors or a ``weights_only`` torch file (a module only if allowed)."""
    with path.open("rb") as fh:
        head = fh.read(16)
    # safetensors: 8-byte little-endian header length, then a JSON header starting with '{'
    if len(head) > 8 and head[8:9] == b"{":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises several types for unsafe/corrupt files
        if not allow_pickle:
            raise ValueError(
                f"model.weights: {path.name} is neither safetensors nor a weights-only state dict "
                f"(pickled objects are refused unless the operator allows pickle): {exc}"
            ) from None
        obj = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise ValueError(f"model.weights: {path.name} does not hold a state dict of tensors")
