"""Issue 21: pruning and int8 searched together, against what needs no search.

For one model, dataset and latency budget (a ratio of the fp32 dense model's latency in the job's
runtime, onnxruntime by default: batch 1, 1 thread), for each seed and agent:

* **fp32 prune-only** — the agent searches widths only (``precision: [fp32]``); its best is
  finalized;
* **joint** — the agent searches widths and per-group precision (``precision: [fp32, int8]``); its
  best is finalized together with the baselines every joint job reports: **uniform-fill** (fp32),
  **quantize-only** (nothing pruned, every group int8, whatever the budget) and
  **quantize + uniform-fill** (every group int8, widths filled to the budget).

Every row goes through the service's own finalize (``workers.finalize``): the same fine-tune (or
distillation), architectures over the budget tightened before it, the exported file — quantized
where int8 — scored on the test split and measured against the dense model in the runtime. The
table prints the mean ± sd over seeds of the shipped file's test quality and its delivered latency
ratio, and how many met the budget; ``--out`` keeps every figure as JSON.

    .venv/bin/python bench/joint_precision.py --model resnet20 --dataset fashion_mnist \\
        --weights /path/resnet20-fashion.safetensors --budget 0.3 --seeds 0,1,2 \\
        --agents optuna-tpe --evaluations 40 --out docs/bench/joint-fashion-0.3.json
    .venv/bin/python bench/joint_precision.py --model all-minilm-l6-v2 --dataset docstrings \\
        --metric embedding_cosine --budget 0.3 --search-finetune-steps 20 --finetune-epochs 0.2 ...
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.registry import make_agent  # noqa: E402
from agents.types import Budget, Metrics, Outcome, Proposal  # noqa: E402
from workers.loop import run_search  # noqa: E402
from workers.pool import InProcessPool  # noqa: E402

ROWS = ("fp32 prune-only", "uniform-fill", "quantize-only", "quantize+uniform-fill", "joint")


def load(args: argparse.Namespace, precision: list[str]) -> Any:
    from workers.spec import JobSpec
    from workers.task import WorkerSettings, load_task

    weights = None
    uploads = None
    if args.weights:
        uploads = Path(tempfile.mkdtemp(prefix="bench-joint-"))
        shutil.copyfile(args.weights, uploads / "weights")
        weights = "weights"
    spec = JobSpec.model_validate({
        "model": {"zoo": args.model, "weights": weights},
        "dataset": {"name": args.dataset},
        "metric": args.metric,
        "budget": {"latency_ratio": args.budget},
        "target": {"runtime": args.runtime, "batch_size": 1, "threads": 1},
        "search_space": {"precision": precision},
        "evaluation": {"finetune_steps": args.search_finetune_steps,
                       "calibration_batches": args.calibration_batches,
                       **({"val_samples": args.val_samples} if args.val_samples else {})},
        "finalize": {"top_k": 1, "baseline": True, "finetune_epochs": args.finetune_epochs,
                     "export": ["onnx", "safetensors"]},
        "workers": 0,
    })
    return load_task(spec, WorkerSettings(cache_dir=Path(args.cache_dir), uploads_dir=uploads))


def fp32_variant(task: Any) -> Any:
    """The same model and data with a widths-only space (no second load, no re-trace)."""
    from search_spaces.space import SearchSpace

    spec = task.spec.model_copy(update={"search_space": task.spec.search_space.model_copy(update={"precision": ["fp32"]})})
    space = SearchSpace.from_dict({**task.space.to_dict(), "precisions": ["fp32"]})
    return dataclasses.replace(task, spec=spec, space=space)


def search(task: Any, agent_name: str, seed: int, args: argparse.Namespace) -> list[tuple[Proposal, Outcome]]:
    from workers.evaluator import Evaluator

    budget = Budget(latency_ratio=args.budget)
    ev = Evaluator(task, latency_rounds=args.latency_rounds)
    options = {"trials": args.evaluations} if agent_name == "ddpg" else {}
    agent = make_agent(agent_name, task.space, budget, seed=seed, options=options)
    done: list[tuple[Proposal, Outcome]] = []
    run_search(agent, InProcessPool(ev), trials=args.evaluations, batch_size=1,
               on_outcome=lambda p, o, _cached: done.append((p, o)), on_state=lambda _s: None,
               should_stop=lambda: False)
    return sorted(done, key=lambda po: po[0].trial_id)


def candidates(done: list[tuple[Proposal, Outcome]], budget: Budget, roles: bool) -> list[tuple[dict, Metrics]]:
    """The best measured within the budget (else the closest) — as the service ranks a job's
    front, a baseline included: then the search's answer is that baseline — then the baselines by
    role."""
    ok = [(p, o.metrics) for p, o in done if o.metrics is not None]
    feasible = [(p, m) for p, m in ok if budget.feasible(m)]
    if feasible:
        best = max(feasible, key=lambda pm: pm[1].quality)
    else:
        best = min(ok, key=lambda pm: max(budget.violations(pm[1])))
    out = [(best[0].policy, dataclasses.replace(best[1], extra={**best[1].extra, "found": best[0].info.get("role")}))]
    if roles:
        for p, m in ok:
            if p.info.get("role") and p.trial_id != best[0].trial_id:
                out.append((p.policy, dataclasses.replace(m, extra={**m.extra, "role": p.info["role"]})))
    return out


def finalized(task: Any, cands: list[tuple[dict, Metrics]], out: Path) -> list[dict[str, Any]]:
    from workers.finalize import finalize

    arts = finalize(task, cands, task.spec.finalize, out)
    keys = ("test_quality", "fp32_test_quality", "delivered_latency_ratio", "latency_ratio", "budget_met",
            "macs_ratio", "int8_groups", "tightened", "role")
    return [{**{k: a.metrics.get(k) for k in keys}, "is": c[1].extra.get("found")} for a, c in zip(arts, cands, strict=False)]


def run(args: argparse.Namespace) -> dict[str, Any]:
    joint_task = load(args, ["fp32", "int8"])
    fp32_task = fp32_variant(joint_task)
    budget = Budget(latency_ratio=args.budget)
    results: dict[str, Any] = {"args": {k: v for k, v in vars(args).items() if k != "out"}, "runs": []}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for agent in args.agents.split(","):
            t0 = time.perf_counter()
            rows: dict[str, Any] = {}
            with tempfile.TemporaryDirectory(prefix="bench-joint-art-") as tmp:
                done = search(fp32_task, agent, seed, args)
                (rows["fp32 prune-only"],) = finalized(fp32_task, candidates(done, budget, roles=False)[:1],
                                                       Path(tmp) / "fp32")
                done = search(joint_task, agent, seed, args)
                for art in finalized(joint_task, candidates(done, budget, roles=True), Path(tmp) / "joint"):
                    role = art.get("role") or "joint"
                    rows["uniform-fill" if role == "baseline" else role] = art
            results["runs"].append({"seed": seed, "agent": agent, "rows": rows,
                                    "seconds": round(time.perf_counter() - t0, 1)})
            print(json.dumps(results["runs"][-1]), flush=True)
    return results


def _stats(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def report(results: dict[str, Any]) -> None:
    agents = sorted({r["agent"] for r in results["runs"]})
    print(f"\nbudget: latency ratio {results['args']['budget']} in {results['args']['runtime']} "
          f"({results['args']['model']} / {results['args']['dataset']}, seeds {results['args']['seeds']})")
    print(f"{'row':<34} {'test quality (mean ± sd)':>26} {'delivered latency ratio':>26} {'budget met':>11}")
    for agent in agents:
        runs = [r for r in results["runs"] if r["agent"] == agent]
        for row in ROWS:
            arts = [r["rows"][row] for r in runs if row in r["rows"]]
            q = [a["test_quality"] for a in arts if a.get("test_quality") is not None]
            lat = [a["delivered_latency_ratio"] for a in arts if a.get("delivered_latency_ratio") is not None]
            met = sum(1 for a in arts if a.get("budget_met"))
            name = f"{row} ({agent})" if row in ("fp32 prune-only", "joint") else row
            same = sorted({a["is"] for a in arts if a.get("is")})
            if same:  # the search's best was one of its own baselines
                name += f" = {'/'.join(same)}"
            print(f"{name:<34} {_stats(q):>26} {_stats(lat):>26} {met:>5} / {len(arts)}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--dataset", default="fashion_mnist")
    ap.add_argument("--weights", default=None, help="a safetensors file of the dense model (else the zoo reference)")
    ap.add_argument("--metric", default="accuracy")
    ap.add_argument("--budget", type=float, default=0.3, help="latency ratio of the fp32 dense model")
    ap.add_argument("--runtime", default="onnxruntime")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--agents", default="optuna-tpe")
    ap.add_argument("--evaluations", type=int, default=40)
    ap.add_argument("--latency-rounds", type=int, default=15)
    ap.add_argument("--search-finetune-steps", type=int, default=0)
    ap.add_argument("--calibration-batches", type=int, default=4)
    ap.add_argument("--val-samples", type=int, default=0)
    ap.add_argument("--finetune-epochs", type=float, default=1.0)
    ap.add_argument("--cache-dir", default=".cache/autoprune")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    results = run(args)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
    report(results)


if __name__ == "__main__":
    main()
