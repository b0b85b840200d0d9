"""Entrypoints the reliability tests plug into real jobs (``entrypoint:tests.reliability.helpers:fn``).

A tiny digits CNN (8x8, one channel) and quality metrics that misbehave on purpose, decided by
the pruned model's architecture so the same policy always does the same thing:

* ``flaky_metric`` raises for some widths and really runs out of memory for others (a 1 TiB
  allocation that the CPU allocator refuses), so the job must record those trials as failed
  and go on.
* ``slow_metric`` sleeps and, while it runs, leaves ``<pid>`` in :data:`EVALUATING_DIR` so a
  test can SIGKILL the Ray worker that is mid-evaluation.

``AUTOPRUNE_TEST_SLOW_TRAIN=<seconds>`` makes every training-mode forward pass sleep, which
stretches the finalize phase (fine-tuning) long enough for a test to kill the server there.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: Where ``slow_metric`` announces the pids of processes evaluating right now.
EVALUATING_DIR = Path(tempfile.gettempdir()) / "autoprune-reliability" / "evaluating"


class TinyNet(nn.Module):
    """Two prunable conv groups; ~5k MACs on an 8x8 digit."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        delay = float(os.environ.get("AUTOPRUNE_TEST_SLOW_TRAIN", "0") or 0)
        if self.training and delay > 0:
            time.sleep(delay)
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def tiny_net(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """The entrypoint builder (seeded: every process builds the same untrained weights)."""
    torch.manual_seed(0)
    return TinyNet(num_classes, in_channels)


def _finite_fraction(model: nn.Module, loader: Any) -> float:
    """A cheap, label-free quality: fraction of finite outputs (always 1.0 for a sane model)."""
    total = finite = 0
    with torch.no_grad():
        for batch in loader:
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
            out = model(x)
            finite += int(torch.isfinite(out).all(dim=1).sum())
            total += out.shape[0]
    return finite / max(total, 1)


def widths(model: nn.Module) -> tuple[int, int]:
    m: Any = model
    return int(m.conv1.out_channels), int(m.conv2.out_channels)


def failure_kind(w1: int, w2: int) -> str | None:
    """What ``flaky_metric`` does for these widths: None (fine), 'raise' or 'oom'; dense is fine."""
    if (w1, w2) == (16, 16):
        return None
    return {0: None, 1: "raise", 2: "oom"}[w1 % 3]


def flaky_metric(model: nn.Module, loader: Any) -> float:
    """Raises for some pruned widths, fails a real allocation for others (see ``failure_kind``)."""
    w1, w2 = widths(model)
    kind = failure_kind(w1, w2)
    if kind == "raise":
        raise RuntimeError(f"injected metric failure at widths {w1}/{w2}")
    if kind == "oom":
        torch.empty(1 << 40, dtype=torch.uint8)  # 1 TiB: the allocator refuses (RuntimeError)
    return _finite_fraction(model, loader) - 0.001 * (32 - w1 - w2)


def slow_metric(model: nn.Module, loader: Any) -> float:
    """Takes ~1.5 s and marks this process as mid-evaluation meanwhile."""
    EVALUATING_DIR.mkdir(parents=True, exist_ok=True)
    marker = EVALUATING_DIR / str(os.getpid())
    marker.write_text(str(time.time()))
    try:
        time.sleep(1.5)
        return _finite_fraction(model, loader)
    finally:
        marker.unlink(missing_ok=True)


def tiny_spec(**overrides: Any) -> dict[str, Any]:
    """A real, fast job on digits with :func:`tiny_net` (no reference training: entrypoint)."""
    spec: dict[str, Any] = {
        "name": "reliability",
        "model": {"entrypoint": "tests.reliability.helpers:tiny_net"},
        "dataset": {"name": "digits"},
        "metric": "entrypoint:tests.reliability.helpers:flaky_metric",
        "budget": {"macs_ratio": 0.9},
        "agent": {"kind": "random", "trials": 10},
        "search_space": {"round_to": 2, "max_ratio": 0.8},
        "evaluation": {"calibration_batches": 1, "val_samples": 64},
        "finalize": {"top_k": 1, "finetune_epochs": 0, "export": ["safetensors"]},
        "workers": 0,
    }
    spec.update(overrides)
    return spec
