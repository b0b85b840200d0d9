"""Times every published ``model.onnx`` of a job side by side, in one interleaved timing.

A job's report compares its best found with its baselines at equal measured cost; each file's
delivered figure comes from its own timing against dense, and two timings of one file differ by
a few per cent on this machine. Here the dense model's fresh ONNX export (as in
``bench/delivered_latency.py``) and every bundle's file run round-robin in one timing
(``workers.latency.time_side_by_side``), ``--repeats`` times: each file's ratio to dense and
to rank-1 (the best found) come from the same rounds. Prints one table per job: role, test
quality, the delivered ratio the job reported, then per repeat the ratio to dense and to rank-1.

    .venv/bin/python bench/side_by_side.py ARTIFACTS/JOB_ID [ARTIFACTS/JOB_ID ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repository, not bench/


def side_by_side(job_dir: Path, *, threads: int, seq_len: int, rounds: int, repeats: int) -> list[dict]:
    """One row per bundle (rank order): its metrics and, per repeat, its ratio to dense and to
    rank-1, all files timed in one interleaved run."""
    from bench.delivered_latency import dense_export
    from workers.latency import time_side_by_side
    from workers.runtimes import get_runtime
    from workers.runtimes.onnx_runtime import file_run

    bundles = sorted((b for b in job_dir.glob("rank-*") if (b / "model.onnx").is_file()),
                     key=lambda b: int(b.name.split("-")[1]))
    rows = [{"bundle": b.name, **json.loads((b / "metrics.json").read_text()), "to_dense": [], "to_best": []}
            for b in bundles]
    with tempfile.TemporaryDirectory() as tmp:
        x = dense_export(bundles[0], Path(tmp) / "dense.onnx", batch=1, seq_len=seq_len)
        dense = file_run(Path(tmp) / "dense.onnx", x, threads=threads)
        files = [file_run(b / "model.onnx", x, threads=threads) for b in bundles]
        for _ in range(repeats):
            lats = time_side_by_side(get_runtime("onnxruntime"), dense, files, x, threads=threads, rounds=rounds)
            for row, lat in zip(rows, lats, strict=True):
                row["to_dense"].append(lat.ratio)
                row["to_best"].append(lat.ms / lats[0].ms)
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("jobs", nargs="+", type=Path, help="a job's artifact directory (holding rank-*/)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    for job in args.jobs:
        rows = side_by_side(job, threads=args.threads, seq_len=args.seq_len, rounds=args.rounds,
                            repeats=args.repeats)
        print(f"\n{job.name}")
        print(f"{'bundle':<7} {'role':<22} {'test':>6} {'reported':>8}  {'to dense (each repeat)':<24} "
              f"{'to rank-1 (each repeat)':<24} {'median to rank-1':>8}")
        for r in rows:
            dense = " ".join(f"{v:.3f}" for v in r["to_dense"])
            best = " ".join(f"{v:.3f}" for v in r["to_best"])
            print(f"{r['bundle']:<7} {r.get('role', 'best'):<22} {r['test_quality']:6.3f} "
                  f"{r.get('delivered_latency_ratio', float('nan')):8.3f}  {dense:<24} {best:<24} "
                  f"{statistics.median(r['to_best']):8.3f}", flush=True)


if __name__ == "__main__":
    main()
