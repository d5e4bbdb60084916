"""The full-catalog baselines (`recfound.eval.baselines`): popularity and item-kNN on a hand-made split whose
scores, ranks and metrics are worked out below by hand, and item-kNN's vectorised scores against a plain
float64 computation over item sets, in blocks of any size."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recfound.eval import baselines
from recfound.eval.baselines import ItemKNN, Popularity, TrainPairs, catalog_ranks, ranks_among
from recfound.eval.catalog import catalog_score

# Train interactions, 12 items (4..11 never interacted with):
#   u0: 0 1    u1: 0 1 2    u2: 1 3    u3: 0
# counts: item 0: 3, item 1: 3, item 2: 1, item 3: 1, the rest 0
# cosine over the users: sim(0,1) = 2/sqrt(3*3) = 2/3; sim(0,2) = sim(1,2) = sim(1,3) = 1/sqrt(3); the rest 0
TRAIN_USERS = np.array([0, 0, 1, 1, 1, 2, 2, 3])
TRAIN_ITEMS = np.array([0, 1, 0, 1, 2, 1, 3, 0])
N_ITEMS = 12
R3 = 1 / math.sqrt(3)

# Three held-out targets with the items seen before them (history, left out of the ranking):
#   A: seen {0, 1}, target 3    B: seen {0}, target 2    C: seen {1}, target 4
SEEN = [np.array([0, 1]), np.array([0]), np.array([1])]
TARGETS = np.array([3, 2, 4])
# item-kNN scores (sum of sim(h, j) over the history):
#   A: item 2: 2/sqrt(3), item 3: 1/sqrt(3), items 4-11: 0  -> target 3 ranks 2
#   B: item 1: 2/3, item 2: 1/sqrt(3), items 3-11: 0        -> target 2 ranks 2
#   C: item 0: 2/3, items 2, 3: 1/sqrt(3), items 4-11: 0    -> target 4 ties with 5-11 (ties count against it):
#      3 items above, 7 level with it -> rank 11
KNN_RANKS = [2, 2, 11]
# popularity (same for everyone): A: items 2, 3 tie at 1 -> rank 2; B: item 1 (3) above, item 3 level -> 3;
#   C: item 0 (3), items 2, 3 (1) above, 5-11 level -> 11
POPULARITY_RANKS = [2, 3, 11]


def train() -> TrainPairs:
    return TrainPairs.of(TRAIN_USERS, TRAIN_ITEMS, N_ITEMS)


def test_popularity_counts_train_interactions():
    scores = Popularity(train()).scores(SEEN)
    assert scores.shape == (3, N_ITEMS)
    assert scores[0].tolist() == [3, 3, 1, 1] + [0] * 8
    assert (scores == scores[0]).all()  # the history plays no part


def test_item_knn_scores_by_hand():
    scores = ItemKNN(train()).scores(SEEN)
    expected = np.zeros((3, N_ITEMS))
    expected[0, [0, 1, 2, 3]] = [2 / 3, 2 / 3, 2 * R3, R3]  # 0 <- sim(1, 0); 1 <- sim(0, 1); the diagonal is 0
    expected[1, [1, 2]] = [2 / 3, R3]
    expected[2, [0, 2, 3]] = [2 / 3, R3, R3]
    np.testing.assert_allclose(scores, expected, atol=1e-9)


@pytest.mark.parametrize("ranker, expected", [(Popularity, POPULARITY_RANKS), (ItemKNN, KNN_RANKS)])
def test_ranks_leave_the_seen_items_out_and_ties_count_against_the_target(ranker, expected):
    ranks, among = catalog_ranks(ranker(train()), SEEN, TARGETS)
    assert ranks.tolist() == expected and among is None
    # Without leaving out what the user saw, the seen items (scored high) come first.
    unexcluded = ranks_among(ranker(train()).scores(SEEN), TARGETS)
    assert (unexcluded >= ranks).all() and (unexcluded > ranks).any()


def test_metrics_of_the_ranks_by_hand():
    popularity = catalog_score("U2I", np.array(POPULARITY_RANKS), 20, "full catalog")
    knn = catalog_score("U2I", np.array(KNN_RANKS), 20, "full catalog")
    assert popularity.metric == "mrr@20" and popularity.count == 3
    assert popularity.value == pytest.approx((1 / 2 + 1 / 3 + 1 / 11) / 3)
    assert knn.value == pytest.approx((1 / 2 + 1 / 2 + 1 / 11) / 3)
    assert popularity.extra["recall@10"] == pytest.approx(2 / 3) == knn.extra["recall@10"]  # rank 11 misses
    assert popularity.extra["ndcg@10"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / 3)
    assert knn.extra["ndcg@10"] == pytest.approx(2 / math.log2(3) / 3)


def test_option_ranks_use_the_scores_without_leaving_anything_out():
    # B's options: items 3, 2 (the answer), 4. Popularity ties 2 with 3 -> rank 2; item-kNN 1/sqrt(3) > 0 -> 1.
    options, answers = np.array([[3, 2, 4]]), np.array([1])
    _, popular = catalog_ranks(Popularity(train()), SEEN[1:2], TARGETS[1:2], options, answers)
    _, knn = catalog_ranks(ItemKNN(train()), SEEN[1:2], TARGETS[1:2], options, answers)
    assert popular.tolist() == [2] and knn.tolist() == [1]
    # An option the user saw keeps its score: item 0 (seen) outranks the answer.
    _, seen_option = catalog_ranks(Popularity(train()), SEEN[1:2], TARGETS[1:2], np.array([[0, 2]]), np.array([1]))
    assert seen_option.tolist() == [2]


def test_item_knn_equals_a_plain_computation_in_blocks_of_any_size(monkeypatch):
    rng = np.random.default_rng(7)
    pairs = {(int(u), int(i)) for u, i in zip(rng.integers(0, 30, 200), rng.integers(0, 25, 200))}
    users, items = map(np.array, zip(*sorted(pairs)))
    owners = {i: {u for u, j in pairs if j == i} for i in range(25)}

    def cosine(i: int, j: int) -> float:
        if i == j or not owners[i] or not owners[j]:
            return 0.0
        return len(owners[i] & owners[j]) / math.sqrt(len(owners[i]) * len(owners[j]))

    histories = [np.array(sorted(rng.choice(25, size, replace=False))) for size in rng.integers(0, 8, 17)]
    expected = np.array([[sum(cosine(h, j) for h in history) for j in range(25)] for history in histories])
    whole = ItemKNN(TrainPairs.of(users, items, 25)).scores(histories)
    np.testing.assert_allclose(whole, expected, atol=1e-9)
    targets = np.array([next(j for j in range(25) if j not in set(h)) for h in histories])
    at_once = catalog_ranks(ItemKNN(TrainPairs.of(users, items, 25)), histories, targets)[0]
    monkeypatch.setattr(baselines, "BLOCK_ELEMENTS", 1)  # one user per block
    assert ItemKNN(TrainPairs.of(users, items, 25)).block == 1
    assert catalog_ranks(ItemKNN(TrainPairs.of(users, items, 25)), histories, targets)[0].tolist() == at_once.tolist()
