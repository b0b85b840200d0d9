"""How far a finished job's search-time latency figures are from the same architectures timed
again now: every trial's network rebuilt from the job's spec and timed against the dense model
in the job's runtime, the way the search timed it (``workers.latency.time_pair``, no cache).

Run it on a quiet machine after the job: a trial whose figure differs by more than ``--off``
(relative) was timed under load the measurement did not see through. Figures the search believed
too high keep the search under its budget (a feasible network judged infeasible, an inflated
error estimate for the latency model), too low send it over.

    .venv/bin/python bench/search_latency.py --data-dir /tmp/f35 JOB_ID [--repeats 2]

``--data-dir`` is the server's ``AUTOPRUNE_DATA_DIR`` (its database and uploaded weights).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

from service.config import Settings  # noqa: E402
from service.db import Database, repo  # noqa: E402
from service.jobs.candidates import outcome_of  # noqa: E402
from service.launch import worker_settings  # noqa: E402
from workers.evaluator import Evaluator  # noqa: E402
from workers.spec import JobSpec  # noqa: E402
from workers.task import load_task  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("job", help="the job's id (a unique prefix will do)")
    ap.add_argument("--data-dir", required=True, type=Path, help="the server's AUTOPRUNE_DATA_DIR")
    ap.add_argument("--repeats", type=int, default=2, help="timings per trial now (their median is printed)")
    ap.add_argument("--off", type=float, default=0.10, help="relative difference that counts as off")
    args = ap.parse_args(argv)
    settings = Settings(data_dir=args.data_dir)
    db = Database(settings.database_url)
    with db.session_scope() as s:
        job = repo.job_by_prefix(s, args.job)
        spec = JobSpec.model_validate(job.spec)
        outcomes = [outcome_of(t) for t in repo.all_trials(s, job_id=job.id)]
    ev = Evaluator(load_task(spec, worker_settings(settings)), latency_rounds=15)
    print(f"job {job.id[:8]} ({spec.name}), {spec.target.runtime}, batch {spec.target.batch_size}")
    print(f"{'trial':>5} {'search':>7} {'now':>7} {'diff':>7}  architecture")
    diffs, seen, retimed = [], set(), 0
    for o in sorted(outcomes, key=lambda o: o.trial_id):
        m = o.metrics
        if m is None or m.latency_ratio is None:
            continue
        retimed += m.extra.get("latency_attempts", 1) > 1  # timed again at search (not settled)
        signature = ev.space.signature(ev.space.validate(o.policy))
        if signature in seen or signature == ev.dense_signature:
            continue  # a repeat answered from the cache, or the dense network
        seen.add(signature)
        run = ev.run_of(o.policy)
        now = statistics.median(ev.latency.time(run, ev.latency.run_of(ev.dense)).ratio for _ in range(args.repeats))
        diff = m.latency_ratio / now - 1
        diffs.append(diff)
        print(f"{o.trial_id:>5} {m.latency_ratio:>7.3f} {now:>7.3f} {diff:>+7.1%}  {signature}", flush=True)
    off = [d for d in diffs if abs(d) > args.off]
    print(f"{len(diffs)} architectures: median difference {statistics.median(diffs):+.1%}, "
          f"{len(off)} off by more than {args.off:.0%} ({sum(d > 0 for d in off)} timed high by the search); "
          f"{retimed} trials timed again at search")


if __name__ == "__main__":
    main()
