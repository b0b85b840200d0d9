"""Cost of committing one trial as a job grows: 2000 trials through the runner's real Recorder.

Each trial goes through ``Recorder.on_outcome`` (``service.jobs.recorder``) exactly as the runner calls it: the trial row,
its ``trial`` event, the Pareto-front update and the ``progress`` event in one SQLite transaction.
The front is updated against the current front only, so the cost per trial should stay flat:
the summary line compares the mean of the last hundred commits with the first hundred.
Outcomes are synthetic (random policies over the service tests' tiny space, analytic quality
with noise, so the front keeps changing); no model is trained.

    .venv/bin/python bench/trial_commits.py                # 2000 trials, prints per-hundred figures
    PYTHONPATH=<an older checkout> .venv/bin/python bench/trial_commits.py   # the same on other code
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

if __name__ == "__main__":  # bench/ would shadow the packages; PYTHONPATH, if set, comes first
    sys.path.pop(0)
    sys.path.append(str(Path(__file__).resolve().parents[1]))

from agents.types import Budget, Metrics, Outcome, Proposal  # noqa: E402
from service.db import Database, repo, upgrade  # noqa: E402
from tests.service.fakes import tiny_space  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    url = f"sqlite:///{tempfile.mkdtemp(prefix='autoprune-commits-')}/commits.db"
    upgrade(url)
    db = Database(url)
    space = tiny_space()
    budget = Budget(macs_ratio=0.6)
    with db.session_scope() as s:
        job = repo.create_job(s, spec={"budget": {"macs_ratio": 0.6}}, name="commits", cost_key="macs",
                              trials_total=args.trials)
        repo.set_state(s, job=job, state="running")
        job_id = job.id
    owner = "bench-controller"
    with db.session_scope() as s:
        assert repo.take_lease(s, job_id=job_id, owner=owner, seconds=3600)

    def fence(s: Any) -> None:  # the runner's first statement of every job write
        assert repo.renew_lease(s, job_id=job_id, owner=owner, seconds=3600)

    try:
        from service.jobs.recorder import JobFacts, Recorder
    except ImportError:  # an older checkout: the recorder lived in the runner (before issue 19)
        from service.runner import _Recorder  # type: ignore[attr-defined]

        recorder = _Recorder(db, job_id, space, budget, owner, fence)
    else:
        with db.session_scope() as s:
            facts = JobFacts.of(repo.get_job(s, job_id))
        recorder = Recorder(db, facts, space, budget, owner, fence)
    rng = random.Random(args.seed)
    seconds: list[float] = []
    for trial_id in range(args.trials):
        policy = space.validate({g.name: rng.uniform(0.0, 0.8) for g in space.groups})
        mean = sum(policy.values()) / len(policy)
        metrics = Metrics(quality=0.95 - 0.4 * mean * mean + rng.gauss(0, 0.02), macs=int(space.macs(policy)),
                          params=int(space.params(policy)), macs_ratio=space.macs_ratio(policy),
                          params_ratio=space.params_ratio(policy), node="bench")
        proposal = Proposal(trial_id, policy, {})
        t0 = time.perf_counter()
        recorder.on_outcome(proposal, Outcome(trial_id, policy, metrics, None), False)
        seconds.append(time.perf_counter() - t0)
        if len(seconds) % 100 == 0:
            print(f"trials {len(seconds) - 99}-{len(seconds)}: {statistics.mean(seconds[-100:]) * 1000:.2f} ms/commit",
                  flush=True)
    with db.session_scope() as s:
        front = len(repo.front_trials(s, job_id=job_id))
    hundreds = [statistics.mean(seconds[i:i + 100]) * 1000 for i in range(0, len(seconds), 100)]
    print("mean ms per commit, by hundred:", " ".join(f"{h:.2f}" for h in hundreds))
    first, last = hundreds[0], hundreds[-1]
    print(f"{args.trials} trials, front of {front}: first hundred {first:.2f} ms/commit, "
          f"last hundred {last:.2f} ms/commit, ratio {last / first:.2f}")
    db.dispose()


if __name__ == "__main__":
    main()
