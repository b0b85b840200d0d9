"""The artifact bundle of a pruned model, written and read back without pickle.

``model.safetensors`` (weights) + ``architecture.json`` (model source, classes, channels, input
shape, the kept channels per group and, from a depth search, the ``removed`` blocks and the
``kept_layers``: enough to rebuild the pruned architecture from the zoo or an entrypoint) + ``policy.json`` + ``model.ts`` (TorchScript) + ``model.onnx`` (when export works)
+ ``metrics.json``.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from search_spaces.depth import remove_blocks
from search_spaces.prune import prune_to_counts
from search_spaces.registry import NotRegisteredError, Registry
from search_spaces.zoo import build_model

log = logging.getLogger(__name__)
FORMAT = 1

#: Bundles that are not rebuilt from a model source, by ``architecture.json``'s ``kind``: each
#: writer ships its own loader (a string target: nothing is imported until such a bundle is read).
BUNDLE_LOADERS = Registry(
    "bundle kind", {"sentence-embedder": "search_spaces.transformers.bundle:load_sentence_embedder"}
)


def architecture(
    source: str, *, num_classes: int, in_channels: int, input_shape: tuple[int, ...], kept: Mapping[str, int],
    removed: Sequence[str] = (), kept_layers: Sequence[str] | None = None,
) -> dict[str, Any]:
    """``architecture.json``. A model from a depth search (``search_space.depth``) also says which
    blocks were removed (``removed``: replaced by identities when it is rebuilt) and which of the
    removable ones were kept (``kept_layers``); ``kept`` then leaves out the groups inside the
    removed blocks."""
    arch: dict[str, Any] = {
        "format": FORMAT,
        "source": source,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "input_shape": list(input_shape),
        "kept": dict(kept),
    }
    if removed or kept_layers is not None:
        arch["removed"] = list(removed)
        arch["kept_layers"] = list(kept_layers or ())
    return arch


def rebuild_pruned(arch: Mapping[str, Any], *, trusted: bool = False) -> nn.Module:
    """The pruned architecture (random weights) described by an ``architecture.json`` dict.

    A bundle is data: an ``entrypoint:`` source is imported only when it is a registered or
    allowed plugin (:mod:`search_spaces.plugins`), or when the caller vouches for the bundle
    (``trusted=True``).
    """
    if arch.get("format") != FORMAT:
        raise ValueError(f"architecture.format: expected {FORMAT}, got {arch.get('format')!r}")
    try:
        model = build_model(str(arch["source"]), num_classes=int(arch["num_classes"]),
                            in_channels=int(arch["in_channels"]), trusted=trusted)
    except NotRegisteredError as exc:
        raise ValueError(f"architecture.source: {exc}; pass trusted=True if you trust this bundle's code") from None
    x = torch.zeros(1, *arch["input_shape"])
    removed = [str(n) for n in arch.get("removed", ())]
    if set(removed) & set(arch.get("kept_layers", ())):
        raise ValueError(f"architecture.json: a block is both removed and kept: {removed}")
    # widths first on the whole model, then the removed blocks replaced (as apply_policy does)
    pruned = prune_to_counts(model, {k: int(v) for k, v in arch["kept"].items()}, x)
    try:
        return remove_blocks(pruned, removed).eval()
    except AttributeError as exc:
        raise ValueError(f"architecture.removed: no such block in {arch['source']}: {exc}") from None


def save_bundle(
    directory: str | Path,
    model: nn.Module,
    *,
    arch: Mapping[str, Any],
    policy: Mapping[str, float] | None = None,
    metrics: Mapping[str, Any] | None = None,
    onnx: bool = True,
    torchscript: bool = True,
) -> dict[str, str]:
    """Writes the bundle; returns file name -> what it holds (ONNX failures are logged, not fatal)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    x = torch.zeros(1, *arch["input_shape"])
    files = {"model.safetensors": "weights", "architecture.json": "architecture"}
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    (out / "architecture.json").write_text(json.dumps(dict(arch), indent=2))
    if policy is not None:
        (out / "policy.json").write_text(json.dumps(dict(policy), indent=2))
        files["policy.json"] = "policy"
    if torchscript:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.trace(model, x).save(str(out / "model.ts"))
        files["model.ts"] = "torchscript"
    if onnx:
        try:
            export_onnx(model, x, out / "model.onnx")
            files["model.onnx"] = "onnx"
        except Exception as exc:  # noqa: BLE001 - ONNX is optional; say why it is missing
            log.warning("ONNX export failed: %s", exc)
            files["model.onnx"] = f"not written: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            (out / "model.onnx").unlink(missing_ok=True)
    (out / "metrics.json").write_text(json.dumps(dict(metrics or {}), indent=2))
    files["metrics.json"] = "metrics"
    return files


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """``model`` as ONNX: input ``input`` and output ``output``, the batch axis dynamic (a file
    that deploys at any batch size; it was traced on ``example``)."""
    import onnx  # noqa: F401 - fail early and clearly when onnx is not installed

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (example,), str(path), dynamo=False, input_names=["input"],
                          output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                          opset_version=17)


def load_bundle(directory: str | Path, *, trusted: bool = False) -> nn.Module:
    """Rebuilds the pruned model from ``architecture.json`` and loads ``model.safetensors`` (no
    pickle; plugin sources as in :func:`rebuild_pruned`)."""
    d = Path(directory)
    try:
        arch = json.loads((d / "architecture.json").read_text())
    except FileNotFoundError:
        raise ValueError(f"bundle {str(d)!r}: no architecture.json") from None
    if "kind" in arch:  # a bundle with its own layout (per-layer sizes...): its own loader
        try:
            loader = BUNDLE_LOADERS.get(str(arch["kind"]))
        except KeyError as exc:  # UnknownNameError: its message lists the known kinds
            raise ValueError(f"architecture.kind: {exc}") from None
        return loader(d)  # type: ignore[no-any-return]
    model = rebuild_pruned(arch, trusted=trusted)
    model.load_state_dict(load_file(str(d / "model.safetensors")), strict=True)
    return model.eval()
