"""``python -m synth.sids --dataset NAME``: Semantic IDs for every item of data/NAME.

Defaults live in the config dataclasses (``EmbedConfig``, ``RQVAEConfig``, ``SidsConfig``);
a flag is passed on only when given. Exit status (``synth.errors``): 0 done, 2 bad input
(a dataset that is missing or too small, an embedder that cannot be loaded, a bad setting).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from synth.errors import run_cli
from synth.settings import ConfigError
from synth.sids.embed import EmbedConfig
from synth.sids.pipeline import SidsConfig, run
from synth.sids.rqvae import RQVAEConfig

# Summary lines printed at the end; the full stats are in sids_stats.json.
SUMMARY_KEYS = (
    "items", "levels", "codebook_size", "seed", "embedder", "collision_rate_before",
    "colliding_groups_before", "unique_after", "items_reassigned", "extra_levels",
    "utilisation", "max_items_per_prefix", "wall_seconds",
)
# flag -> (config, field); --device sets both the encoder's and the RQ-VAE's.
FLAGS = {
    "embedder": ("embed", "embedder"), "description_words": ("embed", "description_words"),
    "embed_batch_size": ("embed", "batch_size"), "seed": ("rqvae", "seed"), "levels": ("rqvae", "levels"),
    "codebook_size": ("rqvae", "codebook_size"), "epochs": ("rqvae", "epochs"), "lr": ("rqvae", "lr"),
    "batch_size": ("rqvae", "batch_size"), "latent_dim": ("rqvae", "latent_dim"), "threads": ("sids", "threads"),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m synth.sids", description=__doc__.splitlines()[0],
                                argument_default=argparse.SUPPRESS)
    p.add_argument("--dataset", required=True, help="dataset name: reads <data-dir>/NAME/items.jsonl")
    p.add_argument("--data-dir", help="folder holding the datasets (default $DATA_DIR or ./data)")
    p.add_argument("--embedder", help="sentence-transformers model id or path (default: the offline all-MiniLM-L6-v2)")
    p.add_argument("--description-words", type=int, help="description words in an item's text")
    p.add_argument("--embed-batch-size", type=int, help="texts per encoder batch")
    p.add_argument("--seed", type=int)
    p.add_argument("--levels", type=int)
    p.add_argument("--codebook-size", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--batch-size", type=int, help="RQ-VAE batch size (>= number of items: full batch)")
    p.add_argument("--latent-dim", type=int)
    p.add_argument("--device", help="cpu or cuda, for the encoder and the RQ-VAE")
    p.add_argument("--threads", type=int,
                   help="CPU threads for the text encoder (the RQ-VAE uses one: faster for its small matrices)")
    return p


def parse_args(argv: Sequence[str] | None = None) -> SidsConfig:
    a = vars(parser().parse_args(argv))
    parts: dict[str, dict] = {"embed": {}, "rqvae": {}, "sids": {}}
    for flag, (part, name) in FLAGS.items():
        if flag in a:
            parts[part][name] = a[flag]
    if "device" in a:
        parts["embed"]["device"] = parts["rqvae"]["device"] = a["device"]
        _check_device(a["device"])
    return SidsConfig(dataset=a["dataset"], data_dir=a.get("data_dir"), embed=EmbedConfig(**parts["embed"]),
                      rqvae=RQVAEConfig(**parts["rqvae"]), **parts["sids"])


def _check_device(device: str) -> None:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: torch sees no CUDA device here; use --device cpu (DEVICE=cpu)")


def _main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    stats = run(parse_args(argv))
    print(json.dumps({k: stats[k] for k in SUMMARY_KEYS if k in stats}, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
