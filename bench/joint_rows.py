"""Issue 21's rows from ``bench/runtime_jobs.py --out`` files: per row and seed the shipped
model's test quality and re-measured latency ratio, the mean over seeds with its spread, and the
joint search's gain over quantize + uniform-fill seed by seed.

A joint job (``search_space.precision: [fp32, int8]``) gives four rows — the joint search's best,
quantize + uniform-fill, quantize-only and the fp32 uniform-fill baseline — and an fp32 job of
the same spec (``precision: [fp32]``) one more, the fp32 prune-only search's best.

    .venv/bin/python bench/joint_rows.py --joint minilm-int8-0.3-s*.jsonl
    .venv/bin/python bench/joint_rows.py --joint fashion-int8-0.3-s*.jsonl --fp32 fashion-fp32-0.3-s*.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

ROWS = (("joint", "best", "joint search"), ("fp32", "best", "fp32 prune-only search"),
        ("joint", "quantize+uniform-fill", "quantize + uniform-fill"), ("joint", "quantize-only", "quantize-only"),
        ("joint", "baseline", "uniform-fill (fp32)"))


def load(groups: dict[str, list[Path]]) -> dict[tuple[str, str], dict[int, dict]]:
    rows: dict[tuple[str, str], dict[int, dict]] = {}
    for job, files in groups.items():
        for f in files:
            for line in f.read_text().splitlines():
                r = json.loads(line)
                rows.setdefault((job, r["role"]), {})[r["seed"]] = r
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--joint", type=Path, nargs="+", required=True)
    ap.add_argument("--fp32", type=Path, nargs="*", default=[])
    args = ap.parse_args(argv)
    rows = load({"joint": args.joint, "fp32": args.fp32})
    seeds = sorted({s for by_seed in rows.values() for s in by_seed})
    head = " | ".join(f"seed {s}" for s in seeds)
    print(f"| row | {head} | mean (spread) | re-measured latency ratio ({' / '.join(f's{s}' for s in seeds)}) |")
    print("|---|" + "---|" * (len(seeds) + 2))
    for job, role, title in ROWS:
        by_seed = rows.get((job, role), {})
        if not by_seed:
            continue
        q = [by_seed[s]["test_quality"] for s in seeds if s in by_seed]
        cells = " | ".join(f"{by_seed[s]['test_quality']:.3f}" if s in by_seed else "–" for s in seeds)
        lat = " / ".join(f"{by_seed[s]['remeasured_ratio']:.3f}" if s in by_seed else "–" for s in seeds)
        print(f"| {title} | {cells} | **{statistics.mean(q):.3f}** ({max(q) - min(q):.3f}) | {lat} |")
    best, qu = rows.get(("joint", "best"), {}), rows.get(("joint", "quantize+uniform-fill"), {})
    paired = [s for s in seeds if s in best and s in qu]
    if paired:
        gains = [best[s]["test_quality"] - qu[s]["test_quality"] for s in paired]
        faster = sum(best[s]["remeasured_ratio"] <= qu[s]["remeasured_ratio"] for s in paired)
        print(f"\njoint − quantize + uniform-fill per seed: {' / '.join(f'{g:+.3f}' for g in gains)}; "
              f"mean {statistics.mean(gains):+.3f}; joint at equal or lower re-measured latency in "
              f"{faster} of {len(paired)} seeds")


if __name__ == "__main__":
    main()
