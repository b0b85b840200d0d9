"""Knapsack vs optuna-tpe under a latency budget on real pruned models (issue 14).

For each seed and agent: the agent's hints are measured through the pool (``workers.hints``: the
knapsack's per-group latency table; TPE asks for none), then ``--evaluations`` real evaluations
run through the service's loop (``workers.loop.run_search``: prune → the recovery (`lsq` by default) → val
accuracy → latency measured interleaved with the dense model, batch 1, 1 thread). The best
feasible policy is then rebuilt and its latency **re-measured** (fresh, uncached, ``--remeasure-rounds``
interleaved rounds against the dense model) and checked against the budget + 10 % noise; its
test accuracy (no fine-tune) is reported too. Results are written after every run, so parallel
processes (one per agent) can be merged with ``--merge``.

    .venv/bin/python bench/knapsack.py --agents knapsack --out docs/bench/knapsack-k.json
    .venv/bin/python bench/knapsack.py --agents optuna-tpe --out docs/bench/knapsack-t.json
    .venv/bin/python bench/knapsack.py --merge docs/bench/knapsack-k.json docs/bench/knapsack-t.json \
        --out docs/bench/knapsack.json --plot docs/knapsack_best_so_far.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.registry import make_agent  # noqa: E402
from agents.types import Budget, Outcome, Proposal  # noqa: E402
from workers.hints import agent_hints  # noqa: E402
from workers.loop import run_search  # noqa: E402
from workers.pool import InProcessPool  # noqa: E402


def build(args: argparse.Namespace) -> tuple[Any, Any]:
    from workers.evaluator import Evaluator
    from workers.latency import NodeLock
    from workers.spec import JobSpec
    from workers.task import WorkerSettings, load_task

    dataset, model = args.task.split(":")
    spec = JobSpec.model_validate(
        {
            "model": {"zoo": model},
            "dataset": {"name": dataset},
            "budget": {"latency_ratio": args.latency_ratio},
            "target": {"threads": args.threads, "batch_size": 1},
            "search_space": {"round_to": args.round_to} if args.round_to else {},
            "evaluation": {"calibration_batches": args.calibration_batches},
            "seed": args.reference_seed,
        }
    )
    settings = WorkerSettings(cache_dir=Path(args.cache_dir))
    t0 = time.perf_counter()
    task = load_task(spec, settings)
    # a node lock of this bench's own (``--lock``): other users of the machine are not waited
    # for, interleaving against the dense model absorbs their load
    lock = NodeLock(Path(args.cache_dir) / "lock", name=args.lock)
    ev = Evaluator(task, settings=settings, latency_rounds=args.latency_rounds, lock=lock)
    dense = ev.dense_metrics()
    print(
        f"[{args.task}] {len(task.space)} groups, round_to {task.space.round_to}, dense val "
        f"{dense.quality:.4f}, {dense.latency_ms:.2f} ms, ready in {time.perf_counter() - t0:.0f}s",
        flush=True,
    )
    return task, ev


def remeasure(task: Any, ev: Any, policy: dict[str, float], rounds: int) -> dict[str, float]:
    """The best policy rebuilt, its latency measured afresh against dense, its test accuracy."""
    from search_spaces.training import evaluate_accuracy
    from workers.latency import measure_pair

    model = ev.prune(policy)
    with ev.lock.exclusive():
        lat = measure_pair(ev.dense, model, ev.latency.example, threads=ev.latency.threads, rounds=rounds)
    return {"latency_ratio": lat.ratio, "latency_ms": lat.ms, "dense_ms": lat.dense_ms, "test_acc": evaluate_accuracy(model, task.splits.test)}


def search(kind: str, task: Any, ev: Any, budget: Budget, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    pool = InProcessPool(ev)
    options = dict(args.options.get(kind, {}))
    t0 = time.perf_counter()
    hints = agent_hints(kind, budget, options, pool)
    hint_s = time.perf_counter() - t0
    agent = make_agent(kind, ev.space, budget, seed=seed, options=options, hints=hints)
    done: list[tuple[Proposal, Outcome]] = []
    partial = Path(f"{args.out}.{kind}-s{seed}.partial")

    def on_outcome(p: Proposal, o: Outcome, _cached: bool) -> None:
        # progress as it goes (a run cut short still shows its best-so-far curve)
        done.append((p, o))
        rows = [(q.trial_id, r.metrics.quality, r.metrics.latency_ratio) for q, r in done if r.metrics is not None]
        partial.write_text(json.dumps({"agent": kind, "seed": seed, "trials": rows}))

    t1 = time.perf_counter()
    summary = run_search(
        agent,
        pool,
        trials=args.evaluations,
        batch_size=args.batch,
        on_outcome=on_outcome,
        on_state=lambda _state: None,
        should_stop=lambda: False,
    )
    trials = [
        {
            "trial_id": p.trial_id,
            "policy": p.policy,
            "quality": o.metrics.quality,
            "latency_ratio": o.metrics.latency_ratio,
            "macs_ratio": o.metrics.macs_ratio,
            "feasible": budget.feasible(o.metrics),
            "role": p.info.get("role"),
        }
        for p, o in sorted(done, key=lambda po: po[0].trial_id)
        if o.metrics is not None
    ]
    best = max((t for t in trials if t["feasible"]), key=lambda t: t["quality"], default=None)
    curve, run = [], None
    for t in trials:
        if t["feasible"]:
            run = t["quality"] if run is None else max(run, t["quality"])
        curve.append(run)
    result = {
        "agent": kind,
        "seed": seed,
        "evaluations": summary.evaluated,
        "answered": summary.answered,
        "hint_seconds": hint_s,
        "search_seconds": time.perf_counter() - t1,
        "trials": trials,
        "best": best,
        "curve": curve,
        "baseline": next((t for t in trials if t["role"] == "baseline"), None),
    }
    if best is not None:
        result["remeasured"] = remeasure(task, ev, best["policy"], args.remeasure_rounds)
    return result


def _load_runs(path: Path, budget: float) -> list[dict[str, Any]]:
    """Runs of a result file, or the one run of a ``.partial`` progress file (cut short: no
    re-measurement, its curve as far as it got)."""
    data = json.loads(path.read_text())
    if "runs" in data:
        return data["runs"]
    curve, run = [], None
    for _, quality, latency_ratio in sorted(data["trials"]):
        if latency_ratio is not None and latency_ratio <= budget + 1e-9:
            run = quality if run is None else max(run, quality)
        curve.append(run)
    best = None if run is None else {"quality": run}
    return [{"agent": data["agent"], "seed": data["seed"], "evaluations": len(curve), "curve": curve,
             "best": best, "baseline": None, "partial": True}]


def _ms(xs: list[float]) -> str:
    if not xs:
        return "–"
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else f"{xs[0]:.3f}"


def report(runs: list[dict[str, Any]], budget: float, plot: str | None) -> None:
    n = min(len(r["curve"]) for r in runs)  # equal evaluations: every run's best within its first n
    print(f"| agent | evaluations | seeds | best feasible val acc @{n} evals | per seed @{n} | best feasible val acc, "
          "whole run | baseline val acc | re-measured latency ratio (max) | within budget + 10 % | "
          "test acc, no fine-tune | hints s | search s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for agent in dict.fromkeys(r["agent"] for r in runs):
        rs = sorted((r for r in runs if r["agent"] == agent), key=lambda r: r["seed"])
        at_n = [r["curve"][n - 1] for r in rs if r["curve"][n - 1] is not None]
        q = [r["best"]["quality"] for r in rs if r["best"]]
        re = [r["remeasured"] for r in rs if r.get("remeasured")]
        lat = [m["latency_ratio"] for m in re]
        within = sum(x <= budget * 1.1 for x in lat)
        base = [r["baseline"]["quality"] for r in rs if r.get("baseline")]
        secs = [r for r in rs if "hint_seconds" in r]
        print(
            f"| {agent} | {', '.join(str(r['evaluations']) + ('*' if r.get('partial') else '') for r in rs)} | "
            f"{len(rs)} | {_ms(at_n)} | {', '.join(f'{x:.3f}' for x in at_n)} | {_ms(q)} | {_ms(base)} | "
            f"{_ms(lat)} ({max(lat, default=float('nan')):.3f}) | {within}/{len(re)} | "
            f"{_ms([m['test_acc'] for m in re])} | "
            f"{statistics.mean(r['hint_seconds'] for r in secs) if secs else float('nan'):.0f} | "
            f"{statistics.mean(r['search_seconds'] for r in secs) if secs else float('nan'):.0f} |"
        )
    print("(* a run cut short: its progress file; no re-measurement)\n")
    # where each run's best came from: the agent's own proposals beside its baseline
    print("| agent | seed | evaluations within the budget | baseline val acc (latency ratio) | best of its other proposals |")
    print("|---|---|---|---|---|")
    for r in runs:
        if r.get("partial"):
            continue
        own = [t["quality"] for t in r["trials"] if t["feasible"] and t["role"] != "baseline"]
        base = r["baseline"]
        print(f"| {r['agent']} | {r['seed']} | {sum(t['feasible'] for t in r['trials'])} of {len(r['trials'])} | "
              f"{base['quality']:.3f} ({base['latency_ratio']:.3f}) | {max(own) if own else float('nan'):.3f} |")
    if not plot:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for agent in dict.fromkeys(r["agent"] for r in runs):
        curves = [r["curve"] for r in runs if r["agent"] == agent]
        n = min(len(c) for c in curves)
        mean = [statistics.mean(c[i] for c in curves if c[i] is not None) if any(c[i] is not None for c in curves) else float("nan") for i in range(n)]
        ax.plot(range(1, n + 1), mean, label=agent)
    ax.set_xlabel("evaluations")
    ax.set_ylabel("best feasible val accuracy (mean over seeds)")
    ax.set_title(f"latency_ratio <= {budget:g}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(plot, dpi=110)
    print(f"plot: {plot}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="digits:resnet56")
    ap.add_argument("--latency-ratio", type=float, default=0.6)
    ap.add_argument("--agents", default="knapsack,optuna-tpe")
    ap.add_argument("--evaluations", type=int, default=30)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--batch", type=int, default=1, help="proposals per ask")
    ap.add_argument("--options", type=json.loads, default={}, help="JSON {agent: options}")
    ap.add_argument("--round-to", type=int, default=0, help="0: the job default")
    ap.add_argument("--calibration-batches", type=int, default=8, help="calibration batches per evaluation (recovery)")
    ap.add_argument("--latency-rounds", type=int, default=10, help="interleaved rounds per evaluation")
    ap.add_argument("--remeasure-rounds", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reference-seed", type=int, default=0)
    ap.add_argument("--cache-dir", default=".cache/bench")
    ap.add_argument("--lock", default="bench-knapsack", help="node lock name; processes sharing it never measure at once")
    ap.add_argument("--merge", nargs="+", metavar="JSON", help="no search: combine earlier result files")
    ap.add_argument("--out", default="docs/bench/knapsack.json")
    ap.add_argument("--plot", default="")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.merge:
        runs = [r for f in args.merge for r in _load_runs(Path(f), args.latency_ratio)]
        out.write_text(json.dumps({"runs": runs}, indent=1))
        report(runs, args.latency_ratio, args.plot)
        return
    torch.set_num_threads(args.threads)
    task, ev = build(args)
    budget = Budget(latency_ratio=args.latency_ratio)
    results: dict[str, Any] = {"args": vars(args), "runs": []}
    out.parent.mkdir(parents=True, exist_ok=True)
    for seed in [int(s) for s in args.seeds.split(",")]:
        for kind in args.agents.split(","):
            r = search(kind, task, ev, budget, seed, args)
            results["runs"].append(r)
            out.write_text(json.dumps(results, indent=1))
            best = r["best"]
            print(
                f"{kind} seed {seed}: best {best['quality'] if best else None} "
                f"re-measured {r.get('remeasured')} hints {r['hint_seconds']:.0f}s search {r['search_seconds']:.0f}s",
                flush=True,
            )
    report(results["runs"], args.latency_ratio, args.plot)


if __name__ == "__main__":
    main()
