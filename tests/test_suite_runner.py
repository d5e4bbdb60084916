"""The suite's own runner: `make test` on pytest-xdist workers (tests/worker_groups.py) still cannot hang, and
the worker groups keep together the modules that share an expensive session fixture."""

from __future__ import annotations

import ast
import time
from pathlib import Path

import worker_groups

TESTS = Path(__file__).parent

BLOCKING_TESTS = '''
import time


def test_quick_before():
    assert True


def test_blocked():
    time.sleep(600)


def test_quick_after():
    assert True
'''


def with_the_suites_conftest(pytester) -> None:
    """The inner session's folder gets this suite's conftest and the helper modules it imports."""
    pytester.makeconftest((TESTS / "conftest.py").read_text(encoding="utf-8"))
    for helper in ("cloud_services", "worker_groups"):  # the session's S3 server, the xdist hooks
        pytester.makepyfile(**{helper: (TESTS / f"{helper}.py").read_text(encoding="utf-8")})


def test_a_blocked_test_on_a_worker_ends_the_run_naming_it(pytester, monkeypatch):
    """A test blocked past its limit on an xdist worker, as `make test` runs the suite (no replacement for a
    worker that dies): the limit's thread prints every thread's stack on the console and ends the worker,
    and the run ends there, naming the test."""
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_ADDOPTS"):
        monkeypatch.delenv(name, raising=False)
    with_the_suites_conftest(pytester)
    pytester.makepyfile(test_inner=BLOCKING_TESTS)
    started = time.monotonic()
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--max-worker-restart=0",
                                           "-o", "timeout=5", "-o", "timeout_method=thread", timeout=120)
    assert time.monotonic() - started < 90
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*worker 'gw*' crashed while running 'test_inner.py::test_blocked'*",
                                 "*crashed and worker restarting disabled*"])
    result.stderr.fnmatch_lines(["*+ Timeout +*", "*Stack of MainThread*", "*in test_blocked", "*time.sleep(600)"])


def _modules_using(fixture: str) -> set[str]:
    """The test modules with a function (a test or a fixture) that takes `fixture` as a parameter."""
    using = set()
    for path in TESTS.glob("test_*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(isinstance(node, ast.FunctionDef) and fixture in [arg.arg for arg in node.args.args]
               for node in ast.walk(tree)):
            using.add(path.name)
    return using


def test_every_module_that_shares_a_session_fixture_is_in_its_group():
    groups = {"baseline": worker_groups.WHOLE_JOBS, **{name: name for name in worker_groups.SHARED_SESSION_FIXTURES}}
    for fixture, group in groups.items():
        using = _modules_using(fixture)
        assert using, fixture
        assert {module for module in using if worker_groups.group_of(f"tests/{module}::x") != group} == set(), fixture
    named = {*worker_groups.MODULE_GROUP, *worker_groups.LAST_MODULES}
    assert named <= {path.name for path in TESTS.glob("test_*.py")}  # no module renamed under the table
