"""Ray Train's failure policy with the placement attempts counted per restart, not per run.

Ray Train counts worker groups that could not be placed (`WorkerGroupStartupTimeoutError`) against
`controller_failure_limit` over the whole run. recfound bounds each wait for the workers with that limit
(`recfound.train.placement.start_timeout`), and after every lost node the first attempt may fail: Ray's
elastic policy still counts the node until Ray declares it dead. Counted over the run, a long elastic run
that loses a node three times would fail with "could not be placed" although the workers were placed
each time. Here a failure of running workers (or a preemption) shows that the last placement succeeded,
and the count starts again.
"""

from __future__ import annotations

from ray.train.v2._internal.execution.failure_handling import FailureDecision  # Ray 2.60 (pinned)
from ray.train.v2._internal.execution.failure_handling.default import DefaultFailurePolicy
from ray.train.v2.api.exceptions import ControllerError, TrainingFailedError


class PlacementAttemptsPerRestart(DefaultFailurePolicy):
    """`DefaultFailurePolicy` whose controller-failure count starts again after each running worker group."""

    def make_decision(self, training_failed_error: TrainingFailedError) -> FailureDecision:
        if not isinstance(training_failed_error, ControllerError):
            self._controller_failures = 0  # the workers had been placed: a new wait starts now
        return super().make_decision(training_failed_error)
