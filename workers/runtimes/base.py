"""The runtime contract: how a model of a job is run when its latency is measured.

Latency depends on the runtime as much as on the hardware (docs/benchmarks.md, "Realized
speed-up per runtime"), so a job measures every candidate, its latency table and its delivered
file in the runtime it ships in (``target.runtime``). A runtime turns a model into a *run*: a
zero-argument callable doing one forward pass on the job's example batch, which
:func:`search_spaces.measure.time_interleaved` times interleaved with the dense model's run.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    import torch
    from torch import nn

Run = Callable[[], object]
#: writes ``model`` (run on ``example``) as an ONNX file at ``path`` (a model kind's own export,
#: so that what is timed is what the kind publishes)
OnnxExport = Callable[["nn.Module", "torch.Tensor", Path], None]


class Runtime(ABC):
    """One way of running a model (registered in :mod:`workers.runtimes`)."""

    name: ClassVar[str]
    #: what the job's report and dashboard call it
    title: ClassVar[str]

    def version(self) -> str:
        """Folded into the latency cache's key: a new version measures again."""
        return ""

    @abstractmethod
    def prepare(self, model: nn.Module, example: torch.Tensor, *, threads: int,
                export: OnnxExport) -> Run:
        """A run of ``model`` on ``example`` (the job's batch) with ``threads`` threads."""

    @abstractmethod
    def published(self, bundle: Path, model: nn.Module, example: torch.Tensor, *,
                  threads: int) -> Run:
        """A run of what a finalized bundle ships for this runtime (``model`` is the model the
        bundle was written from)."""

    @contextlib.contextmanager
    def timing(self, threads: int) -> Iterator[None]:
        """Held while runs are timed (e.g. the framework's thread count)."""
        yield

    def sync(self, example: torch.Tensor) -> Callable[[], None]:
        """Called before each clock read: a run whose work is queued on a device must finish
        inside its time."""
        return lambda: None
