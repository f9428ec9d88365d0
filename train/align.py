"""Stage 1, align: multi-task SFT (loss on assistant turns), early stopping on the validation
SID-history -> SID loss, the best checkpoint kept. Rows: ``train.tasks.align_rows``."""
from __future__ import annotations

from train.config import AlignConfig
from train.sft import run_sft

__all__ = ["run_align", "run_sft"]


def run_align(model_dir, out_dir, train_rows: list[dict], eval_rows: list[dict], cfg: AlignConfig,
              resume_ok: bool = True, callbacks=()) -> dict:
    return run_sft(model_dir, out_dir, train_rows, eval_rows, cfg, patience=cfg.patience, resume_ok=resume_ok,
                   callbacks=callbacks)
