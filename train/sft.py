"""The SFT runner of stages 1 and 2 (``train.align``, ``train.activate``): TRL's SFTTrainer.

``run_sft`` loads the previous stage's saved model, trains it on conversations (loss on the
assistant turn), saves the (best) model and tokenizer to ``<out>/model`` with
``log_history.json`` and ``summary.json``. ``save_trained`` is shared with GRPO. Precision: fp32
master weights (``train.model.load_for_training``) under bf16 autocast (``bf16``), as in GRPO.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import time
from pathlib import Path

from synth.io import write_json
from train.config import SFTStageConfig, grad_accum, on_gpu
from train.dist import world_size
from train.model import load_for_training

log = logging.getLogger(__name__)


def sft_args(cfg: SFTStageConfig, out_dir: Path, with_eval: bool):
    """TRL's SFTConfig for ``cfg`` (resolved); with validation rows: per-epoch eval, best model kept."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(out_dir / "checkpoints"),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_batch,
        per_device_eval_batch_size=cfg.per_device_batch,
        gradient_accumulation_steps=grad_accum(cfg.batch_size, cfg.per_device_batch, world_size()),
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_steps,  # >= 1: steps; a float < 1: a share of the total steps
        weight_decay=cfg.weight_decay,
        optim="adamw_torch",
        bf16=cfg.bf16,  # autocast; the weights stay as load_for_training loaded them (master_weights)
        use_cpu=not on_gpu(),  # transformers refuses bf16 autocast on a CPU unless told it is one
        activation_checkpointing=cfg.activation_checkpointing,
        assistant_only_loss=False,  # rows come tokenized with their loss mask (tokenize_rows)
        max_length=cfg.max_length,
        packing=cfg.packing,
        packing_strategy="bfd",
        eval_strategy="epoch" if with_eval else "no",
        save_strategy="epoch" if with_eval else "no",
        load_best_model_at_end=with_eval,
        metric_for_best_model="eval_loss" if with_eval else None,
        greater_is_better=False if with_eval else None,
        save_total_limit=2 if with_eval else None,  # the best and the latest
        save_only_model=True,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        report_to=[],
        seed=cfg.seed,
        data_seed=cfg.seed,
        dataloader_num_workers=0,
        disable_tqdm=False,
    )


# Rows whose user turn lists a SID history (``train.tasks``): with ``history_loss`` their history SIDs carry loss too.
HISTORY_TASKS = ("sid2sid", "sid2title", "activate")


def tokenize_rows(rows: list[dict], tok, history_loss: bool = False) -> list[dict]:
    """Rows as TRL's tokenized conversational form: ``input_ids`` and ``assistant_masks`` (what carries
    loss), exactly what SFTTrainer's own ``assistant_only_loss`` tokenisation gives, plus, with
    ``history_loss``, every SID token of a SID-history prompt: each history item is then predicted
    from the items before it (next-item prediction at every position, as SASRec trains), so a row
    teaches up to ten recommendations instead of one, at no extra forward cost."""
    from synth.sid import TOKEN_RE

    sid_ids = {i for t, i in tok.get_vocab().items() if TOKEN_RE.fullmatch(t)} if history_loss else set()
    out = []
    for row in rows:
        enc = tok.apply_chat_template(row["messages"], tokenize=True, return_dict=True,
                                      return_assistant_tokens_mask=True)
        ids, mask = list(enc["input_ids"]), list(enc["assistant_masks"])
        if history_loss and row.get("task") in HISTORY_TASKS:
            mask = [1 if (m or t in sid_ids) else 0 for t, m in zip(ids, mask)]
        out.append({"input_ids": ids, "assistant_masks": mask})
    return out


def _sft_trainer_class():
    """TRL's SFTTrainer, with the loss computed on the positions that carry it alone on a single CPU
    process. TRL's fused LM head projects only those positions on a GPU (Triton), but on a CPU it
    projects every position of the packed batch through the whole vocabulary and computes entropy
    too; for the tiny model that LM head is most of a step (bench/README.md, "Trainer")."""
    import torch
    import torch.nn.functional as F
    from trl import SFTTrainer

    class SidSFTTrainer(SFTTrainer):
        def _compact(self, model) -> bool:
            return (model.training and world_size() == 1 and not on_gpu()
                    and hasattr(model, "model") and hasattr(model, "lm_head"))

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if return_outputs or not self._compact(model):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            labels = inputs["labels"][:, 1:]
            backbone = {k: v for k, v in inputs.items() if k != "labels"}
            hidden = model.model(**backbone, use_cache=False).last_hidden_state[:, :-1]
            mask = labels != -100
            logits = model.lm_head(hidden[mask]).float()
            target = labels[mask]
            denom = num_items_in_batch if num_items_in_batch is not None else mask.sum().clamp(min=1)
            loss = F.cross_entropy(logits, target, reduction="sum") / torch.as_tensor(denom).clamp(min=1)
            with torch.no_grad():
                n = int(mask.sum())
                self._metrics["train"]["mean_token_accuracy"].append(
                    (logits.argmax(-1) == target).float().mean().item() if n else 0.0)
                tokens = inputs["position_ids"].size(1) if "attention_mask" not in inputs \
                    else int(inputs["attention_mask"].sum())
                self._total_train_tokens += tokens
                self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
            return loss

    return SidSFTTrainer


def save_trained(trainer, tok, dest: Path) -> None:
    """Save through the trainer (works under DeepSpeed/FSDP on every rank), then rename on rank 0."""
    tmp = dest.with_name(dest.name + ".tmp")
    trainer.save_model(str(tmp))
    if trainer.is_world_process_zero():
        tok.save_pretrained(str(tmp))
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    trainer.accelerator.wait_for_everyone()


def cap_steps(trainer, cfg: SFTStageConfig) -> None:
    """``max_steps`` is a cap, not a target: never train past ``epochs`` (HF's max_steps would cycle
    the data). Counted on the dataset as the trainer holds it (after packing), so small runs stay small."""
    if cfg.max_steps <= 0:
        return
    args = trainer.args
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * world_size()
    epoch_steps = max(1, math.ceil(len(trainer.train_dataset) / per_step))
    args.max_steps = min(cfg.max_steps, max(1, math.ceil(cfg.epochs * epoch_steps)))
    log.info("training %d optimizer steps (%d per epoch, cap %d)", args.max_steps, epoch_steps, cfg.max_steps)


def run_sft(model_dir: str | Path, out_dir: str | Path, train_rows: list[dict], eval_rows: list[dict] | None,
            cfg: SFTStageConfig, patience: int = 0) -> dict:
    """Train ``model_dir`` on ``train_rows`` (``{"messages": ...}``) and save to ``out_dir/model``.

    With ``eval_rows``: the validation loss every epoch, the best model kept, and early stopping
    after ``patience`` epochs without improvement (0 = none)."""
    from datasets import Dataset as HFDataset
    from transformers import EarlyStoppingCallback

    cfg = cfg.resolved()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, tok = load_for_training(model_dir, cfg.master_weights)
    with_eval = bool(eval_rows)
    trainer = _sft_trainer_class()(
        model=model,
        args=sft_args(cfg, out_dir, with_eval),
        train_dataset=HFDataset.from_list(tokenize_rows(train_rows, tok, cfg.history_loss)),
        eval_dataset=HFDataset.from_list(tokenize_rows(eval_rows, tok)) if with_eval else None,
        processing_class=tok,
        callbacks=[EarlyStoppingCallback(early_stopping_patience=patience)] if with_eval and patience else [],
    )
    cap_steps(trainer, cfg)
    t0 = time.time()
    result = trainer.train()
    wall = time.time() - t0
    history = trainer.state.log_history
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    save_trained(trainer, tok, out_dir / "model")
    if trainer.is_world_process_zero():
        write_json(out_dir / "log_history.json", history)
        shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    summary = {
        "from": str(model_dir),
        "train_rows": len(train_rows),
        "eval_rows": len(eval_rows or []),
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "train_loss": result.training_loss,
        "eval_losses": evals,
        "best_eval_loss": min(evals) if evals else None,
        "wall_s": round(wall, 1),
        "config": cfg.to_dict(),
    }
    write_json(out_dir / "summary.json", summary)
    return summary
