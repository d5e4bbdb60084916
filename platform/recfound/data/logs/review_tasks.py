"""SA from review texts (Amazon): a review -> its star rating among five options. A record belongs to the
split of its review's event (validation and test: every user's held-out event); train takes up to
`per_user` reviews per user. Texts are streamed back from the file the reader wrote, batch by batch."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from recfound.data.logs.amazon import review_batches
from recfound.data.logs.context import CHUNK, Context
from recfound.data.logs.sampling import rows_of
from recfound.data.logs.split import TRAIN, VAL, TEST
from recfound.data.logs.text import concat, ids, take, wordings
from recfound.data.logs.wordings import WORDINGS
from recfound.data.records import OPTION_LETTERS
from recfound.data.reader import SPLITS

STARS = ("5 stars", "4 stars", "3 stars", "2 stars", "1 star")  # option A is the best rating


def build_review_tasks(ctx: Context) -> None:
    if ctx.source.reviews is None:
        return
    rng, seq = ctx.rng("SA"), ctx.seq
    rows = {split: rows_of(seq, split, ctx.settings.per_user, rng, first_position=0) for split in (TRAIN, VAL, TEST)}
    for split in rows:
        rows[split] = rows[split][np.argsort(seq.event[rows[split]], kind="stable")]
    events = {split: seq.event[chosen] for split, chosen in rows.items()}
    for offset, texts in review_batches(ctx.source.reviews, CHUNK):
        for split, chosen in rows.items():
            low, high = np.searchsorted(events[split], [offset, offset + len(texts)])
            inside = chosen[low:high]
            review = texts.take(pa.array(seq.event[inside] - offset))
            present = review.is_valid().to_numpy(zero_copy_only=False)
            ctx.skip("SA", int((~present).sum()), "the review has no text")
            inside, review = inside[present], review.filter(pa.array(present))
            stars = np.clip(np.floor(seq.rating[inside] + 0.5), 1, 5).astype(int)
            ctx.writer.write("SA", SPLITS[split], {
                "id": ids(seq, inside), "instruction": wordings(WORDINGS["SA"], len(inside), rng),
                "input": concat("Item: ", take(ctx.titles, seq.item[inside]), "\n", review),
                "options": pa.array([list(STARS)] * len(inside), pa.list_(pa.string())),
                "output": pa.array(np.array(list(OPTION_LETTERS))[5 - stars])})
