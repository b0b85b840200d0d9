"""Agents benchmark: every agent, equal evaluations, real pruned models (issue 4).

For each task (dataset:model), MACs budget and seed, every agent runs ``--evaluations`` real
evaluations (Torch-Pruning surgery → recovery (``--recovery``) → optional ``--search-finetune-steps`` →
val accuracy, ``workers.evaluator``); then each agent's best feasible policy is fine-tuned for
each of ``--finetune-epochs`` and scored on the test split. Reports: best search-time val
quality (mean ± sd over seeds), test quality after fine-tuning, Spearman correlation search-time
vs fine-tuned, NSGA-II's hypervolume and front against the uniform-fill sweep, and plots.
``--merge`` combines result files of runs made in parallel (docs/benchmarks.md, "Agents").

    .venv/bin/python bench/agents.py --tasks digits:resnet20 --budgets 0.25 --evaluations 200 \
        --seeds 0,1,2 --out docs/bench/agents-digits-0.25.json --plot ''
    .venv/bin/python bench/agents.py --merge docs/bench/agents-digits-0.25.json ... \
        --out docs/bench/agents.json --plot docs/agents_best_so_far.png
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.pareto import Point, dominates, hypervolume_2d, pareto_front  # noqa: E402
from agents.registry import make_agent  # noqa: E402
from agents.types import Budget, Outcome, Proposal  # noqa: E402
from workers.loop import run_search  # noqa: E402
from workers.pool import InProcessPool  # noqa: E402

ALL_AGENTS = ["uniform", "global", "random", "sensitivity", "optuna-tpe", "optuna-nsga2", "ddpg"]


def build(task: str, args: argparse.Namespace) -> Any:
    from workers.evaluator import Evaluator
    from workers.spec import JobSpec
    from workers.task import WorkerSettings, load_task

    dataset, model = task.split(":")
    weights = dict(w.split("=", 1) for w in args.weights.split(",") if w).get(task)
    spec = JobSpec.model_validate(
        {
            "model": {"zoo": model, "weights": weights},
            "dataset": {"name": dataset},
            "budget": {"macs_ratio": 0.5},  # the evaluator does not read it
            "evaluation": {
                "finetune_steps": args.search_finetune_steps,
                "calibration_batches": args.calibration_batches,
                "recovery": args.recovery,
            },
            "search_space": {"criterion": args.criterion, "round_to": args.round_to},
            "seed": args.reference_seed,
        }
    )
    settings = WorkerSettings(cache_dir=Path(args.cache_dir))
    t0 = time.perf_counter()
    task_obj = load_task(spec, settings)
    lock = None
    if args.latency_rounds == 0:  # nothing measured: other processes' measurements need not stall us
        import tempfile

        from workers.latency import NodeLock

        lock = NodeLock(Path(tempfile.mkdtemp(prefix="bench-agents-")))
    ev = Evaluator(task_obj, latency_rounds=args.latency_rounds, lock=lock)
    dense = ev.dense_metrics()
    print(
        f"[{task}] {len(task_obj.space)} groups, recovery {ev.recovery}, dense val "
        f"{dense.quality:.4f}, ready in {time.perf_counter() - t0:.0f}s",
        flush=True,
    )
    return task_obj, ev, dense


def search(
    name: str, ev: Any, budget: Budget, seed: int, args: argparse.Namespace
) -> dict[str, Any]:
    kind = name.split("@")[0]
    options = dict(args.options.get(name, {}))
    if kind == "ddpg":
        options.setdefault("trials", args.evaluations)
    agent = make_agent(kind, ev.space, budget, seed=seed, options=options)
    done: list[tuple[Proposal, Outcome]] = []
    t0 = time.perf_counter()
    # the service's own loop: equal architectures are evaluated once, failures told to the agent
    run_search(
        agent,
        InProcessPool(ev),
        trials=args.evaluations,
        batch_size=args.batch,
        on_outcome=lambda p, o, _cached: done.append((p, o)),
        on_state=lambda _state: None,
        should_stop=lambda: False,
    )
    trials: list[dict[str, Any]] = [
        {
            "policy": p.policy,
            "quality": o.metrics.quality,
            "macs_ratio": o.metrics.macs_ratio,
            "feasible": budget.feasible(o.metrics),
            "role": p.info.get("role"),
        }
        for p, o in sorted(done, key=lambda po: po[0].trial_id)
        if o.metrics is not None
    ]
    best = max((t for t in trials if t["feasible"]), key=lambda t: t["quality"], default=None)
    curve, run = [], -1.0
    for t in trials:
        run = max(run, t["quality"] if t["feasible"] else -1.0)
        curve.append(run)
    return {"trials": trials, "best": best, "curve": curve, "seconds": time.perf_counter() - t0}


def finetuned_test(
    task_obj: Any, ev: Any, policy: dict[str, float], epochs: float, seed: int
) -> float:
    from search_spaces.training import evaluate_accuracy, finetune

    model = ev.prune(policy)
    finetune(model, task_obj.splits.train, epochs=epochs, lr=0.01, seed=seed)
    return evaluate_accuracy(model, task_obj.splits.test)


def uniform_sweep(ev: Any, top: float) -> list[Point]:
    """(quality, MACs) of uniform-fill at top·k/8: the curve NSGA-II's front is held against."""
    from agents.budget_fit import BudgetFit

    pts = []
    for policy in BudgetFit(ev.space, Budget(macs_ratio=top)).sweep(8):
        m = ev.evaluate(policy)
        pts.append(Point(m.quality, m.macs_ratio))
    return pts


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tasks", default="digits:resnet20,mnist1d:resnet1d20")
    ap.add_argument("--budgets", default="0.5,0.25", help="MACs ratios")
    ap.add_argument("--agents", default=",".join(ALL_AGENTS))
    ap.add_argument("--evaluations", type=int, default=200)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--batch", type=int, default=8, help="proposals per ask (the parallel batch)")
    ap.add_argument(
        "--options",
        type=json.loads,
        default={},
        help='JSON {agent: options}; "ddpg@fast" names a variant of ddpg with its own options',
    )
    ap.add_argument("--finetune-epochs", default="1,5")
    ap.add_argument("--search-finetune-steps", type=int, default=0)
    ap.add_argument("--calibration-batches", type=int, default=8)
    ap.add_argument("--criterion", default="l1", help="channel importance within a group")
    ap.add_argument(
        "--round-to", default="1", help="kept channels, multiple of (1: every width), or auto"
    )
    ap.add_argument(
        "--recovery", default="auto", help="evaluation.recovery: auto, none, bn, lsq, finetune"
    )
    ap.add_argument(
        "--latency-rounds",
        type=int,
        default=0,
        help="0: MACs only (NSGA-II trades quality vs MACs)",
    )
    ap.add_argument("--reference-seed", type=int, default=0)
    ap.add_argument(
        "--weights",
        default="",
        help="task=path.safetensors,...: dense weights instead of training a reference",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache-dir", default=".cache/bench")
    ap.add_argument(
        "--merge",
        nargs="+",
        metavar="JSON",
        help="no search: combine the results of earlier runs (e.g. one per task, run in parallel)",
    )
    ap.add_argument("--at", default="", help="also the best within the first N evaluations, e.g. 100,200")
    ap.add_argument("--out", default="docs/bench/agents.json")
    ap.add_argument("--plot", default="docs/agents_best_so_far.png")
    args = ap.parse_args(argv)
    if args.merge:
        report(merge([json.loads(Path(f).read_text()) for f in args.merge], Path(args.out)), args)
        return
    torch.set_num_threads(args.threads)
    agents = args.agents.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    epochs = [float(e) for e in args.finetune_epochs.split(",") if e]
    results: dict[str, Any] = {"args": vars(args), "runs": [], "summary": []}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for task_name in args.tasks.split(","):
        task_obj, ev, dense = build(task_name, args)
        steps = args.search_finetune_steps  # a different evaluation: its own rows in the tables
        task = f"{task_name} +{steps} ft steps" if steps else task_name
        for budget_ratio in [float(b) for b in args.budgets.split(",")]:
            budget = Budget(macs_ratio=budget_ratio)
            rows: dict[str, list[dict[str, Any]]] = {a: [] for a in agents}
            for seed in seeds:
                for name in agents:
                    r = search(name, ev, budget, seed, args)
                    best = r["best"]
                    r["finetuned"] = (
                        {
                            str(e): finetuned_test(task_obj, ev, best["policy"], e, seed)
                            for e in epochs
                        }
                        if best
                        else {}
                    )
                    if name.split("@")[0] == "optuna-nsga2":
                        feasible = [
                            Point(t["quality"], t["macs_ratio"])
                            for t in r["trials"]
                            if t["feasible"]
                        ]
                        front = [feasible[i] for i in pareto_front(feasible)]
                        sweep = uniform_sweep(ev, budget_ratio)
                        r["front"] = sorted((p.cost, p.quality) for p in front)
                        r["sweep"] = sorted((p.cost, p.quality) for p in sweep)
                        r["hypervolume"] = hypervolume_2d(front, 0.0, budget_ratio + 1e-9)
                        r["uniform_sweep_hypervolume"] = hypervolume_2d(
                            sweep, 0.0, budget_ratio + 1e-9
                        )
                        r["uniform_sweep_dominated"] = sum(
                            any(dominates(f, u) or f == u for f in front) for u in sweep
                        ) / max(1, len(sweep))
                    rows[name].append(r)
                    msg = (
                        f"[{task} @{budget_ratio}] seed {seed} {name:13s} best {best['quality'] if best else float('nan'):.4f} "
                        + " ".join(f"ft{e}={v:.4f}" for e, v in r["finetuned"].items())
                        + f" ({len(r['trials'])} evals, {r['seconds']:.0f}s)"
                    )
                    print(msg, flush=True)
                    results["runs"].append(
                        {
                            "task": task,
                            "budget": budget_ratio,
                            "seed": seed,
                            "agent": name,
                            **{k: v for k, v in r.items() if k != "trials"},
                            "n_trials": len(r["trials"]),
                        }
                    )
                    out.write_text(json.dumps(results, indent=1, default=float))
            results["summary"] += summarise(task, budget_ratio, rows, epochs, dense.quality)
            out.write_text(json.dumps(results, indent=1, default=float))
    report(results, args)


def merge(parts: list[dict[str, Any]], out: Path) -> dict[str, Any]:
    """Runs of several result files; a later file's run replaces an earlier one with the same
    task, budget, agent and seed (e.g. an agent re-run after a change). Summaries are recomputed."""
    runs: dict[tuple[Any, ...], dict[str, Any]] = {}
    dense: dict[str, float] = {}
    for part in parts:
        for r in part["runs"]:
            runs[(r["task"], r["budget"], r["agent"], r["seed"])] = r
        dense.update({s["task"]: s["dense_val"] for s in part["summary"]})
    order = {a: i for i, a in enumerate(ALL_AGENTS)}
    merged: dict[str, Any] = {"args": [p["args"] for p in parts], "runs": [], "summary": []}
    for task, budget in sorted({k[:2] for k in runs}):
        mine = [r for k, r in runs.items() if k[:2] == (task, budget)]
        mine.sort(key=lambda r: (order.get(r["agent"], len(order)), r["agent"], r["seed"]))
        rows: dict[str, list[dict[str, Any]]] = {}
        for r in mine:
            rows.setdefault(r["agent"], []).append(r)
        epochs = sorted({float(e) for r in mine for e in r["finetuned"]})
        merged["runs"] += mine
        merged["summary"] += summarise(task, budget, rows, epochs, dense.get(task, math.nan))
    out.write_text(json.dumps(merged, indent=1))
    return merged


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    epochs = sorted(
        {
            float(k.removeprefix("test_ft"))
            for s in results["summary"]
            for k in s
            if k.startswith("test_ft")
        }
    )
    print(table(results["summary"], epochs))
    print()
    print(corr_table(results["summary"], epochs))
    print()
    print(nsga_table(results["summary"]))
    if args.at:
        print()
        print(at_table(results["runs"], [int(n) for n in args.at.split(",")]))
    if args.plot:
        plot(results["runs"], Path(args.plot))
        if any("front" in r for r in results["runs"]):
            plot_fronts(results["runs"], Path(args.plot).with_name("agents_nsga2_fronts.png"))


def at_table(runs: list[dict[str, Any]], points: list[int]) -> str:
    """Best feasible search-time val accuracy within each run's first n evaluations, per seed."""
    lines = ["| task | MACs budget | agent | evaluations | best per seed | mean ± sd |", "|---|---|---|---|---|---|"]
    keys = dict.fromkeys((r["task"], r["budget"], r["agent"]) for r in runs)
    for task, budget, agent in keys:
        rs = sorted((r for r in runs if (r["task"], r["budget"], r["agent"]) == (task, budget, agent)), key=lambda r: r["seed"])
        for n in points:
            best = [c[min(n, len(c)) - 1] for c in (r["curve"] for r in rs) if c and c[min(n, len(c)) - 1] is not None]
            lines.append(f"| {task} | {budget} | {agent} | {n} | {', '.join(f'{b:.3f}' for b in best)} | {_ms(best)} |")
    return "\n".join(lines)


def _ms(xs: list[float]) -> str:
    if not xs:
        return "–"
    return (
        f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else f"{xs[0]:.3f}"
    )


def summarise(
    task: str,
    budget: float,
    rows: dict[str, list[dict[str, Any]]],
    epochs: list[float],
    dense: float,
) -> list[dict[str, Any]]:
    from scipy.stats import spearmanr

    out = []
    pairs: dict[str, tuple[list[float], list[float]]] = {str(e): ([], []) for e in epochs}
    for name, runs in rows.items():
        s: dict[str, Any] = {"task": task, "budget": budget, "agent": name, "dense_val": dense, "seeds": len(runs)}
        s["search_val"] = [r["best"]["quality"] for r in runs if r["best"]]
        s["evaluations"] = [len(r["curve"]) for r in runs]
        for e in epochs:
            s[f"test_ft{e:g}"] = [r["finetuned"][str(e)] for r in runs if r["finetuned"]]
            for r in runs:
                if r["finetuned"]:
                    pairs[str(e)][0].append(r["best"]["quality"])
                    pairs[str(e)][1].append(r["finetuned"][str(e)])
        if name.split("@")[0] == "optuna-nsga2":
            s["hypervolume"] = [r["hypervolume"] for r in runs]
            s["uniform_sweep_hypervolume"] = [r["uniform_sweep_hypervolume"] for r in runs]
            s["uniform_sweep_dominated"] = [r["uniform_sweep_dominated"] for r in runs]
        out.append(s)
    for key, (a, b) in pairs.items():
        rho = spearmanr(a, b).statistic if len(a) > 2 else float("nan")
        for s in out:
            s[f"spearman_ft{float(key):g}"] = float(rho)
    return out


def table(summary: list[dict[str, Any]], epochs: list[float]) -> str:
    head = (
        "| task | MACs budget | agent | evals | search val acc | "
        + " | ".join(f"test acc, ft {e:g} ep" for e in epochs)
        + " |"
    )
    lines = [head, "|" + "---|" * (5 + len(epochs))]
    for s in summary:
        ev = f"{max(s['evaluations'])}" if s["evaluations"] else "–"
        lines.append(
            f"| {s['task']} | {s['budget']:g} | {s['agent']} | {ev} | {_ms(s['search_val'])} | "
            + " | ".join(_ms(s[f"test_ft{e:g}"]) for e in epochs)
            + " |"
        )
    return "\n".join(lines)


def corr_table(summary: list[dict[str, Any]], epochs: list[float]) -> str:
    """Spearman ρ between search-time val quality and fine-tuned test quality, over every
    agent × seed best policy of a task and budget: does a better search score survive fine-tuning?"""
    lines = [
        "| task | MACs budget | "
        + " | ".join(f"Spearman ρ, search val vs test after {e:g} ep" for e in epochs)
        + " |",
        "|" + "---|" * (2 + len(epochs)),
    ]
    seen = set()
    for s in summary:
        if (s["task"], s["budget"]) not in seen:
            seen.add((s["task"], s["budget"]))
            cells = " | ".join(f"{s.get(f'spearman_ft{e:g}', float('nan')):.2f}" for e in epochs)
            lines.append(f"| {s['task']} | {s['budget']:g} | {cells} |")
    return "\n".join(lines)


def nsga_table(summary: list[dict[str, Any]]) -> str:
    lines = [
        "| task | MACs budget | NSGA-II hypervolume | uniform sweep hypervolume | sweep points dominated |",
        "|---|---|---|---|---|",
    ]
    for s in summary:
        if "hypervolume" in s:
            lines.append(
                f"| {s['task']} | {s['budget']:g} | {_ms(s['hypervolume'])} | "
                f"{_ms(s['uniform_sweep_hypervolume'])} | {_ms(s['uniform_sweep_dominated'])} |"
            )
    return "\n".join(lines)


def _panels(plt: Any, n: int, *, cols: int, width: float) -> tuple[Any, list[Any]]:
    """A figure with ``n`` panels, at most ``cols`` a row; unused cells hidden."""
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, 4 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({(r["task"], r["budget"]) for r in runs})
    fig, axes = _panels(plt, len(keys), cols=3, width=5.5)
    for ax, (task, budget) in zip(axes, keys, strict=False):
        by_agent: dict[str, list[list[float]]] = {}
        for r in runs:
            if (r["task"], r["budget"]) == (task, budget) and r["curve"]:
                by_agent.setdefault(r["agent"], []).append(r["curve"])
        longest = max((len(c) for cs in by_agent.values() for c in cs), default=1)
        for name, curves in by_agent.items():
            # agents that stop early (uniform, global, sensitivity) keep their best to the end
            padded = [c + [c[-1]] * (longest - len(c)) for c in curves]
            mean = [statistics.mean(col) for col in zip(*padded, strict=True)]
            short = max(len(c) for c in curves) < longest
            ax.plot(
                range(1, longest + 1),
                mean,
                label=f"{name} ({len(curves)} seeds)",
                drawstyle="steps-post",
                linestyle="--" if short else "-",
            )
        ax.set_title(f"{task}, MACs ≤ {budget:g}")
        ax.set_xlabel("evaluations")
        ax.set_ylabel("best feasible val accuracy (mean over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def plot_fronts(runs: list[dict[str, Any]], path: Path) -> None:
    """NSGA-II's front (every seed) against the uniform-fill sweep, per task and budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({(r["task"], r["budget"]) for r in runs if "front" in r})
    fig, axes = _panels(plt, len(keys), cols=2, width=6.0)
    for ax, (task, budget) in zip(axes, keys, strict=False):
        mine = [r for r in runs if (r["task"], r["budget"]) == (task, budget) and "front" in r]
        for r in mine:
            xs, ys = zip(*r["front"], strict=True) if r["front"] else ((), ())
            ax.plot(xs, ys, "o-", ms=3, drawstyle="steps-post", label=f"NSGA-II seed {r['seed']}")
        xs, ys = zip(*mine[0]["sweep"], strict=True)
        ax.plot(xs, ys, "k--D", ms=4, label="uniform-fill sweep")
        ax.set_title(f"{task}, MACs ≤ {budget:g}")
        ax.set_xlabel("MACs ratio")
        ax.set_ylabel("val accuracy (search time)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
