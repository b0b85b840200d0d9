"""BatchNorm recalibration: re-estimate running statistics of a pruned model on a few batches.

Pruning removes channels whose contribution the next BatchNorm's running mean/var had absorbed;
without re-estimating them, a pruned net can sit at chance even when its weights are fine.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[Any], *, max_batches: int | None = None) -> int:
    """Resets every BatchNorm's running stats and re-estimates them (cumulative average).

    ``batches`` yields tensors or ``(x, ...)`` tuples. Returns the number of batches used; the
    model is left in eval mode. A model without BatchNorm is left as it is.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        model.eval()
        return 0
    saved = {m: m.momentum for m in bns}
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
    model.train()
    used = 0
    try:
        for batch in batches:
            if max_batches is not None and used >= max_batches:
                break
            x = batch[0] if isinstance(batch, list | tuple) else batch
            model(x)
            used += 1
    finally:
        for m, mom in saved.items():
            m.momentum = mom
        model.eval()
    return used
