"""Where a finished search's best network came from: per job, the best trial that met the budget
as measured (its search-time quality proxy and its origin — a baseline role, ``mutation of N``
for ``optuna-tpe``'s mutations of the incumbent, or ``sampler``), and how many of the mutations
were measured within the budget.

    .venv/bin/python bench/trial_origins.py --data-dir /tmp/m40 JOB_ID [JOB_ID ...]

``--data-dir`` is the server's ``AUTOPRUNE_DATA_DIR``; a unique prefix of a job's id will do.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

from service.config import Settings  # noqa: E402
from service.db import Database, repo  # noqa: E402


def origin(info: dict) -> str:
    if info.get("role"):
        return str(info["role"])
    if "mutated_from" in info:
        return f"mutation of {info['mutated_from']}"
    return "sampler"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("jobs", nargs="+", help="job ids (unique prefixes will do)")
    ap.add_argument("--data-dir", required=True, type=Path, help="the server's AUTOPRUNE_DATA_DIR")
    args = ap.parse_args(argv)
    db = Database(Settings(data_dir=args.data_dir).database_url)
    print("| job | seed | best feasible trial | origin | proxy | mutations within the budget |")
    print("|---|---|---|---|---|---|")
    with db.session_scope() as s:
        for prefix in args.jobs:
            job = repo.job_by_prefix(s, prefix)
            trials = [t for t in repo.all_trials(s, job_id=job.id) if t.quality is not None]
            best = max((t for t in trials if t.feasible), key=lambda t: t.quality or 0.0, default=None)
            mutations = [t for t in trials if "mutated_from" in t.info]
            cells = ("–", "–", "–") if best is None else (str(best.trial_id), origin(best.info), f"{best.quality:.3f}")
            print(f"| {job.id[:8]} | {job.spec.get('seed', 0)} | {' | '.join(cells)} | "
                  f"{sum(t.feasible for t in mutations)} of {len(mutations)} |")


if __name__ == "__main__":
    main()
