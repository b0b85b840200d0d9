"""A policy's int8 groups made real: the pruned fp32 model exported by its model kind, then
quantized by onnxruntime's own tools (:mod:`search_spaces.quantize`) — the file a candidate is
scored on, timed on and shipped as.

Recovery (fine-tune, distillation) always runs on the fp32 pruned model; quantization comes
after it, as a deployment step would. Image models are quantized statically (QDQ, per-channel
weights) with calibration batches from the training split, text models dynamically.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from search_spaces.quantize import OrtModule, QuantizeReport, quantize_onnx

if TYPE_CHECKING:
    from torch import nn

    from search_spaces.space import Policy, SearchSpace
    from workers.kinds.base import ModelKind
    from workers.runtimes.base import OnnxExport

#: the shipped bundle's record of each group's and layer's precision
PRECISION_FILE = "precision.json"
#: the fp32 export kept beside the quantized ``model.onnx`` in a bundle
FP32_ONNX = "model.fp32.onnx"


def quantize_file(kind: ModelKind, src: Path, dst: Path, int8_layers: Sequence[str],
                  calibration: Sequence[torch.Tensor], calibration_cache: Path | None = None) -> QuantizeReport:
    """``src`` (the kind's fp32 export) with ``int8_layers`` in int8, written to ``dst``
    (``calibration_cache``: activation ranges of this very fp32 model, kept between calls)."""
    arrays = [c.detach().cpu().numpy() for c in calibration]
    return quantize_onnx(src, dst, int8_layers=list(int8_layers), scheme=kind.quantization,
                         calibration=arrays, calibration_cache=calibration_cache)


def write_quantized(kind: ModelKind, model: nn.Module, example: torch.Tensor, path: Path,
                    int8_layers: Sequence[str], calibration: Sequence[torch.Tensor],
                    calibration_cache: Path | None = None) -> Path:
    """``model`` exported by its kind and quantized: the int8 file at ``path``."""
    fp32 = path.with_name(path.stem + ".fp32.onnx")
    kind.export_onnx(model.eval().cpu(), example.cpu(), fp32)
    quantize_file(kind, fp32, path, int8_layers, calibration, calibration_cache)
    fp32.unlink()
    return path


def quantizing_export(kind: ModelKind, int8_layers: Sequence[str],
                      calibration: Sequence[torch.Tensor]) -> OnnxExport:
    """An export for :class:`~workers.latency.LatencyMeter`: the kind's, then quantized."""

    def export(model: nn.Module, example: torch.Tensor, path: Path) -> None:
        write_quantized(kind, model, example, path, int8_layers, calibration)

    return export


def copying_export(source: Path) -> OnnxExport:
    """An export that writes an already quantized file (timing the very file that was scored)."""

    def export(model: nn.Module, example: torch.Tensor, path: Path) -> None:
        shutil.copyfile(source, path)

    return export


def scored_module(path: Path) -> OrtModule:
    """The quantized file behind a torch ``forward``, so the kind's metric scores it as is."""
    return OrtModule(path, threads=torch.get_num_threads())


def precision_map(space: SearchSpace, policy: Policy) -> dict[str, Any]:
    """What ``precision.json`` says: each group's and each quantizable layer's precision
    (``"removed"`` for those inside a block/layer a depth policy removed)."""
    int8 = set(space.int8_groups(policy))
    gone_groups = space.removed_groups(policy)
    gone = tuple(f"{u}." for u in space.removed_units(policy))
    groups = {g.name: "removed" if g.name in gone_groups else "int8" if g.name in int8 else "fp32"
              for g in space.groups}
    layers = {w: "removed" if w.startswith(gone) else groups[g.name] for g in space.groups for w in g.weights}
    return {"format": 1, "groups": groups, "layers": layers,
            "note": "layers not listed (e.g. the classifier) stay fp32"}


def ship_precision(kind: ModelKind, staging: Path, space: SearchSpace, policy: Policy,
                   calibration: Sequence[torch.Tensor]) -> OrtModule | None:
    """Writes the bundle's ``precision.json`` and, when ``policy`` has int8 groups, turns the
    verified fp32 bundle in ``staging`` into the int8 one it ships: its ``model.onnx`` quantized
    (the fp32 file kept as ``model.fp32.onnx``); returns the shipped file as a module to score
    (None: the bundle ships fp32 as written)."""
    (staging / PRECISION_FILE).write_text(json.dumps(precision_map(space, policy), indent=2))
    if not space.int8_groups(policy):
        return None
    shipped = staging / "model.onnx"
    fp32 = staging / FP32_ONNX
    shipped.replace(fp32)
    quantize_file(kind, fp32, shipped, space.int8_layers(policy), calibration)
    return scored_module(shipped)
