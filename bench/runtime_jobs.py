"""Issue 20's done-when over REST: latency-budget jobs in onnxruntime, their files re-measured.

Submits a job spec (YAML/JSON) for each of ``--seeds`` in turn to a running controller (``autoprune
serve``; ``--server`` or ``AUTOPRUNE_SERVER``), waits for each, pulls every artifact bundle
(sha256 checked) and re-measures its ``model.onnx`` against a dense ONNX export in onnxruntime
with ``bench/delivered_latency.py`` (1 thread, batch 1, interleaved; nothing of the job's own
measurement is reused). Prints per artifact: seed, role, test quality, the budget, the ratio
the search measured, the ratio finalize delivered, ``budget_met``, and the re-measured ratio.

    autoprune serve &   # AUTOPRUNE_DATA_DIR=... for a fresh database
    .venv/bin/python bench/runtime_jobs.py bench/specs/resnet56_ort_0.5.yaml --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path[0] = str(Path(__file__).resolve().parents[1])


def wait(client: Any, job_id: str, poll: float = 5.0) -> dict[str, Any]:
    while True:
        job = client.job(job_id)
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return dict(job)
        time.sleep(poll)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec", type=Path)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--server", default=None)
    ap.add_argument("--rounds", type=int, default=60, help="rounds of the re-measurement")
    ap.add_argument("--out", type=Path, default=None, help="JSON lines of the rows")
    ap.add_argument("--weights", default=None,
                    help="an uploaded weights id (`autoprune upload FILE`) for the spec's model.weights")
    args = ap.parse_args(argv)
    from bench.delivered_latency import remeasure
    from service.client import Client

    client = Client(args.server)
    spec = yaml.safe_load(args.spec.read_text())
    if args.weights:
        spec["model"]["weights"] = args.weights
    rows = []
    budget = spec["budget"].get("latency_ratio")
    print(f"{'seed':>4} {'role':<9} {'test q':>7} {'budget':>6} {'search':>6} {'final':>6} {'met':>5} {'re-measured':>11}")
    for seed in args.seeds.split(","):
        # one at a time: the re-measurement runs with no job measuring beside it
        job_id = client.submit({**spec, "seed": int(seed)})["id"]
        job = wait(client, job_id)
        if job["state"] != "succeeded":
            print(f"{seed:>4} job {job_id} {job['state']}: {job.get('error')}")
            continue
        for art in client.artifacts(job_id):
            with tempfile.TemporaryDirectory() as tmp:
                bundle, _ = client.pull(job_id, int(art["rank"]), Path(tmp))
                lat = remeasure(bundle, threads=1, batch=1, seq_len=int(spec.get("target", {}).get("seq_len", 128)),
                                rounds=args.rounds)
            m = art["metrics"]
            row = {"seed": int(seed), "job": job_id, "rank": art["rank"], "role": m.get("role") or "best",
                   "test_quality": m.get("test_quality"), "budget": budget,
                   "searched_latency_ratio": m.get("searched_latency_ratio"),
                   "latency_ratio": m.get("latency_ratio"), "budget_met": m.get("budget_met"),
                   "latency_to_best": m.get("latency_to_best"),  # the job's files timed side by side
                   "remeasured_ratio": lat.ratio, "remeasured_dense_ms": lat.dense_ms}
            rows.append(row)
            f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
            print(f"{seed:>4} {row['role']:<9} {f(row['test_quality']):>7} {f(budget):>6} "
                  f"{f(row['searched_latency_ratio']):>6} {f(row['latency_ratio']):>6} {str(row['budget_met']):>5} "
                  f"{lat.ratio:11.3f}", flush=True)
    if args.out:
        args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
