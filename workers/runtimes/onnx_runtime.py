"""ONNX Runtime: the exported ``model.onnx`` as people deploy it (``target.runtime: onnxruntime``).

Each architecture is exported by its model kind's own ONNX export (the function that writes the
published file), then run in an ``InferenceSession`` with full graph optimisation, the job's
thread count for intra-op work and one inter-op thread; on a CUDA target, the CUDA execution
provider (an error names what is missing when this onnxruntime build has none).
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workers.runtimes.base import OnnxExport, Run, Runtime

if TYPE_CHECKING:
    import torch
    from torch import nn


def session(path: Path, *, threads: int, device: str = "cpu") -> Any:
    """An ``onnxruntime.InferenceSession`` of ``path`` configured as the job's runtime."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # warnings about unused initializers etc. are not the user's
    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RuntimeError("target.runtime 'onnxruntime' on a CUDA target needs the "
                               "onnxruntime-gpu package (this build has no CUDAExecutionProvider)")
        # torch, imported first, loaded its CUDA libraries; preloading finds any it did not
        ort.preload_dlls()
        providers.insert(0, "CUDAExecutionProvider")
    sess = ort.InferenceSession(str(path), opts, providers=providers)
    if sess.get_providers()[0] != providers[0]:  # onnxruntime falls back to the CPU silently
        raise RuntimeError(f"onnxruntime could not start {providers[0]} (CUDA or cuDNN libraries "
                           "missing?): latency on the CPU is not the target's")
    return sess


def file_run(path: Path, example: torch.Tensor, *, threads: int) -> Run:
    """A run of the ONNX file at ``path`` on ``example`` (fed to its one input)."""
    sess = session(path, threads=threads, device=example.device.type)
    feed = {sess.get_inputs()[0].name: example.detach().cpu().numpy()}
    return lambda: sess.run(None, feed)


def _on_cpu(model: nn.Module) -> nn.Module:
    """``model`` itself on the CPU (no copy on the default target: this runs once per measured
    architecture), else a CPU copy: the caller's model stays on its device, where scoring runs."""
    if all(p.device.type == "cpu" for p in model.parameters()):
        return model
    return copy.deepcopy(model).cpu()


class OnnxRuntime(Runtime):
    name = "onnxruntime"
    title = "ONNX Runtime"

    def version(self) -> str:
        import onnxruntime as ort

        return str(ort.__version__)

    def prepare(self, model: nn.Module, example: torch.Tensor, *, threads: int,
                export: OnnxExport) -> Run:
        with tempfile.TemporaryDirectory(prefix="autoprune-ort-") as tmp:
            path = Path(tmp) / "model.onnx"
            export(_on_cpu(model.eval()), example.cpu(), path)
            return file_run(path, example, threads=threads)  # the session holds the graph

    def published(self, bundle: Path, model: nn.Module, example: torch.Tensor, *,
                  threads: int) -> Run:
        path = bundle / "model.onnx"
        if not path.is_file():
            raise FileNotFoundError(f"{bundle}: no model.onnx to measure in onnxruntime "
                                    "(finalize.export must include 'onnx' for this runtime)")
        return file_run(path, example, threads=threads)
