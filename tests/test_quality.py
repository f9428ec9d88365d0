"""The tiny model learns to recommend: brief alignment on the shared Office data beats most-popular.

The quality floor of the toolkit, CI-fast (a few minutes): the tiny Qwen3-architecture model from
random weights, the publishers' reference SIDs of Office (no RQ-VAE to train here), the tiny preset's
alignment mix and settings (its task weights and ``history_loss``; no teacher corpus), the first
``STEPS`` packed steps of it, then constrained beam search on a fixed slice of ``ROWS`` validation
rows (every ``EVERY``-th), scored by SID, against most-popular on the very same rows.

It fails when the model does not learn, or learns nothing from what the SIDs say about items:
- learning rate 0 (``QUALITY_TEST_LR=0``): a random model's beams are near 0 recall;
- SIDs shuffled between items (``QUALITY_TEST_SHUFFLE=1``): the codes no longer group similar items,
  so brief training cannot generalise from one item to its neighbours and stays near or below
  popularity (measured in the closing note of issue 12; the test asserts only the real-SID case).
"""
import os
import random

import pytest
import torch

from synth.data.dataset import Dataset
from synth.data.importer import import_folder
from synth.io import read_json, write_json
from train import tasks
from train.baselines import evaluate_rankings
from train.baselines.popular import popularity, ranked_items
from train.config import AlignConfig, EvalConfig
from train.evaluate import evaluate_model
from train.model import load_model, prepare_model
from train.sft import run_sft

STEPS = int(os.environ.get("QUALITY_TEST_STEPS", "1000"))
ROWS, EVERY = 600, 8  # every 8th validation row, 600 of them: a fixed slice across all users
MARGIN = 1.5  # Recall@10 at least this multiple of most-popular's


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "2")))


def _office(shared_office, root, shuffle: bool):
    import_folder(shared_office, root / "office")
    ds = Dataset(root / "office")
    sids = {str(k): v for k, v in read_json(ds.path / "reference_sids.json").items()}
    if shuffle:  # the same codes, dealt to other items
        items, codes = list(sids), list(sids.values())
        random.Random(0).shuffle(codes)
        sids = dict(zip(items, codes))
    write_json(ds.path / "sids.json", sids)
    return ds


@pytest.mark.slow
def test_brief_alignment_beats_most_popular(shared_office, tmp_path):
    lr = float(os.environ.get("QUALITY_TEST_LR", AlignConfig.tiny().learning_rate))
    ds = _office(shared_office, tmp_path / "data", shuffle=os.environ.get("QUALITY_TEST_SHUFFLE") == "1")
    inputs = tasks.load_inputs("office", data_dir=tmp_path / "data")
    prepare_model("tiny", inputs.sids, tmp_path / "base", texts=[it.title for it in ds.items.values()])
    preset = AlignConfig.tiny()  # the tiny preset's mix, without a teacher corpus (none is made here)
    rows = tasks.align_rows(inputs, corpus=False, task_weights=preset.task_weights, history_loss=preset.history_loss)
    cfg = preset.override(max_steps=STEPS, learning_rate=lr, logging_steps=100)
    run_sft(tmp_path / "base", tmp_path / "align", rows, None, cfg)

    model, tok = load_model(tmp_path / "align" / "model")
    valid = tasks.rec_rows(inputs, "valid", tok)[::EVERY][:ROWS]
    got = evaluate_model(model, tok, valid, inputs.sids, "direct", EvalConfig.tiny())
    top = ranked_items(ds, popularity(ds))[:10]
    popular = evaluate_rankings([r["target"] for r in valid], [top] * len(valid))
    print(f"tiny model R@10 {got['recall@10']:.4f} (N@10 {got['ndcg@10']:.4f}) vs most-popular "
          f"{popular['recall@10']:.4f} on {ROWS} validation rows after {STEPS} steps at lr {lr}")
    assert got["n"] == popular["n"] == ROWS
    assert popular["recall@10"] > 0.02  # the yardstick itself is not degenerate
    assert got["recall@10"] >= MARGIN * popular["recall@10"], (got, popular)
    assert got["ndcg@10"] > popular["ndcg@10"], (got, popular)
