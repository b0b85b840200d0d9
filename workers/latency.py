"""Latency you can trust on a noisy machine: interleaved rounds, medians, a cache, a node lock.

Each measurement times the dense and the pruned model in alternating rounds (so a burst of load
from elsewhere hits both alike), with fixed threads and batch size after a warm-up, and reports
the pruned model's median, its interquartile spread and the median per-round ratio to the dense
model. Latency depends only on the pruned architecture, so results are cached by
``space.signature(policy)``.

:class:`NodeLock` keeps measurements honest when several evaluators share a node: a latency
measurement holds the node exclusively, while quality evaluations hold it shared (they run in
parallel with each other, never during a measurement). It is an ``fcntl`` file lock in the
node's temporary directory, so it works across Ray actors (processes) on one host, and a
waiting measurement blocks new shared holders (writer preference, no starvation).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from search_spaces.bundle import export_onnx
from search_spaces.measure import latency_stats, time_interleaved
from workers.runtimes import get_runtime
from workers.runtimes.base import OnnxExport, Run, Runtime


@dataclass(frozen=True)
class Latency:
    """One measured architecture: pruned median and spread (ms) and the ratio to dense."""

    ms: float
    spread_ms: float
    ratio: float
    dense_ms: float
    rounds: int
    #: how many times the pair was timed before the figures settled (:func:`time_pair`)
    attempts: int = 1


class NodeLock:
    """Readers-writer lock shared by every process on this host (``fcntl.flock``).

    ``exclusive()`` is for latency measurement, ``shared()`` for other work that must not run
    during one. A ``gate`` file gives a waiting writer priority over new readers.
    """

    def __init__(self, directory: Path | None = None, name: str = "autoprune-node") -> None:
        directory = Path(directory or tempfile.gettempdir())
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{name}.lock"
        self._gate_path = directory / f"{name}.gate"
        self._local = threading.Lock()  # flock is per open file: serialise threads of one process

    @contextlib.contextmanager
    def _flock(self, path: Path, mode: int) -> Iterator[None]:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with (
            self._local,
            self._flock(self._gate_path, fcntl.LOCK_EX),
            self._flock(self.path, fcntl.LOCK_EX),
        ):
            yield

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            with self._flock(self._gate_path, fcntl.LOCK_EX):
                fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


#: calls per run and round, the fastest kept (:func:`time_pair`)
MIN_CALLS = 3
#: a measurement is settled when each run's interquartile spread is at most this share of its
#: median; one that is not was disturbed for most of its rounds (docs/benchmarks.md, "Disturbed
#: measurements"), and is timed again
SETTLED_SPREAD = 0.05
#: at most this many more timings of a pair that has not settled (the steadiest is kept)
RETIMES = 2
#: how latency is measured, in every cache key: a new method never reads an old one's figures
METHOD = f"min-of-{MIN_CALLS}-settled"


def time_pair(
    runtime: Runtime,
    dense: Run,
    pruned: Run,
    example: torch.Tensor,
    *,
    threads: int = 1,
    rounds: int = 15,
    min_round_s: float = 0.005,
    retimes: int = RETIMES,
) -> Latency:
    """``pruned`` against ``dense``: :func:`time_side_by_side` with one run."""
    (lat,) = time_side_by_side(runtime, dense, [pruned], example, threads=threads, rounds=rounds,
                               min_round_s=min_round_s, retimes=retimes)
    return lat


def time_side_by_side(
    runtime: Runtime,
    dense: Run,
    runs: list[Run],
    example: torch.Tensor,
    *,
    threads: int = 1,
    rounds: int = 15,
    min_round_s: float = 0.005,
    retimes: int = RETIMES,
) -> list[Latency]:
    """Times ``runs`` and the ``dense`` reference of ``runtime`` round-robin, all in one timing
    (:func:`search_spaces.measure.time_interleaved`): figures of different runs compare exactly,
    whatever the machine did meanwhile. One :class:`Latency` per run, its ratio to ``dense``.

    Each round times at least ``MIN_CALLS`` calls of each run one by one, and enough to last
    about ``min_round_s`` (sized on the dense, slower, run), and keeps each run's fastest call:
    the figures are medians over rounds of those minima, robust to preemption by other work on
    the host (docs/benchmarks.md, "Latency on a loaded machine"). Load that lasts through most
    of the rounds still moves them, and not alike (a small network more than the dense one); it
    shows as spread, so a timing whose spread is over ``SETTLED_SPREAD`` is done again, up to
    ``retimes`` times, and the steadiest one is kept.
    """
    sync = runtime.sync(example)  # on CUDA every timed region ends with the kernels done
    batch = int(example.shape[0])
    best: tuple[float, list[Latency]] | None = None
    with runtime.timing(threads):
        dense()  # first call: allocations, lazy init
        sync()
        t0 = time.perf_counter()
        dense()
        sync()
        one = time.perf_counter() - t0
        repeat = max(MIN_CALLS, min(1000, int(min_round_s / max(one, 1e-6))))
        attempts = 0
        while attempts <= retimes:
            attempts += 1
            d, *ps = time_interleaved([dense, *runs], rounds=rounds, repeat=repeat, warmup=2, sync=sync,
                                      reduce="min")
            ds = latency_stats(d, batch_size=batch, threads=threads)
            stats = [latency_stats(p, batch_size=batch, threads=threads) for p in ps]
            spread = max(s.iqr_ms / s.median_ms for s in [ds, *stats])
            lats = [Latency(ms=s.median_ms, spread_ms=s.iqr_ms, ratio=s.median_ms / ds.median_ms,
                            dense_ms=ds.median_ms, rounds=rounds) for s in stats]
            if best is None or spread < best[0]:
                best = (spread, lats)
            if spread <= SETTLED_SPREAD:
                break
    assert best is not None
    return [replace(lat, attempts=attempts) for lat in best[1]]


def time_one(runtime: Runtime, run: Run, example: torch.Tensor, *, threads: int = 1,
             rounds: int = 15) -> Latency:
    """One run's latency (the dense reference itself: ratio 1 by definition)."""
    with runtime.timing(threads):
        (t,) = time_interleaved([run], rounds=rounds, repeat=MIN_CALLS, warmup=2, sync=runtime.sync(example),
                                reduce="min")
    s = latency_stats(t, batch_size=int(example.shape[0]), threads=threads)
    return Latency(s.median_ms, s.iqr_ms, 1.0, s.median_ms, rounds)


def measure_pair(
    dense: nn.Module,
    pruned: nn.Module,
    example: torch.Tensor,
    *,
    runtime: Runtime | None = None,
    export: OnnxExport | None = None,
    threads: int = 1,
    rounds: int = 15,
    min_round_s: float = 0.005,
) -> Latency:
    """``pruned`` against ``dense`` in ``runtime`` (default PyTorch eager): :func:`time_pair`."""
    runtime = runtime or get_runtime("torch")
    export = export or export_onnx
    d = runtime.prepare(dense, example, threads=threads, export=export)
    p = runtime.prepare(pruned, example, threads=threads, export=export)
    return time_pair(runtime, d, p, example, threads=threads, rounds=rounds, min_round_s=min_round_s)


class LatencyMeter:
    """Measures pruned architectures against one dense model in one runtime, once per signature.

    ``cache_file`` (optional, JSON lines) shares results between evaluators on a node and
    across restarts; its key should include everything latency depends on besides the
    architecture (model source, device, runtime, threads, batch), which the caller folds into
    ``scope``. The dense model is prepared in the runtime once (an ONNX export, a session) and
    each architecture once, when it is first measured.
    """

    def __init__(
        self,
        dense: nn.Module,
        example: torch.Tensor,
        *,
        runtime: Runtime | None = None,
        export: OnnxExport | None = None,
        threads: int = 1,
        rounds: int = 15,
        lock: NodeLock | None = None,
        cache_file: Path | None = None,
        scope: str = "",
    ) -> None:
        self.dense = dense
        self.example = example
        self.runtime = runtime or get_runtime("torch")
        self.export = export or export_onnx
        self.threads = threads
        self.rounds = rounds
        self.lock = lock or NodeLock()
        self.cache_file = cache_file
        self.scope = scope
        self.measurements = 0  # how many times a model was actually timed (cache misses)
        self._cache: dict[str, Latency] = {}
        self._dense_run: Run | None = None

    def run_of(self, model: nn.Module, *, export: OnnxExport | None = None) -> Run:
        """``model`` prepared in the meter's runtime (the dense model's run is kept); ``export``
        writes its file instead of the meter's export (a quantized model's)."""
        if model is self.dense and export is None:
            if self._dense_run is None:
                self._dense_run = self.runtime.prepare(
                    self.dense, self.example, threads=self.threads, export=self.export)
            return self._dense_run
        return self.runtime.prepare(model, self.example, threads=self.threads, export=export or self.export)

    def _key(self, signature: str) -> str:
        return f"{self.scope}|{METHOD}|{signature}"

    def _load_file(self, key: str) -> Latency | None:
        if self.cache_file is None or not self.cache_file.exists():
            return None
        found = None
        with self.cache_file.open() as fh:
            for line in fh:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn line from a crash: skip it
                if row.get("key") == key:
                    found = Latency(**row["latency"])
        return found

    def cached(self, signature: str) -> Latency | None:
        key = self._key(signature)
        if key not in self._cache:
            hit = self._load_file(key)
            if hit is None:
                return None
            self._cache[key] = hit
        return self._cache[key]

    def measure(self, signature: str, model: nn.Module, *, use_cache: bool = True,
                export: OnnxExport | None = None) -> Latency:
        """Latency of ``model`` (whose architecture and precision are ``signature``): cached, or
        measured now (``export``: as in :meth:`run_of`)."""
        if use_cache and (hit := self.cached(signature)) is not None:
            return hit
        # prepared (exported, a session built) before the node is held: that is not timing
        run = self.run_of(model, export=export)
        dense_run = self.run_of(self.dense)
        with self.lock.exclusive():
            # another evaluator on this node may have measured it while we waited
            if use_cache and (hit := self._load_file(self._key(signature))) is not None:
                self._cache[self._key(signature)] = hit
                return hit
            result = self.time(run, dense_run)
            self.measurements += 1
            self._cache[self._key(signature)] = result
            if self.cache_file is not None:
                self.cache_file.parent.mkdir(parents=True, exist_ok=True)
                with self.cache_file.open("a") as fh:
                    fh.write(
                        json.dumps({"key": self._key(signature), "latency": asdict(result)}) + "\n"
                    )
        return result

    def time(self, run: Run, dense_run: Run, *, rounds: int | None = None) -> Latency:
        """``run`` against the dense run, now (the caller holds the node when it must)."""
        rounds = rounds or self.rounds
        if run is dense_run:
            return time_one(self.runtime, run, self.example, threads=self.threads, rounds=rounds)
        return time_pair(self.runtime, dense_run, run, self.example, threads=self.threads,
                         rounds=rounds)

    def side_by_side(self, dense_run: Run, runs: list[Run], *, rounds: int | None = None) -> list[Latency]:
        """``runs`` and the dense run in one interleaved timing (:func:`time_side_by_side`), now."""
        return time_side_by_side(self.runtime, dense_run, runs, self.example, threads=self.threads,
                                 rounds=rounds or self.rounds)
