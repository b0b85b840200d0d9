"""Accuracy and the SGD loop, written once: the reference training (search_spaces/reference.py),
the evaluator's short recovery and finalize's fine-tuning (workers/) all use these."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def batch_inputs(batch: Any) -> torch.Tensor:
    """The inputs of a batch: ``x`` of an ``(x, y)`` pair, or the batch itself when unlabelled."""
    return batch[0] if isinstance(batch, list | tuple) else batch


def evaluate_accuracy(
    model: nn.Module,
    data: TensorDataset | Iterable[Any],
    *,
    batch_size: int = 256,
    device: torch.device | None = None,
) -> float:
    """Top-1 accuracy (eval mode) over a dataset or an iterable of ``(x, y)`` batches; inputs are
    moved to ``device`` when given."""
    model.eval()
    loader = DataLoader(data, batch_size=batch_size) if isinstance(data, TensorDataset) else data
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            out = model(x if device is None else x.to(device))
            correct += int((out.argmax(1).cpu() == y).sum())
            total += int(y.numel())
    if total == 0:
        raise ValueError("evaluate_accuracy: the data is empty")
    return correct / total


def sgd_steps(
    model: nn.Module,
    batches: Iterator[Any],
    steps: int,
    *,
    opt: torch.optim.Optimizer,
    loss_of: Callable[[Any], torch.Tensor],
    scheduler: Any = None,
    on_step: Callable[[int], None] | None = None,
    channels_last: bool = False,
) -> None:
    """The training loop: ``steps`` batches, each ``loss_of(batch)`` backpropagated; eval mode after.

    With ``channels_last`` a CNN on the CPU trains in that layout when its forward allows it
    (oneDNN's convolutions are faster so: docs/benchmarks.md, "Channels-last training and Ray's
    object store"); its weights are back in the default layout afterwards, for pruning and export.
    Only the reference training (a process of its own) asks for it: a job's fine-tune in
    channels-last, in the task process that had exported and timed candidates, died of heap
    corruption (docs/benchmarks.md, "A crash in channels-last fine-tunes").
    """
    if steps <= 0:
        model.eval()
        return
    if channels_last:
        batches = _channels_last_if_it_runs(model, batches, loss_of)
    model.train()
    for step in range(steps):
        loss = loss_of(next(batches))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
        if on_step is not None:
            on_step(step)
    _layout(model, torch.contiguous_format)
    model.eval()


def _channels_last_if_it_runs(
    model: nn.Module, batches: Iterator[Any], loss_of: Callable[[Any], torch.Tensor]
) -> Iterator[Any]:
    """Puts a CPU model's 4-D weights in channels-last layout if one forward of the first batch
    runs so (a model that ``view``s a feature map cannot: it stays as it is); returns the batches,
    the first one included."""
    params = [p for p in model.parameters() if p.dim() == 4]
    if not params or any(p.device.type != "cpu" for p in params):
        return batches
    first = next(batches)
    _layout(model, torch.channels_last)
    try:
        with torch.no_grad():
            model.eval()  # the probe must not move batch-norm statistics
            loss_of(first)
    except RuntimeError:
        _layout(model, torch.contiguous_format)
    return itertools.chain([first], batches)


def _layout(model: nn.Module, memory_format: torch.memory_format) -> None:
    """The model's 4-D weights in ``memory_format``, in place (what ``Module.to`` does)."""
    for p in model.parameters():
        if p.dim() == 4:
            p.data = p.data.contiguous(memory_format=memory_format)


def train_steps(
    model: nn.Module,
    batches: Iterator[Any],
    steps: int,
    *,
    device: torch.device,
    lr: float = 0.01,
    teacher: nn.Module | None = None,
    on_step: Callable[[int], None] | None = None,
    cosine: bool = False,
) -> None:
    """SGD for ``steps`` batches: cross-entropy on labels, or distillation from ``teacher``.

    Distillation (KL to the dense model's soft predictions) needs no labels, which is what a
    user who searches with the ``agreement`` metric has. ``cosine`` decays ``lr`` to zero over
    the steps: a final fine-tune must end at a low rate, or its last steps undo what it learned.
    """
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps)) if cosine else None

    def loss_of(batch: Any) -> torch.Tensor:
        x = batch_inputs(batch).to(device)
        out = model(x)
        if teacher is None:
            return F.cross_entropy(out, batch[1].to(device))
        with torch.no_grad():
            target = F.softmax(teacher(x), dim=1)
        return F.kl_div(F.log_softmax(out, dim=1), target, reduction="batchmean")

    sgd_steps(model, batches, steps, opt=opt, loss_of=loss_of, scheduler=sched, on_step=on_step)


def _shift(x: torch.Tensor, gen: torch.Generator, pixels: int = 2) -> torch.Tensor:
    """Random translation by up to ``pixels`` (padding + crop), a cheap augmentation."""
    if x.dim() < 3 or pixels == 0:
        return x
    pad = [pixels] * (2 * (x.dim() - 2))
    padded = nn.functional.pad(x, pad)
    offs = torch.randint(0, 2 * pixels + 1, (x.dim() - 2,), generator=gen).tolist()
    if x.dim() == 4:
        return padded[..., offs[0] : offs[0] + x.shape[2], offs[1] : offs[1] + x.shape[3]]
    return padded[..., offs[0] : offs[0] + x.shape[2]]


def _epochs(loader: DataLoader, gen: torch.Generator, augment: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The loader's batches epoch after epoch (each reshuffled), shifted when ``augment``."""
    while True:
        for x, y in loader:
            yield (_shift(x, gen) if augment else x), y


def finetune(
    model: nn.Module,
    data: TensorDataset,
    *,
    epochs: float = 1.0,
    steps: int | None = None,
    lr: float = 0.01,
    batch_size: int = 64,
    seed: int = 0,
    weight_decay: float = 5e-4,
    augment: bool = True,
) -> nn.Module:
    """SGD (momentum 0.9, cosine-decayed ``lr``) for ``steps`` steps or ``epochs`` epochs, in place."""
    n_batches = max(1, math.ceil(len(data) / batch_size))
    total = steps if steps is not None else max(1, round(epochs * n_batches))
    if total <= 0:
        return model
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, generator=gen, drop_last=len(data) > batch_size)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)

    def loss_of(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(model(x), y)

    sgd_steps(model, _epochs(loader, gen, augment), total, opt=opt, loss_of=loss_of, scheduler=sched,
              channels_last=True)
    return model
