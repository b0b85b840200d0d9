"""A latency measurement disturbed through most of its rounds is timed again, not believed."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from workers.latency import MIN_CALLS, RETIMES, LatencyMeter, NodeLock, time_pair
from workers.runtimes import get_runtime


def _spin(ms: float) -> None:
    end = time.perf_counter() + ms / 1000.0
    while time.perf_counter() < end:
        pass


def _run(ms: Callable[[int], float]) -> Callable[[], None]:
    """A run taking ``ms(n)`` milliseconds on its n-th call."""
    calls = [0]

    def run() -> None:
        _spin(ms(calls[0]))
        calls[0] += 1

    return run


ROUNDS, CALLS_PER_ROUND = 15, MIN_CALLS  # min_round_s=0: the fewest calls per round


def _disturbed_for(attempts: int) -> Callable[[int], float]:
    """0.3 ms, but every other round of the first ``attempts`` timings takes twice as long
    (load on the host for most of the measurement, every call of the round)."""
    per_attempt = ROUNDS * CALLS_PER_ROUND + 2  # the two warm-up calls of each timing

    def ms(n: int) -> float:
        attempt, k = divmod(n, per_attempt)
        disturbed = attempt < attempts and k >= 2 and ((k - 2) // CALLS_PER_ROUND) % 2 == 1
        return 0.6 if disturbed else 0.3

    return ms


def test_a_disturbed_measurement_is_timed_again_and_the_settled_figure_kept() -> None:
    example = torch.zeros(1, 1)
    lat = time_pair(get_runtime("torch"), _run(lambda n: 1.0), _run(_disturbed_for(1)), example,
                    rounds=ROUNDS, min_round_s=0.0)
    assert lat.attempts == 2
    assert abs(lat.ratio - 0.3) < 0.05  # not the disturbed timing's median (about 0.45)


def test_a_pair_that_never_settles_is_timed_a_bounded_number_of_times() -> None:
    example = torch.zeros(1, 1)
    lat = time_pair(get_runtime("torch"), _run(lambda n: 1.0), _run(_disturbed_for(99)), example,
                    rounds=ROUNDS, min_round_s=0.0)
    assert lat.attempts == 1 + RETIMES


def test_the_settled_figure_is_what_the_meter_caches(tmp_path: Path) -> None:
    """A steady measurement is timed once, and the cache (a file other jobs read) holds it."""
    meter = LatencyMeter(torch.nn.Identity(), torch.zeros(1, 4), lock=NodeLock(tmp_path),
                         cache_file=tmp_path / "latency.jsonl", rounds=ROUNDS)
    pruned = torch.nn.Identity()
    meter.run_of = lambda model, export=None: _run(lambda n: 1.0 if model is meter.dense else 0.3)  # type: ignore[method-assign]
    lat = meter.measure("sig", pruned)
    assert lat.attempts == 1 and abs(lat.ratio - 0.3) < 0.05
    again = LatencyMeter(torch.nn.Identity(), torch.zeros(1, 4), lock=NodeLock(tmp_path),
                         cache_file=tmp_path / "latency.jsonl", rounds=ROUNDS)
    assert again.cached("sig") == lat
