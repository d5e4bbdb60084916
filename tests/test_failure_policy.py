"""recfound's Ray Train failure policy: the placement attempts that bound a wait for the workers are counted
from the last running worker group, not over the whole run (an elastic run may lose many nodes over days)."""

from __future__ import annotations

import pytest
from ray.train.v2._internal.exceptions import WorkerGroupStartupTimeoutError
from ray.train.v2._internal.execution.failure_handling import FailureDecision
from ray.train.v2.api.config import FailureConfig
from ray.train.v2.api.exceptions import ControllerError, WorkerGroupError

from recfound.train.failure_policy import PlacementAttemptsPerRestart

RETRY, RAISE = FailureDecision.RETRY, FailureDecision.RAISE


def placement_timed_out() -> ControllerError:
    return ControllerError(WorkerGroupStartupTimeoutError(num_workers=4))


def workers_lost() -> WorkerGroupError:
    return WorkerGroupError("a node went away", {0: RuntimeError("worker died")})


@pytest.mark.parametrize(("events", "decisions"), [
    # Three node losses, each followed by one attempt that still counted the lost node: all retried.
    ("LPLPLP", [RETRY] * 6),
    # Two failed attempts are allowed after each running worker group; the third in a row is final.
    ("PPLPPLPPP", [RETRY] * 8 + [RAISE]),
    ("PPP", [RETRY, RETRY, RAISE]),
    # Worker failures still count against max_failures (3 here) over the whole run.
    ("LLLL", [RETRY, RETRY, RETRY, RAISE]),
])
def test_placement_attempts_start_again_after_each_running_worker_group(events, decisions):
    policy = PlacementAttemptsPerRestart(FailureConfig(max_failures=3, controller_failure_limit=2))
    made = [policy.make_decision(placement_timed_out() if event == "P" else workers_lost()) for event in events]
    assert made == decisions
