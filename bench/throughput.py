"""Evaluations per minute on digits/resnet20: in-process vs 1 and 2 Ray workers, and Ray's overhead.

Every configuration evaluates its own fresh random policies (distinct architectures, so the
latency cache never hits) with the job's default evaluation settings and the cached trained
reference. Configurations run interleaved, round after round, so drifting load from other
processes hits all of them alike; the table reports medians over rounds. Pools are started
before the first round (actor start-up is reported separately, not counted per evaluation).

Ray's overhead per evaluation compares 1 Ray worker with in-process evaluation at the same
thread count (1; Ray gives an actor with ``num_cpus=1`` one thread):
``overhead = t_ray1 / t_inproc1 - 1`` per round, median over rounds.

    .venv/bin/python bench/throughput.py --rounds 3 --per-round 4
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# run as a script, bench/ would shadow the packages (bench/agents.py): import from the repo root
sys.path[0] = str(Path(__file__).resolve().parent.parent)
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import torch  # noqa: E402

from agents.types import Proposal  # noqa: E402
from workers.evaluator import Evaluator  # noqa: E402
from workers.pool import (  # noqa: E402
    InProcessPool,
    RayPool,
    TaskFactory,  # noqa: E402
)
from workers.spec import JobSpec  # noqa: E402
from workers.task import WorkerSettings, load_task  # noqa: E402


def _distinct_policies(space: Any, n: int, seed: int) -> list[dict[str, float]]:
    """``n`` random policies with pairwise different architectures (no latency-cache hits)."""
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[dict[str, float]] = []
    while len(out) < n:
        policy = {g: rng.uniform(0.0, space.max_ratio) for g in space.names}
        if space.signature(policy) not in seen:
            seen.add(space.signature(policy))
            out.append(policy)
    return out


def _timed(pool: Any, policies: list[dict[str, float]], start_id: int) -> dict[str, float]:
    proposals = [Proposal(start_id + i, p) for i, p in enumerate(policies)]
    t0 = time.perf_counter()
    outcomes = list(pool.evaluate(proposals))
    wall = time.perf_counter() - t0
    bad = [o.error for o in outcomes if not o.ok]
    if bad:
        raise RuntimeError(f"evaluations failed: {bad}")
    inner = sum(o.metrics.eval_seconds for o in outcomes)  # time inside the evaluator
    return {"wall_s": wall, "per_eval_s": wall / len(outcomes), "inner_s": inner}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--per-round", type=int, default=4, help="evaluations per configuration per round"
    )
    ap.add_argument("--cache-dir", type=Path, default=Path(".cache/autoprune/cache"))
    ap.add_argument(
        "--random-weights",
        action="store_true",
        help="untrained weights instead of the trained reference",
    )
    ap.add_argument("--out", type=Path, default=None, help="write the raw results as JSON")
    args = ap.parse_args()

    model: dict[str, Any] = {"zoo": "resnet20"}
    settings = WorkerSettings(cache_dir=args.cache_dir.resolve())
    if args.random_weights:
        # evaluation cost does not depend on the weights' values: skip training the reference
        from safetensors.torch import save_file

        from search_spaces.zoo import build_model

        path = settings.cache_dir / "bench-resnet20-digits-random.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        save_file(build_model("resnet20", num_classes=10, in_channels=1).state_dict(), str(path))
        model["weights"] = str(path)
    spec = JobSpec.model_validate(
        {
            "model": model,
            "dataset": {"name": "digits"},
            "budget": {"macs_ratio": 0.6},
            "workers": 0,
        }
    )
    t0 = time.perf_counter()
    task = load_task(spec, settings)  # trains the reference once (cached)
    print(
        f"task loaded in {time.perf_counter() - t0:.1f}s ({task.info.get('weights')})", flush=True
    )

    import ray

    # 3 actors live at once (1 + 2) but only one configuration runs at a time
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, configure_logging=False)
    state_ref = ray.put(TaskFactory.shareable(task))
    factory = TaskFactory.from_task(task, settings, state_ref=state_ref)
    factory.threads = 1
    startup: dict[str, float] = {}
    pools: dict[str, Any] = {}
    t0 = time.perf_counter()
    in_proc = Evaluator(task, settings=settings)
    pools["in-process, 1 thread"] = InProcessPool(in_proc)
    pools["in-process, 2 threads"] = pools["in-process, 1 thread"]
    startup["in-process"] = time.perf_counter() - t0
    for n in (1, 2):
        t0 = time.perf_counter()
        pools[f"Ray, {n} worker{'s' * (n > 1)}"] = RayPool(factory, task.space, workers=n)
        startup[f"Ray, {n} worker{'s' * (n > 1)}"] = time.perf_counter() - t0
    print("start-up s:", {k: round(v, 1) for k, v in startup.items()}, flush=True)

    names = list(pools)
    needed = args.rounds * len(names) * args.per_round
    policies = _distinct_policies(task.space, needed, seed=123)
    results: dict[str, list[dict[str, float]]] = {k: [] for k in names}
    next_id = 0
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            torch.set_num_threads(2 if name.endswith("2 threads") else 1)
            batch, policies = policies[: args.per_round], policies[args.per_round :]
            res = _timed(pools[name], batch, next_id)
            next_id += len(batch)
            results[name].append(res)
            print(f"round {r} {name:24s} {res['per_eval_s']:.2f} s/eval", flush=True)
    for p in pools.values():
        p.close()
    ray.shutdown()

    base = "in-process, 1 thread"
    overheads = [
        ray1["per_eval_s"] / inp["per_eval_s"] - 1.0
        for ray1, inp in zip(results["Ray, 1 worker"], results[base], strict=True)
    ]
    # Ray's share of its own wall time: dispatch, (de)serialisation, scheduling
    dispatch = [1.0 - x["inner_s"] / x["wall_s"] for x in results["Ray, 1 worker"]]
    rows = []
    for name in names:
        per_eval = statistics.median(x["per_eval_s"] for x in results[name])
        rows.append((name, 60.0 / per_eval, per_eval))
    print()
    print("| configuration | evaluations / min | s / evaluation |")
    print("|---|---:|---:|")
    for name, epm, per_eval in rows:
        print(f"| {name} | {epm:.1f} | {per_eval:.2f} |")
    print()
    print(
        f"Ray overhead per evaluation (1 worker vs in-process, 1 thread): median {100 * statistics.median(overheads):+.1f}% "
        f"(rounds: {', '.join(f'{100 * o:+.1f}%' for o in overheads)}); "
        f"dispatch share of Ray wall time: {100 * statistics.median(dispatch):.2f}%"
    )
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "results": results,
                    "startup_s": startup,
                    "overheads": overheads,
                    "dispatch": dispatch,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
