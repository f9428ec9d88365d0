"""Semantic IDs: item embeddings -> RQ-VAE codes -> unique SIDs (``make sids``)."""
from synth.sids.assign import collision_stats, resolve_collisions, utilisation
from synth.sids.embed import EmbedConfig, item_text
from synth.sids.pipeline import SidsConfig, assign_sids, run
from synth.sids.rqvae import RQVAE, RQVAEConfig, load_model, train_rqvae

__all__ = [
    "EmbedConfig", "RQVAE", "RQVAEConfig", "SidsConfig", "assign_sids", "collision_stats",
    "item_text", "load_model", "resolve_collisions", "run", "train_rqvae", "utilisation",
]
