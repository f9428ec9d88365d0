"""Semantic IDs: RQ-VAE training, collision resolution, embeddings, the CLI end to end."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from synth.data.dataset import Dataset, Item, Sample, write_dataset
from synth.sid import TOKEN_RE, is_well_formed, sid_string, split_sid, tokens_from_codes
from synth.sids import pipeline
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


def codes_of(model, x: np.ndarray) -> np.ndarray:
    """The RQ-VAE's own (nearest) codes, before collision resolution, as the pipeline computed them."""
    codes, _ = model.codes_and_last_distances(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    return codes


def expected_extra_levels(codes: np.ndarray, codebook_size: int) -> int:
    """Levels collision resolution must append (synth/sids/assign.py): none while every prefix (all
    levels but the last) holds at most ``codebook_size`` items; otherwise enough base-K digits to
    number the items left sharing a last-level code, at most ceil(n / K) under the fullest prefix."""
    biggest = max(Counter(map(tuple, codes[:, :-1].tolist())).values())
    if biggest <= codebook_size:
        return 0
    load, extra = -(-biggest // codebook_size), 1
    while codebook_size**extra < load:
        extra += 1
    return extra


def check_sids(sids: dict, ids: list[str], stats: dict, codes: np.ndarray, codebook_size: int) -> None:
    """What assign_sids guarantees whatever numbers training produced (they differ between CPUs):
    one unique, well-formed SID per item, all of the length ``stats["levels"]`` reports; the
    RQ-VAE's codes kept on every level but the last; extra levels exactly when a prefix overflows."""
    levels_rq = codes.shape[1]
    per_prefix = Counter(map(tuple, codes[:, :-1].tolist())).values()
    extra = expected_extra_levels(codes, codebook_size)
    assert stats["max_items_per_prefix"] == max(per_prefix)
    assert stats["prefixes_over_codebook"] == sum(n > codebook_size for n in per_prefix)
    assert stats["extra_levels"] == extra and stats["levels"] == levels_rq + extra, (stats, max(per_prefix))
    assert stats["levels_rqvae"] == levels_rq and len(stats["utilisation"]) == stats["levels"]
    assert all(0 < u <= 1 for u in stats["utilisation"])
    assert set(sids) == set(ids)
    for iid, row in zip(ids, codes.tolist()):
        tokens = sids[iid]
        assert len(tokens) == stats["levels"] and is_well_formed(tokens), tokens
        assert split_sid(sid_string(tokens)) == list(tokens)
        got = [int(TOKEN_RE.fullmatch(t).group(2)) for t in tokens]
        assert got[: levels_rq - 1] == row[: levels_rq - 1], (iid, tokens, row)  # only the last level moves
        assert all(0 <= c < codebook_size for c in got), tokens
    assert len({sid_string(t) for t in sids.values()}) == len(ids)
    assert stats["unique_after"] and stats["collision_rate_after"] == 0


@pytest.fixture(scope="module")
def trained():
    x = clustered()
    ids = [f"i{k}" for k in range(len(x))]
    return ids, x, assign_sids(ids, x, small_cfg())


def test_rqvae_trains_and_sids_are_unique_and_well_formed(trained):
    ids, x, (sids, stats, model) = trained
    history = stats["rqvae"]["history"]
    assert history[0]["epoch"] == 1
    # a learning effect with a wide margin: measured 0.05-0.10 of the first epoch's loss over seeds
    assert stats["rqvae"]["final_recon_loss"] < 0.7 * history[0]["recon"]
    codes = codes_of(model, x)
    # the identical items collided before resolution, and nothing does after
    assert len({tuple(r) for r in codes[len(x) // 2 : len(x) // 2 + 10].tolist()}) == 1
    assert stats["colliding_groups_before"] >= 1 and stats["collision_rate_before"] > 0
    check_sids(sids, ids, stats, codes, 16)
    # Whether some (level 1, level 2) prefix gets more than 16 of the 240 items depends on the
    # float arithmetic of training (17 on some CPUs, 16 on others): 3 levels iff none does.
    overflow = max(Counter(map(tuple, codes[:, :2].tolist())).values()) > 16
    assert stats["levels"] == (4 if overflow else 3)


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
    sids, stats, model = assign_sids(ids, x, small_cfg(levels=levels, codebook_size=32, epochs=20))
    assert len(model.codebooks) == levels
    check_sids(sids, ids, stats, codes_of(model, x), 32)  # `levels` levels, one more only on overflow


def test_resolution_moves_the_farther_item_to_its_nearest_free_code():
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


def crowded_codes(crowd: int) -> np.ndarray:
    """3-level codes (16 per level): ``crowd`` items under prefix (1, 2), all on last code 5 (the
    nearest code of every one), a colliding pair under (3, 4) and three distinct items under (0, 0)."""
    return np.array([[1, 2, 5]] * crowd + [[3, 4, 9], [3, 4, 9], [0, 0, 0], [0, 0, 1], [0, 0, 15]])


@pytest.mark.parametrize("crowd, levels", [(16, 3), (17, 4)])
def test_extra_level_exactly_when_a_prefix_holds_more_items_than_codes(crowd, levels):
    """The property the trained test can only observe, forced: 16 items fit a 16-code book under
    one prefix (3 levels, all 16 codes used), 17 do not (one more level, <= 2 items per code)."""
    k = 16
    codes = crowded_codes(crowd)
    dist = np.random.default_rng(0).random((len(codes), k))
    dist[:crowd, 5] = 0.0  # code 5 is the nearest of every crowded item
    out, summary = resolve_collisions(codes, dist)
    assert out.shape == (len(codes), levels)
    assert summary["extra_levels"] == levels - 3 and summary["prefixes_over_codebook"] == (crowd > k)
    assert len({tuple(r) for r in out.tolist()}) == len(codes)
    assert all(is_well_formed(tokens_from_codes(r)) for r in out.tolist())
    assert (out[:, :2] == codes[:, :2]).all()  # prefixes are never changed
    crowd_last = np.bincount(out[:crowd, 2], minlength=k)
    if crowd <= k:
        assert crowd_last.tolist() == [1] * k  # one item per code: no extra level needed
    else:
        assert crowd_last.max() == 2  # balanced: ceil(17 / 16) items at most share a code,
        groups: dict[tuple, list[int]] = {}
        for i, row in enumerate(out[:, :3].tolist()):
            groups.setdefault(tuple(row), []).append(int(out[i, 3]))
        # and level 4 numbers the items of each shared code 0, 1 (an item alone gets 0)
        assert all(sorted(digits) == list(range(len(digits))) for digits in groups.values())
        assert any(len(digits) == 2 for digits in groups.values())
    assert out[crowd].tolist()[:3] != out[crowd + 1].tolist()[:3]  # the (3, 4) pair was split
    assert out[crowd + 2 :, :3].tolist() == codes[crowd + 2 :].tolist()  # (0, 0) had no collision


class _FixedCodes:
    """Stands in for a trained RQ-VAE: hands the pipeline codes chosen by the test."""

    def __init__(self, codes: np.ndarray, dist: np.ndarray):
        self.codes, self.dist = codes, dist

    def codes_and_last_distances(self, x):
        assert len(x) == len(self.codes)
        return self.codes, self.dist


@pytest.mark.parametrize("crowd, levels", [(16, 3), (17, 4)])
def test_reported_levels_match_sid_lengths_with_forced_codes(monkeypatch, crowd, levels):
    """assign_sids on forced codes: stats["levels"] and every SID agree, on both sides of overflow."""
    codes = crowded_codes(crowd)
    dist = np.random.default_rng(1).random((len(codes), 16))
    monkeypatch.setattr(pipeline, "train_rqvae", lambda emb, cfg: (_FixedCodes(codes, dist), {"config": {}}))
    ids = [f"i{k}" for k in range(len(codes))]
    sids, stats, _ = assign_sids(ids, np.zeros((len(codes), 4), dtype=np.float32), small_cfg())
    assert stats["levels"] == levels and {len(t) for t in sids.values()} == {levels}
    assert stats["max_items_per_prefix"] == crowd and stats["colliding_groups_before"] == 2
    check_sids(sids, ids, stats, codes, 16)


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
    assert stats["codebook_size"] == 8 and stats["levels_rqvae"] == 3 and stats["seed"] == 3
    model = load_model(out / "rqvae.pt")
    assert len(model.codebooks) == 3 and model.codebooks[0].shape == (8, 32)
    # 3 levels unless training put more than 8 of the 40 items under one prefix (the 8 items of
    # each kind are near-identical: whether two kinds share a prefix is up to the float arithmetic)
    ids = list(Dataset(out).items)
    check_sids(sids, ids, stats, codes_of(model, np.load(out / stats["embeddings_file"])), 8)
    first = (out / "sids.json").read_text()
    # a re-run reuses the cached embeddings and reproduces the same file
    assert sids_main(argv) == 0
    assert json.loads((out / "sids_stats.json").read_text())["embeddings_from_cache"] is True
    assert (out / "sids.json").read_text() == first


def test_cli_unknown_embedder_fails_clearly(tmp_path, capsys):
    _tiny_dataset(tmp_path, n=4)
    argv = ["--dataset", "tiny", "--data-dir", str(tmp_path), "--embedder", str(tmp_path / "no-model")]
    assert sids_main(argv) == 2  # bad input: exit 2, as every CLI
    err = capsys.readouterr().err
    assert "could not load embedder" in err and "--embedder" in err
    assert not (tmp_path / "tiny" / "sids.json").exists()


def test_cli_missing_dataset_fails_clearly(tmp_path, capsys):
    assert sids_main(["--dataset", "nope", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "items.jsonl not found" in err and "make data DATASET=nope" in err
