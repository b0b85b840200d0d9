"""Issue 22's CNN rows from ``bench/runtime_jobs.py --out`` files: per row and seed the shipped
model's test quality and re-measured latency ratio, and the mean over seeds with its spread.

A depth job (``search_space.depth: true``) gives three rows — the depth + width search's best,
the uniform-fill baseline and the depth-only baseline — and a width-only job of the same spec two
— the width-only search's best and its uniform-fill baseline (the same zero-search point); a
``global`` job (Torch-Pruning's global ranking, no search) one more, its best.

    .venv/bin/python bench/depth_rows.py --depth r56-depth-s*.jsonl --width r56-width-s*.jsonl \
        --global r56-global.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

ROWS = (("depth", "best", "depth + width search"), ("width", "best", "width-only search"),
        ("global", "best", "Torch-Pruning global ranking"), ("depth", "depth-only", "depth-only (baseline)"), ("width", "baseline", "uniform-fill (width job)"),
        ("depth", "baseline", "uniform-fill (depth job)"))


def load_rows(groups: dict[str, list[Path]]) -> dict[tuple[str, str], dict[int, dict]]:
    """``{(job, role): {seed: row}}`` from each job kind's ``--out`` files."""
    rows: dict[tuple[str, str], dict[int, dict]] = {}
    for job, files in groups.items():
        for f in files:
            for line in f.read_text().splitlines():
                r = json.loads(line)
                rows.setdefault((job, r["role"]), {})[r["seed"]] = r
    return rows


def print_rows(rows: dict[tuple[str, str], dict[int, dict]], titles: tuple[tuple[str, str, str], ...]) -> list[int]:
    """The markdown table, one line per ``(job, role, title)`` present; returns the seeds."""
    seeds = sorted({s for by_seed in rows.values() for s in by_seed})
    head = " | ".join(f"seed {s}" for s in seeds)
    print(f"| row | {head} | mean (spread) | re-measured latency ratio ({' / '.join(f's{s}' for s in seeds)}) |")
    print("|---|" + "---|" * (len(seeds) + 2))
    for job, role, title in titles:
        by_seed = rows.get((job, role), {})
        if not by_seed:
            continue
        q = [by_seed[s]["test_quality"] for s in seeds if s in by_seed]
        cells = " | ".join(f"{by_seed[s]['test_quality']:.3f}" if s in by_seed else "–" for s in seeds)
        lat = " / ".join(f"{by_seed[s]['remeasured_ratio']:.3f}" if s in by_seed else "–" for s in seeds)
        print(f"| {title} | {cells} | **{statistics.mean(q):.3f}** ({max(q) - min(q):.3f}) | {lat} |")
    return seeds


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--depth", type=Path, nargs="+", required=True)
    ap.add_argument("--width", type=Path, nargs="+", required=True)
    ap.add_argument("--global", dest="global_", type=Path, nargs="*", default=[])
    args = ap.parse_args(argv)
    print_rows(load_rows({"depth": args.depth, "width": args.width, "global": args.global_}), ROWS)


if __name__ == "__main__":
    main()
