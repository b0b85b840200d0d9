"""Realized speedup: does a MACs reduction become a CPU latency reduction?

For each zoo model and uniform ratios giving about 75/50/25% of the dense MACs: the MACs ratio,
the measured latency ratio at batch 1 and 32 with 1 thread (dense and pruned measured interleaved
in one run, medians over rounds), and the realization (1 - latency ratio) / (1 - MACs ratio).

    .venv/bin/python bench/realized_speedup.py [--models resnet20,...] [--rounds 30] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from search_spaces import apply_policy, build_model, build_space, count_macs_params, measure_latency

TARGETS = (0.75, 0.50, 0.25)


def uniform_ratio_for(space, target: float) -> float:  # type: ignore[no-untyped-def]
    """Bisects the uniform ratio whose analytic MACs ratio is closest to ``target``."""
    lo, hi = 0.0, space.max_ratio
    for _ in range(40):
        mid = (lo + hi) / 2
        if space.macs_ratio(space.uniform(mid)) > target:
            lo = mid
        else:
            hi = mid
    return min((lo, hi), key=lambda r: abs(space.macs_ratio(space.uniform(r)) - target))


def run(models: list[str], rounds: int, rounds32: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for name in models:
        torch.manual_seed(0)
        model = build_model(name, num_classes=10, in_channels=3).eval()
        x1 = torch.randn(1, 3, 32, 32)
        space = build_space(model, x1)
        pruned = []
        for target in TARGETS:
            ratio = uniform_ratio_for(space, target)
            p = apply_policy(model, space, space.uniform(ratio), example_input=x1).eval()
            macs, _ = count_macs_params(p, x1)
            pruned.append((target, ratio, macs / space.dense_macs, p))
        # every variant of one model in one interleaved measurement, per batch size
        lat1 = measure_latency([model] + [p for *_, p in pruned], x1, threads=1, rounds=rounds, warmup=3)
        lat32 = measure_latency([model] + [p for *_, p in pruned], torch.randn(32, 3, 32, 32), threads=1, rounds=rounds32, warmup=1)
        for i, (target, ratio, mr, _) in enumerate(pruned, start=1):
            l1 = lat1[i].median_ms / lat1[0].median_ms
            l32 = lat32[i].median_ms / lat32[0].median_ms
            rows.append({
                "model": name, "target": target, "uniform_ratio": round(ratio, 3), "macs_ratio": round(mr, 3),
                "dense_ms_b1": round(lat1[0].median_ms, 2), "latency_ratio_b1": round(l1, 3),
                "realization_b1": round((1 - l1) / (1 - mr), 2),
                "dense_ms_b32": round(lat32[0].median_ms, 1), "latency_ratio_b32": round(l32, 3),
                "realization_b32": round((1 - l32) / (1 - mr), 2),
            })
            print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(rows: list[dict[str, object]]) -> str:
    head = "| model | uniform ratio | MACs ratio | latency ratio b1 | realization b1 | latency ratio b32 | realization b32 | dense ms b1 / b32 |"
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['uniform_ratio']} | {r['macs_ratio']} | {r['latency_ratio_b1']} | {r['realization_b1']} "
            f"| {r['latency_ratio_b32']} | {r['realization_b32']} | {r['dense_ms_b1']} / {r['dense_ms_b32']} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet20,resnet56,mobilenetv2,vgg16_bn")
    ap.add_argument("--rounds", type=int, default=30, help="rounds at batch 1")
    ap.add_argument("--rounds32", type=int, default=7, help="rounds at batch 32")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    t0 = time.time()
    rows = run(args.models.split(","), args.rounds, args.rounds32)
    if args.markdown:
        print(markdown(rows))
        load = os.getloadavg()
        print(f"\n{platform.processor() or platform.machine()}, torch {torch.__version__}, "
              f"{os.cpu_count()} cores, load average at the end {load[0]:.1f}, {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
