from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from search_spaces.zoo import DEFAULT_INPUT_SHAPES


def example(name: str, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, *DEFAULT_INPUT_SHAPES[name], generator=torch.Generator().manual_seed(0))


@pytest.fixture(autouse=True, scope="package")
def _one_torch_thread() -> Iterator[None]:
    """One intra-op thread: on a shared 2-core box, two spinning OpenMP threads ran tiny models
    ~30x slower (0.33 s vs 9 s for the same fine-tune, measured); restored afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
