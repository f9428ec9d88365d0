"""``python -m synth.sids --dataset NAME``: Semantic IDs for every item of data/NAME."""
from __future__ import annotations

import argparse
import json
import os
import sys

from synth.sids.embed import DEFAULT_DESCRIPTION_WORDS, DEFAULT_EMBEDDER, EmbedConfig
from synth.sids.pipeline import SidsConfig, run
from synth.sids.rqvae import RQVAEConfig

# Summary lines printed at the end; the full stats are in sids_stats.json.
SUMMARY_KEYS = (
    "items", "levels", "codebook_size", "seed", "embedder", "collision_rate_before",
    "colliding_groups_before", "unique_after", "items_reassigned", "extra_levels",
    "utilisation", "max_items_per_prefix", "wall_seconds",
)


def parse_args(argv: list[str] | None = None) -> SidsConfig:
    d = RQVAEConfig()
    p = argparse.ArgumentParser(prog="python -m synth.sids", description=__doc__)
    p.add_argument("--dataset", required=True, help="dataset name: reads data/NAME/items.jsonl")
    p.add_argument("--data-dir", default=None, help="folder holding the datasets (default $DATA_DIR or ./data)")
    p.add_argument("--embedder", default=DEFAULT_EMBEDDER,
                   help="sentence-transformers model id or path (default: the offline all-MiniLM-L6-v2)")
    p.add_argument("--description-words", type=int, default=DEFAULT_DESCRIPTION_WORDS)
    p.add_argument("--embed-batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--levels", type=int, default=d.levels)
    p.add_argument("--codebook-size", type=int, default=d.codebook_size)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="RQ-VAE batch size (>= number of items: full batch)")
    p.add_argument("--latent-dim", type=int, default=d.latent_dim)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=int(os.environ.get("SIDS_THREADS", 2)),
                   help="CPU threads for the text encoder (the RQ-VAE uses one: faster for its small matrices)")
    a = p.parse_args(argv)
    return SidsConfig(
        dataset=a.dataset,
        data_dir=a.data_dir,
        embed=EmbedConfig(embedder=a.embedder, description_words=a.description_words,
                          batch_size=a.embed_batch_size, device=a.device),
        rqvae=RQVAEConfig(levels=a.levels, codebook_size=a.codebook_size, epochs=a.epochs, lr=a.lr,
                          batch_size=a.batch_size, latent_dim=a.latent_dim, seed=a.seed, device=a.device),
        threads=a.threads,
    )


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        cfg = parse_args(argv)
        stats = run(cfg)
    except (ValueError, RuntimeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps({k: stats[k] for k in SUMMARY_KEYS if k in stats}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
