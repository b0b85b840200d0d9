"""Counting MACs/params of a real model, and latency measured interleaved.

MACs count convolutions and linear layers (the layers pruning shrinks; normalisations and
activations are a rounding error next to them), plus the two attention products of Hugging
Face self-attention modules (q·kᵀ and attention·v, which grow with seq²), per example: the batch
dimension is divided out.
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import nn

from search_spaces.threads import torch_threads

_MAC_TYPES = (nn.modules.conv._ConvNd, nn.Linear)


def hooked_pass(model: nn.Module, inputs: torch.Tensor, handles: Sequence[Any]) -> None:
    """One forward pass of ``model`` in eval mode without gradients, for the hooks behind
    ``handles`` to observe; the hooks are removed and the model's mode restored after it."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was)


def layer_macs(model: nn.Module, example_input: torch.Tensor) -> dict[str, int]:
    """MACs per conv/linear module name for one example (batch size divided out), counted in
    eval mode (the model's mode restored after)."""
    batch = max(1, int(example_input.shape[0]))
    counts: dict[str, int] = {}
    handles = []

    def hook(name: str):  # type: ignore[no-untyped-def]
        def fn(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if isinstance(module, nn.modules.conv._ConvNd):
                k = 1
                for d in module.kernel_size:
                    k *= d
                per_out = module.in_channels // module.groups * k
            else:
                per_out = module.in_features  # type: ignore[assignment]
            counts[name] = counts.get(name, 0) + output.numel() * per_out // batch

        return fn

    def products(name: str):  # type: ignore[no-untyped-def]
        # q·kᵀ and attention·v of a transformer self-attention: 2·seq²·heads·head_size
        # module: a Hugging Face self-attention (found by its num_attention_heads attribute)
        def fn(module: Any, args: tuple, kwargs: dict) -> None:
            hidden = args[0] if args else kwargs["hidden_states"]
            seq = int(hidden.shape[1])
            width = int(module.num_attention_heads) * int(module.attention_head_size)
            counts[f"{name}.products"] = counts.get(f"{name}.products", 0) + 2 * seq * seq * width * int(hidden.shape[0]) // batch

        return fn

    for name, m in model.named_modules():
        if isinstance(m, _MAC_TYPES):
            handles.append(m.register_forward_hook(hook(name)))
        elif hasattr(m, "num_attention_heads") and hasattr(m, "attention_head_size"):
            handles.append(m.register_forward_pre_hook(products(name), with_kwargs=True))
    hooked_pass(model, example_input, handles)
    return counts


def count_macs_params(model: nn.Module, example_input: torch.Tensor) -> tuple[int, int]:
    """(MACs per example, parameter count) of the model as it is."""
    macs = sum(layer_macs(model, example_input).values())
    return int(macs), int(sum(p.numel() for p in model.parameters()))


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one model: median and inter-quartile range over rounds, in milliseconds."""

    median_ms: float
    iqr_ms: float
    min_ms: float
    rounds: int
    batch_size: int
    threads: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def synchronizer(device: torch.device) -> Callable[[], None]:
    """What to call before reading the clock on ``device``: CUDA kernels run asynchronously, so
    a timer read without ``torch.cuda.synchronize`` would time the kernel launches, not the work."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def time_interleaved(
    runs: Sequence[Callable[[], object]],
    *,
    warmup: int = 5,
    rounds: int = 30,
    repeat: int = 1,
    sync: Callable[[], None] = lambda: None,
    reduce: Literal["mean", "min"] = "mean",
) -> list[list[float]]:
    """Milliseconds per call of each of ``runs``, one value per round, timed round-robin: each
    round calls every run ``repeat`` times, so machine drift hits all of them alike.

    ``reduce="mean"`` times the ``repeat`` calls together (one clock read pair: for calls too
    short for the timer); ``"min"`` times each call and keeps the round's fastest, which a
    preemption on a loaded machine does not inflate as long as one call of the round ran
    undisturbed (longer calls are preempted more often, which biases a mean toward the smaller
    model). Every timed region is bracketed by ``sync`` (work queued on a device is inside it).
    """
    if not runs:
        raise ValueError("runs: give at least one run to time")
    if rounds < 1 or warmup < 0 or repeat < 1:
        raise ValueError("rounds and repeat must be >= 1 and warmup >= 0")
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(warmup):
        for run in runs:
            run()
    clock = time.perf_counter
    for _ in range(rounds):
        for i, run in enumerate(runs):
            if reduce == "min":
                best = math.inf
                for _ in range(repeat):
                    sync()
                    t0 = clock()
                    run()
                    sync()
                    best = min(best, clock() - t0)
                times[i].append(best * 1000.0)
                continue
            sync()  # nothing queued from before runs inside this model's time
            t0 = clock()
            for _ in range(repeat):
                run()
            sync()  # the work, not just its launch, is inside the time
            times[i].append((clock() - t0) * 1000.0 / repeat)
    return times


def latency_stats(times: list[float], *, batch_size: int, threads: int) -> LatencyStats:
    """Median, inter-quartile range and minimum of one run's per-round times."""
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return LatencyStats(
        median_ms=statistics.median(times),
        iqr_ms=q[2] - q[0],
        min_ms=min(times),
        rounds=len(times),
        batch_size=batch_size,
        threads=threads,
    )


def measure_latency(
    models: Sequence[nn.Module],
    example_input: torch.Tensor,
    *,
    threads: int = 1,
    warmup: int = 5,
    rounds: int = 30,
    repeat: int = 1,
    sync: Callable[[], None] | None = None,
) -> list[LatencyStats]:
    """Measures several models in PyTorch eager, round-robin (:func:`time_interleaved`).

    Models run in eval mode under ``torch.inference_mode``. Every timed region is bracketed by
    ``sync`` (default: :func:`synchronizer` of the input's device, a no-op on CPU).
    """
    if not models:
        raise ValueError("models: give at least one model")
    if threads < 1:
        raise ValueError("threads must be >= 1")  # rounds, repeat, warmup: time_interleaved
    sync = sync or synchronizer(example_input.device)
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        with torch_threads(threads), torch.inference_mode():
            times = time_interleaved(
                [functools.partial(m, example_input) for m in models],
                warmup=warmup, rounds=rounds, repeat=repeat, sync=sync,
            )
    finally:
        for m, mode in zip(models, modes, strict=True):
            m.train(mode)
    batch = int(example_input.shape[0])
    return [latency_stats(t, batch_size=batch, threads=threads) for t in times]
