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

import numpy as np
import torch

from synth.data.dataset import Dataset, DatasetError, dataset_dir
from synth.io import write_json
from synth.provenance import provenance
from synth.settings import to_dict
from synth.sid import tokens_from_codes
from synth.sids.assign import collision_stats, max_items_per_prefix, resolve_collisions, utilisation
from synth.sids.embed import EmbedConfig, cached_embeddings, item_text
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
    emb, emb_path, cached = cached_embeddings(out, texts, cfg.embed)
    t_embed = time.time() - t0

    sids, stats, model = assign_sids(item_ids, emb, cfg.rqvae)
    t_total = time.time() - t0
    stats = {
        "dataset": cfg.dataset,
        **stats,
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
