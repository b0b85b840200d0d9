"""How a latency ratio holds up on a loaded host: rounds averaged vs each round's fastest call.

Measures resnet56 (digits input) against its uniform ``--ratio`` pruning ``--repeats`` times in
each runtime, alternating the two statistics (:func:`search_spaces.measure.time_interleaved`'s
``reduce``: ``mean`` — a round's calls timed together, what measurement did before — and ``min``
— each call timed, the round's fastest kept, what :func:`workers.latency.time_pair` does), and
prints each statistic's ratios (mean ± sd, min–max) beside the host's load average. Run it once
quiet and once beside other work (e.g. ``make test`` in another shell).

    .venv/bin/python bench/latency_load.py --repeats 6
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path[0] = str(Path(__file__).resolve().parents[1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--runtimes", default="onnxruntime,torch")
    args = ap.parse_args(argv)
    from search_spaces import apply_policy, build_model, build_space
    from search_spaces.bundle import export_onnx
    from search_spaces.measure import latency_stats, time_interleaved
    from workers.latency import MIN_CALLS
    from workers.runtimes import get_runtime

    dense = build_model("resnet56", num_classes=10, in_channels=1).eval()
    x = torch.randn(1, 1, 32, 32)
    space = build_space(dense, x)
    pruned = apply_policy(dense, space, space.uniform(args.ratio), example_input=x)
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for name in args.runtimes.split(","):
        rt = get_runtime(name)
        runs = [rt.prepare(m, x, threads=1, export=export_onnx) for m in (dense, pruned)]
        ratios: dict[str, list[float]] = {"mean": [], "min": []}
        with rt.timing(1):
            t0 = time.perf_counter()
            for _ in range(args.repeats):
                for reduce in ("mean", "min"):
                    d, p = (latency_stats(t, batch_size=1, threads=1) for t in time_interleaved(
                        runs, rounds=args.rounds, repeat=MIN_CALLS, warmup=2, sync=rt.sync(x), reduce=reduce))  # type: ignore[arg-type]
                    ratios[reduce].append(p.median_ms / d.median_ms)
        for reduce, rs in ratios.items():
            print(f"{name:<12} {reduce:<5} ratio {statistics.mean(rs):.3f} ± {statistics.stdev(rs):.3f} "
                  f"(min {min(rs):.3f}, max {max(rs):.3f}, n={len(rs)})")
        print(f"{name:<12} took {time.perf_counter() - t0:.0f} s; load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
