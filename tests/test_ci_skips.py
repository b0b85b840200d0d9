"""Under ``CI=true`` a skipped test fails (unless marked ``gpu``): the hook in tests/conftest.py."""

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


@pytest.mark.parametrize("ci", ["true", ""])
def test_skips_fail_in_ci_except_for_hardware(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                              ci: str) -> None:
    monkeypatch.setenv("CI", ci)
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nmarkers =\n    gpu: needs a GPU\n")
    pytester.makepyfile(TESTS)
    result = pytester.runpytest_subprocess("-rA")
    if ci:
        result.assert_outcomes(passed=1, failed=1, skipped=1, xfailed=1)
        result.stdout.fnmatch_lines(["*skipped in CI*no_such_module_anywhere*"])
    else:
        result.assert_outcomes(passed=1, skipped=2, xfailed=1)
