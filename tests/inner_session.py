"""An inner pytest session (pytester) that runs with this suite's conftest, for the tests of the suite's own
machinery (the leak check, the xdist workers)."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).parent


def with_the_suites_conftest(pytester) -> None:
    """The inner session's folder gets this suite's conftest and the helper modules it imports."""
    pytester.makeconftest((TESTS / "conftest.py").read_text(encoding="utf-8"))
    for helper in ("cloud_services", "worker_groups"):  # the session's S3 server, the xdist hooks
        pytester.makepyfile(**{helper: (TESTS / f"{helper}.py").read_text(encoding="utf-8")})
