"""Semantic IDs: RQ-VAE training, collision resolution, embeddings, the CLI end to end."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from synth.data.dataset import Dataset, Item, Sample, write_dataset
from synth.sid import is_well_formed, sid_string
from synth.sids.__main__ import main as sids_main
from synth.sids.assign import collision_stats, resolve_collisions
from synth.sids.embed import EmbedConfig, cached_embeddings, item_text, resolve_embedder
from synth.sids.pipeline import assign_sids
from synth.sids.rqvae import RQVAEConfig, load_model

torch.set_num_threads(1)


def clustered(n: int = 240, dim: int = 24, clusters: int = 12, seed: int = 0) -> np.ndarray:
    """Gaussian clusters with many near-duplicates, so raw codes collide."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    x = centres[rng.integers(clusters, size=n)] + 0.15 * rng.normal(size=(n, dim))
    x[n // 2 : n // 2 + 10] = x[n // 2]  # ten identical items: these must collide before resolution
    return x.astype(np.float32)


def small_cfg(**kw) -> RQVAEConfig:
    base = dict(levels=3, codebook_size=16, latent_dim=8, hidden=[32], epochs=80, lr=5e-3,
                kmeans_iters=10, restart_every=10, log_every=20, seed=7)
    base.update(kw)
    return RQVAEConfig(**base)


@pytest.fixture(scope="module")
def trained():
    x = clustered()
    ids = [f"i{k}" for k in range(len(x))]
    return ids, x, assign_sids(ids, x, small_cfg())


def test_rqvae_trains_and_sids_are_unique_and_well_formed(trained):
    ids, _, (sids, stats, _) = trained
    history = stats["rqvae"]["history"]
    assert history[0]["epoch"] == 1
    assert stats["rqvae"]["final_recon_loss"] < 0.7 * history[0]["recon"]
    assert set(sids) == set(ids)
    assert all(len(t) == 3 and is_well_formed(t) for t in sids.values())
    assert len({sid_string(t) for t in sids.values()}) == len(ids)
    # the identical items collided before resolution, and nothing does after
    assert stats["colliding_groups_before"] >= 1 and stats["collision_rate_before"] > 0
    assert stats["unique_after"] and stats["collision_rate_after"] == 0
    assert stats["levels"] == 3 and stats["extra_levels"] == 0
    assert len(stats["utilisation"]) == 3 and all(0 < u <= 1 for u in stats["utilisation"])
    codes = [int(t[0][3:-1]) for t in sids.values()]
    assert max(codes) < 16


def test_same_seed_same_sids_other_seed_differs(trained):
    ids, x, (sids, _, _) = trained
    again, _, _ = assign_sids(ids, x, small_cfg())
    assert json.dumps(again) == json.dumps(sids)
    other, _, _ = assign_sids(ids, x, small_cfg(seed=8))
    assert other != sids


@pytest.mark.parametrize("levels", [2, 4])
def test_other_level_counts(levels):
    x = clustered(n=120)
    ids = [str(k) for k in range(len(x))]
    sids, stats, _ = assign_sids(ids, x, small_cfg(levels=levels, codebook_size=32, epochs=20))
    assert stats["unique_after"] and stats["extra_levels"] == 0 and stats["levels"] == levels
    assert all(len(t) == levels and is_well_formed(t) for t in sids.values())
    assert len({sid_string(t) for t in sids.values()}) == len(ids)


def test_resolution_moves_the_farther_item_to_its_nearest_free_code():
    k = 4
    codes = np.array([[1, 2, 0], [1, 2, 0], [1, 2, 1], [0, 0, 0], [0, 0, 0]])
    dist = np.array([
        [0.1, 0.5, 0.9, 0.9],  # item 0 is closest to code 0: it keeps it
        [0.2, 0.3, 0.9, 0.4],  # item 1 collides; code 1 is taken by item 2 -> code 3
        [0.8, 0.1, 0.9, 0.9],
        [0.3, 0.9, 0.2, 0.9],  # prefix (0, 0): item 4 is the closer to code 0,
        [0.1, 0.9, 0.9, 0.8],  # item 3 moves to its next best code 2
    ])
    assert collision_stats(codes)["colliding_groups"] == 2
    out, summary = resolve_collisions(codes, dist)
    assert out.tolist() == [[1, 2, 0], [1, 2, 3], [1, 2, 1], [0, 0, 2], [0, 0, 0]]
    assert summary == {"items_reassigned": 2, "prefixes_over_codebook": 0, "extra_levels": 0}
    assert collision_stats(out)["colliding_items"] == 0


def test_prefix_with_more_items_than_codes_gets_an_extra_level():
    k = 2
    codes = np.array([[0, 0]] * 5 + [[1, 1]])
    rng = np.random.default_rng(0)
    dist = rng.random((6, k))
    out, summary = resolve_collisions(codes, dist)
    # 5 items under prefix (0,): each code takes at most 3, numbered on 2 base-2 digits
    assert summary["prefixes_over_codebook"] == 1 and summary["extra_levels"] == 2
    assert out.shape == (6, 4)
    assert len({tuple(r) for r in out.tolist()}) == 6
    assert out[5].tolist() == [1, 1, 0, 0]
    assert np.bincount(out[:5, 1], minlength=k).max() <= 3


def test_item_text_has_fields_and_truncates_description():
    it = Item("1", "Blue Gel Pen", "word " * 500, "Pilot", ["Office Products", "Pens"])
    text = item_text(it, description_words=10)
    assert text.startswith("Title: Blue Gel Pen. Brand: Pilot. Categories: Office Products > Pens")
    assert text.count("word") == 10


def test_real_minilm_embeddings_and_cache(tmp_path):
    assert (Path(resolve_embedder("all-MiniLM-L6-v2")) / "modules.json").is_file()  # the bundled copy
    texts = [
        "Title: Pilot G2 gel pens, blue ink, 12 pack",
        "Title: Gel ink rollerball pens, blue, pack of 12",
        "Title: HP 63 black ink cartridge for inkjet printers",
    ]
    cfg = EmbedConfig(batch_size=4)
    emb, path, cached = cached_embeddings(tmp_path, texts, cfg)
    assert not cached and path.exists() and emb.shape == (3, 384)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-4)
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2] and sim[0, 1] > sim[1, 2]  # pens are closer to pens than to ink
    again, path2, cached2 = cached_embeddings(tmp_path, texts, cfg)
    assert cached2 and path2 == path and np.array_equal(again, emb)
    _, path3, cached3 = cached_embeddings(tmp_path, texts[:2] + ["Title: stapler"], cfg)
    assert not cached3 and path3 != path


def _tiny_dataset(root, n=40):
    kinds = ["gel pen", "ink cartridge", "stapler", "sticky notes", "desk lamp"]
    items = [
        Item(str(i), f"{kinds[i % 5].title()} model {i}", f"A {kinds[i % 5]} for the office. " * 3,
             f"Brand{i % 3}", ["Office Products", kinds[i % 5]])
        for i in range(n)
    ]
    samples = [Sample("u1", ["0", "1"], "2")]
    write_dataset(root / "tiny", items, {"train": samples, "valid": samples, "test": samples}, {"kind": "test"})


def test_cli_writes_sids_stats_and_weights(tmp_path, capsys):
    _tiny_dataset(tmp_path)
    argv = ["--dataset", "tiny", "--data-dir", str(tmp_path), "--codebook-size", "8",
            "--epochs", "30", "--seed", "3", "--threads", "1"]
    assert sids_main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    out = tmp_path / "tiny"
    sids = Dataset(out).sids()
    stats = json.loads((out / "sids_stats.json").read_text())
    assert printed["unique_after"] is True and stats["unique_after"] is True
    assert len(sids) == 40 and len({sid_string(t) for t in sids.values()}) == 40
    for key in ("collision_rate_before", "colliding_groups_before", "levels", "codebook_size",
                "utilisation", "max_items_per_prefix", "seed", "embedder", "rqvae", "wall_seconds"):
        assert key in stats, key
    assert stats["codebook_size"] == 8 and stats["levels"] == 3 and stats["seed"] == 3
    model = load_model(out / "rqvae.pt")
    assert len(model.codebooks) == 3 and model.codebooks[0].shape == (8, 32)
    first = (out / "sids.json").read_text()
    # a re-run reuses the cached embeddings and reproduces the same file
    assert sids_main(argv) == 0
    assert json.loads((out / "sids_stats.json").read_text())["embeddings_from_cache"] is True
    assert (out / "sids.json").read_text() == first


def test_cli_unknown_embedder_fails_clearly(tmp_path, capsys):
    _tiny_dataset(tmp_path, n=4)
    argv = ["--dataset", "tiny", "--data-dir", str(tmp_path), "--embedder", str(tmp_path / "no-model")]
    assert sids_main(argv) == 1
    err = capsys.readouterr().err
    assert "could not load embedder" in err and "--embedder" in err
    assert not (tmp_path / "tiny" / "sids.json").exists()


def test_cli_missing_dataset_fails_clearly(tmp_path, capsys):
    assert sids_main(["--dataset", "nope", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "items.jsonl not found" in err and "make data DATASET=nope" in err
