"""Torch's intra-op thread count, set for a block and restored after it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Runs the block with ``torch.set_num_threads(n)``, restoring the old count after it
    (``None``: leaves the count as it is)."""
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
