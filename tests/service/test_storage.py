"""Storage on SQLite and PostgreSQL: migrations, session_scope, no duplicate trials or events."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from service.db import Base, Database, repo, upgrade
from service.db.migrate import downgrade
from service.errors import ConflictError, NotFoundError, StorageError
from tests.service.fakes import spec
from workers.spec import JobSpec


def _job(db: Database) -> str:
    with db.session_scope() as s:
        return repo.create_job(s, spec=JobSpec.model_validate(spec()).model_dump(mode="json"), name="j",
                               cost_key="macs", trials_total=3).id


def test_migration_matches_models_and_downgrades(db: Database, db_url: str) -> None:
    insp = sa.inspect(db.engine)
    for table in Base.metadata.sorted_tables:
        cols = {c["name"] for c in insp.get_columns(table.name)}
        assert cols == {c.name for c in table.columns}, table.name
    uniques = {tuple(u["column_names"]) for u in insp.get_unique_constraints("trials")}
    assert ("job_id", "trial_id") in uniques
    db.dispose()
    downgrade(db_url)
    assert set(sa.inspect(sa.create_engine(db_url)).get_table_names()) <= {"alembic_version"}
    upgrade(db_url)  # and back up: idempotent


def test_trial_unique_per_job(db: Database) -> None:
    job_id = _job(db)
    fields = dict(state="succeeded", policy={"a": 0.5}, kept={"a": 8}, metrics=None, feasible=True, info={}, cached=False)
    with db.session_scope() as s:
        repo.add_trial(s, job_id=job_id, trial_id=0, **fields)
    with pytest.raises(ConflictError), db.session_scope() as s:
        repo.add_trial(s, job_id=job_id, trial_id=0, **fields)
    other = _job(db)
    with db.session_scope() as s:
        repo.add_trial(s, job_id=other, trial_id=0, **fields)  # same trial id, another job: fine
        assert repo.count_trials(s, job_id=job_id) == 1


def test_session_scope_rolls_back_and_translates(db: Database) -> None:
    job_id = _job(db)
    with pytest.raises(RuntimeError), db.session_scope() as s:
        repo.get_job(s, job_id).name = "renamed"
        raise RuntimeError("boom")
    with db.session_scope() as s:
        assert repo.get_job(s, job_id).name == "j"
    with pytest.raises(StorageError), db.session_scope() as s:
        s.execute(sa.text("select * from no_such_table"))
    with pytest.raises(NotFoundError), db.session_scope() as s:
        repo.get_job(s, "missing")


def test_events_are_sequenced_per_job(db: Database) -> None:
    a, b = _job(db), _job(db)
    with db.session_scope() as s:
        assert [repo.add_event(s, job_id=a, type="trial", data={"i": i}) for i in range(3)] == [1, 2, 3]
        assert repo.add_event(s, job_id=b, type="state", data={}) == 1
    with db.session_scope() as s:
        assert [e.seq for e in repo.events_after(s, job_id=a, seq=1)] == [2, 3]


def test_front_flag(db: Database) -> None:
    job_id = _job(db)
    with db.session_scope() as s:
        for i in range(3):
            repo.add_trial(s, job_id=job_id, trial_id=i, state="succeeded", policy={}, kept={}, metrics=None,
                           feasible=True, info={}, cached=False)
        repo.set_front(s, job_id=job_id, trial_ids=[0, 2])
    with db.session_scope() as s:
        assert [t.trial_id for t in repo.front_trials(s, job_id=job_id)] == [0, 2]


def test_job_view_best_is_feasible_then_cheapest_and_baseline_is_first(db: Database) -> None:
    from service.api.schemas import Job

    job_id = _job(db)
    rows = [  # (quality, macs, feasible, role)
        (0.50, 40.0, True, "baseline"),
        (0.95, 90.0, False, None),  # best quality, over budget: never "best"
        (0.80, 45.0, True, None),
        (0.80, 42.0, True, None),  # same quality, fewer MACs: this one
        (None, None, False, None),  # failed
    ]
    with db.session_scope() as s:
        for i, (q, macs, ok, role) in enumerate(rows):
            repo.add_trial(s, job_id=job_id, trial_id=i, state="succeeded", policy={}, kept={},
                           metrics=None, quality=q, macs=macs, feasible=ok,
                           info={"role": role} if role else {}, cached=False)
    with db.session_scope() as s:
        summary = repo.trial_summaries(s, job_ids=[job_id])[job_id]
        view = Job.from_row(repo.get_job(s, job_id), summary).model_dump(mode="json")
    assert view["best"]["trial_id"] == 3
    assert view["baseline"]["trial_id"] == 0
    assert view["progress"]["trials_done"] == 5


def test_trial_summaries_of_a_page_equal_each_jobs_own(db: Database) -> None:
    """The jobs list reads a page's summaries in one batch: per job the same first (lowest id),
    best feasible (ties: fewer MACs, then lower id), count and latest time as read alone."""
    import random

    rng = random.Random(3)
    jobs = [_job(db) for _ in range(4)]
    with db.session_scope() as s:
        for n, job_id in zip([0, 1, 7, 30], jobs, strict=True):
            ids = rng.sample(range(100), n)  # ids not from 0 and out of order, as resumed jobs have them
            for i in ids:
                q = rng.choice([None, 0.5, 0.7, 0.7])
                repo.add_trial(s, job_id=job_id, trial_id=i, state="succeeded", policy={}, kept={}, metrics=None,
                               quality=q, macs=float(rng.choice([10, 20])), feasible=rng.random() < 0.7,
                               info={}, cached=False)
    with db.session_scope() as s:
        page = repo.trial_summaries(s, job_ids=jobs)
        for job_id in jobs:
            alone = repo.trial_summaries(s, job_ids=[job_id])[job_id]
            trials = repo.all_trials(s, job_id=job_id)
            ranked = sorted((t for t in trials if t.feasible and t.quality is not None),
                            key=lambda t: (-(t.quality or 0.0), t.macs, t.trial_id))
            got = page[job_id]
            assert got.count == alone.count == len(trials)
            assert (got.first.trial_id if got.first else None) == (trials[0].trial_id if trials else None)
            assert (got.best.trial_id if got.best else None) == (ranked[0].trial_id if ranked else None)
            assert got.last_finished_at == max((t.finished_at for t in trials), default=None)
        assert repo.trial_summaries(s, job_ids=[]) == {}


def test_front_kept_as_trials_arrive_equals_the_front_of_all_trials(db: Database) -> None:
    """Each new trial is compared with the stored front only; after every arrival (ids out of
    order, equal points, infeasible ones, failures) the flags equal ``pareto_front`` over all."""
    import random

    from agents.pareto import pareto_front
    from service.front import add_to_front, front_rows, point_of

    rng = random.Random(7)
    job_id = _job(db)
    order = list(range(120))
    rng.shuffle(order)  # parallel workers finish out of trial-id order
    for trial_id in order:
        failed = rng.random() < 0.1
        quality, macs = rng.choice([0.5, 0.6, 0.7, 0.8]), float(rng.choice([10, 20, 30, 40]))
        violation = rng.choice([0.0, 0.0, 0.0, 0.1, 0.2])
        with db.session_scope() as s:
            row = repo.add_trial(s, job_id=job_id, trial_id=trial_id, state="failed" if failed else "succeeded",
                                 policy={}, kept={}, metrics=None if failed else {"macs": macs},
                                 quality=None if failed else quality, macs=None if failed else macs,
                                 feasible=violation == 0.0, violation=violation, info={}, cached=False)
            changed = add_to_front(s, job_id=job_id, cost_key="macs", row=row)
        with db.session_scope() as s:
            rows = repo.measured_trials(s, job_id=job_id)
            want = sorted(rows[i].trial_id for i in pareto_front([point_of(t, "macs") for t in rows]))
            got = [t.trial_id for t in repo.front_trials(s, job_id=job_id)]
            assert got == want, (trial_id, got, want)
            if changed is not None:
                assert changed == want
            ordered = [t.trial_id for t in front_rows(s, job_id=job_id, job_cost_key="macs", cost_key="macs")]
            assert sorted(ordered) == want
            costs = [point_of(t, "macs").cost for t in front_rows(s, job_id=job_id, job_cost_key="macs",
                                                                   cost_key="macs")]
            assert costs == sorted(costs)


def test_a_commit_of_events_wakes_the_job_subscribers_only_after_commit(db: Database) -> None:
    import asyncio
    import threading

    job_id, other = _job(db), _job(db)

    def write(job: str, fail: bool = False) -> None:
        try:
            with db.session_scope() as s:
                repo.add_event(s, job_id=job, type="progress", data={})
                if fail:
                    raise RuntimeError("rolled back")
        except RuntimeError:
            pass

    async def main() -> None:
        with db.events.subscribe(job_id) as woken:
            assert db.events.subscribers(job_id) == 1
            for job, fail in ((other, False), (job_id, True)):  # another job's, a rolled-back one
                threading.Thread(target=write, args=(job, fail)).start()
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(woken.wait(), 0.5)
            threading.Thread(target=write, args=(job_id,)).start()
            await asyncio.wait_for(woken.wait(), 10)
        assert db.events.subscribers(job_id) == 0

    asyncio.run(main())


def test_a_job_is_found_by_a_unique_prefix_of_its_id(db: Database) -> None:
    first, second = _job(db), _job(db)
    common = next(i for i, (a, b) in enumerate(zip(first, second, strict=True)) if a != b)
    with db.session_scope() as s:
        assert repo.job_by_prefix(s, first[: common + 1]).id == first
        assert repo.job_by_prefix(s, second).id == second
        with pytest.raises(NotFoundError, match="more than one"):
            repo.job_by_prefix(s, first[:common])
        with pytest.raises(NotFoundError, match="no job"):
            repo.job_by_prefix(s, "%")  # a LIKE wildcard is matched literally
