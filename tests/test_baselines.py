"""Reference baselines: most-popular counts what it says, SASRec learns and beats it on real data."""
import json
import math

import pytest
import torch

from synth.data.dataset import Dataset, Item, Sample, write_dataset
from synth.data.importer import import_folder
from train import report
from train.baselines import popular, sasrec
from train.baselines.__main__ import main as baselines_main
from train.metrics import SLICES, slice_labels


def _dataset(tmp_path, name, items, splits) -> Dataset:
    out = tmp_path / name
    write_dataset(out, [Item(i, f"item {i}") for i in items], splits, {"kind": "test"})
    return Dataset(out)


def _cycle_dataset(tmp_path, n_items=12, users=40) -> Dataset:
    """Every user walks the items in a cycle (i -> i+1): a transition SASRec must learn exactly."""
    items = [f"i{k}" for k in range(n_items)]
    splits = {"train": [], "valid": [], "test": []}
    for u in range(users):
        seq = [items[(u + k) % n_items] for k in range(7)]
        for t in range(1, 5):
            splits["train"].append(Sample(f"u{u}", seq[:t], seq[t]))
        splits["valid"].append(Sample(f"u{u}", seq[:5], seq[5]))
        splits["test"].append(Sample(f"u{u}", seq[:6], seq[6]))
    return _dataset(tmp_path, "cycle", items, splits)


def test_popularity_counts_each_user_item_once_from_train_only(tmp_path):
    ds = _dataset(tmp_path, "pop", ["a", "b", "c", "d"], {
        # u1's rows are prefixes of one sequence: 'a' is one interaction, not two
        "train": [Sample("u1", ["a"], "b"), Sample("u1", ["a", "b"], "c"), Sample("u2", ["c"], "b")],
        "valid": [Sample("u3", ["a"], "d")],
        "test": [Sample("u3", ["a", "d"], "d"), Sample("u4", ["a"], "b"), Sample("u5", ["b"], "a")],
    })
    counts = popular.popularity(ds)
    assert counts == {"a": 1, "b": 2, "c": 2}
    # b and c tie: item-table order breaks it; d (only in valid/test) comes last
    assert popular.ranked_items(ds, counts) == ["b", "c", "a", "d"]
    rec = popular.run(ds)
    test = rec["stages"]["popular"]["direct"]
    # targets d, b, a sit at ranks 3, 0, 2 of the one list
    assert test["n"] == 3
    assert test["recall@5"] == pytest.approx(1.0)
    assert test["ndcg@5"] == pytest.approx((1 / math.log2(5) + 1 + 1 / math.log2(4)) / 3)
    assert rec["valid"]["n"] == 1
    # slices of the test rows: d is cold (no train row holds it) and repeats (u3's history has it); b, a neither
    assert slice_labels(ds) == [("cold", "repeat"), (), ()]
    assert test["slices"] == {"cold": {"recall@5": 1.0, "ndcg@5": pytest.approx(1 / math.log2(5)),
                                       "recall@10": 1.0, "ndcg@10": pytest.approx(1 / math.log2(5)), "n": 1},
                              "repeat": test["slices"]["cold"]}
    assert "slices" not in rec["valid"]  # the test metrics carry the slices


def test_sasrec_learns_a_deterministic_transition_and_is_reproducible(tmp_path):
    ds = _cycle_dataset(tmp_path)
    cfg = sasrec.SASRecConfig(epochs=20, patience=2, batch_size=32, lr=1e-2, dropout=0.1, seed=7)
    a = sasrec.run(ds, cfg)
    b = sasrec.run(ds, cfg)
    # next item of a cycle: rank 0 nearly always (a model blind to the history gets ~1/12)
    assert a["stages"]["sasrec"]["direct"]["ndcg@5"] > 0.9
    # early stopping: valid stops improving once it is perfect; stop `patience` epochs after the best
    assert a["training"]["epochs_run"] < 20
    assert a["training"]["best_epoch"] == a["training"]["epochs_run"] - 2
    assert a["stages"] == b["stages"]
    assert [h["loss"] for h in a["training"]["history"]] == [h["loss"] for h in b["training"]["history"]]


def test_sasrec_attention_mask_handles_all_padding_rows():
    model = sasrec.SASRec(5, sasrec.SASRecConfig(heads=2))
    seq = torch.tensor([[0] * 10, [0] * 7 + [1, 2, 3]])
    out = model(seq)
    assert out.shape == (2, 10, 64)
    assert torch.isfinite(out).all()


@pytest.fixture(scope="module")
def office(shared_office, tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "office"
    import_folder(shared_office, out)
    return Dataset(out)


def test_sasrec_loss_decreases_and_beats_most_popular_on_office(office):
    cfg = sasrec.SASRecConfig(epochs=2, patience=2)
    rec = sasrec.run(office, cfg)
    losses = [h["loss"] for h in rec["training"]["history"]]
    assert len(losses) == 2 and losses[1] < losses[0], losses
    pop = popular.run(office)
    s, p = rec["stages"]["sasrec"]["direct"], pop["stages"]["popular"]["direct"]
    assert s["n"] == p["n"] == 4866
    labels = slice_labels(office)
    for name in SLICES:  # both baselines score the same slices: n = the test rows labelled so
        assert s["slices"][name]["n"] == p["slices"][name]["n"] == sum(name in row for row in labels) > 0
    for metric in ("recall@5", "ndcg@5", "recall@10", "ndcg@10"):
        assert s[metric] > p[metric], (metric, s, p)


def test_cli_writes_metrics_json_that_the_report_reads(tmp_path, capsys):
    _cycle_dataset(tmp_path / "data")
    runs = tmp_path / "runs"
    for model in ("popular", "sasrec"):
        rc = baselines_main(["--model", model, "--dataset", "cycle", "--data-dir", str(tmp_path / "data"),
                             "--runs-dir", str(runs), "--epochs", "2", "--seed", "3"])
        assert rc == 0
        rec = json.loads((runs / "cycle" / f"baseline-{model}" / "metrics.json").read_text())
        assert rec["model"] == model and rec["dataset"] == "cycle"
        test = rec["stages"][model]["direct"]
        assert set(test) == {"recall@5", "ndcg@5", "recall@10", "ndcg@10", "n", "slices"}
        # every cycle item is a train item and no test target is in its history: both slices are empty
        assert test["slices"] == {"cold": {"n": 0}, "repeat": {"n": 0}}
        assert rec["data"]["sha256"]["train.jsonl"] and rec["data"]["stats"]["train"] == 160
        assert rec["wall_time_s"] >= 0 and "--model " + model in rec["command"]
    assert json.loads((runs / "cycle" / "baseline-sasrec" / "metrics.json").read_text())["config"]["seed"] == 3
    rep = report.build("cycle", runs)
    assert sorted(r.run for r in rep.rows) == ["baseline-popular", "baseline-sasrec"]


def test_cli_names_the_missing_dataset(tmp_path, capsys):
    rc = baselines_main(["--model", "popular", "--dataset", "nope", "--data-dir", str(tmp_path)])
    assert rc == 2
    assert "nope/items.jsonl not found" in capsys.readouterr().err
