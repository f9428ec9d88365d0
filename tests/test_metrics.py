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


# ---------------------------------------------------------------------------------------------
# slices: cold (target nowhere in train) and repeat (target in the row's own history)
# ---------------------------------------------------------------------------------------------
def _slice_dataset(tmp_path):
    from synth.data.dataset import Dataset, Item, Sample, write_dataset

    splits = {
        # train items: a, b, c (histories and targets); d appears in valid only, e and f in test only
        "train": [Sample("u1", ["a"], "b"), Sample("u2", ["a", "b"], "c")],
        "valid": [Sample("u3", ["c"], "d")],
        "test": [Sample("u1", ["a", "b"], "c"),   # neither: c is a train target, not in the history
                 Sample("u2", ["a", "d"], "d"),   # cold (d only in valid) and repeat
                 Sample("u3", ["b", "a"], "a"),   # repeat: a is a train history item, in the history
                 Sample("u4", ["c"], "e"),        # cold
                 Sample("u5", ["e"], "f")],       # cold (e in the history is no train item either)
    }
    write_dataset(tmp_path / "data" / "sl", [Item(i, f"item {i}") for i in "abcdef"], splits, {"kind": "test"})
    return Dataset(tmp_path / "data" / "sl")


TEST_LABELS = [(), ("cold", "repeat"), ("repeat",), ("cold",), ("cold",)]


def test_slice_labels_of_a_hand_built_dataset(tmp_path):
    from train.metrics import SLICES, slice_labels

    ds = _slice_dataset(tmp_path)
    assert SLICES == ("cold", "repeat")
    assert slice_labels(ds) == slice_labels(ds, "test") == TEST_LABELS
    assert slice_labels(ds, "valid") == [("cold",)]
    assert slice_labels(ds, "train") == [(), ()]  # a train target is never cold; no train target repeats here
    with pytest.raises(ValueError, match="unknown split"):
        slice_labels(ds, "dev")


def test_sliced_metrics_hand_computed_and_an_empty_slice():
    from train.metrics import sliced_metrics

    ranks = [0, 3, None, 12, 7]  # aligned with TEST_LABELS
    out = sliced_metrics(ranks, TEST_LABELS)
    assert set(out) == {"cold", "repeat"}
    cold, repeat = out["cold"], out["repeat"]  # cold: ranks 3, 12, 7; repeat: ranks 3, None
    assert cold["n"] == 3 and repeat["n"] == 2
    assert cold["recall@5"] == pytest.approx(1 / 3) and cold["recall@10"] == pytest.approx(2 / 3)
    assert cold["ndcg@5"] == pytest.approx(1 / math.log2(5) / 3)
    assert cold["ndcg@10"] == pytest.approx((1 / math.log2(5) + 1 / math.log2(9)) / 3)
    assert repeat == {"recall@5": 0.5, "ndcg@5": pytest.approx(1 / math.log2(5) / 2), "recall@10": 0.5,
                      "ndcg@10": pytest.approx(1 / math.log2(5) / 2), "n": 2}
    # a slice without rows: its count only, no division by zero
    assert sliced_metrics([0, None], [(), ["repeat"]]) == {
        "cold": {"n": 0}, "repeat": {"recall@5": 0.0, "ndcg@5": 0.0, "recall@10": 0.0, "ndcg@10": 0.0, "n": 1}}
    assert sliced_metrics([], []) == {"cold": {"n": 0}, "repeat": {"n": 0}}
    assert sliced_metrics([1], [("cold",)], ks=(1,)) == {"cold": {"recall@1": 0.0, "ndcg@1": 0.0, "n": 1},
                                                         "repeat": {"n": 0}}
    with pytest.raises(ValueError):  # ranks and labels must align
        sliced_metrics([0, 1], [()])
    with pytest.raises(ValueError, match="unknown slice"):
        sliced_metrics([0], [("warm",)])


def test_baseline_rankings_with_labels_add_slices():
    from train.baselines import evaluate_rankings

    out = evaluate_rankings(["b", "c", "a"], [["a", "b"], ["x"], ["a"]], ks=(1, 2),
                            labels=[("cold",), ("cold", "repeat"), ()])
    assert {k: v for k, v in out.items() if k != "slices"} == ranking_metrics([1, None, 0], ks=(1, 2))
    assert out["slices"] == {"cold": ranking_metrics([1, None], ks=(1, 2)), "repeat": ranking_metrics([None], ks=(1, 2))}


def test_rec_rows_carry_the_slices_of_their_samples(tmp_path):
    from synth.io import write_json
    from train import tasks
    from train.model import build_tiny_tokenizer

    ds = _slice_dataset(tmp_path)
    write_json(ds.path / "sids.json", {i: [f"<a_{n}>", "<b_0>"] for n, i in enumerate("abcdef")})
    inputs = tasks.load_inputs("sl", tmp_path / "data")
    tok = build_tiny_tokenizer(vocab_size=300)
    rows = tasks.rec_rows(inputs, "test", tok)
    assert [r["target"] for r in rows] == list("cdaef") and [r["slices"] for r in rows] == TEST_LABELS
    assert [r["slices"] for r in tasks.rec_rows(inputs, "test", tok, limit=2)] == TEST_LABELS[:2]


def test_evaluate_model_adds_slices_when_rows_carry_them():
    """3 SIDs and 10 beams: every SID is in every list, so every row is a hit; both decoding paths."""
    from tests.test_decoding import FEW_SIDS, build_model, build_tokenizer, prompt
    from train.config import EvalConfig
    from train.evaluate import evaluate_model, format_table

    tok = build_tokenizer()
    model = build_model(tok)
    rows = [{"prompt": prompt(tok, "the user bought pens"), "target": "x", "slices": ("cold",)},
            {"prompt": prompt(tok, "ink"), "target": "y", "slices": ()},
            {"prompt": prompt(tok, "paper"), "target": "z", "slices": ("cold",)}]
    out = evaluate_model(model, tok, rows, FEW_SIDS, "direct", EvalConfig(num_beams=10, batch_size=4))
    assert out["recall@10"] == 1.0 and out["n"] == 3
    assert out["slices"]["repeat"] == {"n": 0}
    assert out["slices"]["cold"]["n"] == 2 and out["slices"]["cold"]["recall@10"] == 1.0
    table = format_table({"stages": {"align": {"direct": out}}})
    assert "Recall@10 cold" in table and "| n repeat |" in table
    assert f"| 1.0000 | {out['slices']['cold']['ndcg@10']:.4f} | 2 | — | — | 0 |" in table
    best = evaluate_model(model, tok, rows, FEW_SIDS, "thinking",
                          EvalConfig(num_beams=10, batch_size=4, max_think_tokens=2, best_of_n=2))
    assert best["best_of_n"] == 2 and best["slices"]["repeat"] == {"n": 0}
    assert best["slices"]["cold"]["n"] == 2 and best["slices"]["cold"]["recall@10"] == 1.0
    plain = evaluate_model(model, tok, [{k: v for k, v in r.items() if k != "slices"} for r in rows], FEW_SIDS,
                           "direct", EvalConfig(num_beams=10, batch_size=4))
    assert "slices" not in plain and plain["recall@10"] == 1.0
