"""What a job evaluates: the dense model, its data, an example input and the search space.

``load_task`` is run once per job by the controller (for Ray jobs, by its Ray driver process,
:mod:`workers.ray_driver`). Ray actors do not repeat the expensive parts: a
``workers.pool.TaskFactory`` carries the dense weights (as a Ray object reference) and the built
space, and ``rebuild_task`` rebuilds the task in the actor from the model source and the
(offline, deterministic) dataset.

Weights never unpickle arbitrary objects: safetensors, or a ``torch.load(weights_only=True)``
state dict; a pickled module only with ``allow_pickle`` (an operator's flag).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from search_spaces.space import SearchSpace
from workers.spec import JobSpec


@dataclass(frozen=True)
class WorkerSettings:
    """Where workers find things: caches, data roots, uploaded weights; the pickle flag; the
    operator's plugin allowlist (applied in Ray worker processes, which do not share the
    controller's: :func:`search_spaces.registry.allow_plugins`)."""

    cache_dir: Path
    data_roots: tuple[Path, ...] = ()
    uploads_dir: Path | None = None
    allow_pickle: bool = False
    plugins: tuple[str, ...] = ()


@dataclass
class Task:
    """The dense model (eval mode), data splits, an example input (batch 1), the space."""

    spec: JobSpec
    model: nn.Module
    splits: Any  # search_spaces.data.DataSplits: train / val / test
    example_input: torch.Tensor
    space: SearchSpace
    criterion: str
    info: dict[str, Any] = field(default_factory=dict)


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


def _model_source(spec: JobSpec) -> str:
    return spec.model.zoo if spec.model.zoo is not None else f"entrypoint:{spec.model.entrypoint}"


def _splits(spec: JobSpec, settings: WorkerSettings) -> Any:
    from search_spaces.data import load_dataset

    return load_dataset(
        spec.dataset.name, path=spec.dataset.path, roots=settings.data_roots, seed=spec.seed,
        trusted=False,
    )


def _example(spec: JobSpec, splits: Any) -> torch.Tensor:
    x = splits.val[0][0]
    if spec.model.input_shape is not None and list(x.shape) != list(spec.model.input_shape):
        raise ValueError(
            f"model.input_shape {spec.model.input_shape} does not match the data's {list(x.shape)}"
        )
    return x.unsqueeze(0).float()


def _build(spec: JobSpec, splits: Any, example: torch.Tensor) -> nn.Module:
    from search_spaces.zoo import build_model

    num_classes = spec.model.num_classes or int(splits.num_classes)
    in_channels = spec.model.in_channels or int(example.shape[1])
    return build_model(
        _model_source(spec), num_classes=num_classes, in_channels=in_channels, trusted=False
    )


def _check_outputs(model: nn.Module, example: torch.Tensor, splits: Any) -> None:
    with torch.no_grad():
        out = model.eval()(example)
    if out.dim() != 2:
        raise ValueError(
            f"the model must return (batch, classes) logits, got shape {tuple(out.shape)}"
        )


def _space(spec: JobSpec, model: nn.Module, example: torch.Tensor) -> SearchSpace:
    from search_spaces.build import build_space

    s = spec.search_space
    return build_space(
        model,
        example,
        max_ratio=s.max_ratio,
        round_to=s.round_to,
        ignore=list(s.ignore),
        criterion=s.criterion or "l1",
    )


def load_task(spec: JobSpec, settings: WorkerSettings) -> Task:
    """Builds the dense model and its data; trains (once, cached) a zoo reference without weights."""
    from workers.text_task import is_text_spec, load_text_task

    if is_text_spec(spec):  # a sentence embedder on a text corpus
        return load_text_task(spec, settings)
    splits = _splits(spec, settings)
    example = _example(spec, splits)
    info: dict[str, Any] = {}
    if spec.model.weights is not None:
        path = resolve_weights(spec.model.weights, settings)
        loaded = load_weights(path, allow_pickle=settings.allow_pickle)
        if isinstance(loaded, nn.Module):
            model = loaded
            info["pickled_module"] = True
        else:
            model = _build(spec, splits, example)
            try:
                model.load_state_dict(loaded)
            except RuntimeError as exc:
                raise ValueError(f"model.weights do not fit {_model_source(spec)}: {exc}") from None
        info["weights"] = path.name
    elif spec.model.zoo is not None and ":" not in spec.model.zoo:
        from search_spaces.reference import train_reference

        model, ref_info = train_reference(
            spec.model.zoo, spec.dataset.name, cache_dir=settings.cache_dir, seed=spec.seed
        )
        info["weights"] = "reference"
        info["reference"] = ref_info
    else:
        model = _build(spec, splits, example)  # an entrypoint that loads its own weights
        info["weights"] = "entrypoint"
    model.eval()
    _check_outputs(model, example, splits)
    space = _space(spec, model, example)
    return Task(spec, model, splits, example, space, spec.search_space.criterion or "l1", info)


def rebuild_task(spec: JobSpec, settings: WorkerSettings, shared: Any, space: dict[str, Any]) -> Task:
    """The task again, in a Ray actor, from the dense weights ``load_task`` built and shared
    (the state dict, or the module if it came pickled) and the built space's dict."""
    from workers.text_task import is_text_spec, rebuild_text_task

    if is_text_spec(spec):
        return rebuild_text_task(spec, settings, shared, space)
    splits = _splits(spec, settings)
    example = _example(spec, splits)
    if isinstance(shared, nn.Module):
        model = shared
    else:
        model = _build(spec, splits, example)
        model.load_state_dict(shared)
    model.eval()
    return Task(spec, model, splits, example, SearchSpace.from_dict(space), spec.search_space.criterion or "l1")
