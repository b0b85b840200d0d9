"""Turns a pruning policy into Metrics on the hardware this process runs on.

prune → recovery → quality (the model kind's :class:`~workers.kinds.base.PolicyScoring`: for
CNNs least-squares or BatchNorm recovery and accuracy / agreement, for sentence embedders
distillation and embedding cosine; quality always on the validation split, never the test
split) → MACs/params → latency (``LatencyMeter``: cached per architecture, measured with the
node held exclusively). Everything except the latency measurement holds the node lock shared, so
quality evaluations of several workers overlap but never disturb a measurement.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import sys
import tempfile
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from agents.types import Metrics
from search_spaces.measure import count_macs_params
from search_spaces.space import SearchSpace
from workers.kinds import kind_of
from workers.kinds.base import ScoringContext
from workers.latency import LatencyMeter, NodeLock
from workers.quantized import copying_export, quantizing_export, scored_module, write_quantized
from workers.runtimes import get_runtime
from workers.runtimes.base import OnnxExport, Run

if TYPE_CHECKING:
    from workers.task_types import Task, WorkerSettings


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
        self.example = task.example_input.to(self.device)
        self.kind = kind_of(spec)
        #: the model kind's part: apply, recover and score a policy
        self.scoring = self.kind.scoring(ScoringContext(task, self.dense, self.device, self.example))
        self.metric_fn = self.scoring.metric(spec.metric)
        self.dense_signature = self.space.signature({})
        self._costs: dict[str, tuple[int, int]] = {}
        self._dense_metrics: Metrics | None = None
        lock = lock or NodeLock()
        #: where latency is measured: the runtime the model ships in
        self.runtime = get_runtime(spec.target.runtime)
        batch = self.example.expand(spec.target.batch_size, *self.example.shape[1:]).contiguous()
        scope = "|".join(
            [
                spec.model.source,
                str(tuple(batch.shape)),
                spec.target.device,
                f"t{spec.target.threads}",
                torch.__version__,
                spec.target.runtime,
                self.runtime.version(),
            ]
        )
        cache_file = None
        if settings is not None:
            cache_file = settings.cache_dir / "latency" / f"{self.node}.jsonl"
        self.latency = LatencyMeter(
            self.dense,
            batch,
            runtime=self.runtime,
            export=self.kind.export_onnx,
            threads=spec.target.threads,
            rounds=latency_rounds,
            lock=lock,
            cache_file=cache_file,
            scope=hashlib.sha1(scope.encode()).hexdigest()[:16],
        )
        self.lock = lock
        #: activation ranges of each recovered architecture, for its int8 variants (a directory
        #: made at the first int8 policy: a killed worker leaves nothing behind for fp32 jobs)
        self._calibration_dir: Path | None = None

    def costs(self, signature: str, model: nn.Module) -> tuple[int, int]:
        """(MACs, parameters) of ``model`` on this task's example input, cached by signature."""
        if signature not in self._costs:
            self._costs[signature] = count_macs_params(model, self.example)
        return self._costs[signature]

    def _metrics(
        self, signature: str, model: nn.Module, quality: float, t0: float, extra: dict[str, Any],
        export: OnnxExport | None = None,
    ) -> Metrics:
        macs, params = self.costs(signature, model)
        dense_macs, dense_params = self.costs(self.dense_signature, self.dense)
        lat = None
        extra["signature"] = signature
        if self.latency.rounds > 0:
            t_lat = time.perf_counter()
            extra["latency_cached"] = self.latency.cached(signature) is not None
            lat = self.latency.measure(signature, model, export=export)
            extra["latency_s"] = time.perf_counter() - t_lat
            extra["latency_attempts"] = lat.attempts  # > 1: load disturbed the first timing
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
            extra = dict(self.scoring.last_extra)
            self._dense_metrics = self._metrics(self.dense_signature, self.dense, quality, t0, extra)
        return self._dense_metrics

    def prune(self, policy: dict[str, float]) -> nn.Module:
        """The pruned fp32 model of ``policy``, recovered as the spec's evaluation says."""
        return self.scoring.prune(self.space.widths(policy))

    def shrink(self, policy: dict[str, float]) -> nn.Module:
        """The policy's fp32 architecture without any recovery: for costs and latency only."""
        return self.scoring.apply(self.space.widths(self.space.validate(policy)))

    def export_of(self, policy: dict[str, float]) -> OnnxExport | None:
        """How the latency meter writes ``policy``'s file: the kind's export with its int8
        layers quantized — for latency only, so one calibration batch (scales do not change the
        kernels); None (the meter's own export) for an all-fp32 policy."""
        int8 = self.space.int8_layers(self.space.validate(policy))
        return quantizing_export(self.kind, int8, self.scoring.quantization_batches()[:1]) if int8 else None

    def run_of(self, policy: dict[str, float]) -> Run:
        """The policy's model as the runtime runs it (no recovery: for latency only)."""
        return self.latency.run_of(self.shrink(policy), export=self.export_of(policy))

    def _calibrations(self) -> Path:
        if self._calibration_dir is None:
            self._calibration_dir = Path(tempfile.mkdtemp(prefix="autoprune-calibration-"))
            weakref.finalize(self, shutil.rmtree, self._calibration_dir, True)
        return self._calibration_dir

    def _quantized(self, policy: dict[str, float], int8: list[str], model: nn.Module, path: Path) -> Path:
        """``model`` (``policy``'s recovered fp32 model) exported with ``int8`` (the policy's int8
        layers) quantized, at ``path``. The recovered model depends on its widths alone, so its
        activation ranges are calibrated once per architecture, whatever its int8 groups."""
        widths = self.space.signature(self.space.widths(policy))
        ranges = self._calibrations() / f"{hashlib.sha1(widths.encode()).hexdigest()[:20]}.json"
        return write_quantized(self.kind, model, self.example, path, int8,
                               self.scoring.quantization_batches(), ranges)

    def evaluate(self, policy: dict[str, float]) -> Metrics:
        """Metrics of ``policy`` (validated: a bad group, ratio or precision raises
        ``PolicyError``). Its int8 groups are quantized after the fp32 recovery, and quality and
        latency are both measured on the quantized file."""
        t0 = time.perf_counter()
        policy = self.space.validate(policy)
        signature = self.space.signature(policy)
        int8 = self.space.int8_layers(policy)
        timings: dict[str, Any] = {}
        # a directory for the quantized file only when there is one (the loop's fp32 path stays as it was)
        with tempfile.TemporaryDirectory(prefix="autoprune-int8-") if int8 else contextlib.nullcontext("") as tmp:
            with self.lock.shared():
                # nothing removed: the dense model itself (so agreement is exactly 1.0)
                dense_widths = self.space.signature(self.space.widths(policy)) == self.dense_signature
                model = self.dense if dense_widths else self.prune(policy)
                timings["prune_s"] = time.perf_counter() - t0
                scored, export = model, None
                if int8:
                    t1 = time.perf_counter()
                    path = self._quantized(policy, int8, model, Path(tmp) / "model.onnx")
                    scored, export = scored_module(path), copying_export(path)
                    timings["quantize_s"] = time.perf_counter() - t1
                    timings["int8_groups"] = len(self.space.int8_groups(policy))
                t1 = time.perf_counter()
                quality = self.metric_fn(scored)
                timings["quality_s"] = time.perf_counter() - t1
                timings.update(self.scoring.last_extra)  # e.g. ranking fidelity beside a cosine
            return self._metrics(signature, model, quality, t0, timings, export)


def node_name() -> str:
    """The host, plus the Ray node address inside a Ray worker (several nodes may share a host)."""
    host = socket.gethostname()
    if "ray" in sys.modules:  # never import Ray just to name the node
        import ray

        if ray.is_initialized():
            return f"{host}@{ray.util.get_node_ip_address()}"
    return host
