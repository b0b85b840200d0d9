#!/usr/bin/env python3
"""Writes tests/durations.json (seconds per test: set-up + call + tear-down) from the output of
a parallel ``pytest --durations=0`` run, which tests/conftest.py reads to start the longest work
first. Only tests of at least ``--min`` seconds are kept; the rest count as short.

    make test PYTEST_ARGS="--durations=0" | tee /tmp/run.log
    python3 scripts/test-durations.py /tmp/run.log
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

LINE = re.compile(r"^([0-9.]+)s\s+(setup|call|teardown)\s+(\S+)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("log", type=Path, help="pytest output with a --durations=0 report")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "durations.json")
    ap.add_argument("--min", type=float, default=0.5, help="leave out tests shorter than this (s)")
    args = ap.parse_args()
    total: dict[str, float] = defaultdict(float)
    for line in args.log.read_text(errors="replace").splitlines():
        if m := LINE.match(line):
            nodeid = m.group(3)
            at = nodeid.rfind("@")  # a grouped test's id carries "@<xdist group>"
            total[nodeid[:at] if at > nodeid.rfind("]") else nodeid] += float(m.group(1))
    if not total:
        raise SystemExit(f"{args.log}: no --durations lines found")
    kept = {k: round(v, 1) for k, v in sorted(total.items()) if v >= args.min}
    args.out.write_text(json.dumps(kept, indent=0) + "\n")
    print(f"{args.out}: {len(kept)} of {len(total)} tests, {sum(kept.values()):.0f} s in all")


if __name__ == "__main__":
    main()
