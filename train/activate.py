"""Stage 2, activate: reason-then-recommend SFT on the teacher's user-centric reasoning.

Prompt: THE recommendation prompt (``rec_messages``); response ``<think>`` reasoning ``</think>``
then the target SID; the loss covers the whole answer including ``<|im_end|>`` (as released).
One epoch by default (the paper; the released code used 5: ``ActivateConfig.epochs``).
"""
from __future__ import annotations

from train.align import run_sft
from train.config import ActivateConfig


def run_activate(model_dir, out_dir, train_rows, cfg: ActivateConfig) -> dict:
    return run_sft(model_dir, out_dir, train_rows, None, cfg)
