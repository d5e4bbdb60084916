"""Signals in a driver (recfound.train.interrupt), in a process of its own: the first SIGTERM interrupts
the run where it is (RunInterrupted, exit status 143 by the shell's convention); a second one, sent
while the first is being handled (the driver marking its MLflow run, shutting its cluster down),
exits the process at once."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

DRIVER = '''
import sys, time
from recfound.train.interrupt import RunInterrupted, stop_on_signals
with stop_on_signals():
    try:
        print("running", flush=True)
        time.sleep(60)
    except RunInterrupted as stopped:
        print(f"first: {stopped} exit {stopped.exit_code}", flush=True)
        time.sleep(60)  # the clean-up a second signal must not wait for
print("not reached", flush=True)
'''


def _wait_for(process, text: str, timeout_s: float = 60) -> str:
    seen, deadline = "", time.monotonic() + timeout_s
    while text not in seen:
        assert time.monotonic() < deadline and process.poll() is None, seen
        seen += process.stdout.readline()
    return seen


def test_a_first_signal_interrupts_and_a_second_one_exits_at_once():
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    try:
        _wait_for(driver, "running")
        driver.send_signal(signal.SIGTERM)
        assert "first: stopped by SIGTERM exit 143" in _wait_for(driver, "first:")
        sent = time.monotonic()
        driver.send_signal(signal.SIGTERM)
        rest = driver.communicate(timeout=30)[0]
        assert time.monotonic() - sent < 10
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 143 and "SIGTERM again: exiting now" in rest and "not reached" not in rest
