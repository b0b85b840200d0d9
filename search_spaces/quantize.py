"""Per-layer int8 quantization of an exported ONNX model by onnxruntime's own tools.

A layer is a torch module (``layer1.0.conv1``, ``backbone.encoder.layer.0.attention.self.query``);
:func:`weight_layers` finds the ONNX nodes that compute it from the scope path the exporter writes
into node names, and :func:`quantize_onnx` hands exactly those nodes to
``onnxruntime.quantization`` (``nodes_to_quantize``): every other node stays fp32.

Two schemes:

- ``static`` (CNNs): QDQ, per-channel int8 weights, uint8 activations calibrated (min/max) on the
  given batches. uint8 activations because the x86 kernels (VNNI) are u8 x s8: int8 activations
  fall back to a slow path. A ReLU directly after an int8 weight node is folded into its output's
  quantization (onnxruntime removes it), which is what lets the int8 convolution run fused.
- ``dynamic`` (transformer linears): int8 weights, activations quantized at run time; no data.

:class:`OrtModule` runs a file in an ``InferenceSession`` behind ``forward(x)``, so code that
scores torch models scores the quantized file unchanged.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

PRECISIONS = ("fp32", "int8")
Scheme = Literal["static", "dynamic"]
SCHEMES: tuple[Scheme, ...] = ("static", "dynamic")

#: ONNX ops that compute a layer from its weights (nn.Conv*, nn.Linear as Gemm or MatMul + Add).
WEIGHT_OPS = ("Conv", "Gemm", "MatMul")
#: Activations onnxruntime folds into the preceding int8 node's output quantization.
_FOLDABLE = ("Relu", "Clip")
#: The weight ops ``quantize_dynamic`` has an integer kernel for (no Gemm), and what it makes of them.
_DYNAMIC_OPS = ("MatMul", "Conv")
_DYNAMIC_INT8_OPS = ("MatMulInteger", "ConvInteger")


def ort_session(path: str | Path, threads: int = 1) -> Any:
    """An ``onnxruntime.InferenceSession`` of ``path`` on CPU: full graph optimisation,
    ``threads`` intra-op threads, one inter-op thread, warnings silenced."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # unused-initializer warnings etc. are not the user's
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def module_name(node_name: str) -> str:
    """The torch module name of the scope an exported node lies in.

    The TorchScript exporter names a node ``/<scope>/<scope>/.../<Op>`` where each scope is the
    module's qualified name cut back to its last non-numeric atom (``layer1.0`` for the first
    block of ``layer1``, ``conv1`` for its conv). A scope that extends its parent by numeric atoms
    only is a container's child (``layer1`` -> ``layer1.0``); any other scope is an attribute of
    its parent (``encoder`` -> ``layer.0``: a ModuleList is not a scope of its own).
    """
    scopes = node_name.strip("/").split("/")[:-1]
    name = prev = ""
    for scope in scopes:
        rest = scope[len(prev) + 1:] if prev and scope.startswith(prev + ".") else ""
        if rest and all(atom.isdigit() for atom in rest.split(".")):
            name = f"{name}.{rest}"
        else:
            name = f"{name}.{scope}" if name else scope
        prev = scope
    return name


def _resolve(name: str, modules: Collection[str]) -> str:
    """``name`` as one of ``modules``: itself, or the one module whose atoms contain its atoms in
    order and end the same (the exporter drops a non-numeric atom of a container that is not a
    scope, e.g. a ModuleDict's name: ``heads.cls`` exports as ``cls``). Unchanged when none or
    several match."""
    if name in modules:
        return name
    atoms = name.split(".")

    def contains(module: str) -> bool:
        rest = iter(module.split("."))
        return all(atom in rest for atom in atoms)  # an ordered sub-sequence

    found = [m for m in modules if m.split(".")[-1] == atoms[-1] and contains(m)]
    return found[0] if len(found) == 1 else name


def _layers(graph: Any, modules: Collection[str] | None) -> tuple[list[Any], dict[str, list[str]]]:
    nodes = _weight_nodes(graph)
    known = None if modules is None else set(modules)
    layers: dict[str, list[str]] = {}
    for node in nodes:
        name = module_name(node.name)
        layers.setdefault(name if known is None else _resolve(name, known), []).append(node.name)
    return nodes, layers


def _constants(graph: Any) -> set[str]:
    """Tensor names holding constants: initializers, Constant outputs, Identity of either."""
    const = {t.name for t in graph.initializer}
    for node in graph.node:  # graph order is topological
        if node.op_type == "Constant" or (node.op_type == "Identity" and node.input[0] in const):
            const.update(node.output)
    return const


def _weight_nodes(graph: Any) -> list[Any]:
    const = _constants(graph)
    return [n for n in graph.node
            if n.op_type in WEIGHT_OPS and len(n.input) > 1 and n.input[1] in const]


def weight_layers(path: str | Path, *, modules: Collection[str] | None = None) -> dict[str, list[str]]:
    """Torch module name -> names of the ONNX nodes (Conv / Gemm / MatMul with a constant weight)
    computing it, in graph order. Products of two activations (attention) are not layers.

    ``modules``: the exported model's module names (``named_modules()``), to recover the few
    names the exporter's scopes do not spell out in full (see :func:`_resolve`).
    """
    import onnx

    return _layers(onnx.load(str(path), load_external_data=False).graph, modules)[1]


@dataclass(frozen=True)
class QuantizeReport:
    """What :func:`quantize_onnx` wrote: the weight nodes in int8 and in fp32 (as the source
    names them), the scheme, the file's size and the seconds it took."""

    int8_nodes: tuple[str, ...]
    fp32_nodes: tuple[str, ...]
    scheme: Scheme | None
    bytes: int
    seconds: float


class _Batches:
    """onnxruntime's CalibrationDataReader over arrays fed to the model's one input."""

    def __init__(self, input_name: str, batches: Sequence[Any]) -> None:
        self._feeds: Iterator[dict[str, np.ndarray]] = (
            {input_name: np.ascontiguousarray(_numpy(b))} for b in batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self._feeds


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


@contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime.quantization logs advice on the root logger for every bias it sees."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_onnx(
    src: str | Path,
    dst: str | Path,
    *,
    int8_layers: Collection[str],
    scheme: Scheme,
    calibration: Sequence[np.ndarray] = (),
    calibration_cache: str | Path | None = None,
    per_channel: bool = True,
    modules: Collection[str] | None = None,
) -> QuantizeReport:
    """Writes ``dst``: ``src`` with the weight nodes of ``int8_layers`` (torch module names, see
    :func:`weight_layers`) in int8 and every other node kept fp32.

    ``static`` needs ``calibration``: batches (arrays) fed to the model's single input, whose
    activation ranges set the int8 scales. ``calibration_cache``: a JSON file of those ranges
    (onnxruntime's own cache) for this very ``src``: written by the first call, read by the next
    ones instead of running the batches again (another precision map of the same architecture).
    ``int8_layers`` empty: ``dst`` is a plain copy. ``modules``: as for :func:`weight_layers`.

    Raises:
        ValueError: an unknown layer or scheme, or ``static`` without calibration batches.
        RuntimeError: onnxruntime left a requested node in fp32 (it must not pass as int8).
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    t0 = time.perf_counter()
    src, dst = Path(src), Path(dst)
    if scheme not in SCHEMES:
        raise ValueError(f"scheme: expected one of {', '.join(SCHEMES)}, got {scheme!r}")
    model = onnx.load(str(src))
    weight_nodes, layers = _layers(model.graph, modules)
    unknown = sorted(set(int8_layers) - set(layers))
    if unknown:
        raise ValueError(f"int8_layers: {', '.join(map(repr, unknown))} computes no Conv/Gemm/MatMul "
                         f"of {src.name} (its layers: {', '.join(layers)})")
    targets = {n for layer in int8_layers for n in layers[layer]}
    if scheme == "dynamic":
        ops = {n.name: n.op_type for n in weight_nodes}
        gemm = sorted(layer for layer in int8_layers
                      if any(ops[n] not in _DYNAMIC_OPS for n in layers[layer]))
        if gemm:
            raise ValueError(f"int8_layers: {', '.join(map(repr, gemm))} run as Gemm, which the dynamic "
                             "scheme (onnxruntime's quantize_dynamic) cannot make int8; use static")
    cached = calibration_cache is not None and Path(calibration_cache).is_file()
    if scheme == "static" and targets and not calibration and not cached:
        raise ValueError("calibration: the static scheme needs calibration batches (arrays fed "
                         "to the model's input) to set the int8 activation scales")
    if not targets:
        if src.resolve() != dst.resolve():
            shutil.copyfile(src, dst)
        return _report(weight_nodes, targets, None, dst, t0)

    with tempfile.TemporaryDirectory(prefix="autoprune-quant-") as tmp, _quiet():
        if scheme == "static":
            # onnxruntime's basic optimisation first: the exporter shares equal constants through
            # Identity nodes, which the quantizer does not take for initializers (a conv whose
            # bias sits behind one does not become an int8 kernel, and runs slower than fp32).
            # Node names survive it. Shape inference is left to the quantizer (it runs its own).
            prepared = Path(tmp) / "prepared.onnx"
            quant_pre_process(str(src), prepared, skip_symbolic_shape=True, skip_onnx_shape=True)
            inits = {t.name for t in model.graph.initializer}
            input_name = next(i.name for i in model.graph.input if i.name not in inits)
            foldable = [n.name for n in model.graph.node if n.op_type in _FOLDABLE]
            quantize_static(
                prepared, dst, None if cached else _Batches(input_name, calibration),  # type: ignore[arg-type]
                calibration_cache_path=calibration_cache,
                quant_format=QuantFormat.QDQ, per_channel=per_channel,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                op_types_to_quantize=[*WEIGHT_OPS, *_FOLDABLE],
                # a ReLU is only touched when its input is int8 (it is then folded away)
                nodes_to_quantize=sorted(targets) + foldable,
                extra_options={"MatMulConstBOnly": True},
            )
        else:  # MatMul weights are plain initializers: no pre-processing needed (nor faster)
            quantize_dynamic(
                src, dst, per_channel=per_channel, weight_type=QuantType.QInt8,
                op_types_to_quantize=list(_DYNAMIC_OPS), nodes_to_quantize=sorted(targets),
                extra_options={"MatMulConstBOnly": True},
            )
    # a node onnxruntime skipped (or renamed) must not pass as int8
    done = _int8_nodes(dst, scheme)
    missing = targets - done
    if missing:
        raise RuntimeError(f"onnxruntime left {sorted(missing)} in fp32 ({scheme} scheme)")
    return _report(weight_nodes, targets, scheme, dst, t0)


def _report(weight_nodes: list[Any], targets: set[str], scheme: Scheme | None, dst: Path,
            t0: float) -> QuantizeReport:
    return QuantizeReport(
        int8_nodes=tuple(n.name for n in weight_nodes if n.name in targets),
        fp32_nodes=tuple(n.name for n in weight_nodes if n.name not in targets),
        scheme=scheme, bytes=dst.stat().st_size, seconds=time.perf_counter() - t0)


def _int8_nodes(path: Path, scheme: Scheme) -> set[str]:
    """Names (as in the source) of the weight nodes ``path`` computes in int8: static, a weight
    fed by a DequantizeLinear of an int8 initializer; dynamic, an integer op named after it."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    if scheme == "dynamic":
        suffix = "_quant"  # quantize_dynamic names the integer op after the node it replaces
        return {n.name.removesuffix(suffix) for n in graph.node if n.op_type in _DYNAMIC_INT8_OPS}
    int8 = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.INT8}
    dequantized = {n.output[0] for n in graph.node
                   if n.op_type == "DequantizeLinear" and n.input[0] in int8}
    return {n.name for n in graph.node if n.op_type in WEIGHT_OPS and n.input[1] in dequantized}


class OrtModule(nn.Module):
    """An ONNX file run in an onnxruntime ``InferenceSession`` behind a torch ``forward(x)``.

    One input, one output; the output comes back on ``x``'s device. It has no parameters, so
    ``.eval()`` and ``.to(device)`` are no-ops; a copy or a pickle reopens the file by path.
    """

    def __init__(self, path: str | Path, *, threads: int = 1) -> None:
        super().__init__()
        self.path, self.threads = Path(path), int(threads)
        self._open()

    def _open(self) -> None:
        self.session = ort_session(self.path, self.threads)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"{self.path}: OrtModule runs models with one input and one output "
                             f"(this one has {len(inputs)} and {len(outputs)})")
        self.input_name, self.output_name = inputs[0].name, outputs[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feed = {self.input_name: np.ascontiguousarray(x.detach().cpu().numpy())}
        out = self.session.run([self.output_name], feed)[0]
        return torch.from_numpy(out).to(x.device)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__().copy()
        state.pop("session", None)  # an InferenceSession neither copies nor pickles
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._open()

    def extra_repr(self) -> str:
        return f"{self.path.name}, threads={self.threads}"
