"""What the token limits shortened in a split's records: counted per pool from the rows' `cut` flags
(`recfound.data.tokenize.Cut`), and said in one warning line per task, so that a limit set below a task's
prompts (or its instruction) is seen before the training, not found in its results."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from recfound.data.tokenize import CUT_COLUMN, Cut, TokenLimits
from recfound.tasks import Kind, get_task

if TYPE_CHECKING:
    from recfound.data.pools import PoolRef


@dataclass(frozen=True)
class CutCounts:
    """How many of a pool's records the token limits shortened: in all, and per `Cut` flag."""

    records: int = 0
    text: int = 0
    frame: int = 0
    response: int = 0
    document: int = 0

    @classmethod
    def of_table(cls, table: pa.Table) -> CutCounts:
        if CUT_COLUMN not in table.column_names or not table.num_rows:
            return cls()
        flags = table.column(CUT_COLUMN).to_numpy()
        return cls(int(np.count_nonzero(flags)), *(int(np.count_nonzero(flags & flag)) for flag in
                                                    (Cut.TEXT, Cut.FRAME, Cut.RESPONSE, Cut.DOCUMENT)))


def cut_warnings(pools: Mapping[str, Mapping[str, PoolRef]], limits: TokenLimits) -> Iterator[str]:
    """A warning line per split and task whose records the limits shortened, naming the setting to raise."""
    for split, group in pools.items():
        for task, pool in group.items():
            counts = pool.cut
            if counts.records:
                parts = _parts(counts, limits, get_task(task).kind)
                yield (f"warning: the token limits shortened {counts.records:,} of the {pool.size:,} {task} {split} "
                       f"records: {'; '.join(parts)}")


def _parts(counts: CutCounts, limits: TokenLimits, kind: Kind) -> list[str]:
    if kind is Kind.GENERATIVE:
        named = [(counts.text, f"the input of {{n}} prompts (data.max_prompt {limits.max_prompt})"),
                 (counts.frame, f"the instruction, options or answer cue of {{n}}: data.max_prompt "
                                f"{limits.max_prompt} does not hold them, raise it"),
                 (counts.response, f"{{n}} reference answers (data.max_response {limits.max_response})")]
    else:
        named = [(counts.text, f"{{n}} queries (data.max_text {limits.max_text})"),
                 (counts.frame, f"the instruction of {{n}} queries: data.max_text {limits.max_text} does not "
                                f"hold it, raise it"),
                 (counts.document, f"a positive or negative of {{n}} (data.max_text {limits.max_text})")]
    return [text.format(n=f"{n:,}") for n, text in named if n]
