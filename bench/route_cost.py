"""Service time of the polled routes, in-process, with nothing else running in the server.

20 running jobs (leased to another controller, so this app's runner leaves them alone) with 40
trials each in a temporary SQLite store; each route's function is called directly and its
response serialised, 200 times, and the median printed. ``--profile`` prints cProfile's top
functions for one route. What ``bench/api_load.py`` measures through HTTP under load is this
plus queueing and FastAPI/uvicorn.

    .venv/bin/python bench/route_cost.py
    .venv/bin/python bench/route_cost.py --profile job
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METRICS: dict[str, object] = {"params": 10.0, "macs_ratio": 0.5, "params_ratio": 0.5, "latency_ms": None, "latency_spread_ms": None,
           "latency_ratio": None, "eval_seconds": 1.0, "node": "bench", "extra": {}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--profile", choices=["job", "jobs", "trials", "pareto"], default=None)
    args = ap.parse_args()

    from fastapi.testclient import TestClient

    import service.api.jobs as routes
    from service.api.app import create_app
    from service.config import Settings
    from service.db import repo
    from tests.service.fakes import FakeLauncher, spec

    app = create_app(Settings(data_dir=Path(tempfile.mkdtemp(prefix="autoprune-routes-"))), launcher=FakeLauncher())
    with TestClient(app):  # runs the app's start-up (migrations, runner)
        db = app.state.db
        ids = []
        with db.session_scope() as s:
            for j in range(args.jobs):
                row = repo.create_job(s, spec=spec(), name=f"job {j}", cost_key="macs", trials_total=100)
                row.lease_owner, row.lease_expires_at = "elsewhere", repo.utcnow() + timedelta(hours=1)
                repo.set_state(s, job=row, state="running")
                for i in range(args.trials):
                    repo.add_trial(s, job_id=row.id, trial_id=i, state="succeeded", policy={"a": 0.1 * (i % 5)},
                                   kept={"a": 3}, metrics={"quality": i / args.trials, "macs": 100.0 - i, **METRICS},
                                   quality=i / args.trials, macs=100.0 - i, feasible=i % 3 == 0,
                                   info={"role": "baseline"} if i == 0 else {}, cached=False)
                ids.append(row.id)
        job = ids[len(ids) // 2]
        calls: dict[str, Callable[[], object]] = {
            # the running job's view is built per read (a finished one's is cached bytes)
            "job": lambda: routes.views.one(db, job),
            "jobs": lambda: routes.views.page(db, offset=0, limit=20),
            "trials": lambda: routes.list_trials(job, db, offset=0, limit=20, sort="trial_id",
                                                 order="asc").model_dump_json(),
            "pareto": lambda: routes.pareto(job, db).model_dump_json(),
        }
        for name, call in calls.items():
            for _ in range(10):
                call()
            times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                call()
                times.append(time.perf_counter() - t)
            print(f"{name}: median {statistics.median(times) * 1000:.2f} ms over {args.repeat}")
        if args.profile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.enable()
            for _ in range(args.repeat):
                calls[args.profile]()
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
