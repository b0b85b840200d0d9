"""run_search with a model-free evaluator: reporting, dedup, cancellation, resume."""

from __future__ import annotations

from typing import Any

import pytest

from agents.types import Outcome, Proposal
from tests.workers.fakes import FakeEvaluator, ListAgent
from workers.loop import run_search
from workers.pool import InProcessPool


def _policies(n: int) -> list[dict[str, float]]:
    # distinct architectures: kept channels differ in steps of 4 on g0/g1
    return [{"g0": 0.25 * (i % 4), "g1": 0.25 * ((i // 4) % 4)} for i in range(n)]


class Recorder:
    def __init__(self, crash_after: int | None = None) -> None:
        self.reports: list[tuple[Proposal, Outcome, bool]] = []
        self.states: list[dict[str, Any]] = []
        self.crash_after = crash_after

    def on_outcome(self, p: Proposal, o: Outcome, cached: bool) -> None:
        if self.crash_after is not None and len(self.reports) >= self.crash_after:
            raise KeyboardInterrupt("controller crashed")
        self.reports.append((p, o, cached))

    def on_state(self, state: dict[str, Any]) -> None:
        self.states.append(state)


def _run(agent: ListAgent, pool: InProcessPool, rec: Recorder, **kw: Any):
    kw.setdefault("trials", 100)
    kw.setdefault("batch_size", 3)
    kw.setdefault("should_stop", lambda: False)
    return run_search(agent, pool, on_outcome=rec.on_outcome, on_state=rec.on_state, **kw)


def test_reports_every_trial_and_stops_at_trials() -> None:
    ev = FakeEvaluator()
    pool = InProcessPool(ev)
    agent = ListAgent(ev.space, _policies(12))
    rec = Recorder()
    summary = _run(agent, pool, rec, trials=7, batch_size=3)
    assert [p.trial_id for p, _, _ in rec.reports] == list(range(7))
    assert summary.answered == 7 and summary.stop_reason == "trials" and summary.batches == 3
    assert [o.trial_id for o in agent.told] == list(range(7))
    # state saved after ask (with pending) and after tell (none pending)
    assert rec.states[0]["pending"] and not rec.states[1]["pending"]


def test_equal_architectures_are_evaluated_once() -> None:
    ev = FakeEvaluator()
    pool = InProcessPool(ev)
    # 0.25 and 0.26 round to the same kept channels (16 -> 12); repeats across batches too
    policies = [{"g0": 0.25}, {"g0": 0.26}, {"g0": 0.5}, {"g0": 0.25}, {}]
    agent = ListAgent(ev.space, policies)
    rec = Recorder()
    summary = _run(agent, pool, rec, batch_size=2)
    assert len(ev.calls) == 3  # {g0:.25}, {g0:.5}, {}
    cached = {p.trial_id: c for p, _, c in rec.reports}
    assert cached == {0: False, 1: True, 2: False, 3: True, 4: False}
    by_id = {o.trial_id: o for _, o, _ in rec.reports}
    assert by_id[1].metrics.quality == by_id[0].metrics.quality
    assert by_id[1].metrics.extra["cached_from"] == 0
    assert summary.cached == 2 and summary.evaluated == 3 and summary.stop_reason == "finished"


def test_failed_evaluation_is_reported_and_run_completes() -> None:
    ev = FakeEvaluator(fail_on=0.5)
    pool = InProcessPool(ev)
    agent = ListAgent(ev.space, [{"g0": 0.25}, {"g0": 0.5}, {"g2": 0.75}, {"g9": 0.1}])
    rec = Recorder()
    summary = _run(agent, pool, rec)
    errors = {p.trial_id: o.error for p, o, _ in rec.reports}
    assert errors[0] is None and errors[2] is None
    assert "cannot evaluate ratio 0.5" in errors[1]
    assert "g9" in errors[3] and "unknown group" in errors[3]
    assert summary.failed == 2 and summary.answered == 4


def test_should_stop_is_checked_between_batches() -> None:
    ev = FakeEvaluator()
    agent = ListAgent(ev.space, _policies(12))
    rec = Recorder()
    summary = _run(
        agent, InProcessPool(ev), rec, batch_size=2, should_stop=lambda: len(rec.reports) >= 3
    )
    assert summary.stop_reason == "cancelled"
    assert len(rec.reports) == 4  # the batch in flight when the flag rose is finished


def test_resume_answers_stored_trials_without_evaluating_or_reporting_them() -> None:
    policies = _policies(10)
    ev = FakeEvaluator()
    agent = ListAgent(ev.space, policies)
    rec = Recorder(crash_after=5)  # crash in the middle of the second batch (trials 4..7)
    with pytest.raises(KeyboardInterrupt):
        _run(agent, InProcessPool(ev), rec, trials=10, batch_size=4)
    stored = {o.trial_id: o for _, o, _ in rec.reports}
    assert sorted(stored) == [0, 1, 2, 3, 4]
    last_state = rec.states[-1]
    assert [p["trial_id"] for p in last_state["pending"]] == [4, 5, 6, 7]

    ev2 = FakeEvaluator()
    agent2 = ListAgent(ev2.space, policies)
    agent2.load_state_dict(last_state)
    rec2 = Recorder()
    summary = _run(agent2, InProcessPool(ev2), rec2, trials=10, batch_size=4, stored=stored)
    reported = [p.trial_id for p, _, _ in rec2.reports]
    assert reported == [5, 6, 7, 8, 9]  # trial 4 is answered from storage, not re-reported
    assert len(ev2.calls) == 5  # and not re-evaluated
    assert summary.from_storage == 1 and summary.answered == 6  # 6 answered in this run: 10 in all
    assert sorted(o.trial_id for o in agent2.told) == [4, 5, 6, 7, 8, 9]
    all_ids = sorted([*stored, *reported])
    assert all_ids == list(range(10))


def test_resume_counts_stored_trials_towards_trials() -> None:
    policies = _policies(6)
    ev = FakeEvaluator()
    agent = ListAgent(ev.space, policies)
    stored = {i: Outcome(i, p, ev.evaluate(p)) for i, p in enumerate(policies[:3])}
    state = agent.state_dict()
    state["pending"] = [
        {"trial_id": i, "policy": p, "info": {}} for i, p in enumerate(policies[:3])
    ]
    state["next_trial_id"] = 3
    agent.load_state_dict(state)
    ev.calls.clear()
    rec = Recorder()
    summary = _run(agent, InProcessPool(ev), rec, trials=4, batch_size=2, stored=stored)
    assert summary.answered == 4 and summary.from_storage == 3
    assert [p.trial_id for p, _, _ in rec.reports] == [3]


def test_bad_arguments() -> None:
    ev = FakeEvaluator()
    agent = ListAgent(ev.space, [])
    with pytest.raises(ValueError, match="batch_size"):
        _run(agent, InProcessPool(ev), Recorder(), batch_size=0)
