"""`ray job submit` entrypoint for the data commands: `python jobs/data.py validate DATA_DIR` etc.

Example: ray job submit --working-dir . -- python jobs/data.py validate /mnt/shared/data/recfound
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from recfound.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["data", *sys.argv[1:]]))
