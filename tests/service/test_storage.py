"""Storage on SQLite and PostgreSQL: migrations, session_scope, no duplicate trials or events."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from service.db import Base, Database, repo, upgrade
from service.db.migrate import downgrade
from service.errors import ConflictError, NotFoundError, StorageError


@pytest.fixture
def db(db_url: str) -> Database:
    upgrade(db_url)
    database = Database(db_url)
    yield database  # type: ignore[misc]
    database.dispose()


def _job(db: Database) -> str:
    with db.session_scope() as s:
        return repo.create_job(s, spec={"budget": {"macs_ratio": 0.5}}, name="j", cost_key="macs", trials_total=3).id


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
        view = Job.from_row(s, repo.get_job(s, job_id)).model_dump(mode="json")
    assert view["best"]["trial_id"] == 3
    assert view["baseline"]["trial_id"] == 0
    assert view["progress"]["trials_done"] == 5
