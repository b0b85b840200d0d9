"""Scoring CNN policies: prune (Torch-Pruning) → recovery → optional fine-tune → quality.

Recovery (``evaluation.recovery``) runs on a fixed set of training batches: BatchNorm
recalibration, or least-squares reconstruction of the layers reading pruned channels and
recalibration; ``finetune_steps`` of SGD follow (distilling from the dense model unless the
metric is ``accuracy``). Quality is measured on the validation split, never the test split.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from search_spaces.calibrate import recalibrate_bn
from search_spaces.plugins import METRIC_PLUGINS, PREFIX
from search_spaces.reconstruct import DenseTargets, reconstruct
from search_spaces.space import Policy
from search_spaces.training import batch_inputs, evaluate_accuracy, train_steps
from workers.kinds.base import PolicyScoring, QualityFn, ScoringContext
from workers.kinds.batches import cycle, shuffled


@torch.no_grad()
def predictions(model: nn.Module, loader: DataLoader, device: torch.device) -> torch.Tensor:
    model.eval()
    return torch.cat([model(batch_inputs(b).to(device)).argmax(1).cpu() for b in loader])


def _val_loader(val: Dataset, cap: int | None, batch_size: int) -> DataLoader:
    if cap is not None and cap < len(val):  # type: ignore[arg-type]
        val = Subset(val, range(cap))
    return DataLoader(val, batch_size=batch_size, shuffle=False)


class ImageScoring(PolicyScoring):
    def __init__(self, ctx: ScoringContext) -> None:
        self.ctx = ctx
        task, ev = ctx.task, ctx.task.spec.evaluation
        self.val_loader = _val_loader(task.splits.val, ev.val_samples, ev.batch_size)
        # the same calibration and fine-tuning batches for every policy, whatever was evaluated
        # before: differences in quality come from the policy alone
        self.calibration = list(itertools.islice(self.train_batches(), ev.calibration_batches))
        # their inputs on the device once, not on every evaluation
        self.calibration_inputs = [batch_inputs(b).to(ctx.device) for b in self.calibration]
        self.recovery = ev.resolved_recovery()
        # lsq's targets: the dense layers' outputs on the calibration batches, once per worker
        self.dense_targets = (
            DenseTargets(ctx.dense, torch.cat(self.calibration_inputs))
            if self.recovery == "lsq" and self.calibration_inputs
            else None
        )
        self.last_extra: dict[str, Any] = {}

    def quantization_batches(self) -> list[torch.Tensor]:
        return [x.cpu() for x in self.calibration_inputs]

    def train_batches(self) -> Iterator[Any]:
        """Shuffled training batches, endlessly, in the same order on every call."""
        spec = self.ctx.task.spec
        return cycle(shuffled(self.ctx.task.splits.train, spec.evaluation.batch_size, spec.seed))

    def metric(self, name: str) -> QualityFn:
        device = self.ctx.device
        if name == "accuracy":
            return lambda m: evaluate_accuracy(m, self.val_loader, device=device)
        if name == "agreement":
            dense = predictions(self.ctx.dense, self.val_loader, device)

            def agreement(m: nn.Module) -> float:
                got = predictions(m, self.val_loader, device)
                return (got == dense).float().mean().item()

            return agreement
        # a plugin the spec's validation accepted; re-checked here against this process's allowlist
        fn = METRIC_PLUGINS.load(name.removeprefix(PREFIX))
        return lambda m: float(fn(m, self.val_loader))

    def apply(self, policy: Policy, kept_out: dict[str, list[int]] | None = None) -> nn.Module:
        from search_spaces.prune import apply_policy

        task = self.ctx.task
        return apply_policy(
            self.ctx.dense, task.space, policy, criterion=task.criterion, example_input=self.ctx.example,
            batches=self.calibration[:2] if task.criterion == "taylor" else None, kept_out=kept_out,
        )

    def prune(self, policy: Policy, *, steps: int | None = None,
              on_step: Callable[[int], None] | None = None) -> nn.Module:
        spec = self.ctx.task.spec
        kept_out: dict[str, list[int]] = {}
        pruned = self.apply(policy, kept_out)
        if not self.calibration_inputs or self.recovery == "none":
            pass  # keep the dense statistics
        elif self.dense_targets is not None:  # lsq: refit + BN recalibration, one pass
            reconstruct(pruned, self.ctx.dense, self.dense_targets, kept_out)
        else:
            recalibrate_bn(pruned, self.calibration_inputs)
        steps = spec.evaluation.finetune_steps if steps is None else steps
        if steps > 0:
            teacher = None if spec.metric == "accuracy" else self.ctx.dense
            train_steps(pruned, self.train_batches(), steps, device=self.ctx.device, teacher=teacher,
                        on_step=on_step)
        return pruned.eval()
