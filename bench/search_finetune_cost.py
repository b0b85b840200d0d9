"""What ``evaluation.finetune_steps`` costs per evaluation: plain vs N steps, side by side.

The same random policies (MACs ≤ budget) are evaluated by two evaluators of one task, one with
``--steps`` fine-tuning steps, alternating which goes first; medians of seconds per evaluation.
No latency measurement (as in bench/agents.py), 1 thread.

    .venv/bin/python bench/search_finetune_cost.py --task digits:resnet20 --steps 20
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.registry import make_agent  # noqa: E402
from agents.types import Budget  # noqa: E402
from workers.evaluator import Evaluator  # noqa: E402
from workers.spec import JobSpec  # noqa: E402
from workers.task import WorkerSettings, load_task  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="digits:resnet20")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--budget", type=float, default=0.25, help="MACs ratio of the sampled policies")
    ap.add_argument("--policies", type=int, default=12)
    ap.add_argument("--cache-dir", default=".cache/bench")
    args = ap.parse_args()
    torch.set_num_threads(1)
    dataset, model = args.task.split(":")
    evaluators = {}
    for steps in (0, args.steps):
        spec = JobSpec.model_validate({
            "model": {"zoo": model}, "dataset": {"name": dataset}, "budget": {"macs_ratio": args.budget},
            "search_space": {"round_to": 1}, "evaluation": {"finetune_steps": steps},
        })
        task = load_task(spec, WorkerSettings(cache_dir=Path(args.cache_dir)))
        evaluators[steps] = Evaluator(task, latency_rounds=0)
    space = evaluators[0].space
    proposals = make_agent("random", space, Budget(macs_ratio=args.budget), seed=3).ask(args.policies)
    seconds: dict[int, list[float]] = {steps: [] for steps in evaluators}
    for i, p in enumerate(proposals):
        for steps in sorted(evaluators, reverse=bool(i % 2)):
            t0 = time.perf_counter()
            evaluators[steps].evaluate(p.policy)
            seconds[steps].append(time.perf_counter() - t0)
    plain, tuned = statistics.median(seconds[0]), statistics.median(seconds[args.steps])
    print(f"{args.task} s/evaluation: plain {plain:.3f}, +{args.steps} steps {tuned:.3f}, "
          f"ratio {tuned / plain:.2f}")


if __name__ == "__main__":
    main()
