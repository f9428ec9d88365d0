"""Stage 3, GRPO with TRL: reward = step-wise SID prefix reward + lambda x format reward (train.reward).

What is logged per step (``log_history.json``): TRL's ``reward``, ``reward_std``, each component
``rewards/sid_prefix_reward/mean`` and ``rewards/sid_format_reward/mean``, ``kl`` (beta > 0) and
``completions/mean_length``; the mean reasoning length in tokens comes out as
``rewards/reasoning_tokens/mean``: a reward function with weight 0 that measures, not rewards
(it changes neither the total reward nor the advantages). Every ``eval_every`` steps a callback
computes Recall@10 (and NDCG@10) on a validation sample with the evaluation decoder and appends
``{"step", "val_recall@10", ...}`` to the log: the paper's Figure 6.

Prompts are passed as chat-templated text (``tasks.rec_rows``), so completions are the raw text the
model wrote after ``<|im_start|>assistant\\n`` and the reward parses the SID after ``</think>``.
The policy is loaded from the activate stage's saved folder: with beta > 0 TRL rebuilds the
reference model from that same path, which already has the SID tokens.

Batch (``grpo_args``): one optimizer step scores ``prompts_per_step`` prompts x ``num_generations``
completions, as the released verl script (train_batch_size 256 counts prompts, rollout.n 16). TRL
counts completions: per_device_train_batch_size x gradient_accumulation_steps x processes =
prompts_per_step x num_generations, and steps_per_generation = generation_batch / per_device_batch
(the completions generated together; several generations fill one step, all from the same policy).
Prompts longer than ``max_prompt_length`` tokens are left out (TRL's GRPOConfig has no prompt limit;
the released script filtered overlong prompts the same way), and completions stop at
``max_completion_length``.

Precision: the policy is loaded with fp32 master weights (``train.model.load_for_training``) and
trained under bf16 autocast (``bf16``); TRL builds the reference model in the policy's dtype, so it
is fp32 too and computes under the same autocast.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from synth.data.dataset import DatasetError
from synth.io import write_json
from train.config import GRPOStageConfig, on_gpu
from train.dist import world_size
from train.model import load_for_training
from train.sft import save_trained

log = logging.getLogger(__name__)


def reasoning_length_func(tokenizer):
    """A zero-weight 'reward' that reports the reasoning length (tokens before ``</think>``)."""
    from train.reward import completion_text

    def reasoning_tokens(prompts=None, completions=None, **kwargs) -> list[float]:
        out = []
        for c in completions:
            text = completion_text(c)
            head = text.split("</think>")[0] if "</think>" in text else text
            head = head.replace("<think>", "").strip()
            out.append(float(len(tokenizer(head, add_special_tokens=False)["input_ids"])) if head else 0.0)
        return out

    return reasoning_tokens


def make_recall_callback(rows: list[dict], trie, tokenizer, every: int, mode: str, max_think_tokens: int,
                         batch_size: int = 32):
    """TrainerCallback: Recall/NDCG@10 of the current policy on ``rows`` every ``every`` steps.

    Runs on the main process only (fine for one GPU and DeepSpeed ZeRO-2, whose parameters are not
    sharded; with FSDP set eval_every=0).
    """
    from transformers import TrainerCallback

    from train.decoding import DecodeConfig, recommend
    from train.metrics import rank_of, ranking_metrics

    class RecallCallback(TrainerCallback):
        def __init__(self):
            self.points: list[dict] = []

        def _evaluate(self, state, model):
            was_training = model.training
            model.eval()
            t0 = time.time()
            cfg = DecodeConfig(num_beams=10, num_return=10, mode=mode, max_think_tokens=max_think_tokens,
                               batch_size=batch_size)
            ranked = recommend(model, tokenizer, [r["prompt"] for r in rows], trie, cfg)
            # a hit by SID, as in train.evaluate (the same rule for shared reference SIDs)
            m = ranking_metrics([rank_of(r["target"], rk, by=trie.sequences) for r, rk in zip(rows, ranked)])
            if was_training:
                model.train()
            point = {"step": state.global_step, "val_recall@10": m["recall@10"], "val_ndcg@10": m["ndcg@10"],
                     "val_recall@5": m["recall@5"], "val_n": m["n"], "val_mode": mode,
                     "val_wall_s": round(time.time() - t0, 1)}
            self.points.append(point)
            state.log_history.append(dict(point))
            log.info("GRPO step %d: validation recall@10 %.4f (%s, %d rows)", state.global_step,
                     m["recall@10"], mode, m["n"])

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            if every and state.is_world_process_zero:
                self._evaluate(state, model)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if every and state.is_world_process_zero and state.global_step % every == 0:
                self._evaluate(state, model)

        def on_train_end(self, args, state, control, model=None, **kwargs):
            done = {p["step"] for p in self.points}
            if every and state.is_world_process_zero and state.global_step not in done:
                self._evaluate(state, model)

    return RecallCallback()


def reward_weights(cfg: GRPOStageConfig) -> list[float]:
    """Weights of ``make_reward_funcs``' prefix and format rewards and of the measuring reasoning length."""
    return [1.0, cfg.format_weight, 0.0]


def fit_prompts(rows: list[dict], tokenizer, max_prompt_length: int) -> tuple[list[dict], int]:
    """The rows whose prompt is at most ``max_prompt_length`` tokens, and how many were left out.

    Left out, not truncated: cutting a chat-templated prompt would drop its system turn or part of
    the history (the released verl run: filter_overlong_prompts with truncation 'error')."""
    lengths = [len(ids) for ids in tokenizer([r["prompt"] for r in rows], add_special_tokens=False)["input_ids"]]
    kept = [r for r, n in zip(rows, lengths) if n <= max_prompt_length]
    dropped = len(rows) - len(kept)
    if dropped:
        log.warning("grpo: %d of %d prompts are longer than max_prompt_length %d tokens (longest %d): left out",
                    dropped, len(rows), max_prompt_length, max(lengths))
    if rows and not kept:
        raise DatasetError(f"grpo: every prompt is longer than max_prompt_length {max_prompt_length} tokens "
                           f"(shortest {min(lengths)}): raise --grpo.max-prompt-length")
    return kept, dropped


def trainer_class(cfg: GRPOStageConfig, trie, tokenizer):
    """TRL's GRPOTrainer; with ``constrained_answer``, one whose rollouts end in a valid SID
    (``train.decoding.AnswerConstraint`` on transformers' generate: TRL takes no logits processor)."""
    from transformers import LogitsProcessorList
    from trl import GRPOTrainer

    if not cfg.constrained_answer:
        return GRPOTrainer
    if trie is None:
        raise ValueError("grpo.constrained_answer needs the trie of valid SIDs")
    from train.decoding import AnswerConstraint, answer_separator, token_ids

    ids, sep, budget = token_ids(tokenizer), answer_separator(tokenizer), cfg.max_completion_length

    class ConstrainedGRPOTrainer(GRPOTrainer):
        def _generate_single_turn(self, *args, **kwargs):
            model = self.accelerator.unwrap_model(self.model)
            original = model.generate

            def generate(*a, **kw):
                width = kw["input_ids"].shape[1]
                kw["logits_processor"] = LogitsProcessorList(
                    [AnswerConstraint(trie, width, ids.think_end, sep, ids.end, budget)])
                return original(*a, **kw)

            model.generate = generate
            try:
                return super()._generate_single_turn(*args, **kwargs)
            finally:
                del model.generate  # the class's generate again

    return ConstrainedGRPOTrainer


def grpo_args(cfg: GRPOStageConfig, out_dir: Path, reward_weights: list[float], world: int | None = None):
    """TRL's GRPOConfig for ``cfg`` (resolved) on ``world`` processes (default: this launch's).

    Completions per optimizer step = per_device_train_batch_size x gradient_accumulation_steps x world
    = prompts_per_step x num_generations; TRL's generation_batch_size = generation_batch x world.
    """
    from trl import GRPOConfig

    world = world or world_size()
    cfg.check(world)
    return GRPOConfig(
        output_dir=str(out_dir / "checkpoints"),
        learning_rate=cfg.learning_rate,
        num_generations=cfg.num_generations,
        per_device_train_batch_size=cfg.per_device_batch,
        gradient_accumulation_steps=cfg.per_process(world) // cfg.per_device_batch,
        steps_per_generation=cfg.generation_batch // cfg.per_device_batch,
        beta=cfg.beta,
        loss_type=cfg.loss_type,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_completion_length=cfg.max_completion_length,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        reward_weights=reward_weights,
        bf16=cfg.bf16,  # autocast; the weights stay as load_for_training loaded them (master_weights)
        use_cpu=not on_gpu(),  # transformers refuses bf16 autocast on a CPU unless told it is one
        activation_checkpointing=cfg.activation_checkpointing,
        logging_steps=cfg.logging_steps,
        save_strategy="no",
        report_to=[],
        seed=cfg.seed,
        log_completions=False,
        disable_tqdm=False,
        lr_scheduler_type="constant",
    )


def run_grpo(model_dir, out_dir, train_rows: list[dict], cfg: GRPOStageConfig, valid_sids: set[str],
             eval_rows: list[dict] | None = None, trie=None) -> dict:
    """GRPO from ``model_dir`` on rows ``{"prompt": text, "target_sid": SID}``; saves ``out_dir/model``."""
    from datasets import Dataset as HFDataset

    from train.reward import make_reward_funcs

    cfg = cfg.resolved()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, tok = load_for_training(model_dir, cfg.master_weights)
    tok.padding_side = "left"
    funcs = make_reward_funcs(valid_sids, format_weight=cfg.format_weight)
    funcs.append(reasoning_length_func(tok))
    args = grpo_args(cfg, out_dir, reward_weights=reward_weights(cfg))
    kept, overlong = fit_prompts(train_rows, tok, cfg.max_prompt_length)
    ds = HFDataset.from_list([{"prompt": r["prompt"], "target_sid": r["target_sid"]} for r in kept])
    callbacks = []
    if eval_rows and cfg.eval_every and trie is not None:
        callbacks.append(make_recall_callback(eval_rows, trie, tok, cfg.eval_every, cfg.eval_mode,
                                              cfg.max_completion_length))
    trainer = trainer_class(cfg, trie, tok)(model=model, reward_funcs=funcs, args=args, train_dataset=ds, processing_class=tok,
                          callbacks=callbacks)
    t0 = time.time()
    trainer.train()
    wall = time.time() - t0
    save_trained(trainer, tok, out_dir / "model")
    history = trainer.state.log_history
    steps = [h for h in history if "reward" in h]
    summary = {
        "from": str(model_dir),
        "train_rows": len(kept),
        "overlong_prompts_left_out": overlong,
        "completions_per_step": args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size,
        "steps": trainer.state.global_step,
        "first_reward": steps[0]["reward"] if steps else None,
        "last_reward": steps[-1]["reward"] if steps else None,
        "recall_points": [h for h in history if "val_recall@10" in h],
        "wall_s": round(wall, 1),
        "s_per_step": round(wall / max(1, trainer.state.global_step), 2),
        "config": cfg.to_dict(),
    }
    if steps and all(float(h.get("reward_std", 0) or 0) == 0 for h in steps):
        # Every group scored alike: no advantage, no gradient. Usually the rollouts never reach
        # "</think>" within max_completion_length, so every answer scores 0.
        clipped = max(float(h.get("completions/clipped_ratio", 0) or 0) for h in steps)
        summary["warning"] = (f"no reward variance in any step (max clipped ratio {clipped:.2f}): GRPO learnt "
                              f"nothing; raise max_completion_length ({cfg.max_completion_length}) if clipped")
        log.warning(summary["warning"])
    if trainer.is_world_process_zero():
        write_json(out_dir / "log_history.json", history)
        write_json(out_dir / "summary.json", summary)
    return summary
