"""Replays a finished knapsack job's search with this checkout's agent: the job's own latency
table, and the job's measured outcomes told back in trial order, one proposal at a time.

Per step it prints the proposal's role, the latency ratio the model put it at, the bound the
solver used (the budget less ``latency_sigmas`` times the model's error estimate) and what the job
measured for it. While the agent proposes what the job evaluated, the steps are the job's own
(this is how its search got where it did); at the first proposal the job never evaluated (other
code, or a changed option) it prints that proposal and stops.

    .venv/bin/python bench/knapsack_replay.py --db sqlite:////tmp/r56b/autoprune.db JOB_ID [--steps 6]

A job run with more than one worker asked for several proposals at once, so its replay diverges
at the first batch; replay ``workers: 1`` jobs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

from agents.knapsack import KnapsackAgent  # noqa: E402
from agents.latency_table import LatencyTable  # noqa: E402
from agents.registry import make_agent  # noqa: E402
from agents.types import AgentHints, Budget  # noqa: E402
from search_spaces.space import SearchSpace  # noqa: E402
from service.db import Database, repo  # noqa: E402
from service.jobs.candidates import outcome_of  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("job", help="the job's id (a unique prefix will do)")
    ap.add_argument("--db", required=True, help="the controller's database URL")
    ap.add_argument("--steps", type=int, default=6, help="at most this many proposals")
    args = ap.parse_args(argv)
    db = Database(args.db)
    with db.session_scope() as s:
        job = repo.job_by_prefix(s, args.job)
        spec, space = dict(job.spec), SearchSpace.from_dict(job.space)
        table = LatencyTable.from_dict(job.agent_state["extra"]["latency_table"])
        trials = {t.trial_id: outcome_of(t) for t in repo.all_trials(s, job_id=job.id)}
    budget = Budget(**{k: v for k, v in spec["budget"].items() if v is not None})
    agent = make_agent(spec["agent"]["kind"], space, budget, seed=spec.get("seed", 0),
                       options=spec["agent"].get("options"), hints=AgentHints(latency_table=table))
    if not isinstance(agent, KnapsackAgent):
        raise SystemExit(f"job {job.id} searched with {spec['agent']['kind']!r}, not the knapsack")
    print(f"job {job.id} ({spec['name']}), budget {budget.to_dict()}")
    print(f"{'trial':>5} {'role':<10} {'modelled':>8} {'bound':>6} {'sigma':>6} {'measured':>8} {'MACs':>6}")
    for _ in range(args.steps):
        bound = next((lim.bound for lim in agent.solver.limits if lim.name == "latency"), float("nan"))
        sigma = agent._latency_sigma()
        [p] = agent.ask(1)
        modelled = agent._latency_model.value(space, agent._assignment_of(p.policy)) if agent._latency_model else float("nan")
        stored = trials.get(p.trial_id)
        role = str(p.info.get("role", ""))
        if stored is None or stored.policy != p.policy or stored.metrics is None:
            print(f"{p.trial_id:>5} {role:<10} {modelled:>8.3f} {bound:>6.3f} {sigma:>6.3f} {'(new)':>8} "
                  f"{space.macs_ratio(p.policy):>6.3f}   <- not what the job evaluated")
            return
        m = stored.metrics
        print(f"{p.trial_id:>5} {role:<10} {modelled:>8.3f} {bound:>6.3f} {sigma:>6.3f} {m.latency_ratio:>8.3f} {m.macs_ratio:>6.3f}")
        agent.tell([stored])


if __name__ == "__main__":
    main()
