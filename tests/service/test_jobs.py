"""The runner's parts (service/jobs) and the job views' cache, on SQLite and PostgreSQL."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest

from service.api.job_views import JobViews
from service.db import Database, repo
from service.jobs.candidates import artifact_fields, choose
from workers.artifacts import ArtifactInfo

ROOT = Path(__file__).resolve().parents[2]


def _job(db: Database, state: str = "running") -> str:
    with db.session_scope() as s:
        job = repo.create_job(s, spec={"budget": {"macs_ratio": 0.5}}, name="j", cost_key="macs", trials_total=10)
        repo.set_state(s, job=job, state=state)
        return job.id


def _trial(db: Database, job_id: str, trial_id: int, quality: float, *, feasible: bool = True,
           role: str | None = None, progress: bool = False) -> None:
    def write(s: Any) -> None:
        repo.add_trial(s, job_id=job_id, trial_id=trial_id, state="succeeded", policy={"a": 0.1}, kept={"a": 3},
                       metrics={"quality": quality, "macs": 10, "params": 1, "macs_ratio": 0.5, "params_ratio": 0.5},
                       quality=quality, macs=10.0, feasible=feasible,
                       info={"role": role} if role else {}, cached=False)
        repo.add_event(s, job_id=job_id, type="trial", data={"trial_id": trial_id})

    db.write_retrying(write, progress=progress)  # as the runner's recorder writes, with progress=True


def test_a_running_jobs_view_follows_every_change_and_a_finished_one_is_kept(db: Database) -> None:
    views = JobViews()
    job_id = _job(db)
    assert json.loads(views.one(db, job_id))["progress"]["trials_done"] == 0
    _trial(db, job_id, 0, 0.5)  # a trial (and its event)
    assert json.loads(views.one(db, job_id))["progress"]["trials_done"] == 1
    with db.session_scope() as s:  # launched: space and dense stored, no event
        job = repo.get_job(s, job_id)
        job.space = {"groups": [], "dense_macs": 10, "dense_params": 1}
        job.dense = {"quality": 0.9, "macs": 10, "params": 1, "macs_ratio": 1.0, "params_ratio": 1.0}
    assert json.loads(views.one(db, job_id))["space"]["dense_macs"] == 10
    with db.session_scope() as s:  # claimed by a controller, no event
        assert repo.take_lease(s, job_id=job_id, owner="elsewhere", seconds=30)
    page = json.loads(views.page(db, offset=0, limit=10))
    assert page["count"] == 1 and page["items"][0]["controller"] == "elsewhere"
    assert json.loads(views.one(db, job_id))["controller"] == "elsewhere"
    with db.session_scope() as s:
        repo.set_state(s, job=repo.get_job(s, job_id), state="succeeded")
        repo.release_lease(s, job_id=job_id, owner="elsewhere")
    done = json.loads(views.page(db, offset=0, limit=10))["items"][0]
    assert done["state"] == "succeeded" and done["controller"] is None
    assert views.finished(job_id) == views.one(db, job_id)  # kept: answered without the database


def test_a_page_equals_the_views_of_its_jobs(db: Database) -> None:
    views = JobViews()
    ids = [_job(db, state) for state in ("succeeded", "running", "queued")]
    _trial(db, ids[1], 0, 0.7, role="baseline")
    for _ in range(2):  # built, then from the cache
        page = json.loads(views.page(db, offset=0, limit=2))
        assert (page["count"], page["offset"], page["limit"]) == (3, 0, 2)
        assert page["items"] == [json.loads(views.one(db, j)) for j in reversed(ids[1:])]
        assert page["items"][1]["baseline"]["trial_id"] == 0


def test_answers_are_remembered_until_this_process_writes(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    views = JobViews(max_stale_s=60.0)
    first = _job(db)
    reads: list[str] = []
    job_page, job_version = repo.job_page, repo.job_version
    monkeypatch.setattr(repo, "job_page", lambda s, **kw: reads.append("page") or job_page(s, **kw))
    monkeypatch.setattr(repo, "job_version", lambda s, j: reads.append("one") or job_version(s, j))
    assert views.recent_page(db, offset=0, limit=10) is None and views.recent_one(db, first) is None
    page, one = views.page(db, offset=0, limit=10), views.one(db, first)
    assert reads == ["page", "one"]
    # nothing written since: answered from memory, the same bytes
    assert views.recent_page(db, offset=0, limit=10) == page and views.recent_one(db, first) == one
    # a read-only transaction writes nothing
    with db.session_scope() as s:
        repo.get_job(s, first)
    assert views.recent_page(db, offset=0, limit=10) == page
    _trial(db, first, 0, 0.5)  # this process wrote: seen at once
    assert views.recent_page(db, offset=0, limit=10) is None and views.recent_one(db, first) is None
    assert json.loads(views.one(db, first))["progress"]["trials_done"] == 1
    second = _job(db)
    assert views.recent_page(db, offset=0, limit=10) is None
    assert [j["id"] for j in json.loads(views.page(db, offset=0, limit=10))["items"]] == [second, first]


def test_another_processes_writes_are_seen_within_max_stale(db: Database, db_url: str) -> None:
    import time

    views = JobViews(max_stale_s=0.2)
    first = _job(db)
    assert json.loads(views.page(db, offset=0, limit=10))["count"] == 1
    replica = Database(db_url)  # another controller's connection: its writes move no generation here
    try:
        second = _job(replica)
        assert views.recent_page(db, offset=0, limit=10) is not None  # not seen yet: within the bound
        time.sleep(0.2)
        assert views.recent_page(db, offset=0, limit=10) is None
        assert [j["id"] for j in json.loads(views.page(db, offset=0, limit=10))["items"]] == [second, first]
    finally:
        replica.dispose()


def test_a_running_jobs_progress_is_seen_within_max_stale(db: Database) -> None:
    import time

    views = JobViews(max_stale_s=0.2)
    job_id = _job(db)
    assert json.loads(views.one(db, job_id))["progress"]["trials_done"] == 0
    views.page(db, offset=0, limit=10)
    _trial(db, job_id, 0, 0.5, progress=True)  # the runner's trial commit: no generation move
    assert views.recent_one(db, job_id) is not None and views.recent_page(db, offset=0, limit=10) is not None
    time.sleep(0.2)
    assert views.recent_one(db, job_id) is None and views.recent_page(db, offset=0, limit=10) is None
    assert json.loads(views.one(db, job_id))["progress"]["trials_done"] == 1
    assert json.loads(views.page(db, offset=0, limit=10))["items"][0]["progress"]["trials_done"] == 1


def test_events_of_one_write_are_numbered_in_order(db: Database) -> None:
    job_id = _job(db)  # its "state" event is 1
    with db.session_scope() as s:
        assert repo.add_events(s, job_id=job_id, events=[("trial", {}), ("front", {}), ("progress", {})]) == [2, 3, 4]
        assert repo.add_event(s, job_id=job_id, type="finalize", data={}) == 5
    with db.session_scope() as s:
        assert [e.type for e in repo.events_after(s, job_id=job_id, seq=1)] == ["trial", "front", "progress", "finalize"]


def test_finalize_candidates_are_the_best_feasible_points_then_the_baseline(db: Database) -> None:
    job_id = _job(db)
    _trial(db, job_id, 0, 0.60, role="baseline")
    _trial(db, job_id, 1, 0.90, feasible=False)
    _trial(db, job_id, 2, 0.80)
    _trial(db, job_id, 3, 0.85)
    with db.session_scope() as s:
        rows = {t.trial_id: t for t in repo.all_trials(s, job_id=job_id)}
    front, first = list(rows.values()), rows[0]
    assert [t.trial_id for t in choose(front, [first], top_k=2, baseline=True)] == [3, 2, 0]
    assert [t.trial_id for t in choose(front, [first], top_k=2, baseline=False)] == [3, 2]
    assert [t.trial_id for t in choose(front, [first], top_k=5, baseline=True)] == [3, 2, 0]  # never twice
    assert [t.trial_id for t in choose(front, [rows[2]], top_k=1, baseline=True)] == [3]  # not the agent's baseline


def test_artifacts_are_stored_from_artifact_info_only() -> None:
    info = ArtifactInfo(rank=1, dir=Path("/a/rank1"), files=[("model.onnx", 10, "ab")], metrics={"quality": 0.9},
                        trial_id=4)
    assert artifact_fields(info) == {"rank": 1, "trial_id": 4, "dir": "/a/rank1", "metrics": {"quality": 0.9},
                                     "files": [{"name": "model.onnx", "size": 10, "sha256": "ab"}]}
    with pytest.raises(ValueError, match="names no trial"):
        artifact_fields(ArtifactInfo(rank=1, dir=Path("/a"), files=[], metrics={}))


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_nothing_below_the_api_imports_it_and_schemas_run_no_queries() -> None:
    below = [ROOT / "service" / "runner.py", ROOT / "service" / "views.py", *(ROOT / "service" / "jobs").glob("*.py")]
    for path in below:
        assert not any(m.startswith("service.api") for m in _imports(path)), path
    schemas = ROOT / "service" / "api" / "schemas.py"
    assert not any(m.startswith("sqlalchemy") for m in _imports(schemas))
    assert "repo." not in schemas.read_text()
