"""The baseline one step wider: quantize + uniform-fill placed just *over* the best found's latency.

A job places each baseline at the widest architecture not slower than the best found's published
file, so on coarse levels the baseline runs a few per cent faster than the best. This brackets the
comparison from above: starting from the job's quantize + uniform-fill policy (rank 4), groups are
widened one level each, in the space's order, until the architecture, timed side by side with the
best's file, is no faster than it; that policy goes through the service's own finalize (the same
distillation, quantized, exported, tested; no tightening) and its file is timed beside the best's.
Prints per job: the best's test quality, the job's quantize + uniform-fill and this one (test
quality, latency as a share of the best's file).

    .venv/bin/python bench/next_level.py --data-dir /tmp/m41 JOB_ID [JOB_ID ...]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repository, not bench/


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("jobs", nargs="+")
    ap.add_argument("--data-dir", type=Path, required=True, help="the server's AUTOPRUNE_DATA_DIR")
    ap.add_argument("--rounds", type=int, default=30, help="rounds of each side-by-side timing")
    args = ap.parse_args(argv)

    from workers.delivered import architecture_latency
    from workers.evaluator import Evaluator
    from workers.finalize import finalize
    from workers.latency import time_side_by_side
    from workers.runtimes import get_runtime
    from workers.runtimes.onnx_runtime import file_run
    from workers.spec import JobSpec
    from workers.task import WorkerSettings, load_task

    db = sqlite3.connect(args.data_dir / "autoprune.db")
    print(f"{'job':<9} {'best':>6} {'q+uf':>6} {'to best':>7} {'q+uf, one step wider':>20} {'to best':>7} {'steps':>5}")
    for job in args.jobs:
        (spec_json,) = db.execute("select spec from jobs where id = ?", (job,)).fetchone()
        spec = JobSpec.model_validate(json.loads(spec_json))
        arts = args.data_dir / "artifacts" / job
        best_m = json.loads((arts / "rank-1" / "metrics.json").read_text())
        qu_m = json.loads((arts / "rank-4" / "metrics.json").read_text())
        assert qu_m["role"] == "quantize+uniform-fill", qu_m.get("role")
        task = load_task(spec, WorkerSettings(cache_dir=args.data_dir))
        ev = Evaluator(task)
        space = ev.space
        best_run = file_run(arts / "rank-1" / "model.onnx", ev.latency.example, threads=ev.latency.threads)
        policy = space.validate(json.loads((arts / "rank-4" / "policy.json").read_text()))
        widths, candidate = dict(policy), policy  # unchanged when no group can widen
        steps = 0
        for g in space.groups:  # one level up per group, in order, until no faster than the best
            kept = space.kept(space.validate(widths))[g.name]
            up = [k for k in space.levels(g) if k > kept]
            if not up:
                continue
            widths[g.name] = space.ratio_for(g, up[0])
            steps += 1
            candidate = space.validate(space.round(space.with_int8(widths, space.int8_groups(policy))))
            if architecture_latency(ev, candidate, args.rounds, best_run).ratio >= 1.0:
                break
        with tempfile.TemporaryDirectory() as tmp:
            fin = spec.finalize.model_copy(update={"top_k": 1, "baseline": False, "tighten": 0})
            (art,) = finalize(task, [(candidate, None)], fin, Path(tmp))
            wider_run = file_run(art.dir / "model.onnx", ev.latency.example, threads=ev.latency.threads)
            qu_run = file_run(arts / "rank-4" / "model.onnx", ev.latency.example, threads=ev.latency.threads)
            lats = time_side_by_side(get_runtime("onnxruntime"), best_run, [qu_run, wider_run], ev.latency.example,
                                     threads=ev.latency.threads, rounds=3 * args.rounds)
        print(f"{job[:8]:<9} {best_m['test_quality']:6.3f} {qu_m['test_quality']:6.3f} {lats[0].ratio:7.3f} "
              f"{art.metrics['test_quality']:20.3f} {lats[1].ratio:7.3f} {steps:5d}", flush=True)


if __name__ == "__main__":
    main()
