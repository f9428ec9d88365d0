"""The ``make sids`` stage: embed items, train the RQ-VAE, assign unique SIDs, write files.

Writes into ``data/<name>/``: ``sids.json`` (item id -> ["<a_12>", "<b_7>", "<c_201>"]),
``sids_stats.json`` (collisions, utilisation, losses, timings, configuration, and the run's
``provenance``: command, resolved config, input hash, commit, machine),
``rqvae.pt`` (weights and config) and the embedding cache ``embeddings.<key>.npy``.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from synth.data.combined import domain_of, part_dirs, sid_domain_stats
from synth.data.dataset import Dataset, DatasetError, dataset_dir
from synth.io import atomic_write, read_json, write_json
from synth.provenance import provenance
from synth.settings import to_dict
from synth.sid import tokens_from_codes
from synth.sids.assign import collision_stats, max_items_per_prefix, resolve_collisions, utilisation
from synth.sids.embed import EmbedConfig, cached_embeddings, embeddings_file_key, item_text
from synth.sids.rqvae import RQVAEConfig, save_model, train_rqvae


@dataclass
class SidsConfig:
    dataset: str
    data_dir: str | None = None  # parent of data/<name>; None -> $DATA_DIR or ./data
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    rqvae: RQVAEConfig = field(default_factory=RQVAEConfig)
    threads: int = 2  # CPU threads for the text encoder; the RQ-VAE uses rqvae.threads


def assign_sids(item_ids: list[str], embeddings: np.ndarray, cfg: RQVAEConfig):
    """Embeddings -> (sids, stats, model). The core of the stage, without any file I/O."""
    if len(item_ids) != len(embeddings):
        raise ValueError(f"{len(item_ids)} item ids but {len(embeddings)} embeddings")
    model, train_summary = train_rqvae(embeddings, cfg)
    x = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32)).to(cfg.device)
    codes, last_dist = model.codes_and_last_distances(x)
    before = collision_stats(codes)
    final, resolution = resolve_collisions(codes, last_dist)
    after = collision_stats(final)
    sids = {iid: tokens_from_codes(row) for iid, row in zip(item_ids, final.tolist())}
    stats = {
        "items": len(item_ids),
        "levels": int(final.shape[1]),
        "levels_rqvae": cfg.levels,
        "codebook_size": cfg.codebook_size,
        "seed": cfg.seed,
        "collision_rate_before": before["collision_rate"],
        "colliding_items_before": before["colliding_items"],
        "colliding_groups_before": before["colliding_groups"],
        "largest_colliding_group_before": before["largest_group"],
        "unique_after": after["colliding_groups"] == 0,
        "collision_rate_after": after["collision_rate"],
        **resolution,
        "utilisation": utilisation(final, cfg.codebook_size),
        "utilisation_before": utilisation(codes, cfg.codebook_size),
        "codes_used_per_level": [int(len(np.unique(final[:, lv]))) for lv in range(final.shape[1])],
        "max_items_per_prefix": max_items_per_prefix(codes, cfg.levels - 1),
        "rqvae": {k: v for k, v in train_summary.items() if k != "config"},
        "rqvae_config": train_summary["config"],
    }
    return sids, stats, model


# The SID settings a combination and its parts' own SIDs must share, so that a part's single-domain run and
# the combination's per-domain results compare like for like (the paper's Figure 3): sids_stats.json keys.
SHARED_SID_SETTINGS = ("embedder", "description_words", "levels_rqvae", "codebook_size")


def check_part_settings(cfg: SidsConfig, parts: list[tuple[str, Path]], combined: str) -> None:
    """Every part whose own SIDs exist was made with the combination's SID settings; else a DatasetError
    naming the part, the setting, both values and what to run."""
    mine = {"embedder": cfg.embed.embedder, "description_words": cfg.embed.description_words,
            "levels_rqvae": cfg.rqvae.levels, "codebook_size": cfg.rqvae.codebook_size}
    for part, folder in parts:
        stats_file = folder / "sids_stats.json"
        if not stats_file.exists():
            continue
        theirs = read_json(stats_file)
        for key in SHARED_SID_SETTINGS:
            if key in theirs and theirs[key] != mine[key]:
                raise DatasetError(
                    f"DATASET={combined}: part {part!r} has SIDs made with {key}={theirs[key]!r} ({stats_file}) and "
                    f"this run would use {key}={mine[key]!r}: the parts and their combination need the same SID "
                    f"settings to compare. Remake the part's SIDs (`make sids DATASET={part}` with the same settings) "
                    f"or run this with the part's settings")


def combined_embeddings(out: Path, parts: list[tuple[str, Path]], item_ids: list[str], texts: list[str],
                        cfg: EmbedConfig) -> tuple[np.ndarray, Path, bool]:
    """The combination's embeddings: each part's rows from that part's cache (``cached_embeddings`` in the
    part's folder: the same texts give the same key), encoded there when missing; cached here too."""
    path = out / f"embeddings.{embeddings_file_key(texts, cfg)}.npy"
    if path.exists():
        emb = np.load(path)
        if emb.shape[0] == len(texts):
            return emb, path, True
    rows, all_cached = [], True
    for part, folder in parts:
        idx = [i for i, iid in enumerate(item_ids) if domain_of(iid) == part]
        part_emb, _, cached = cached_embeddings(folder, [texts[i] for i in idx], cfg)
        rows.append((idx, part_emb))
        all_cached &= cached
    emb = np.zeros((len(texts), rows[0][1].shape[1]), dtype=rows[0][1].dtype)
    for idx, part_emb in rows:
        emb[idx] = part_emb
    with atomic_write(path, "wb") as f:
        np.save(f, emb)
    return emb, path, all_cached


def run(cfg: SidsConfig) -> dict:
    """The whole stage; returns the stats it wrote to sids_stats.json."""
    t0 = time.time()
    torch.set_num_threads(max(1, cfg.threads))
    out = dataset_dir(cfg.dataset, cfg.data_dir)
    ds = Dataset(out)
    item_ids = list(ds.items)
    if len(item_ids) < 2:
        raise DatasetError(f"{out}/items.jsonl holds {len(item_ids)} item(s); SIDs need at least 2")
    texts = [item_text(ds.items[i], cfg.embed.description_words) for i in item_ids]
    parts = part_dirs(ds)
    if parts:  # a combination: one SID space over every part's items, from each part's cached embeddings
        check_part_settings(cfg, parts, ds.name)
        emb, emb_path, cached = combined_embeddings(out, parts, item_ids, texts, cfg.embed)
    else:
        emb, emb_path, cached = cached_embeddings(out, texts, cfg.embed)
    t_embed = time.time() - t0

    sids, stats, model = assign_sids(item_ids, emb, cfg.rqvae)
    t_total = time.time() - t0
    stats = {
        "dataset": cfg.dataset,
        **stats,
        **({"parts": [p for p, _ in parts], **sid_domain_stats(sids)} if parts else {}),
        "embedder": cfg.embed.embedder,
        "embedding_dim": int(emb.shape[1]),
        "embeddings_file": emb_path.name,
        "embeddings_from_cache": cached,
        "description_words": cfg.embed.description_words,
        "device": cfg.rqvae.device,
        "threads": cfg.threads,
        "torch": torch.__version__,
        "wall_seconds": {
            "embedding": round(t_embed, 2),
            "rqvae": stats["rqvae"]["train_seconds"],
            "total": round(t_total, 2),
        },
        "provenance": provenance(to_dict(cfg), {"items.jsonl": out / "items.jsonl"}),
    }
    save_model(model, cfg.rqvae, out / "rqvae.pt", {"embedder": cfg.embed.embedder, "item_ids": item_ids})
    write_json(out / "sids.json", sids)
    write_json(out / "sids_stats.json", stats)
    print(f"wrote {out / 'sids.json'} ({len(sids)} items) in {t_total:.1f}s", file=sys.stderr)
    return stats
