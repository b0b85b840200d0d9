"""Issue 21's rows from ``bench/runtime_jobs.py --out`` files: per row and seed the shipped
model's test quality and re-measured latency ratio, the mean over seeds with its spread, and the
joint search's gain over quantize + uniform-fill seed by seed, and (rows that record it) where
the job placed quantize + uniform-fill: its latency as a share of the best's, the files timed
side by side.

A joint job (``search_space.precision: [fp32, int8]``) gives four rows — the joint search's best,
quantize + uniform-fill, quantize-only and the fp32 uniform-fill baseline — and an fp32 job of
the same spec (``precision: [fp32]``) one more, the fp32 prune-only search's best, and a
``global`` job (Torch-Pruning's global ranking, no search) its best.

    .venv/bin/python bench/joint_rows.py --joint minilm-int8-0.3-s*.jsonl
    .venv/bin/python bench/joint_rows.py --joint fashion-int8-0.3-s*.jsonl --fp32 fashion-fp32-0.3-s*.jsonl \
        --global fashion-global-0.3-s*.jsonl
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.depth_rows import load_rows, print_rows  # noqa: E402

ROWS = (("joint", "best", "joint search"), ("fp32", "best", "fp32 prune-only search"),
        ("global", "best", "Torch-Pruning global ranking"),
        ("joint", "quantize+uniform-fill", "quantize + uniform-fill"), ("joint", "quantize-only", "quantize-only"),
        ("joint", "baseline", "uniform-fill (fp32)"))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--joint", type=Path, nargs="+", required=True)
    ap.add_argument("--fp32", type=Path, nargs="*", default=[])
    ap.add_argument("--global", dest="global_", type=Path, nargs="*", default=[])
    args = ap.parse_args(argv)
    rows = load_rows({"joint": args.joint, "fp32": args.fp32, "global": args.global_})
    seeds = print_rows(rows, ROWS)
    best, qu = rows.get(("joint", "best"), {}), rows.get(("joint", "quantize+uniform-fill"), {})
    paired = [s for s in seeds if s in best and s in qu]
    if paired:
        gains = [best[s]["test_quality"] - qu[s]["test_quality"] for s in paired]
        slower = [best[s]["remeasured_ratio"] - qu[s]["remeasured_ratio"] for s in paired]
        print(f"\njoint − quantize + uniform-fill per seed: {' / '.join(f'{g:+.3f}' for g in gains)}; "
              f"mean {statistics.mean(gains):+.3f}; re-measured latency, joint − quantize + "
              f"uniform-fill (of dense): {' / '.join(f'{d:+.3f}' for d in slower)}")
        beside = [qu[s].get("latency_to_best") for s in paired]
        if all(v is not None for v in beside):  # the job's own files timed together, one run
            print(f"quantize + uniform-fill's latency as a share of the joint search's, the job's files timed "
                  f"side by side: {' / '.join(f'{v:.3f}' for v in beside)}")


if __name__ == "__main__":
    main()
