"""Loading an image task: the dense CNN, its data splits, an example input, the search space.

Weights never unpickle arbitrary objects: safetensors, or a ``torch.load(weights_only=True)``
state dict; a pickled module only with ``allow_pickle`` (an operator's flag). A zoo model
without weights is trained once (cached) as the reference.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from search_spaces.space import SearchSpace
from workers.kinds.base import depth_units_error
from workers.kinds.image.units import UNIT_NOUN
from workers.spec import JobSpec
from workers.task_types import Task, WorkerSettings
from workers.weights import load_weights, resolve_weights


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
    return build_model(spec.model.source, num_classes=num_classes, in_channels=in_channels, trusted=False)


def _check_outputs(model: nn.Module, example: torch.Tensor) -> None:
    with torch.no_grad():
        out = model.eval()(example)
    if out.dim() != 2:
        raise ValueError(
            f"the model must return (batch, classes) logits, got shape {tuple(out.shape)}"
        )


def _space(spec: JobSpec, model: nn.Module, example: torch.Tensor, criterion: str) -> SearchSpace:
    from search_spaces.build import build_space

    s = spec.search_space
    space = build_space(
        model, example, max_ratio=s.max_ratio, round_to=s.round_to, ignore=list(s.ignore),
        criterion=criterion, precisions=tuple(s.precision), depth=s.depth,
    )
    if s.depth and not space.units:  # a model only building it could tell (hub, plugin)
        raise ValueError(f"search_space.depth: {depth_units_error(spec, UNIT_NOUN)}")
    return space


def load_image_task(spec: JobSpec, settings: WorkerSettings, criterion: str) -> Task:
    """Builds the dense model and its data; trains (once, cached) a zoo reference without weights."""
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
                raise ValueError(f"model.weights do not fit {spec.model.source}: {exc}") from None
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
    _check_outputs(model, example)
    return Task(spec, model, splits, example, _space(spec, model, example, criterion), criterion, info)


def rebuild_image_task(
    spec: JobSpec, settings: WorkerSettings, shared: Any, space: dict[str, Any], criterion: str
) -> Task:
    """The task in a Ray actor: the shared state dict (or the module, if it came pickled)."""
    splits = _splits(spec, settings)
    example = _example(spec, splits)
    if isinstance(shared, nn.Module):
        model = shared
    else:
        model = _build(spec, splits, example)
        model.load_state_dict(shared)
    model.eval()
    return Task(spec, model, splits, example, SearchSpace.from_dict(space), criterion)
