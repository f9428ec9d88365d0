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
