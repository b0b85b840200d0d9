"""Turns a pruning policy into Metrics on the hardware this process runs on.

prune (Torch-Pruning, via ``search_spaces.apply_policy``) → recovery on a fixed set of training
batches (``evaluation.recovery``: BatchNorm recalibration, or least-squares reconstruction of
the layers reading pruned channels and recalibration) → optional ``finetune_steps`` → quality
on the validation split (never the test split) → MACs/params → latency (``LatencyMeter``:
cached per architecture, measured with the node held exclusively). Everything except the latency measurement holds the node lock
shared, so quality evaluations of several workers overlap but never disturb a measurement.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from agents.types import Metrics
from search_spaces.calibrate import recalibrate_bn
from search_spaces.measure import count_macs_params
from search_spaces.plugins import METRIC_PLUGINS, PREFIX
from search_spaces.reconstruct import DenseTargets, reconstruct
from search_spaces.space import SearchSpace
from search_spaces.training import batch_inputs, evaluate_accuracy, train_steps
from workers.latency import LatencyMeter, NodeLock

if TYPE_CHECKING:
    from workers.task import Task, WorkerSettings
    from workers.text_eval import TextEvaluation

QualityFn = Callable[[nn.Module, DataLoader], float]


@torch.no_grad()
def predictions(model: nn.Module, loader: DataLoader, device: torch.device) -> torch.Tensor:
    model.eval()
    return torch.cat([model(batch_inputs(b).to(device)).argmax(1).cpu() for b in loader])


def cycle(loader: DataLoader) -> Iterator[Any]:
    return itertools.chain.from_iterable(itertools.repeat(loader))


class Evaluator:
    """Evaluates policies of one task; long-lived (one per worker process)."""

    def __init__(
        self,
        task: Task,
        *,
        settings: WorkerSettings | None = None,
        threads: int | None = None,
        lock: NodeLock | None = None,
        latency_rounds: int = 15,
    ) -> None:
        """``latency_rounds=0`` skips latency (Metrics carry none): for MACs/params-only studies."""
        spec = task.spec
        if threads is not None:
            torch.set_num_threads(threads)
        if spec.target.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("target.device is 'cuda' but this worker has no CUDA device")
        self.task = task
        self.space: SearchSpace = task.space
        self.device = torch.device(spec.target.device)
        self.dense = task.model.to(self.device).eval()
        self.node = node_name()
        ev = spec.evaluation
        self.val_loader = self._val_loader(task.splits.val, ev.val_samples, ev.batch_size)
        # the same calibration and fine-tuning batches for every policy, whatever was evaluated
        # before: differences in quality come from the policy alone
        self.calibration = list(itertools.islice(self._train_batches(), ev.calibration_batches))
        # their inputs on the device once, not on every evaluation
        self.calibration_inputs = [batch_inputs(b).to(self.device) for b in self.calibration]
        self.recovery = ev.resolved_recovery()
        # lsq's targets: the dense layers' outputs on the calibration batches, once per worker
        self._dense_targets = (
            DenseTargets(self.dense, torch.cat(self.calibration_inputs))
            if self.recovery == "lsq" and self.calibration_inputs
            else None
        )
        self.example = task.example_input.to(self.device)
        from workers.text_task import is_text_task

        self.text: TextEvaluation | None = None
        if is_text_task(task):  # a sentence embedder: workers/text_eval.py scores and distils
            from workers.text_eval import TextEvaluation

            self.text = TextEvaluation(self)
        self.metric_fn = self._metric(spec.metric)
        self.dense_signature = self.space.signature({})
        self._dense_predictions = (
            None if self.text else predictions(self.dense, self.val_loader, self.device)
        )
        self._costs: dict[str, tuple[int, int]] = {}
        self._dense_metrics: Metrics | None = None
        lock = lock or NodeLock()
        batch = self.example.expand(spec.target.batch_size, *self.example.shape[1:]).contiguous()
        scope = "|".join(
            [
                spec.model.zoo or str(spec.model.entrypoint),
                str(tuple(batch.shape)),
                spec.target.device,
                f"t{spec.target.threads}",
                torch.__version__,
            ]
        )
        cache_file = None
        if settings is not None:
            cache_file = settings.cache_dir / "latency" / f"{self.node}.jsonl"
        self.latency = LatencyMeter(
            self.dense,
            batch,
            threads=spec.target.threads,
            rounds=latency_rounds,
            lock=lock,
            cache_file=cache_file,
            scope=hashlib.sha1(scope.encode()).hexdigest()[:16],
        )
        self.lock = lock

    def _train_batches(self) -> Iterator[Any]:
        """Shuffled training batches, endlessly, in the same order on every call."""
        spec = self.task.spec
        gen = torch.Generator().manual_seed(spec.seed)
        loader = DataLoader(
            self.task.splits.train, batch_size=spec.evaluation.batch_size, shuffle=True, generator=gen
        )
        return cycle(loader)

    @staticmethod
    def _val_loader(val: Dataset, cap: int | None, batch_size: int) -> DataLoader:
        if cap is not None and cap < len(val):  # type: ignore[arg-type]
            val = Subset(val, range(cap))
        return DataLoader(val, batch_size=batch_size, shuffle=False)

    def _metric(self, metric: str) -> Callable[[nn.Module], float]:
        if metric == "embedding_cosine":
            if self.text is None:
                raise ValueError("metric 'embedding_cosine' needs a text dataset")
            return self.text.quality
        if metric == "accuracy":
            return lambda m: evaluate_accuracy(m, self.val_loader, device=self.device)
        if metric == "agreement":
            def agreement(m: nn.Module) -> float:
                got = predictions(m, self.val_loader, self.device)
                dense = self._dense_predictions
                assert dense is not None  # computed for every task that is not text
                return (got == dense).float().mean().item()

            return agreement
        # a plugin the spec's validation accepted; re-checked here against this process's allowlist
        fn = METRIC_PLUGINS.load(metric.removeprefix(PREFIX))
        return lambda m: float(fn(m, self.val_loader))

    def costs(self, signature: str, model: nn.Module) -> tuple[int, int]:
        """(MACs, parameters) of ``model`` on this task's example input, cached by signature."""
        if signature not in self._costs:
            self._costs[signature] = count_macs_params(model, self.example)
        return self._costs[signature]

    def _metrics(
        self, signature: str, model: nn.Module, quality: float, t0: float, extra: dict[str, Any]
    ) -> Metrics:
        macs, params = self.costs(signature, model)
        dense_macs, dense_params = self.costs(self.dense_signature, self.dense)
        lat = None
        extra["signature"] = signature
        if self.latency.rounds > 0:
            t_lat = time.perf_counter()
            extra["latency_cached"] = self.latency.cached(signature) is not None
            lat = self.latency.measure(signature, model)
            extra["latency_s"] = time.perf_counter() - t_lat
        return Metrics(
            quality=quality,
            macs=macs,
            params=params,
            macs_ratio=macs / dense_macs,
            params_ratio=params / dense_params,
            latency_ms=lat.ms if lat else None,
            latency_spread_ms=lat.spread_ms if lat else None,
            latency_ratio=lat.ratio if lat else None,
            eval_seconds=time.perf_counter() - t0,
            node=self.node,
            extra={**extra, "pid": os.getpid()},
        )

    def dense_metrics(self) -> Metrics:
        """The dense model's metrics (latency ratio 1 by definition), computed once."""
        if self._dense_metrics is None:
            t0 = time.perf_counter()
            with self.lock.shared():
                quality = self.metric_fn(self.dense)
            extra = dict(self.text.last_extra) if self.text is not None else {}
            self._dense_metrics = self._metrics(self.dense_signature, self.dense, quality, t0, extra)
        return self._dense_metrics

    def prune(self, policy: dict[str, float]) -> nn.Module:
        """The pruned model of ``policy``, recovered as ``evaluation.recovery`` says."""
        from search_spaces.prune import apply_policy

        if self.text is not None:
            return self.text.prune(policy)
        spec = self.task.spec
        kept_out: dict[str, list[int]] = {}
        pruned = apply_policy(
            self.dense,
            self.space,
            policy,
            criterion=self.task.criterion,
            example_input=self.example,
            batches=self.calibration[:2] if self.task.criterion == "taylor" else None,
            kept_out=kept_out,
        )
        if not self.calibration_inputs or self.recovery == "none":
            pass  # keep the dense statistics
        elif self._dense_targets is not None:  # lsq: refit + BN recalibration, one pass
            reconstruct(pruned, self.dense, self._dense_targets, kept_out)
        else:
            recalibrate_bn(pruned, self.calibration_inputs)
        if spec.evaluation.finetune_steps > 0:
            teacher = None if spec.metric == "accuracy" else self.dense
            train_steps(
                pruned,
                self._train_batches(),
                spec.evaluation.finetune_steps,
                device=self.device,
                teacher=teacher,
            )
        return pruned.eval()

    def evaluate(self, policy: dict[str, float]) -> Metrics:
        """Metrics of ``policy`` (validated: a bad group or ratio raises ``PolicyError``)."""
        t0 = time.perf_counter()
        policy = self.space.validate(policy)
        signature = self.space.signature(policy)
        timings: dict[str, Any] = {}
        with self.lock.shared():
            # nothing removed: the dense model itself (so agreement is exactly 1.0)
            model = self.dense if signature == self.dense_signature else self.prune(policy)
            timings["prune_s"] = time.perf_counter() - t0
            t1 = time.perf_counter()
            quality = self.metric_fn(model)
            timings["quality_s"] = time.perf_counter() - t1
            if self.text is not None:  # ranking fidelity beside the cosine
                timings.update(self.text.last_extra)
        return self._metrics(signature, model, quality, t0, timings)


def node_name() -> str:
    """The host, plus the Ray node address inside a Ray worker (several nodes may share a host)."""
    host = socket.gethostname()
    if "ray" in sys.modules:  # never import Ray just to name the node
        import ray

        if ray.is_initialized():
            return f"{host}@{ray.util.get_node_ip_address()}"
    return host
