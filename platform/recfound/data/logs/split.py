"""Leave-last-out per user, by time: every user's events in order, the last one test, the one before it
validation, the rest train.

Order: by timestamp; events of one user with equal timestamps keep the order they were read in (file
order). An item a user touched more than once counts once, at its first event in that order (its rating
and review are that event's). Events whose item has no title in the metadata are dropped, then users
with fewer than `min_interactions` distinct items; everything dropped is counted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recfound.data.logs.source import Source
from recfound.data.reader import SPLITS

TRAIN, VAL, TEST = range(3)


@dataclass
class SplitCounts:
    """What the split kept and dropped."""

    events_read: int
    events_without_item: int  # their item has no metadata line or no title
    duplicate_events: int  # a (user, item) pair seen before: only the first counts
    users_dropped: int  # fewer than min_interactions distinct items
    events_of_dropped_users: int
    users: int
    items: int
    events: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class Sequences:
    """Kept events sorted by (user, time, order read), with each user's slice and every event's split.

    `user` and `item` are codes into `user_ids` and `catalog` (the items of kept events, ITEM_SCHEMA);
    `event` is the event's index in the order read (its review text's row).
    """

    user: np.ndarray
    item: np.ndarray
    time: np.ndarray
    rating: np.ndarray
    event: np.ndarray
    position: np.ndarray
    split: np.ndarray
    start: np.ndarray  # per user: index of the first event
    length: np.ndarray  # per user: number of events
    user_ids: pa.Array
    catalog: pa.Table

    @property
    def n_users(self) -> int:
        return len(self.start)

    @property
    def n_items(self) -> int:
        return self.catalog.num_rows

    def targets(self, split: int) -> np.ndarray:
        """Indices of every user's validation or test event."""
        return self.start + self.length - (2 if split == VAL else 1)

    def cutoff(self, split: int) -> np.ndarray:
        """Per user: the last event index a prompt of `split` may mention."""
        return self.start + self.length - {TRAIN: 3, VAL: 2, TEST: 1}[split]

    def split_names(self) -> pa.Array:
        return pa.array(np.array(SPLITS)[self.split])


def split_source(source: Source, min_interactions: int) -> tuple[Sequences, SplitCounts]:
    """Order, deduplicate, filter and split the source's events (see the module's rules)."""
    events, items = source.events, source.items
    item_ids, item_code = _encode(events.item)
    meta_row = pc.fill_null(pc.index_in(item_ids, value_set=items["id"]), -1).to_numpy().astype(np.int64)[item_code]
    titled = np.append(pc.is_valid(items["title"]).to_numpy(zero_copy_only=False), False)
    known = titled[meta_row]  # row -1 reads the appended False
    event = np.flatnonzero(known)
    without_item = len(events) - len(event)
    item_row = meta_row[event]
    user_ids, user = _encode(events.user)
    user = user[event]
    time = events.time[event]
    order = np.lexsort((event, time, user))
    user, item_row, time, event = user[order], item_row[order], time[order], event[order]
    _, first = np.unique(user * len(items) + item_row, return_index=True)
    keep = np.zeros(len(user), dtype=bool)
    keep[first] = True
    duplicates = len(user) - len(first)
    user, item_row, time, event = user[keep], item_row[keep], time[keep], event[keep]
    per_user = np.bincount(user, minlength=len(user_ids))
    enough = per_user >= min_interactions
    kept = enough[user]
    user, item_row, time, event = user[kept], item_row[kept], time[kept], event[kept]
    kept_users, user = np.unique(user, return_inverse=True)
    kept_items, item = np.unique(item_row, return_inverse=True)
    length = np.bincount(user, minlength=len(kept_users))
    start = np.concatenate([[0], np.cumsum(length)[:-1]]).astype(np.int64)
    position = np.arange(len(user)) - start[user]
    split = np.full(len(user), TRAIN, dtype=np.int8)
    split[position == length[user] - 2] = VAL
    split[position == length[user] - 1] = TEST
    sequences = Sequences(
        user=user.astype(np.int32), item=item.astype(np.int32), time=time, rating=events.rating[event],
        event=event, position=position.astype(np.int32), split=split, start=start, length=length,
        user_ids=user_ids.take(pa.array(kept_users)), catalog=items.take(pa.array(kept_items)))
    counts = SplitCounts(
        events_read=len(events), events_without_item=without_item,
        duplicate_events=int(duplicates), users_dropped=int((~enough & (per_user > 0)).sum()),
        events_of_dropped_users=int(per_user[~enough].sum()), users=len(kept_users), items=len(kept_items),
        events=len(user))
    return sequences, counts


def _encode(ids: pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """(distinct ids as strings, each event's index into them): integer ids become text only once each."""
    encoded = pc.dictionary_encode(ids).combine_chunks()
    return pc.cast(encoded.dictionary, pa.string()), encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
