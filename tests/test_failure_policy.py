"""recfound's Ray Train failure policy: the placement attempts that bound a wait for the workers are counted
from the last time the workers ran, not over the whole run (an elastic run may lose many nodes over days)."""

from __future__ import annotations

import pickle

import pytest
from ray.train.v2._internal.exceptions import WorkerGroupStartupTimeoutError
from ray.train.v2._internal.execution.controller.state import InitializingState, RunningState
from ray.train.v2._internal.execution.failure_handling import FailureDecision
from ray.train.v2.api.config import FailureConfig
from ray.train.v2.api.exceptions import ControllerError, WorkerGroupError

from recfound.train.failure_policy import PlacementAttemptsPerRestart, WorkersRunning

RETRY, RAISE = FailureDecision.RETRY, FailureDecision.RAISE


@pytest.mark.parametrize(("events", "decisions"), [
    # R: the workers run; L: a node is lost (a worker group error); P: a placement attempt times out.
    # Three node losses, each followed by one attempt that still counted the lost node: all retried.
    ("RLPRLPRLPR", [RETRY] * 6),
    # Two failed attempts are allowed after the workers ran; the third in a row is final.
    ("RPPRLPPRPPP", [RETRY] * 7 + [RAISE]),
    ("PPP", [RETRY, RETRY, RAISE]),
    # Elastic scale-ups that fail while the old workers keep running: counted from their last run.
    ("RPRPRPRP", [RETRY] * 4),
    # Worker failures still count against max_failures (3 here) over the whole run.
    ("RLRLRLRL", [RETRY, RETRY, RETRY, RAISE]),
])
def test_placement_attempts_start_again_whenever_the_workers_run(events, decisions):
    # The controller actor gets the policy pickled, and the callback separately: they meet in its process.
    policy = pickle.loads(pickle.dumps(PlacementAttemptsPerRestart(FailureConfig(max_failures=3,
                                                                                 controller_failure_limit=2))))
    callback = pickle.loads(pickle.dumps(WorkersRunning()))
    made = []
    for event in events:
        if event == "R":
            callback.after_controller_state_update(InitializingState(), RunningState())
        else:
            error = (ControllerError(WorkerGroupStartupTimeoutError(num_workers=4)) if event == "P" else
                     WorkerGroupError("a node went away", {0: RuntimeError("worker died")}))
            made.append(policy.make_decision(error))
    assert made == decisions


def test_the_trainer_gives_its_controller_the_policy_and_the_callback(monkeypatch, tmp_path):
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    from recfound.config import load_config
    from recfound.train.launch import _trainer

    captured = {}
    monkeypatch.setattr(DataParallelTrainer, "_initialize_and_run_controller",
                        lambda self, **kwargs: captured.update(kwargs))
    config = load_config(None, [f"run.output_dir={tmp_path}", "checkpoint.max_failures=7"], check_paths=False)
    trainer = _trainer(config, {}, controller_failure_limit=2)
    trainer._initialize_and_run_controller(failure_policy=None, callbacks=["ray's own"])
    policy = captured["failure_policy"]
    assert isinstance(policy, PlacementAttemptsPerRestart)
    assert (policy.failure_config.max_failures, policy.failure_config.controller_failure_limit) == (7, 2)
    assert captured["callbacks"][0] == "ray's own" and isinstance(captured["callbacks"][1], WorkersRunning)
