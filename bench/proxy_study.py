"""Proxy study: which recovery ranks policies as an equal fine-tune would, and at what cost (issue 14).

For each task (dataset:model) and MACs budget: ``--policies`` policies (uniform-fill, then random
per-group ratios projected onto the budget, as the ``random`` agent draws them). Each policy is

* scored by every proxy: ``evaluation.recovery`` in {none, bn, lsq, finetune} × calibration batches
  (``--calibration``), through the real ``workers.evaluator.Evaluator`` (val accuracy, seconds per
  evaluation without latency);
* fine-tuned ONCE, the same way for every policy (``--truth-steps`` SGD steps, lr 0.01 cosine,
  batch 64) and scored on the test split: the truth. ``--truth-from`` says where the fine-tune
  starts: ``bn`` (the BN-recalibrated pruned model, key ``truth``) or ``lsq`` (the model after the
  least-squares refit on 2 batches, key ``truth_lsq``) — the start ``finalize`` fine-tunes from
  under ``recovery: lsq``.

The table gives, per proxy, Spearman ρ (proxy vs truth, over the policies), the proxy's spread and
median seconds per evaluation. Results are cached in ``--out`` (JSON, written after every policy,
resumed on re-run), and ``--table FILE...`` rebuilds the table from cached files.

    .venv/bin/python bench/proxy_study.py --tasks digits:resnet20 --out docs/bench/proxy-digits.json
    .venv/bin/python bench/proxy_study.py --tasks mnist1d:resnet1d20 --out docs/bench/proxy-mnist1d.json
    .venv/bin/python bench/proxy_study.py --table docs/bench/proxy-digits.json docs/bench/proxy-mnist1d.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path[0] = str(Path(__file__).resolve().parent.parent)

from agents.budget_fit import BudgetFit  # noqa: E402
from agents.types import Budget  # noqa: E402


def spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    if len(set(a)) < 2 or len(set(b)) < 2:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def policies_for(space: Any, budget: float, n: int, seed: int) -> list[dict[str, float]]:
    """uniform-fill, then random draws projected onto the budget (distinct architectures)."""
    fit = BudgetFit(space, Budget(macs_ratio=budget))
    out = [fit.uniform_fill()]
    seen = {space.signature(out[0])}
    rng = np.random.default_rng(seed)
    while len(out) < n:
        raw = rng.uniform(0.0, space.max_ratio, size=len(space))
        p = fit.project(dict(zip(space.names, raw.tolist(), strict=True)))
        if space.signature(p) not in seen:
            seen.add(space.signature(p))
            out.append(p)
    return out


def evaluators(task: Any, configs: list[tuple[str, int]], ft_steps: int) -> dict[str, Any]:
    from workers.evaluator import Evaluator
    from workers.latency import NodeLock

    # no latency is measured here: a private lock, so other processes' latency measurements on
    # this host (the shared node lock) never stall these evaluations
    lock = NodeLock(Path(tempfile.mkdtemp(prefix="proxy-study-")))
    out = {}
    for recovery, batches in configs:
        ev_spec = task.spec.evaluation.model_copy(
            update={
                "recovery": recovery,
                "calibration_batches": batches,
                "finetune_steps": ft_steps if recovery == "finetune" else 0,
            }
        )
        spec = task.spec.model_copy(update={"evaluation": ev_spec})
        out[f"{recovery}@{batches}"] = Evaluator(
            dataclasses.replace(task, spec=spec), latency_rounds=0, lock=lock
        )
    return out


def truth(task: Any, ev: Any, policy: dict[str, float], steps: int, seed: int) -> float:
    from search_spaces.training import evaluate_accuracy, finetune

    model = ev.prune(policy)  # pruned and recovered by ``ev``: the same start for every policy
    finetune(model, task.splits.train, steps=steps, lr=0.01, seed=seed)
    return evaluate_accuracy(model, task.splits.test)


def _truth_key(start: str) -> str:
    """Where a row keeps the truth fine-tuned from ``start`` (``truth``: the first study's, BN)."""
    return "truth" if start == "bn" else f"truth_{start}"


def run(args: argparse.Namespace) -> None:
    from workers.spec import JobSpec
    from workers.task import WorkerSettings, load_task

    out = Path(args.out)
    data: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    data.setdefault("settings", vars(args))
    configs = [("none", 1)]
    for rec in ("bn", "lsq"):
        configs += [(rec, b) for b in args.calibration]
    configs += [("finetune", b) for b in args.finetune_calibration]
    truth_key = _truth_key(args.truth_from)
    for task_name in args.tasks:
        dataset, model = task_name.split(":")
        spec = JobSpec.model_validate(
            {
                "model": {"zoo": model},
                "dataset": {"name": dataset},
                "budget": {"macs_ratio": 0.5},
                "search_space": {"round_to": args.round_to},
            }
        )
        task = load_task(spec, WorkerSettings(cache_dir=Path(args.cache_dir)))
        evs = evaluators(task, configs, args.proxy_finetune_steps)
        if args.truth_from == "bn":
            base = evs["bn@8"] if "bn@8" in evs else next(iter(evs.values()))
        else:
            base = evs[f"{args.truth_from}@2"]
        for budget in args.budgets:
            key = f"{task_name}@{budget}"
            rows = data.setdefault(key, {})
            for i, policy in enumerate(policies_for(task.space, budget, args.policies, args.seed)):
                sig = task.space.signature(policy)
                row = rows.setdefault(sig, {"index": i, "policy": policy, "proxy": {}, "seconds": {}})
                row["macs_ratio"] = task.space.macs_ratio(policy)
                for name, ev in evs.items():
                    if name in row["proxy"]:
                        continue
                    m = ev.evaluate(policy)
                    row["proxy"][name] = m.quality
                    row["seconds"][name] = m.eval_seconds
                if truth_key not in row:
                    t0 = time.perf_counter()
                    row[truth_key] = truth(task, base, policy, args.truth_steps, args.seed)
                    row[f"{truth_key}_s"] = time.perf_counter() - t0
                    print(
                        f"[{key}] policy {i}: {truth_key} {row[truth_key]:.3f} "
                        + " ".join(f"{k}={v:.3f}" for k, v in row["proxy"].items()),
                        flush=True,
                    )
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_text(json.dumps(data, indent=1))
    out.write_text(json.dumps(data, indent=1))
    table([out], truth_key)


def table(files: list[Path], truth_key: str = "truth") -> None:
    merged: dict[str, Any] = {}
    settings: dict[str, Any] = {}
    for f in files:
        d = json.loads(Path(f).read_text())
        settings = d.pop("settings", settings)
        merged.update(d)
    print(
        f"truth ({truth_key}): test accuracy after {settings.get('truth_steps')} SGD steps "
        f"(equal for every policy); proxies: val accuracy\n"
    )
    print("| task | MACs | recovery | calib. batches | policies | Spearman ρ | proxy range | truth range | s / eval |")
    print("|---|---|---|---:|---:|---:|---|---|---:|")
    for key, rows in merged.items():
        task, budget = key.rsplit("@", 1)
        rows = [r for r in rows.values() if truth_key in r]
        names = sorted({n for r in rows for n in r["proxy"]}, key=_order)
        t = [r[truth_key] for r in rows]
        for name in names:
            have = [r for r in rows if name in r["proxy"]]
            p = [r["proxy"][name] for r in have]
            rho = spearman(p, [r[truth_key] for r in have])
            secs = statistics.median(r["seconds"][name] for r in have)
            rec, batches = name.split("@")
            batches = "-" if rec == "none" else batches
            print(
                f"| {task} | {budget} | {rec} | {batches} | {len(have)} | {rho:+.2f} | "
                f"{min(p):.3f}–{max(p):.3f} | {min(t):.3f}–{max(t):.3f} | {secs:.2f} |"
            )


def _order(name: str) -> tuple[int, int]:
    rec, b = name.split("@")
    return (["none", "bn", "lsq", "finetune"].index(rec), int(b))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="digits:resnet20,mnist1d:resnet1d20")
    ap.add_argument("--budgets", default="0.5,0.25", help="MACs ratios")
    ap.add_argument("--policies", type=int, default=30)
    ap.add_argument("--calibration", default="1,2,4,8", help="calibration batches for bn and lsq")
    ap.add_argument("--finetune-calibration", default="1,8", help="calibration batches for finetune")
    ap.add_argument("--proxy-finetune-steps", type=int, default=20)
    ap.add_argument("--truth-steps", type=int, default=100, help="the equal fine-tune")
    ap.add_argument("--truth-from", default="bn", choices=["bn", "lsq"], help="where the equal fine-tune starts")
    ap.add_argument("--round-to", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache-dir", default=".cache/bench")
    ap.add_argument("--out", default="docs/bench/proxy-study.json")
    ap.add_argument("--table", nargs="+", default=None, help="print the table of these files")
    args = ap.parse_args()
    if args.table:
        table([Path(f) for f in args.table], _truth_key(args.truth_from))
        return
    torch.set_num_threads(args.threads)
    args.tasks = args.tasks.split(",")
    args.budgets = [float(b) for b in args.budgets.split(",")]
    args.calibration = [int(b) for b in args.calibration.split(",")]
    args.finetune_calibration = [int(b) for b in args.finetune_calibration.split(",") if b]
    if args.round_to != "auto":
        args.round_to = int(args.round_to)
    run(args)


if __name__ == "__main__":
    main()
