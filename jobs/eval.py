"""`ray job submit --working-dir . -- python jobs/eval.py run MODEL... --data /path/to/data [--workers 8 --gpu]`

The same as `recfound eval`: inside a Ray job the evaluation shards its records over the job's cluster.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))  # the working dir's package

from recfound.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))
