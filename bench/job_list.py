"""Cost of one page of ``GET /jobs`` (``Job.from_row`` per job) on a filled store.

Side by side, interleaved, medians of rounds: the view as it is (first trial, best feasible trial
and count, each one indexed query) and the naive view it replaced (every trial of every listed
job loaded to find the baseline and the best). In-process on SQLite, no HTTP.

    .venv/bin/python bench/job_list.py --jobs 50 --trials 300
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.api.schemas import Job, Progress, Trial  # noqa: E402
from service.db import Database, repo, upgrade  # noqa: E402
from tests.service.fakes import spec  # noqa: E402
from workers.spec import JobSpec  # noqa: E402


def naive_view(s: Any, job: Any) -> Any:
    """What the list did before: load every trial, pick baseline and best in Python."""
    trials = repo.all_trials(s, job_id=job.id)
    baseline = next((t for t in trials if (t.info or {}).get("role") == "baseline"), None)
    feasible = [t for t in trials if t.feasible and t.quality is not None]
    best = max(feasible, key=lambda t: (t.quality, -(t.macs or 0.0))) if feasible else None
    seen = repo.TrialSummary(count=len(trials), last_finished_at=max((t.finished_at for t in trials), default=None))
    return baseline and Trial.from_row(baseline), best and Trial.from_row(best), Progress.of(job, seen)


def view(s: Any, job: Any) -> Any:
    """What a page builds now: the trial summary (batched per page by the route), then the view."""
    return Job.from_row(job, repo.trial_summaries(s, job_ids=[job.id])[job.id])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=50)
    ap.add_argument("--trials", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    url = f"sqlite:///{tempfile.mkdtemp()}/jobs.db"
    upgrade(url)
    db = Database(url)
    rng = random.Random(0)
    policy = {f"layer{i}.conv1": 0.3 for i in range(20)}
    metrics = {**{k: 0.5 for k in ("quality", "macs_ratio", "params_ratio", "latency_ms")}, "macs": 1000, "params": 100}
    job_spec = JobSpec.model_validate(spec(budget={"macs_ratio": 0.5})).model_dump(mode="json")
    with db.session_scope() as s:
        for j in range(args.jobs):
            job = repo.create_job(s, spec=job_spec, name=f"j{j}", cost_key="macs",
                                  trials_total=args.trials)
            for t in range(args.trials):
                repo.add_trial(s, job_id=job.id, trial_id=t, state="succeeded", policy=policy,
                               kept=dict.fromkeys(policy, 8), metrics=metrics, quality=rng.random(),
                               macs=rng.random(), feasible=rng.random() < 0.7,
                               info={"role": "baseline"} if t == 0 else {}, cached=False)

    def page(view: Any) -> float:
        t0 = time.perf_counter()
        with db.session_scope() as s:
            rows, _ = repo.list_jobs(s, offset=0, limit=50)
            for job in rows:
                view(s, job)
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {"naive": [], "now": []}
    for r in range(args.rounds):
        for name in ("naive", "now") if r % 2 else ("now", "naive"):
            times[name].append(page(naive_view if name == "naive" else view))
    naive, now = statistics.median(times["naive"]), statistics.median(times["now"])
    print(f"{args.jobs} jobs x {args.trials} trials, page of 50: every trial loaded {naive * 1000:.0f} ms, "
          f"Job.from_row {now * 1000:.0f} ms, ratio {now / naive:.3f}")


if __name__ == "__main__":
    main()
