"""Under ``CI=true`` a skipped test fails (unless marked ``gpu``): the hook in tests/conftest.py,
run serially and in parallel (pytest-xdist, as ``make test`` runs it)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = (Path(__file__).parent / "conftest.py").read_text()
TESTS = '''
import pytest

def test_needs_a_missing_module():
    pytest.importorskip("no_such_module_anywhere")

@pytest.mark.gpu
def test_needs_a_gpu():
    pytest.skip("no CUDA device")

@pytest.mark.xfail(reason="known", strict=True)
def test_known_failure():
    assert False

def test_fine():
    pass
'''


@pytest.mark.parametrize(
    ("ci", "parallel"), [("true", []), ("", []), ("true", ["-n", "2"])], ids=["ci", "local", "ci-xdist"]
)
def test_skips_fail_in_ci_except_for_hardware(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                              ci: str, parallel: list[str]) -> None:
    monkeypatch.setenv("CI", ci)
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # the installed plugins' imports: seconds
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)  # the inner run is not one of this run's workers
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nmarkers =\n    gpu: needs a GPU\n")
    pytester.makepyfile(TESTS)
    result = pytester.runpytest_subprocess("-rA", *(["-p", "xdist.plugin", *parallel] if parallel else []))
    if ci:
        result.assert_outcomes(passed=1, failed=1, skipped=1, xfailed=1)
        result.stdout.fnmatch_lines(["*skipped in CI*no_such_module_anywhere*"])
    else:
        result.assert_outcomes(passed=1, skipped=2, xfailed=1)
