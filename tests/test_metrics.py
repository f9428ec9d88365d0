"""Recall@K / NDCG@K on hand-computed cases."""
import math

import pytest

from train.metrics import best_rank, rank_of, ranking_metrics


def test_rank_of_first_equal_beam():
    assert rank_of("b", ["a", "b", "c", "b"]) == 1
    assert rank_of("a", ["a"]) == 0
    assert rank_of("z", ["a", "b"]) is None
    assert rank_of("a", []) is None


def test_metrics_hand_computed():
    # ranks: 0 (hit top), 3 (in top 5), 7 (top 10 only), None (miss)
    m = ranking_metrics([0, 3, 7, None])
    assert m["n"] == 4
    assert m["recall@5"] == pytest.approx(2 / 4)
    assert m["recall@10"] == pytest.approx(3 / 4)
    assert m["ndcg@5"] == pytest.approx((1.0 + 1 / math.log2(5)) / 4)
    assert m["ndcg@10"] == pytest.approx((1.0 + 1 / math.log2(5) + 1 / math.log2(9)) / 4)
    assert set(m) == {"recall@5", "ndcg@5", "recall@10", "ndcg@10", "n"}


def test_metrics_boundaries():
    # rank 4 is the 5th position: inside @5; rank 5 is outside @5 but inside @10; rank 10 is outside @10.
    m = ranking_metrics([4])
    assert m["recall@5"] == 1.0 and m["ndcg@5"] == pytest.approx(1 / math.log2(6))
    m = ranking_metrics([5])
    assert m["recall@5"] == 0.0 and m["ndcg@5"] == 0.0 and m["recall@10"] == 1.0
    m = ranking_metrics([10])
    assert m["recall@10"] == 0.0 and m["ndcg@10"] == 0.0
    assert ranking_metrics([None, None])["ndcg@10"] == 0.0
    assert ranking_metrics([0, 0], ks=(1,)) == {"recall@1": 1.0, "ndcg@1": 1.0, "n": 2}


def test_metrics_bad_input():
    with pytest.raises(ValueError, match="no rows"):
        ranking_metrics([])
    with pytest.raises(ValueError, match="ranks must be"):
        ranking_metrics([-1])


def test_best_of_n_takes_best_rank():
    lists = [["a", "b", "t"], ["t", "x"], ["y"]]
    assert best_rank("t", lists) == 0
    assert best_rank("b", lists) == 1
    assert best_rank("q", lists) is None


def test_rank_by_sid_counts_a_target_sharing_its_sid_as_hit():
    from train.metrics import targets_sharing

    sid_of = {"a": "<a_1><b_1>", "b": "<a_1><b_1>", "c": "<a_2><b_2>", "d": "<a_3><b_3>"}  # a and b share
    # the decoder names a shared SID by one of its items (a): target b is hit by SID, never by item id
    assert rank_of("b", ["c", "a", "d"]) is None
    assert rank_of("b", ["c", "a", "d"], by=sid_of) == 1
    # ranks count SIDs: an entry repeating a SID higher up takes no place in the list
    assert rank_of("d", ["a", "b", "d"], by=sid_of) == 1
    assert best_rank("b", [["c", "d"], ["d", "a"]], by=sid_of) == 1
    assert targets_sharing(["a", "b", "c", "b"], sid_of) == 3
    assert targets_sharing(["c", "d"], sid_of) == 0


def test_rank_by_sid_equals_item_id_rank_when_sids_are_unique():
    """With unique SIDs (the project's own), the SID rule gives exactly the item-id rule's metrics."""
    import random

    rng = random.Random(0)
    items = [f"i{k}" for k in range(50)]
    sid_of = {i: (k // 7, k % 7) for k, i in enumerate(items)}  # unique token tuples, as SidTrie.sequences
    targets = [rng.choice(items) for _ in range(500)]
    rankings = [rng.sample(items, 10) for _ in targets]
    by_item = [rank_of(t, rk) for t, rk in zip(targets, rankings)]
    by_sid = [rank_of(t, rk, by=sid_of) for t, rk in zip(targets, rankings)]
    assert by_item == by_sid and any(r is not None for r in by_item) and None in by_item
    assert ranking_metrics(by_item) == ranking_metrics(by_sid)
    lists = [[rng.sample(items, 10) for _ in range(3)] for _ in targets]
    assert [best_rank(t, ls) for t, ls in zip(targets, lists)] == [best_rank(t, ls, by=sid_of)
                                                                   for t, ls in zip(targets, lists)]


def test_baselines_keep_item_ids():
    from train.baselines import evaluate_rankings

    assert evaluate_rankings(["b", "c"], [["a", "b"], ["x"]], ks=(1, 2)) == ranking_metrics([1, None], ks=(1, 2))
