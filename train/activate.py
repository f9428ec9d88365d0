"""Stage 2, activate: reason-then-recommend SFT on the teacher's user-centric reasoning.

Prompt: THE recommendation prompt (``rec_messages``: the SID -> SID system and user turns); response ``<think>`` reasoning ``</think>``
then the target SID; the loss covers the whole answer including ``<|im_end|>`` (as released).
Rows: ``train.tasks.activate_rows``.
"""
from __future__ import annotations

from train.config import ActivateConfig
from train.sft import run_sft


def run_activate(model_dir, out_dir, train_rows: list[dict], cfg: ActivateConfig, resume_ok: bool = True,
                 callbacks=()) -> dict:
    return run_sft(model_dir, out_dir, train_rows, None, cfg, resume_ok=resume_ok, callbacks=callbacks)
