"""Ray Train's failure policy with the placement attempts counted per wait for the workers, not per run.

Ray Train counts worker groups that could not be placed (`WorkerGroupStartupTimeoutError`) against
`controller_failure_limit` over the whole run. recfound bounds each wait for the workers with that limit
(`recfound.train.placement.start_timeout`), and after every lost node the first attempt may fail: Ray's
elastic policy still counts the node until Ray declares it dead (an elastic scale-up may fail the same
way). Counted over the run, a long elastic run that lost a node three times would fail with "could not be
placed" although the workers were placed each time. Here the count starts again whenever the controller's
workers run (`WorkersRunning`, a controller callback).
"""

from __future__ import annotations

import weakref
from typing import Any

from ray.train.v2._internal.execution.callback import ControllerCallback  # Ray 2.60 (pinned)
from ray.train.v2._internal.execution.controller.state import RunningState, TrainControllerState
from ray.train.v2._internal.execution.failure_handling.default import DefaultFailurePolicy

# The policies unpickled in this process. Ray pickles each argument of the controller actor separately, so
# the callback cannot hold the policy itself: both meet here, in the controller's own process.
_IN_THIS_PROCESS: weakref.WeakSet[PlacementAttemptsPerRestart] = weakref.WeakSet()


class PlacementAttemptsPerRestart(DefaultFailurePolicy):
    """`DefaultFailurePolicy` whose controller-failure count starts again whenever the workers run."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        _IN_THIS_PROCESS.add(self)

    def workers_running(self) -> None:
        self._controller_failures = 0  # the workers were placed: the next wait starts its own count


class WorkersRunning(ControllerCallback):
    """Tells the controller's failure policy each time its workers run."""

    def after_controller_state_update(self, previous_state: TrainControllerState,
                                      current_state: TrainControllerState) -> None:
        if isinstance(current_state, RunningState):
            for policy in _IN_THIS_PROCESS:
                policy.workers_running()
