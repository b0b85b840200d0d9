"""Runtimes latency is measured in (``target.runtime``), by name.

Built-ins ``torch`` (PyTorch eager) and ``onnxruntime`` (the exported ``model.onnx``, the
default: docs/benchmarks.md, "Realized speed-up per runtime", says why), plus the
``autoprune.runtimes`` entry-point group for an operator's own (TensorRT, OpenVINO...)::

    [project.entry-points."autoprune.runtimes"]
    tensorrt = "mypkg.trt:TensorRT"   # a workers.runtimes.base.Runtime subclass (or instance)
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from search_spaces.registry import Registry

if TYPE_CHECKING:
    from workers.runtimes.base import Runtime

RUNTIMES = Registry(
    "runtime",
    {
        "torch": "workers.runtimes.torch_eager:TorchEager",
        "onnxruntime": "workers.runtimes.onnx_runtime:OnnxRuntime",
    },
    group="autoprune.runtimes",
)

DEFAULT_RUNTIME = "onnxruntime"


@functools.cache
def get_runtime(name: str) -> Runtime:
    """The registered runtime ``name``: one instance per process."""
    obj = RUNTIMES.get(name)
    return obj() if isinstance(obj, type) else obj  # type: ignore[no-any-return]
