"""SIGTERM and SIGINT during a training run: the run stops within seconds and can be resumed.

`ray job stop`, a scheduler's preemption notice and `kill` send SIGTERM; Ctrl-C sends SIGINT. While a
run's driver is inside `stop_on_signals()`, either one stops the run instead of killing the process
outright (SIGTERM) or reaching Ray Train's own SIGINT handler (which exits with status 0 and, sent
again, leaves the process waiting):

- While Ray Train's controller runs, the handler aborts it (its workers are stopped and their placement
  group removed, so nothing stays reserved on the cluster; the controller is killed if the abort takes
  longer than `ABORT_TIMEOUT_S`) and returns: raising inside Ray's blocking call would surface as a
  `SystemError` from Ray's C++ code. The trainer's `fit` then ends with the controller's death, and
  `interruption` tells the driver that a signal, not a failure, ended it.
- At any other time the handler raises `RunInterrupted`, the way SIGINT raises KeyboardInterrupt.
- A second signal while the first is handled exits the process at once (128 + signal number).

The driver then marks the MLflow run KILLED and exits with 128 + the signal number; the checkpoints
stay, and the same command resumes the run from the latest one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from recfound.error_chain import error_chain

SIGNALS = (signal.SIGTERM, signal.SIGINT)
ABORT_TIMEOUT_S = 30.0
_received: list[int] = []  # the signals received since the driver entered stop_on_signals
_active: list[bool] = []  # [True] while the driver is inside stop_on_signals


class RunInterrupted(KeyboardInterrupt):
    """The run was stopped by a signal; `exit_code` is the shell's convention for it (128 + signal).
    A KeyboardInterrupt, as Ctrl-C's is: no `except Exception` on the way takes it for a failure."""

    def __init__(self, signum: int, message: str | None = None) -> None:
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        self.exit_code = 128 + signum
        super().__init__(message or f"stopped by {self.signal_name}")


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Handle SIGTERM and SIGINT as the module doc says while inside; only in a driver's main thread
    (a run in a Ray worker, e.g. a Tune trial's, or in another thread leaves its process's handlers)."""
    if not _in_driver_main_thread():
        yield
        return
    _received.clear()
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    _active.append(True)
    raise_on_signals()
    try:
        yield
    finally:
        _active.clear()
        _received.clear()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def raise_on_signals() -> None:
    """Inside `stop_on_signals`, outside the trainer's fit: a signal raises `RunInterrupted`."""
    if _active and _in_driver_main_thread():
        for signum in SIGNALS:
            signal.signal(signum, _raise_interrupted)


def interruption(error: BaseException | None = None) -> RunInterrupted | None:
    """The `RunInterrupted` in `error`'s chain, else one for a signal received since the run began
    (what ended the trainer's `fit` after the controller was aborted), else None."""
    found = [link for link in (error_chain(error) if error is not None else []) if isinstance(link, RunInterrupted)]
    if found:
        return found[0]
    return RunInterrupted(_received[0]) if _received and _active else None


def abort_controller_on_signals(controller: Any) -> None:
    """Handle SIGTERM and SIGINT while Ray Train's `controller` runs (in place of Ray's SIGINT handler):
    abort the controller, then return (see module doc). `raise_on_signals` takes over when fit ends."""
    import ray

    if not (_active and _in_driver_main_thread()):
        return

    def handler(signum: int, frame: Any) -> None:
        _exit_if_repeated(signum)
        _received.append(signum)
        print(f"\n{signal.Signals(signum).name}: stopping the training run (its checkpoints stay; "
              "send it again to exit at once)", flush=True)
        try:
            ray.get(controller.abort.remote(), timeout=ABORT_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            ray.kill(controller)
        except ray.exceptions.RayError:
            pass  # the abort ends the controller's process: the call itself errors

    for signum in SIGNALS:
        signal.signal(signum, handler)


def _raise_interrupted(signum: int, frame: Any) -> None:
    _exit_if_repeated(signum)
    _received.append(signum)
    raise RunInterrupted(signum)


def _exit_if_repeated(signum: int) -> None:
    if _received:
        print(f"\n{signal.Signals(signum).name} again: exiting now", flush=True)
        os._exit(128 + signum)


def _in_driver_main_thread() -> bool:
    if threading.current_thread() is not threading.main_thread():
        return False
    if "ray" not in sys.modules:  # a process that never imported Ray is no Ray worker (a data command)
        return True
    import ray

    return not ray.is_initialized() or ray.get_runtime_context().worker.mode != ray.WORKER_MODE
