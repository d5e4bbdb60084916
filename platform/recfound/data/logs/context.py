"""What every task builder reads: the split sequences, the item texts, the build settings, the writer."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import pyarrow as pa

from recfound.data.logs.sampling import Untouched, one_per_group, task_rng
from recfound.data.logs.settings import Settings
from recfound.data.logs.source import Source, item_cards
from recfound.data.logs.split import Sequences
from recfound.data.logs.writer import TaskWriter

CHUNK = 50_000  # records assembled and written at a time
GROUP_SHARES = (0.8, 0.1)  # users (UP, UAP) and items (IP, I2I, PRP, Q2I, AVE): train, validation, rest test


@dataclass
class Context:
    """The shared inputs of the task builders, plus what they skipped."""

    source: Source
    seq: Sequences
    settings: Settings
    writer: TaskWriter
    titles: pa.Array = field(init=False)
    cards: pa.Array = field(init=False)
    untouched: Untouched = field(init=False)
    item_split: np.ndarray = field(init=False)
    user_split: np.ndarray = field(init=False)
    rated: bool = field(init=False)  # every event has a rating
    skipped: dict[str, Counter] = field(default_factory=dict)  # task -> reason -> records left out

    def __post_init__(self) -> None:
        self.titles = self.seq.catalog["title"].combine_chunks()
        self.cards = item_cards(self.seq.catalog, self.source.genres)
        self.untouched = Untouched(self.seq)
        self.item_split = one_per_group(self.rng("item split"), self.seq.n_items, GROUP_SHARES)
        self.user_split = one_per_group(self.rng("user split"), self.seq.n_users, GROUP_SHARES)
        self.rated = not bool(np.isnan(self.seq.rating).any())

    def skip(self, task: str, count: int, reason: str) -> None:
        """Count records left out, and why."""
        if count:
            self.skipped.setdefault(task, Counter())[reason] += count

    def rng(self, name: str) -> np.random.Generator:
        return task_rng(self.settings.seed, name)

    def chunks(self, rows: np.ndarray) -> Iterator[np.ndarray]:
        """`rows` in slices of at most CHUNK: the records assembled and written at a time."""
        for begin in range(0, len(rows), CHUNK):
            yield rows[begin: begin + CHUNK]
