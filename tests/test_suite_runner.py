"""The suite's own runner: `make test` on pytest-xdist workers (tests/worker_groups.py) still cannot hang, shares
the modules out as worker_groups says, and keeps together the modules that share an expensive session
fixture. The inner sessions run with this suite's conftest and the options `make test` gives."""

from __future__ import annotations

import ast
import os
import re

import worker_groups
from inner_session import TESTS, with_the_suites_conftest

AS_MAKE_TEST = ("-p", "no:cacheprovider", "-n", "2", "--max-worker-restart=0")

BLOCKING_TESTS = '''
import time


def test_quick_before():
    assert True


def test_blocked():
    time.sleep(600)


def test_never_started():
    assert True
'''

BUSY_TESTS = '''
import time


def test_busy_one():
    time.sleep(3)


def test_busy_two():
    time.sleep(3)
'''


def _outside_xdist(monkeypatch) -> None:
    """The inner session starts its own workers (this test may run on one)."""
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT"):
        monkeypatch.delenv(name, raising=False)


def test_a_blocked_test_on_a_worker_ends_the_run_naming_it(pytester, monkeypatch):
    """A test blocked past its limit on one worker: the limit's thread prints every thread's stack on the
    console and ends that worker; nothing else starts (no replacement worker, the blocked test not again),
    the other worker finishes the tests it holds, and the run ends, naming the test."""
    _outside_xdist(monkeypatch)
    with_the_suites_conftest(pytester)
    pytester.makepyfile(test_a_busy=BUSY_TESTS, test_inner=BLOCKING_TESTS)
    # The limit covers each busy test's setup and teardown too: 10 s leaves room on a busy machine. The run
    # itself must end within runpytest_subprocess's 240 s (it raises otherwise), the blocked test sleeping 600.
    result = pytester.runpytest_subprocess(*AS_MAKE_TEST, "-o", "timeout=10", "-o", "timeout_method=thread",
                                           timeout=240)
    result.assert_outcomes(passed=3, failed=1)  # both busy tests, test_quick_before; test_blocked once
    # The crash report's own line, once (the short summary may repeat the message, as wide as the terminal is).
    crash_reports = [line for line in result.stdout.lines
                     if re.fullmatch(r"worker 'gw\d' crashed while running 'test_inner\.py::test_blocked'", line)]
    assert len(crash_reports) == 1, result.stdout.str()
    result.stdout.fnmatch_lines(["*crashed and worker restarting disabled*"])
    result.stderr.fnmatch_lines(["*+ Timeout +*", "*Stack of MainThread*", "*in test_blocked", "*time.sleep(600)"])


# Modules named as the suite's: two of the whole-jobs group, one last job module, three others.
# The jobs worker's 8 s leave the other worker 6.5 s of margin to take the last job module first.
QUEUE_MODULES = {"test_multinode": 4.0, "test_train_job": 4.0, "test_logs_demo": 0.0, "test_cli": 0.5,
                 "test_config": 0.5, "test_merge": 0.5}


def test_the_whole_jobs_start_first_on_one_worker_and_a_free_worker_takes_the_last_job_module(pytester, monkeypatch):
    _outside_xdist(monkeypatch)
    with_the_suites_conftest(pytester)
    for module, seconds in QUEUE_MODULES.items():
        pytester.makepyfile(**{module: f"import time\n\n\ndef test_{module}():\n    time.sleep({seconds})\n"})
    result = pytester.runpytest_subprocess(*AS_MAKE_TEST, "-v", timeout=120)
    result.assert_outcomes(passed=len(QUEUE_MODULES))
    ran = re.findall(r"\[(gw\d)\] \[ *\d+%\] PASSED (test_\w+)\.py", result.stdout.str())
    on = {module: worker for worker, module in ran}
    assert set(on) == set(QUEUE_MODULES), ran
    jobs_worker = on["test_multinode"]
    # The whole-jobs group holds its worker from the start, and that worker takes nothing else: the other
    # worker runs the other modules in collection order, then the last job module.
    assert [module for worker, module in ran if worker == jobs_worker] == ["test_multinode", "test_train_job"], ran
    assert [module for worker, module in ran if worker != jobs_worker] == ["test_cli", "test_config", "test_merge",
                                                                            "test_logs_demo"], ran


def _modules_using(fixture: str) -> set[str]:
    """The test modules with a function (a test or a fixture) that takes `fixture` as a parameter."""
    using = set()
    for path in TESTS.glob("test_*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
               and fixture in [arg.arg for arg in (*node.args.args, *node.args.kwonlyargs)] for node in ast.walk(tree)):
            using.add(path.name)
    return using


def test_every_module_that_shares_a_session_fixture_is_in_its_group():
    groups = {"baseline": worker_groups.WHOLE_JOBS, **{name: name for name in worker_groups.SHARED_SESSION_FIXTURES}}
    for fixture, group in groups.items():
        using = _modules_using(fixture)
        assert using, fixture
        assert {module for module in using if worker_groups.group_of(f"tests/{module}::x") != group} == set(), fixture
    named = {*worker_groups.MODULE_GROUP, *worker_groups.LAST_JOB_MODULES}
    assert named <= {path.name for path in TESTS.glob("test_*.py")}  # no module renamed under the table


def test_a_ray_start_that_misses_rays_deadline_is_started_again_and_any_other_exit_fails(tmp_path):
    """The multi-node and cloud tests' `ray start` processes (cloud_services.RayStart): one that exits on Ray's
    fixed 30 s start-up deadline (seen with both cores busy) is to be started again, up to START_ATTEMPTS;
    one that exits otherwise, or on its last attempt, fails with its own output."""
    import sys

    import pytest
    from cloud_services import RAY_START_DEADLINE, START_ATTEMPTS, RayStart

    log = tmp_path / "node.log"
    log.write_text("an earlier attempt: " + RAY_START_DEADLINE + "\n")

    def exiting(line: str) -> RayStart:
        start = RayStart.run([sys.executable, "-c", f"print({line!r})"], dict(os.environ), log)
        start.process.wait(timeout=60)
        return start

    assert exiting("Exception: " + RAY_START_DEADLINE + ".").missed_the_deadline("node-1", 0) is True
    with pytest.raises(RuntimeError, match=rf"node-1 exited \(attempt {START_ATTEMPTS} of {START_ATTEMPTS}\)"):
        exiting("Exception: " + RAY_START_DEADLINE + ".").missed_the_deadline("node-1", START_ATTEMPTS - 1)
    with pytest.raises(RuntimeError, match="node-1 exited .*Address already in use") as refused:
        exiting("OSError: Address already in use").missed_the_deadline("node-1", 0)  # the earlier lines don't count
    assert RAY_START_DEADLINE not in str(refused.value)
    running = RayStart.run([sys.executable, "-c", "import time; time.sleep(30)"], dict(os.environ), log)
    try:
        assert running.missed_the_deadline("node-1", 0) is False
    finally:
        running.process.kill()
        running.process.wait(timeout=60)
