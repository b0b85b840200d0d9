"""Shared fixtures: a real local Ray (one per session), PostgreSQL, Chromium.

In CI (``CI=true``) a missing PostgreSQL or Chromium fails the tests that need them; on a
developer machine those tests are skipped with the reason. In CI any skip at all is a failure,
except for tests marked with one of :data:`SKIP_ALLOWED_IN_CI` (hardware CI does not have).

Parallel runs (pytest-xdist, ``make test``): every test that takes the session ``ray_cluster``
goes to one worker (the ``ray`` xdist group, ``--dist loadgroup``), so one local Ray runs at a
time; each worker has its own PostgreSQL database (``<name>_gw0``, ``<name>_gw1``, …, created on
first use), so one worker's reset never drops another's tables.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

RAY_GROUP = "ray"
#: seconds each test took (set-up, call and tear-down) in a recent parallel run, to start the
#: longest first; refresh with ``scripts/test-durations.py`` (a stale entry only costs balance)
DURATIONS_FILE = Path(__file__).with_name("durations.json")
UNKNOWN_SLOW_S = 10.0
UNKNOWN_S = 0.5
#: the xdist group of the tests whose jobs use the trained ResNet-20/digits reference (a zoo model
#: without weights): on a fresh clone the first of them trains it, so they run one after another
#: on one worker (the others would wait on its lock, a worker idle) and, then, first of all
REFERENCE_GROUP = "reference"
REFERENCE_TRAINING_S = 120.0

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Workers share the cores: one intra-op thread each (read by torch when it loads, and by the
    # servers and Ray workers tests start), not torch's one per core in every worker at once.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
#: markers of tests that may skip in CI: they need hardware the CI machines lack
SKIP_ALLOWED_IN_CI = frozenset({"gpu"})


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under CI, a skipped test (a missing dependency, an importorskip) fails with its reason."""
    outcome = yield
    report = outcome.get_result()
    if not IN_CI or not report.skipped or hasattr(report, "wasxfail"):
        return
    if any(item.get_closest_marker(name) for name in SKIP_ALLOWED_IN_CI):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"skipped in CI, which must run it (allowed only for {sorted(SKIP_ALLOWED_IN_CI)}): {reason}"


def _xdist_group(item: pytest.Item) -> str | None:
    """The tests one xdist worker must run together: those on the session Ray (one local Ray at
    a time on the host), and a module's tests that share a module- or class-scoped fixture (a
    server, a trained model: built once, not once per worker). Others go wherever is free."""
    if "ray_cluster" in getattr(item, "fixturenames", ()):
        return RAY_GROUP
    info = getattr(item, "_fixtureinfo", None)
    defs = info.name2fixturedefs.values() if info is not None else ()
    if any(d[-1].scope in ("module", "class") for d in defs if d):
        return item.nodeid.split("::")[0]
    return None


def _group_of(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("xdist_group")
    if marker is None:
        return None
    return str(marker.args[0] if marker.args else marker.kwargs.get("name", "default"))


def _longest_first(items: list[pytest.Item]) -> None:
    """Orders ``items`` so the longest work units (an xdist group, or a test alone) come first.

    xdist hands out units in the order they first appear (``pytest_configure`` turns its own
    reorder by test count off), so a two-minute unit no longer starts last and leaves one worker
    running it alone at the end (longest-processing-time-first scheduling). Durations are from
    :data:`DURATIONS_FILE`; a test not in it counts as :data:`UNKNOWN_SLOW_S` when marked slow.
    Tests keep their relative order within a unit and among equals.
    """
    try:
        known: dict[str, float] = json.loads(DURATIONS_FILE.read_text())
    except (OSError, ValueError):
        return
    units: dict[str, float] = {}
    unit_of: dict[int, str] = {}
    for item in items:
        unit = _group_of(item) or item.nodeid
        unit_of[id(item)] = unit
        default = UNKNOWN_SLOW_S if item.get_closest_marker("slow") else UNKNOWN_S
        units[unit] = units.get(unit, 0.0) + known.get(_plain_id(item.nodeid), default)
    if REFERENCE_GROUP in units and not _reference_cached():
        units[REFERENCE_GROUP] += REFERENCE_TRAINING_S
    items.sort(key=lambda it: -units[unit_of[id(it)]])  # stable: equals keep collection order


def _plain_id(nodeid: str) -> str:
    """``nodeid`` without the ``@group`` suffix xdist appends (as xdist itself splits it)."""
    at = nodeid.rfind("@")
    return nodeid[:at] if at > nodeid.rfind("]") else nodeid


def _reference_cached() -> bool:
    cache = Path(os.environ.get("AUTOPRUNE_CACHE_DIR") or Path.cwd() / ".cache" / "autoprune")
    return any(cache.glob("resnet20-digits-*.json"))


def pytest_itemcollected(item: pytest.Item) -> None:
    # here, as each test is collected: xdist reads the groups in its pytest_collection_modifyitems
    # (it appends them to the test ids it schedules by), which runs before a conftest's even
    # with tryfirst, so groups added there were never seen by a worker
    if not item.get_closest_marker("xdist_group") and (group := _xdist_group(item)):
        item.add_marker(pytest.mark.xdist_group(group))


def _group_in_id(item: pytest.Item) -> None:
    """Appends ``@<group>`` to the test's id, which is how a worker tells the scheduler its group.

    pytest-xdist's own hook does it by writing ``item._nodeid``, which pytest 9.2's structured
    node ids no longer read (pytest-xdist issue 1386, fix pending in its pull request 1388): the
    groups were silently ignored and grouped tests spread over workers (two session Rays, a
    module's private PostgreSQL cluster created twice at once).
    """
    names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                    for m in item.iter_markers("xdist_group")})
    if not names or _plain_id(item.nodeid) != item.nodeid:  # no group, or xdist managed
        return
    try:
        from _pytest.nodeid import NodeId
    except ImportError:  # a pytest without structured ids: xdist's own suffix works there
        return
    item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(names)}")  # type: ignore[attr-defined]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # a conftest's hook runs after xdist's (which is registered later, and called first)
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return  # a serial run keeps file order
    if config.getvalue("loadgroup"):
        for item in items:
            _group_in_id(item)
    _longest_first(items)


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config.option, "loadscopereorder"):
        # xdist would reorder units by how many tests they hold; _longest_first orders them by time
        config.option.loadscopereorder = False


@pytest.fixture(autouse=True)
def _process_plugin_allowlist() -> Iterator[None]:
    """Each test starts with, and leaves behind, the allowlist it found (apps set it process-wide)."""
    from search_spaces.registry import allow_plugins

    previous = allow_plugins(())
    try:
        yield
    finally:
        allow_plugins(previous)


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """A real local Ray for the whole session (ray.init is ~3 s), always shut down."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if not ray.is_initialized():
        # "local": a new cluster of this process's own, never one another test started with `ray start`
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


def worker_database(url: str, worker: str) -> str:
    """``url`` with the database renamed for xdist worker ``worker`` ("gw0", …; "master" when
    not parallel: the configured database itself)."""
    from sqlalchemy.engine import make_url

    if worker == "master":
        return url
    parsed = make_url(url)
    return parsed.set(database=f"{parsed.database}_{worker}").render_as_string(hide_password=False)


def _create_database(admin_url: str, url: str) -> None:
    """Creates ``url``'s database through ``admin_url`` unless it exists (the role has CREATEDB)."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")  # CREATE DATABASE refuses a transaction
    try:
        with engine.connect() as conn:
            if conn.execute(sa.text("select 1 from pg_database where datname = :n"), {"n": name}).first() is None:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of a reachable PostgreSQL test database (``make test`` starts one): the configured
    one, or under xdist a database of this worker's own beside it."""
    configured = os.environ.get("AUTOPRUNE_TEST_POSTGRES_URL")
    if not configured:
        _unavailable("AUTOPRUNE_TEST_POSTGRES_URL is not set")
    import sqlalchemy as sa

    url = worker_database(configured, os.environ.get("PYTEST_XDIST_WORKER", "master"))  # type: ignore[arg-type]
    try:
        if url != configured:
            _create_database(configured, url)  # type: ignore[arg-type]
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any connection failure means "not available"
        _unavailable(f"PostgreSQL at {url} is not reachable: {exc}")
    return url


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = os.environ.get("AUTOPRUNE_CHROMIUM", "/usr/bin/chromium")
    if not shutil.which(path):
        _unavailable(f"Chromium not found at {path}")
    return path
