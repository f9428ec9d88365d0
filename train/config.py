"""Typed settings of each trainer stage, with the paper's / released code's defaults for Qwen3-1.7B.

``*.tiny()`` gives the CPU overrides for ``MODEL=tiny`` (fp32, no activation checkpointing, small
batches, few steps, a larger learning rate because the tiny model starts from random weights).
Environment overrides (for make): ``ALIGN_EPOCHS``, ``ACTIVATE_EPOCHS``, ``GRPO_STEPS``, ... are read by
the CLI, not here; every config is written into the run's manifest.json.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

import torch


def on_gpu() -> bool:
    return torch.cuda.is_available()


class StageConfig:
    """What every stage config shares: a plain dict for manifests, and a copy with overrides
    (unknown names and None values are ignored, so CLI arguments can be passed straight in)."""

    def to_dict(self) -> dict:
        return asdict(self)

    def override(self, **kw):
        known = {f.name for f in fields(self)}
        return replace(self, **{k: v for k, v in kw.items() if k in known and v is not None})


@dataclass
class SFTStageConfig(StageConfig):
    """Common SFT settings (full fine-tuning, AdamW)."""

    learning_rate: float = 3e-4
    epochs: float = 10
    batch_size: int = 1024  # global batch (sequences per optimizer step), as released
    per_device_batch: int = 16
    max_length: int = 2048
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    lr_scheduler: str = "cosine"
    seed: int = 42
    bf16: bool = field(default_factory=on_gpu)
    activation_checkpointing: bool = field(default_factory=on_gpu)
    logging_steps: int = 10
    max_steps: int = -1  # >0 caps the number of optimizer steps (never more than `epochs`)
    # TRL "bfd" packing: rows are packed (best-fit decreasing) into max_length sequences with
    # position ids reset per row (padding-free), so no compute goes to padding. Works on CPU.
    packing: bool = False


@dataclass
class AlignConfig(SFTStageConfig):
    """Stage 1: multi-task SFT. Released: lr 3e-4, 10 epochs, batch 1024, best by valid SID->SID loss.

    Early stopping patience 2 (the issue; released code uses 3); the best checkpoint by
    evaluation loss is kept (load_best_model_at_end).
    """

    patience: int = 2
    eval_rows: int = 2000  # validation rows for the per-epoch SID-history -> SID loss (0 = all)
    general_n: int = 0  # general reasoning samples mixed in (released: 60,000)

    @classmethod
    def tiny(cls) -> "AlignConfig":
        # CPU budget (measured on 2 shared cores, TRL 1.16): ~1.9k packed tokens/s, ~2.1 s per 4,096-token
        # step. The full Office mix is ~8M tokens per epoch (~70 min per epoch), so the tiny chain trains
        # on a capped, shuffled share of it: 360 steps x 8 packed rows x 512 tokens = ~1.5M tokens, ~13 min.
        return cls(learning_rate=2e-3, epochs=1, batch_size=8, per_device_batch=8, max_length=512, packing=True,
                   max_steps=360, bf16=False, activation_checkpointing=False, eval_rows=300, logging_steps=20)


@dataclass
class ActivateConfig(SFTStageConfig):
    """Stage 2: reason-then-recommend SFT. Paper: 1 epoch; released: lr 1e-5, 5 epochs."""

    learning_rate: float = 1e-5
    epochs: float = 1
    batch_size: int = 128
    per_device_batch: int = 8

    @classmethod
    def tiny(cls) -> "ActivateConfig":
        # Office's reasoning set is ~1.9M tokens per epoch; 100 packed 4,096-token steps (~0.4M tokens,
        # ~4 min on 2 cores) teach the tiny model the <think>...</think> SID form.
        return cls(learning_rate=1e-3, epochs=1, batch_size=8, per_device_batch=8, max_length=512, packing=True,
                   max_steps=100, bf16=False, activation_checkpointing=False, logging_steps=10)


@dataclass
class GRPOStageConfig(StageConfig):
    """Stage 3: GRPO (paper Eq. 6-8).

    ``loss_type="grpo"``: the paper's GRPO objective normalises each completion's token losses by
    its own length (1/|o_i| sum_t) and averages over the group: TRL's "grpo" aggregation. TRL's
    default "dapo" (token-level over the batch) is a different objective and is not used.
    ``batch_size`` counts completions per optimizer step (256 = 16 prompts x group 16).
    """

    learning_rate: float = 5e-7
    num_generations: int = 16
    beta: float = 1e-3  # KL coefficient; > 0 makes TRL rebuild the reference from the saved path
    batch_size: int = 256
    per_device_batch: int = 16
    format_weight: float = 0.1  # lambda of the format reward
    loss_type: str = "grpo"
    temperature: float = 1.0  # unconstrained rollouts, as released (top-p 1)
    top_p: float = 1.0
    max_prompt_length: int = 512
    max_completion_length: int = 512
    epochs: float = 1
    max_steps: int = -1
    eval_every: int = 50  # Recall@10 on a validation sample every N steps (0 = never)
    eval_rows: int = 256
    eval_mode: str = "thinking"
    seed: int = 42
    bf16: bool = field(default_factory=on_gpu)
    activation_checkpointing: bool = field(default_factory=on_gpu)
    logging_steps: int = 1

    @classmethod
    def tiny(cls) -> "GRPOStageConfig":
        return cls(learning_rate=1e-4, num_generations=8, batch_size=32, per_device_batch=32,
                   # room for a teacher reasoning (metadata: ~60 words, <= ~150 tokens) plus the SID:
                   # at 48 every rollout was clipped before "</think>", so every reward was 0.
                   max_completion_length=160, max_prompt_length=256, max_steps=20, eval_every=10,
                   eval_rows=64, bf16=False, activation_checkpointing=False)


@dataclass
class EvalConfig(StageConfig):
    """Evaluation: constrained beam search over the trie, full-item ranking."""

    modes: tuple[str, ...] = ("direct", "thinking")
    num_beams: int = 10
    max_think_tokens: int = 256
    batch_size: int = 32
    best_of_n: int = 1
    limit: int = 0  # 0 = the whole test split

    @classmethod
    def tiny(cls) -> "EvalConfig":
        return cls(max_think_tokens=160, batch_size=64)


def grad_accum(batch_size: int, per_device: int, world: int = 1) -> int:
    """Gradient accumulation giving a global batch of ``batch_size`` (at least 1)."""
    return max(1, batch_size // max(1, per_device * world))
