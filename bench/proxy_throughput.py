"""Evaluations per minute of each proxy on digits/resnet20, against the machine's limit (issue 14).

Configurations (``evaluation`` settings) run interleaved, round after round, on the same random
policies projected onto the MACs budget, in-process, 1 thread, no latency measurement (latency is
cached per architecture and costs the same whatever the proxy). For each: median seconds per
evaluation, evaluations per minute, and the *limit*: the forward passes the proxy needs (its
calibration images, its fine-tuning images × 3 for forward + backward, and the validation
images) × the pruned model's MACs ÷ this machine's measured throughput (dense resnet20, batch
128, eval mode, MACs per second). Which proxy is honest at which budget is the proxy study's
finding (docs/benchmarks.md, "Proxy study"); this script prints the cost side.

    .venv/bin/python bench/proxy_throughput.py --budget 0.25 --rounds 3 --per-round 3
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.proxy_study import policies_for  # noqa: E402

CONFIGS: dict[str, dict[str, Any]] = {
    "today: bn, 8 batches": {"recovery": "bn", "calibration_batches": 8},
    "today + 20 fine-tune steps": {"recovery": "finetune", "calibration_batches": 8, "finetune_steps": 20},
    "lsq, 1 batch": {"recovery": "lsq", "calibration_batches": 1},
    "default: lsq, 2 batches": {"recovery": "lsq", "calibration_batches": 2},
}


def throughput(model: torch.nn.Module, example: torch.Tensor, macs: int, rounds: int = 5) -> float:
    """MACs per second of ``model`` at batch 128 (median of ``rounds``)."""
    x = example.expand(128, *example.shape[1:]).contiguous()
    times = []
    with torch.no_grad():
        model(x)
        for _ in range(rounds):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return macs * 128 / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=0.25)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--per-round", type=int, default=3)
    ap.add_argument("--cache-dir", default=".cache/bench")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from workers.evaluator import Evaluator
    from workers.latency import NodeLock
    from workers.spec import JobSpec
    from workers.task import WorkerSettings, load_task

    spec = JobSpec.model_validate(
        {"model": {"zoo": "resnet20"}, "dataset": {"name": "digits"}, "budget": {"macs_ratio": args.budget}}
    )
    task = load_task(spec, WorkerSettings(cache_dir=Path(args.cache_dir)))
    lock = NodeLock(Path(tempfile.mkdtemp(prefix="proxy-throughput-")))  # no latency measured
    evs = {}
    for name, ev_opts in CONFIGS.items():
        s = spec.model_copy(update={"evaluation": spec.evaluation.model_copy(update=ev_opts)})
        evs[name] = Evaluator(dataclasses.replace(task, spec=s), latency_rounds=0, lock=lock)
    first = next(iter(evs.values()))
    val_images = sum(len(b[1]) for b in first.scoring.val_loader)  # type: ignore[attr-defined]
    policies = policies_for(task.space, args.budget, args.rounds * args.per_round + 1, seed=7)[1:]
    seconds: dict[str, list[float]] = {n: [] for n in evs}
    macs: list[float] = []
    for r in range(args.rounds):
        batch = policies[r * args.per_round : (r + 1) * args.per_round]
        macs += [task.space.macs(p) for p in batch]
        order = list(evs) if r % 2 == 0 else list(evs)[::-1]
        for name in order:
            t0 = time.perf_counter()
            for p in batch:
                evs[name].evaluate(p)
            seconds[name].append((time.perf_counter() - t0) / len(batch))
            print(f"round {r} {name:28s} {seconds[name][-1]:.2f} s/eval", flush=True)
    rate = throughput(task.model, task.example_input, task.space.dense_macs)
    pruned_macs = statistics.mean(macs)
    print(f"\nthroughput: {rate / 1e9:.2f} GMAC/s (dense resnet20, batch 128, 1 thread); "
          f"pruned MACs {pruned_macs / 1e6:.2f} M (mean), validation images {val_images}\n")
    print("| proxy | s / evaluation | evaluations / min | limit evaluations / min | of the limit |")
    print("|---|---:|---:|---:|---:|")
    for name, ev_opts in CONFIGS.items():
        ev = evs[name]
        images = sum(len(b[1]) for b in ev.calibration) + val_images
        images += 3 * ev_opts.get("finetune_steps", 0) * spec.evaluation.batch_size
        limit_s = images * pruned_macs / rate
        per = statistics.median(seconds[name])
        print(f"| {name} | {per:.2f} | {60 / per:.2f} | {60 / limit_s:.2f} | {limit_s / per:.0%} |")


if __name__ == "__main__":
    main()
