"""Full-catalog ranking on a data root built from interaction logs (`recfound data build`), for the model
and for the baselines of `recfound.eval.baselines`.

Such a root holds the catalog (items.jsonl: every item's id and card) and the split itself
(splits/interactions.parquet; splits/targets.parquet: the held-out item of every U2I and SR record). For
each U2I and SR record scored, every catalog item is a candidate but the items the user interacted with
before the target (their train items and, for a test record, the validation item), which are left out.

- U2I: the model ranks every item card by cosine similarity to the record's query embedding.
- SR is scored as the task defines it (the option letter, recall@1): the model does not rank a catalog.
- The baselines rank the catalog for U2I and SR targets alike, learning from the train interactions, and
  answer each SR record with the option they score highest, so SR's recall@1 compares too.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import pyarrow.parquet as pq

from recfound import storage
from recfound.data.records import OPTION_LETTERS
from recfound.eval.baselines import ItemKNN, Popularity, TrainPairs, catalog_ranks
from recfound.eval.metrics import TaskScore, mrr_at_k, ndcg_at_k, recall_at_k
from recfound.eval.retrieval import CATALOG, full_pool_ranks
from recfound.eval.runner import ModelEvaluation

TASKS = ("U2I", "SR")  # the tasks whose records name a held-out item
CUTOFF = 10  # Recall@10 and NDCG@10, beside the task's MRR@k
ITEMS_FILE = "items.jsonl"
INTERACTIONS_FILE = "splits/interactions.parquet"
TARGETS_FILE = "splits/targets.parquet"


@dataclass(frozen=True)
class TaskTargets:
    """One task's records in catalog terms, in record order."""

    positives: np.ndarray  # catalog index of each record's held-out item
    seen: list[np.ndarray]  # the user's items before it (left out of the ranking; the baselines' history)
    events: np.ndarray  # the held-out event (U2I and SR records of a user share it)
    options: np.ndarray | None = None  # SR: [records, options] catalog index of each option
    answers: np.ndarray | None = None  # SR: the held-out item's column in `options`


@dataclass(frozen=True)
class Catalog:
    """The catalog of a data root built from logs, the train interactions, and the split's targets."""

    cards: tuple[str, ...]
    train: TrainPairs
    targets: dict[str, TaskTargets] = field(default_factory=dict)

    @property
    def protocol(self) -> str:
        return f"full catalog ({len(self.cards):,} items; each user's earlier items left out)"

    def documents(self, pool: list[str]) -> list[str]:
        """`pool` (an embedding task's candidate documents) followed by the catalog cards it lacks."""
        known = set(pool)
        return [*pool, *(card for card in dict.fromkeys(self.cards) if card not in known)]

    def model_score(self, task: str, queries: np.ndarray, texts: list[str], vectors: np.ndarray, k: int) -> TaskScore:
        """The model's score on `task`'s records: the query embeddings ranked against every item card's
        embedding (`vectors` of `texts`, which hold every card)."""
        row = {text: i for i, text in reversed(list(enumerate(texts)))}  # a text's first row
        candidates = vectors[np.fromiter((row[card] for card in self.cards), dtype=np.int64, count=len(self.cards))]
        targets = self.targets[task]
        return catalog_score(task, full_pool_ranks(queries, candidates, targets.positives, targets.seen), k,
                             self.protocol)

    def baselines(self, k: int) -> dict[str, ModelEvaluation]:
        """{name: the baseline's scores} on every task's targets: `retrieval["catalog"][task]` (full-catalog
        ranks) and, for SR, `generative["SR"]` (recall@1 among each record's options)."""
        results = {}
        for ranker in (Popularity(self.train), ItemKNN(self.train)):
            evaluation, known = ModelEvaluation(ranker.name), {}  # held-out event -> its rank
            for task, targets in sorted(self.targets.items(), key=lambda item: item[1].options is None):
                ranks, among = self._ranks(ranker, targets, known)
                evaluation.retrieval.setdefault(CATALOG, {})[task] = catalog_score(task, ranks, k, self.protocol)
                if among is not None:
                    evaluation.generative[task] = TaskScore(task, "recall@1", float(np.mean(among == 1)), len(among),
                                                            protocol=f"options ({targets.options.shape[1]})")
            evaluation.retrieval[CATALOG] = {task: evaluation.retrieval[CATALOG][task] for task in self.targets}
            results[ranker.name] = evaluation
        return results

    @staticmethod
    def _ranks(ranker: Popularity | ItemKNN, targets: TaskTargets, known: dict[int, int]
               ) -> tuple[np.ndarray, np.ndarray | None]:
        """`catalog_ranks` of the records, reusing the ranks of held-out events another task's records ranked
        (a user's U2I and SR test records rank the same item after the same history); `known` grows."""
        todo = np.flatnonzero([event not in known for event in targets.events.tolist()]) \
            if targets.options is None else np.arange(len(targets.events))
        options = None if targets.options is None else targets.options[todo]
        answers = None if targets.answers is None else targets.answers[todo]
        fresh, among = catalog_ranks(ranker, [targets.seen[i] for i in todo], targets.positives[todo], options, answers)
        known.update(zip(targets.events[todo].tolist(), fresh.tolist()))
        return np.array([known[event] for event in targets.events.tolist()], dtype=np.int64), among


def catalog_score(task: str, ranks: np.ndarray, k: int, protocol: str) -> TaskScore:
    """MRR@k (the paper's metric of the ranking tasks) with Recall@10 and NDCG@10 beside it."""
    extra = {f"recall@{CUTOFF}": recall_at_k(ranks, CUTOFF), f"ndcg@{CUTOFF}": ndcg_at_k(ranks, CUTOFF)}
    return TaskScore(task, f"mrr@{k}", mrr_at_k(ranks, k), len(ranks), 0, extra, protocol)


# --- reading a built root -------------------------------------------------------------------------


def load_catalog(root: storage.Location, split: str, data: Mapping[str, list[dict]]) -> Catalog | None:
    """The catalog of `root` with the targets of `data`'s U2I and SR records (`split`'s, as `load_split`
    read them); None when the root was not built from logs (no splits/targets.parquet) or `data` has
    neither task. A record without a target, or whose held-out item is not its positive or answer, is a
    ValueError: the root was changed after its build."""
    tasks = [task for task in TASKS if task in data]
    if not tasks or not storage.is_file(storage.join(root, TARGETS_FILE)):
        return None
    ids, cards = _items(root)
    events = _parquet(root, INTERACTIONS_FILE, ["user", "item", "position", "split"])
    item = _catalog_index(events["item"], ids, root, INTERACTIONS_FILE)
    users = pc.dictionary_encode(events["user"].combine_chunks())
    user = users.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    order = np.lexsort((events["position"].to_numpy(), user))
    sequence, user_sorted = item[order], user[order]
    start = np.searchsorted(user_sorted, np.arange(len(users.dictionary) + 1))
    pair = user_sorted * len(ids) + sequence  # a (user, item) pair is one event
    by_pair = np.argsort(pair)
    is_train = pc.equal(pc.cast(events["split"], pa.string()), "train").to_numpy(zero_copy_only=False)
    catalog = Catalog(tuple(cards), TrainPairs.of(user[is_train], item[is_train], len(ids)))
    targets = _parquet(root, TARGETS_FILE, ["task", "split", "id", "user", "item"])
    for task in tasks:
        rows = targets.filter(pc.and_(pc.equal(targets["task"], task), pc.equal(targets["split"], split)))
        found = pc.index_in(pa.array([r["id"] for r in data[task]], pa.string()), value_set=rows["id"])
        if found.null_count:
            missing = data[task][found.to_pylist().index(None)]["id"]
            raise ValueError(f"{storage.join(root, split, task)}.jsonl: record {missing!r} has no target in "
                             f"{TARGETS_FILE}: build the root again (recfound data build)")
        rows = rows.take(found)
        positives = _catalog_index(rows["item"], ids, root, TARGETS_FILE)
        owner = pc.index_in(rows["user"], value_set=users.dictionary).combine_chunks()
        at = _event_of(pair[by_pair], by_pair, owner, positives, len(ids))
        if at is None:
            raise ValueError(f"{storage.join(root, TARGETS_FILE)}: a {task} target is not an event of "
                             f"{INTERACTIONS_FILE}: build the root again (recfound data build)")
        first = start[user_sorted[at]]
        seen = [sequence[a:b] for a, b in zip(first, at)]
        catalog.targets[task] = _task_targets(task, data[task], positives, seen, at, cards, root, split)
    return catalog


def _event_of(pairs: np.ndarray, order: np.ndarray, users: pa.Array, items: np.ndarray, n_items: int
              ) -> np.ndarray | None:
    """The place in the sequence order of each (user, item) event (`pairs` sorted, `order` their places);
    None when one is not there."""
    if users.null_count:
        return None
    wanted = users.to_numpy(zero_copy_only=False).astype(np.int64) * n_items + items
    found = np.minimum(np.searchsorted(pairs, wanted), len(pairs) - 1)
    return order[found] if len(pairs) and bool((pairs[found] == wanted).all()) else None


def _task_targets(task: str, records: list[dict], positives: np.ndarray, seen: list[np.ndarray], events: np.ndarray,
                  cards: list[str], root: storage.Location, split: str) -> TaskTargets:
    """Check that each record's positive (U2I) or answer (SR) is its held-out item's card; SR's options as
    catalog indices (a card shared by several items stands for the first of them)."""
    where = f"{storage.join(root, split, task)}.jsonl"
    if task != "SR":
        for record, positive in zip(records, positives):
            if record["positive"] != cards[positive]:
                raise ValueError(f"{where}: record {record['id']!r}: its positive is not the card of its target in "
                                 f"{TARGETS_FILE}: build the root again (recfound data build)")
        return TaskTargets(positives, seen, events)
    width = len(records[0]["options"])
    if any(len(r["options"]) != width for r in records):
        raise ValueError(f"{where}: the records have different numbers of options; the full-catalog evaluation "
                         "compares them with one number of options")
    row = {card: i for i, card in reversed(list(enumerate(cards)))}
    options = np.empty((len(records), width), dtype=np.int64)
    answers = np.empty(len(records), dtype=np.int64)
    for r, (record, positive) in enumerate(zip(records, positives)):
        answers[r] = OPTION_LETTERS.index(record["output"].strip()[:1])
        if record["options"][answers[r]] != cards[positive]:
            raise ValueError(f"{where}: record {record['id']!r}: its answer is not the card of its target in "
                             f"{TARGETS_FILE}: build the root again (recfound data build)")
        unknown = [text for text in record["options"] if text not in row]
        if unknown:
            raise ValueError(f"{where}: record {record['id']!r}: option {unknown[0][:60]!r} is not a card of "
                             f"{ITEMS_FILE}")
        options[r] = [row[text] for text in record["options"]]
        options[r, answers[r]] = positive
    return TaskTargets(positives, seen, events, options, answers)


def _items(root: storage.Location) -> tuple[list[str], list[str]]:
    """(ids, cards) of items.jsonl, in file order."""
    location = storage.join(root, ITEMS_FILE)
    if not storage.is_file(location):
        raise FileNotFoundError(f"{location}: no item catalog beside {TARGETS_FILE}: build the root again "
                                "(recfound data build)")
    schema = pa.schema([("id", pa.string()), ("card", pa.string())])
    table = pj.read_json(io.BytesIO(storage.read_bytes(location)),
                         parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"))
    if table["id"].null_count or table["card"].null_count:
        raise ValueError(f"{location}: every line needs an 'id' and a 'card'")
    return table["id"].to_pylist(), table["card"].to_pylist()


def _parquet(root: storage.Location, name: str, columns: list[str]) -> pa.Table:
    filesystem, path = storage.resolve(storage.join(root, name))
    try:
        return pq.read_table(path, filesystem=filesystem, columns=columns)
    except (OSError, pa.ArrowInvalid) as err:
        raise ValueError(f"{storage.join(root, name)}: cannot read it ({err}); build the root again") from None


def _catalog_index(values: pa.ChunkedArray | pa.Array, ids: list[str], root: storage.Location, name: str) -> np.ndarray:
    """Each item id's row in items.jsonl."""
    index = pc.index_in(values, value_set=pa.array(ids, pa.string()))
    if index.null_count:
        missing = pc.filter(values, pc.is_null(index))[0]
        raise ValueError(f"{storage.join(root, name)}: item {missing.as_py()!r} is not in {ITEMS_FILE}: build the "
                         "root again (recfound data build)")
    return index.to_numpy(zero_copy_only=False).astype(np.int64)
