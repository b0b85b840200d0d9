"""PyTorch eager: the model as the trainer runs it (``target.runtime: torch``)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from search_spaces.measure import synchronizer
from search_spaces.threads import torch_threads
from workers.runtimes.base import OnnxExport, Run, Runtime


class TorchEager(Runtime):
    name = "torch"
    title = "PyTorch eager"

    def version(self) -> str:
        return torch.__version__

    def prepare(self, model: nn.Module, example: torch.Tensor, *, threads: int,
                export: OnnxExport) -> Run:
        return functools.partial(model.eval(), example)

    def published(self, bundle: Path, model: nn.Module, example: torch.Tensor, *,
                  threads: int) -> Run:
        # the bundle's weights rebuilt are this very model: eager runs the model itself
        return functools.partial(model.eval(), example)

    @contextlib.contextmanager
    def timing(self, threads: int) -> Iterator[None]:
        with torch_threads(threads), torch.inference_mode():
            yield

    def sync(self, example: torch.Tensor) -> Callable[[], None]:
        return synchronizer(example.device)
