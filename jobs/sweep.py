"""`ray job submit --working-dir . -- python jobs/sweep.py sweeps/s2sched.yaml [--set key=value ...]`

The same as `recfound sweep`: inside a Ray job it attaches to the job's cluster (RAY_ADDRESS), and
resubmitting the same sweep resumes it if it did not finish.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))  # the working dir's package

from recfound.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]]))
