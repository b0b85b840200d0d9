"""How well does the knapsack's latency model predict measured latency? (issue 14, offline)

Reads the measured evaluations of earlier ``bench/knapsack.py`` runs (``--runs``: policies with
their measured latency ratio), measures the per-group latency table the knapsack would ask for
(``--table-ratios``, cached by signature like every latency measurement), and prints:

* measured latency against the analytic MACs ratio: the least-squares line and its residual;
* the latency model a ``knapsack`` agent builds from that table (before any outcome): mean error
  and RMS on every measured evaluation, and its value for the narrowest network beside a
  measurement of it;
* the same after the first k outcomes of each knapsack run are added, on the rest of that run.

    .venv/bin/python bench/latency_fit.py --runs docs/bench/knapsack-quiet-lsq.json docs/bench/knapsack-quiet-bn.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(1, str(Path(__file__).resolve().parent))

from agents.budget_fit import LatencyModel  # noqa: E402
from agents.registry import make_agent  # noqa: E402
from agents.types import AgentHints, Budget  # noqa: E402
from workers.latency_table import measure_latency_table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="digits:resnet56")
    ap.add_argument("--runs", nargs="+", required=True, help="bench/knapsack.py result files")
    ap.add_argument("--table-ratios", default="0.25,0.5,0.75")
    ap.add_argument("--table-weight", type=float, default=8.0, help="the knapsack's option")
    ap.add_argument("--latency-rounds", type=int, default=6)
    ap.add_argument("--cache-dir", default=".cache/bench")
    args = ap.parse_args()
    torch.set_num_threads(1)
    import knapsack as kb  # bench/knapsack.py: the same task and evaluator

    bargs = argparse.Namespace(task=args.task, latency_ratio=0.6, threads=1, round_to=0, calibration_batches=2,
                               reference_seed=0, cache_dir=args.cache_dir, lock="latency-fit",
                               latency_rounds=args.latency_rounds)
    task, ev = kb.build(bargs)
    space = task.space
    runs = [r for f in args.runs for r in json.loads(Path(f).read_text())["runs"]]
    measured = [(r["agent"], r["seed"], t) for r in runs for t in r["trials"] if t["latency_ratio"] is not None]
    y = np.array([t["latency_ratio"] for _, _, t in measured])
    macs = np.array([t["macs_ratio"] for _, _, t in measured])
    line = np.polyfit(macs, y, 1)
    print(f"{len(y)} measured evaluations; latency ≈ {line[1]:.3f} + {line[0]:.3f}·MACs, "
          f"residual sd {np.std(y - np.polyval(line, macs)):.3f}")
    table = measure_latency_table(ev, tuple(float(r) for r in args.table_ratios.split(",")))

    def fitted(extra: list[tuple[dict[str, float], float]]) -> LatencyModel:
        """The model a knapsack agent given this table starts from, plus ``extra`` outcomes."""
        agent = make_agent("knapsack", space, Budget(latency_ratio=0.6), options={"table_weight": args.table_weight},
                           hints=AgentHints(latency_table=table))
        for policy, ratio in extra:
            agent.fit.latency.add(policy, ratio)
        return agent.fit.latency

    model = fitted([])
    err = y - np.array([model.predict_ratio(t["policy"]) for _, _, t in measured])
    lowest = space.uniform(space.max_ratio)
    measured_lowest = ev.latency.measure(space.signature(lowest), ev.prune(lowest)).ratio
    print(f"table alone ({args.table_ratios}, weight {args.table_weight:g}): mean error {err.mean():+.3f}, "
          f"RMS {np.sqrt((err**2).mean()):.3f}; narrowest network modelled at "
          f"{model.predict_ratio(lowest):.3f}, measured {measured_lowest:.3f}")
    for k in (1, 3, 8):
        errs = []
        for r in (r for r in runs if r["agent"] == "knapsack"):
            trials = [t for t in r["trials"] if t["latency_ratio"] is not None]
            m = fitted([(t["policy"], t["latency_ratio"]) for t in trials[:k]])
            errs += [t["latency_ratio"] - m.predict_ratio(t["policy"]) for t in trials[k:]]
        e = np.array(errs)
        print(f"+ first {k} outcomes of each knapsack run: mean error {e.mean():+.3f}, RMS {np.sqrt((e**2).mean()):.3f}")


if __name__ == "__main__":
    main()
