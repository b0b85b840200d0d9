"""Realized speed-up per runtime: does a MACs cut become a latency cut where the model ships?

For each model (zoo CNNs on the ``digits`` input as jobs load them, and all-MiniLM-L6-v2 at
``--seq-len`` tokens), runtime (``torch`` eager, ``onnxruntime``) and batch size, with 1 thread:

1. **latency-aware**: the knapsack agent's allocation (its per-group latency table measured in
   that runtime at that batch, exactly as a job's ``workers.latency_table`` does), its latency
   bound corrected by a few secant steps until the *measured* latency ratio sits at
   ``--latency-ratio`` (the first solve aims at the modelled latency);
2. **uniform**: one pruning ratio for every group, bisected on the *measured* latency ratio to
   the latency-aware allocation's measured latency (equal latency, so the MACs they keep compare);
3. **MACs-max (ceiling)**: the same solver and latency model maximising the MACs kept rather
   than the importance kept, brought to the same measured latency: the most of the network an
   allocation under this table keeps at that speed (an upper reference, not a policy to ship);
4. dense and the three timed **interleaved in one final run** in the same runtime
   (``--final-rounds`` rounds; medians, or the fastest rounds with ``--stat min``); realization = (1 − latency ratio) / (1 − MACs ratio):
   1 means every MAC removed became time saved. Higher realization at equal latency = more of
   the network kept for the same speed.

It also times the dense model in both runtimes interleaved (why ``onnxruntime`` is the default
runtime) and, with ``--round-to``, runs the latency-aware allocation for several
``search_space.round_to`` values side by side (Deliver 5: latency and the quality proxy).

    python bench/realized_speedup.py                       # everything (about an hour on a quiet 2-core VM)
    python bench/realized_speedup.py --models resnet56 --runtimes onnxruntime --batches 1 --quick
    python bench/realized_speedup.py --models resnet56 --runtimes onnxruntime --batches 1 \\
        --round-to auto,runtime --quality
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo, not bench/ (bench/transformers.py)

from agents.budget_fit import BudgetError  # noqa: E402
from agents.cost_model import analytic_cost_model, latency_cost_model  # noqa: E402
from agents.knapsack_solve import Knapsack, Limit  # noqa: E402
from agents.latency_table import LatencyTable  # noqa: E402
from agents.registry import make_agent  # noqa: E402
from agents.types import AgentHints, Budget  # noqa: E402
from search_spaces.measure import synchronizer, time_interleaved  # noqa: E402
from search_spaces.space import Policy, SearchSpace  # noqa: E402
from workers.hints import agent_hints  # noqa: E402
from workers.pool import InProcessPool  # noqa: E402

TEXT_MODELS = {"all-minilm-l6-v2"}


# --- the task, as a job loads it ------------------------------------------------------------
def job_spec(model: str, args: argparse.Namespace, *, runtime: str, batch: int, round_to: Any = None) -> Any:
    from workers.spec import JobSpec

    target = {"threads": 1, "batch_size": batch, "runtime": runtime, "device": args.device}
    data: dict[str, Any] = {
        "model": {"zoo": model},
        "budget": {"latency_ratio": args.latency_ratio},
        "search_space": ({} if round_to is None else {"round_to": round_to}) | ({"depth": True} if args.depth else {}),
    }
    if model in TEXT_MODELS:
        data.update(dataset={"name": "docstrings"}, metric="embedding_cosine",
                    target={**target, "seq_len": args.seq_len}, evaluation={"val_samples": args.val_samples})
    else:
        data.update(dataset={"name": "digits"}, target=target, evaluation={"calibration_batches": 4})
    return JobSpec.model_validate(data)


def load(model: str, args: argparse.Namespace, round_to: Any = None) -> Any:
    """The task as its model kind loads it; ``round_to: "runtime"`` is resolved per cell."""
    from workers.kinds import kind_of
    from workers.task import WorkerSettings

    spec = job_spec(model, args, runtime=args.runtimes.split(",")[0], batch=1, round_to=round_to)
    return kind_of(spec).load_task(spec, WorkerSettings(cache_dir=Path(args.cache_dir)))


def evaluator(task: Any, runtime: str, batch: int, rounds: int, stat: str = "median") -> Any:
    """An evaluator of ``task`` in ``runtime`` at ``batch`` (no latency cache file: fresh), its
    space's ``round_to: "runtime"`` resolved in that runtime at that batch as a job would."""
    from workers.evaluator import Evaluator
    from workers.latency import NodeLock
    from workers.latency_table import resolve_round_to

    target = task.spec.target.model_copy(update={"runtime": runtime, "batch_size": batch})
    spec = task.spec.model_copy(update={"target": target})
    cell = resolve_round_to(dataclasses.replace(task, spec=spec))
    lock = NodeLock(Path(os.environ.get("TMPDIR", "/tmp")), name="bench-realized")
    ev = Evaluator(cell, latency_rounds=rounds, lock=lock)
    if stat == "min":  # every measurement (the latency table's too) by its fastest rounds
        setattr(ev.latency, "time", functools.partial(fastest_time, ev.latency))  # noqa: B010
    return ev


def fastest_time(meter: Any, run: Any, dense_run: Any, *, rounds: int | None = None) -> Any:
    """``LatencyMeter.time`` by the fastest round of each run (``--stat min``): what the
    kernels cost, unmoved by bursts of load from other processes — on a shared machine a
    median moves with them, however well interleaved."""
    from workers.latency import Latency

    rounds = rounds or meter.rounds
    runs = [dense_run] if run is dense_run else [dense_run, run]
    times = timed(meter.runtime, runs, meter.example, meter.threads, rounds)
    d, p = min(times[0]), min(times[-1])
    return Latency(ms=p, spread_ms=0.0, ratio=p / d, dense_ms=d, rounds=rounds)


def timed(runtime: Any, runs: list[Any], example: torch.Tensor, threads: int, rounds: int) -> list[list[float]]:
    """``runs`` round-robin in ``runtime``, each round about 5 ms of the first (dense) run."""
    sync = runtime.sync(example)
    with runtime.timing(threads):
        runs[0]()
        sync()
        t0 = time.perf_counter()
        runs[0]()
        sync()
        repeat = max(1, min(1000, int(0.005 / max(time.perf_counter() - t0, 1e-6))))
        return time_interleaved(runs, rounds=rounds, repeat=repeat, warmup=2, sync=sync)


def measured(ev: Any, policy: Policy) -> float:
    """Latency ratio of ``policy``'s architecture (cached by signature within the run)."""
    sig = ev.space.signature(policy)
    if sig == ev.dense_signature:
        return 1.0
    return float(ev.latency.measure(sig, ev.shrink(policy)).ratio)


# --- the two allocations ----------------------------------------------------------------------
def knapsack_policy(space: SearchSpace, table: LatencyTable, bound: float, options: dict[str, Any],
                    objective: str = "importance") -> tuple[Policy, float]:
    """The knapsack's own allocation (its first solve after the baseline) at ``bound``, and the
    latency ratio it modelled for it. ``objective="macs"``: the same solver and latency model
    maximising the MACs kept instead of the importance kept — the most of the network any
    allocation under this latency model keeps, i.e. the realization's ceiling here."""
    agent = make_agent("knapsack", space, Budget(latency_ratio=bound), seed=0, options=options,
                       hints=AgentHints(latency_table=table))
    if objective == "macs":
        macs = analytic_cost_model(space, "macs")
        solver = agent.solver  # type: ignore[attr-defined]  # the KnapsackAgent's MILP
        kept = solver.solve({g: list(macs.linear[g]) for g in space.names}, exclude=[], time_limit=10.0)
        model = latency_cost_model(space, agent.fit.latency)
        if kept is None:  # nothing fits the model at this bound: its fastest network, as the agent does
            kept = Knapsack(space, [Limit("latency", model, math.inf)]).cheapest(model, time_limit=10.0)
        if kept is None:
            raise RuntimeError("the knapsack found no allocation")
        # as the agent writes its allocations: a removed unit's groups (0 channels) as its keep key
        return agent._policy(kept), model.value(space, kept)  # type: ignore[attr-defined]
    for p in agent.ask(len(agent.baselines()) + 1):  # the baselines come first
        if p.info.get("role") in ("knapsack", "fastest"):
            predicted = getattr(agent, "_predicted", {}).get(p.trial_id, float("nan"))
            return p.policy, float(predicted)
    raise RuntimeError("the knapsack proposed no allocation")


def latency_aware(ev: Any, table: LatencyTable, target: float, steps: int, options: dict[str, Any],
                  objective: str = "importance") -> dict[str, Any]:
    """The knapsack allocation whose measured latency ratio is closest to ``target``: the bound
    the solver sees corrected by secant steps on the measured latency."""
    bound, tried = min(target, 1.0), list[dict[str, Any]]()
    for _ in range(steps):
        try:
            policy, predicted = knapsack_policy(ev.space, table, bound, options, objective)
        except BudgetError:  # a bound below what the space can reach: the last allocation stands
            break
        lat = measured(ev, policy)
        tried.append({"bound": bound, "policy": policy, "predicted": predicted, "latency_ratio": lat})
        if abs(lat - target) <= 0.01:
            break
        bound = min(1.0, max(0.1, bound + (target - lat)))
    best = min(tried, key=lambda t: abs(t["latency_ratio"] - target))
    return {**best, "solves": len(tried), "first_predicted": tried[0]["predicted"],
            "first_measured": tried[0]["latency_ratio"]}


def uniform_at(ev: Any, target: float, steps: int) -> dict[str, Any]:
    """The uniform ratio whose measured latency ratio is closest to ``target`` (bisection)."""
    space = ev.space
    lo, hi, tried = 0.0, space.max_ratio, []
    for _ in range(steps):
        mid = (lo + hi) / 2
        lat = measured(ev, space.uniform(mid))
        tried.append((mid, lat))
        lo, hi = (mid, hi) if lat > target else (lo, mid)
    tried.append((space.max_ratio, measured(ev, space.uniform(space.max_ratio))))
    ratio, lat = min(tried, key=lambda t: abs(t[1] - target))
    return {"ratio": ratio, "policy": space.round(space.uniform(ratio)), "latency_ratio": lat}


# --- the final interleaved measurement --------------------------------------------------------
def interleaved(ev: Any, models: list[Any], rounds: int) -> list[dict[str, float]]:
    """Dense and ``models`` timed round-robin in the evaluator's runtime: per model the median
    ms, the ratio of medians to dense, the IQR of the per-round ratios, and the ratio of the
    fastest rounds."""
    meter = ev.latency
    runs = [meter.run_of(ev.dense)] + [meter.run_of(m) for m in models]
    with ev.lock.exclusive():
        times = timed(ev.runtime, runs, meter.example, meter.threads, rounds)
    dense = statistics.median(times[0])
    out = []
    for t in times:
        per_round = [a / b for a, b in zip(t, times[0], strict=True)]
        q = statistics.quantiles(per_round, n=4) if len(per_round) > 2 else [per_round[0]] * 3
        out.append({"ms": statistics.median(t), "ratio": statistics.median(t) / dense, "ratio_iqr": q[2] - q[0],
                    "min_ms": min(t), "min_ratio": min(t) / min(times[0])})
    return out


def dense_runtimes(task: Any, runtimes: list[str], batch: int, rounds: int) -> dict[str, float]:
    """The dense model's median (and fastest) ms in each runtime, all timed interleaved in one run."""
    from contextlib import ExitStack

    evs = [evaluator(task, r, batch, rounds) for r in runtimes]
    runs = [ev.latency.run_of(ev.dense) for ev in evs]
    with ExitStack() as stack:
        stack.enter_context(evs[0].lock.exclusive())
        for ev in evs:
            stack.enter_context(ev.runtime.timing(1))
        times = time_interleaved(runs, rounds=rounds, warmup=2, sync=synchronizer(evs[0].example.device))
    out = {r: round(statistics.median(t), 3) for r, t in zip(runtimes, times, strict=True)}
    return out | {f"{r} min": round(min(t), 3) for r, t in zip(runtimes, times, strict=True)}


def realization(lat: float, macs: float) -> float:
    return (1 - lat) / (1 - macs) if macs < 1 else float("nan")


def one_cell(task: Any, model: str, runtime: str, batch: int, args: argparse.Namespace, round_to: Any = None) -> dict[str, Any]:
    ev = evaluator(task, runtime, batch, args.rounds, args.stat)
    space = ev.space
    t0 = time.perf_counter()
    hints = agent_hints("knapsack", Budget(latency_ratio=args.latency_ratio), {}, InProcessPool(ev))
    table_s = time.perf_counter() - t0
    assert hints.latency_table is not None
    aware = latency_aware(ev, hints.latency_table, args.latency_ratio, args.allocation_steps, {"latency_sigmas": 0.0})
    uni = uniform_at(ev, aware["latency_ratio"], args.bisection_steps)
    ceiling = latency_aware(ev, hints.latency_table, aware["latency_ratio"], args.allocation_steps,
                            {"latency_sigmas": 0.0}, objective="macs")
    final = interleaved(ev, [ev.shrink(p["policy"]) for p in (aware, uni, ceiling)], args.final_rounds)
    row: dict[str, Any] = {
        "model": model, "runtime": runtime + (" CUDA" if args.device == "cuda" else ""), "batch": batch,
        "round_to": str(space.round_to) + (f" ({space.runtime_step})" if space.round_to == "runtime" else "")
        + (" + depth" if args.depth else ""),
        "groups": len(space), "dense_ms": round(final[0]["ms"], 3),
        "table_entries": sum(len(v) for v in hints.latency_table.entries.values()), "table_s": round(table_s, 1),
        "knapsack_solves": aware["solves"], "first_predicted": round(aware["first_predicted"], 3),
        "first_measured": round(aware["first_measured"], 3), "uniform_ratio": round(uni["ratio"], 3),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    row["stat"] = args.stat
    for name, policy, m in (("aware", aware["policy"], final[1]), ("uniform", uni["policy"], final[2]),
                            ("ceiling", ceiling["policy"], final[3])):
        macs = space.macs_ratio(policy)
        lat = m["min_ratio"] if args.stat == "min" else m["ratio"]
        row.update({f"{name}_macs": round(macs, 3), f"{name}_latency": round(lat, 3),
                    f"{name}_median_latency": round(m["ratio"], 3), f"{name}_min_latency": round(m["min_ratio"], 3),
                    f"{name}_iqr": round(m["ratio_iqr"], 3), f"{name}_realization": round(realization(lat, macs), 3),
                    f"{name}_kept": space.signature(policy)})
    if args.quality:
        row["aware_quality"] = round(float(ev.evaluate(aware["policy"]).quality), 4)
        row["uniform_quality"] = round(float(ev.evaluate(uni["policy"]).quality), 4)
    return row


# --- output -------------------------------------------------------------------------------------
def markdown(rows: list[dict[str, Any]]) -> str:
    quality = any("aware_quality" in r for r in rows)
    head = ["model", "runtime", "batch", "round_to", "dense ms", "allocation", "MACs ratio",
            "latency ratio (IQR of rounds)", "realization"] + (["quality proxy"] if quality else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        for name, label in (("aware", "latency-aware"), ("uniform", f"uniform {r['uniform_ratio']}"),
                            ("ceiling", "MACs-max")):
            cells = [r["model"], r["runtime"], str(r["batch"]), r["round_to"], f"{r['dense_ms']:.2f}", label,
                     f"{r[name + '_macs']:.3f}", f"{r[name + '_latency']:.3f} ({r[name + '_iqr']:.3f})",
                     f"**{r[name + '_realization']:.2f}**" if name == "aware" else f"{r[name + '_realization']:.2f}"]
            if quality:
                cells.append(f"{r[name + '_quality']:.4f}" if name + "_quality" in r else "–")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet56,resnet20,all-minilm-l6-v2")
    ap.add_argument("--runtimes", default="onnxruntime,torch")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--latency-ratio", type=float, default=0.5)
    ap.add_argument("--quick", action="store_true", help="fewer rounds and steps: a smoke run, noisy figures")
    ap.add_argument("--rounds", type=int, default=15, help="interleaved rounds per measurement while searching")
    ap.add_argument("--final-rounds", type=int, default=40, help="rounds of the final dense/aware/uniform run")
    ap.add_argument("--allocation-steps", type=int, default=4, help="knapsack solves (secant on the bound)")
    ap.add_argument("--bisection-steps", type=int, default=7, help="uniform ratio bisection steps")
    ap.add_argument("--round-to", default="", help="comma list of search_space.round_to values to compare")
    ap.add_argument("--quality", action="store_true", help="also the quality proxy of both allocations")
    ap.add_argument("--stat", choices=("median", "min"), default="median",
                    help="latency of a run: median of rounds (as jobs measure), or the fastest round "
                    "(robust on a shared machine; also used for the latency table then)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="target.device: 'cuda' times on the GPU (onnxruntime through its CUDA "
                    "execution provider: needs onnxruntime-gpu)")
    ap.add_argument("--depth", action="store_true",
                    help="search_space.depth: the latency-aware allocations may remove whole blocks/layers "
                    "(uniform stays width-only)")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--val-samples", type=int, default=128)
    ap.add_argument("--cache-dir", default=os.environ.get("AUTOPRUNE_CACHE_DIR", ".cache/autoprune"))
    ap.add_argument("--dense-only", action="store_true", help="only the dense model timed in every runtime")
    ap.add_argument("--out", default="", help="JSON lines of the rows")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.final_rounds, args.allocation_steps, args.bisection_steps = 5, 12, 3, 5
    torch.set_num_threads(1)
    t_start = time.time()
    runtimes, batches = args.runtimes.split(","), [int(b) for b in args.batches.split(",")]
    round_tos = [r for r in args.round_to.split(",") if r] or [None]
    rows, dense_rows = [], []
    for model in args.models.split(","):
        for round_to in round_tos:
            task = load(model, args, round_to=round_to if round_to in (None, "auto", "runtime") else int(round_to))
            if args.dense_only or (round_to == round_tos[0] and len(runtimes) > 1):
                for batch in batches:
                    ms = dense_runtimes(task, runtimes, batch, args.final_rounds)
                    dense_rows.append({"model": model, "batch": batch, **ms})
                    print(json.dumps(dense_rows[-1]), flush=True)
                    if args.out:
                        with open(args.out, "a") as fh:
                            fh.write(json.dumps({"dense": dense_rows[-1]}) + "\n")
            for runtime in [] if args.dense_only else runtimes:
                for batch in batches:
                    row = one_cell(task, model, runtime, batch, args, round_to)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    if args.out:
                        with open(args.out, "a") as fh:
                            fh.write(json.dumps(row) + "\n")
    print()
    if rows:
        print(markdown(rows))
    if dense_rows:
        print("\n| model | batch | " + " | ".join(f"dense ms {r} (fastest round)" for r in runtimes) + " |")
        print("|---|---|" + "---|" * len(runtimes))
        for d in dense_rows:
            print(f"| {d['model']} | {d['batch']} | "
                  + " | ".join(f"{d[r]:.2f} ({d[r + ' min']:.2f})" for r in runtimes) + " |")
    load_avg = os.getloadavg()
    gpu = f"{torch.cuda.get_device_name()}, " if args.device == "cuda" else ""
    print(f"\n{gpu}{platform.processor() or platform.machine()}, torch {torch.__version__}, {os.cpu_count()} cores, "
          f"load average at the end {load_avg[0]:.1f}, {time.time() - t_start:.0f} s")


if __name__ == "__main__":
    main()
