"""The SFT runner of stages 1 and 2 (``train.align``, ``train.activate``): TRL's SFTTrainer.

``run_sft`` loads the previous stage's saved model, trains it on conversations (loss on the
assistant turn), saves the (best) model and tokenizer to ``<out>/model`` with
``log_history.json`` and ``summary.json``. ``save_trained`` is shared with GRPO. Precision: fp32
master weights (``train.model.load_for_training``) under bf16 autocast (``bf16``), as in GRPO.
"""
from __future__ import annotations

import gc
import logging
import math
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

from synth.io import write_json
from train.checkpoints import Preempted, checkpoint_step, note_resume, resume_point, trainer_callbacks
from train.config import OPTIMIZER, SFTStageConfig, grad_accum, on_gpu
from train.dist import trainer_activation_checkpointing, world_size
from train.model import activation_checkpointing, attention_kernel, load_for_training, runtime

log = logging.getLogger(__name__)


def sft_args(cfg: SFTStageConfig, out_dir: Path, with_eval: bool):
    """TRL's SFTConfig for ``cfg`` (resolved); with validation rows: validation at each checkpoint (every
    ``save_steps``, else each epoch), the best model kept."""
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
        optim=OPTIMIZER,
        bf16=cfg.bf16,  # autocast; the weights stay as load_for_training loaded them (master_weights)
        use_cpu=not on_gpu(),  # transformers refuses bf16 autocast on a CPU unless told it is one
        activation_checkpointing=trainer_activation_checkpointing(cfg.activation_checkpointing),  # not FSDP's too
        assistant_only_loss=False,  # rows come tokenized with their loss mask (tokenize_rows)
        max_length=cfg.max_length,
        packing=cfg.packing,
        packing_strategy="bfd",
        # full checkpoints to resume from (train.checkpoints) every save_steps; with validation rows, each
        # checkpoint is validated there (transformers keeps the best only among validated saves), so the
        # validation runs every save_steps, or at each epoch's end when save_steps is 0
        eval_strategy=("steps" if cfg.save_steps > 0 else "epoch") if with_eval else "no",
        eval_steps=max(1, cfg.save_steps) if with_eval else None,
        save_strategy=("steps" if cfg.save_steps > 0 else ("epoch" if with_eval else "no")),
        save_steps=max(1, cfg.save_steps),
        load_best_model_at_end=with_eval,
        metric_for_best_model="eval_loss" if with_eval else None,
        greater_is_better=False if with_eval else None,
        save_total_limit=2,  # the latest two (and the best, with validation)
        save_only_model=False,  # optimizer, scheduler and RNG states too: what resuming needs
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


def labelled_loss(model, inputs: dict, num_items_in_batch=None):
    """Next-token cross-entropy over the positions that carry a label alone: the backbone runs on every
    token, the LM head only on the labelled ones (the equal of the model's own loss, without projecting
    the positions that carry none). Returns ``(loss, logits, targets)`` of those positions."""
    import torch
    import torch.nn.functional as F

    labels = inputs["labels"][:, 1:]
    backbone = {k: v for k, v in inputs.items() if k != "labels"}
    hidden = model.model(**backbone, use_cache=False).last_hidden_state[:, :-1]
    mask = labels != -100
    logits = model.lm_head(hidden[mask]).float()
    target = labels[mask]
    denom = num_items_in_batch if num_items_in_batch is not None else mask.sum().clamp(min=1)
    loss = F.cross_entropy(logits, target, reduction="sum") / torch.as_tensor(denom).clamp(min=1)
    return loss, logits, target


def _sft_trainer_class():
    """TRL's SFTTrainer, with the loss computed on the positions that carry it alone on a single CPU
    process (``labelled_loss``). TRL's fused LM head projects only those positions on a GPU (Triton), but
    on a CPU it projects every position of the packed batch through the whole vocabulary and computes
    entropy too; for the tiny model that LM head is most of a step (bench/README.md, "Trainer"). The token
    accuracy is measured on the steps that log only (its argmax over the vocabulary was 3% of a step)."""
    import torch
    from trl import SFTTrainer

    class SidSFTTrainer(SFTTrainer):
        def _compact(self, model) -> bool:
            return (model.training and world_size() == 1 and not on_gpu()
                    and hasattr(model, "model") and hasattr(model, "lm_head"))

        def _logged_step(self) -> bool:
            step, args = self.state.global_step + 1, self.args  # the optimizer step this micro-batch is part of
            return (step % max(1, int(args.logging_steps)) == 0 or (step == 1 and args.logging_first_step)
                    or step >= self.state.max_steps)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if return_outputs or not self._compact(model):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            loss, logits, target = labelled_loss(model, inputs, num_items_in_batch)
            with torch.no_grad():
                if self._logged_step():  # the accuracy of the steps that log (an argmax over the vocabulary)
                    n = int(target.numel())
                    self._metrics["train"]["mean_token_accuracy"].append(
                        (logits.argmax(-1) == target).float().mean().item() if n else 0.0)
                tokens = int(inputs["attention_mask"].sum()) if "attention_mask" in inputs \
                    else int(inputs["input_ids"].ne(self.processing_class.pad_token_id).sum())  # packed rows
                self._total_train_tokens += tokens
                self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
            return loss

    return SidSFTTrainer


def flattens_packs(attention: str) -> bool:
    """Whether a micro-batch of packed sequences goes to the model as ONE flat sequence (TRL's padding-free
    form): for kernels that take the packed rows' boundaries as such (FlashAttention's varlen ``cu_seq_lens``,
    flex_attention's block mask, which skips the blocks between rows). sdpa and eager would build and
    compute the full block-diagonal (B x L)^2 mask of the flat sequence: B times the attention of B rows of L
    (bench/README.md, "Trainer throughput"), so for them each packed sequence stays a row (``packed_rows_collator``)."""
    return attention in ("flash_attention_2", "flash_attention_3", "flex_attention")


def packed_rows_collator(pad_id: int):
    """TRL's collator for packed sequences without flattening: one right-padded row per packed sequence, the
    position ids restarting at every packed row (transformers then keeps them apart: a block-diagonal mask
    per row), no attention mask (its presence would hide the row boundaries); the padding is position 0
    each, a segment of its own that carries no label. Labels at position 0 are dropped, as TRL's
    padding-free collator does: a row's first token is not predicted from the row before it."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    rows = DataCollatorForLanguageModeling(pad_token_id=pad_id, padding_free=False, return_position_ids=True)

    def collate(examples: list[dict]) -> dict:
        out = rows(examples)
        out.pop("attention_mask", None)
        out["labels"][out["position_ids"] == 0] = -100
        return out

    return collate


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
            cfg: SFTStageConfig, patience: int = 0, resume_ok: bool = True, callbacks=()) -> dict:
    """Train ``model_dir`` on ``train_rows`` (``{"messages": ...}``) and save to ``out_dir/model``.

    With ``eval_rows``: the validation loss at every checkpoint (every ``save_steps``; each epoch when 0), the
    best model kept, and early stopping after ``patience`` validations without improvement (0 = none). An earlier run of the stage that was
    interrupted resumes from its newest complete checkpoint unless ``resume_ok`` is false (FORCE=1). ``callbacks``:
    more trainer callbacks, last (the experiment trackers': ``synth.tracking.TrackedRun.callbacks``)."""
    from datasets import Dataset as HFDataset
    from transformers import EarlyStoppingCallback

    cfg = cfg.resolved()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, tok = load_for_training(model_dir, cfg.master_weights, attention_kernel(cfg.attention, cfg.packing))
    cfg = replace(cfg, activation_checkpointing=activation_checkpointing(
        cfg.activation_checkpointing, model, cfg.per_device_batch * cfg.max_length))
    with_eval = bool(eval_rows)
    marker, stop = trainer_callbacks()
    checkpoints = out_dir / "checkpoints"
    if not resume_ok:
        shutil.rmtree(checkpoints, ignore_errors=True)
    resume = resume_point(checkpoints)
    trainer = _sft_trainer_class()(
        model=model,
        args=sft_args(cfg, out_dir, with_eval),
        train_dataset=HFDataset.from_list(tokenize_rows(train_rows, tok, cfg.history_loss)),
        eval_dataset=HFDataset.from_list(tokenize_rows(eval_rows, tok)) if with_eval else None,
        processing_class=tok,
        callbacks=([EarlyStoppingCallback(early_stopping_patience=patience)] if with_eval and patience else [])
        + [marker, stop, *callbacks],
    )
    if cfg.packing and not flattens_packs(model.config._attn_implementation):
        trainer.data_collator = packed_rows_collator(tok.pad_token_id)
    cap_steps(trainer, cfg)
    t0 = time.time()
    gc.collect()
    gc.freeze()  # the set-up's objects (dataset, tokenizer, modules) out of the collector's passes during training
    if resume is not None:
        log.info("%s: resuming from step %d (%s)", out_dir.name, checkpoint_step(resume), resume)
    if not resume_ok:
        (out_dir / "resumes.json").unlink(missing_ok=True)
    resumes = note_resume(out_dir, checkpoint_step(resume) if resume is not None else None)
    try:
        result = trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    finally:
        gc.unfreeze()
    wall = time.time() - t0
    if stop.stopped:
        raise Preempted(f"{out_dir.name} stopped on a signal at step {trainer.state.global_step} after saving a "
                        "checkpoint: rerun the same command to resume")
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
        "resumes": resumes,
        "epochs": trainer.state.epoch,
        "train_loss": result.training_loss,
        "eval_losses": evals,
        "best_eval_loss": min(evals) if evals else None,
        "wall_s": round(wall, 1),
        "runtime": runtime(trainer.model, cfg, world_size()),
        "config": cfg.to_dict(),
    }
    write_json(out_dir / "summary.json", summary)
    return summary
