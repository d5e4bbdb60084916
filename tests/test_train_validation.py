"""The driver refuses a validation split with fewer records than workers before any worker starts,
naming the task's file and what to do (a worker would otherwise fail with the wrong advice)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from recfound.data.streams import TokenPool
from recfound.train.validation import check_validation_pools


def pool(task: str, rows: int) -> TokenPool:
    return TokenPool(task, pa.table({"query_ids": [[1, 2]] * rows}))


def test_a_validation_split_smaller_than_the_workers_is_refused_by_task():
    check_validation_pools({"Q2I": pool("Q2I", 2), "SA": pool("SA", 5)}, workers=2, root="data")
    with pytest.raises(ValueError, match=r"^data/val/SA: 1 validation record\(s\) for 2 workers; every worker "
                                         r"evaluates a share: add validation records for the task, leave the task "
                                         r"out \(data\.tasks\), or use fewer workers \(train\.num_workers\)$"):
        check_validation_pools({"Q2I": pool("Q2I", 2), "SA": pool("SA", 1)}, workers=2, root="data")
