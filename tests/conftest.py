"""Shared fixtures: a real local Ray (one per session), PostgreSQL, Chromium.

In CI (``CI=true``) a missing PostgreSQL or Chromium fails the tests that need them; on a
developer machine those tests are skipped with the reason. In CI any skip at all is a failure,
except for tests marked with one of :data:`SKIP_ALLOWED_IN_CI` (hardware CI does not have).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

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
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of a reachable PostgreSQL test database (``make test`` starts one)."""
    url = os.environ.get("AUTOPRUNE_TEST_POSTGRES_URL")
    if not url:
        _unavailable("AUTOPRUNE_TEST_POSTGRES_URL is not set")
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any connection failure means "not available"
        _unavailable(f"PostgreSQL at {url} is not reachable: {exc}")
    return url  # type: ignore[return-value]


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = os.environ.get("AUTOPRUNE_CHROMIUM", "/usr/bin/chromium")
    if not shutil.which(path):
        _unavailable(f"Chromium not found at {path}")
    return path
