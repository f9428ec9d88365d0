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

Rollouts (``rollout_engine``, decided by ``resolve_rollout_engine``): transformers' ``generate``,
its continuous batching (``generate_batch``: requests join and leave the batch as they finish, no
padding to the longest completion) or vLLM colocated on the training GPU (TRL's ``vllm_mode
colocate``: weights pushed to vLLM each step, vLLM asleep while the model trains). Continuous
batching in bf16 runs on a bf16 copy of the policy: TRL casts the policy itself, so
``trainer_class`` puts the fp32 master weights back after every rollout (``kept_tensors``).
"""
from __future__ import annotations

import logging
import shutil
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from synth.data.dataset import DatasetError
from synth.io import write_json
from synth.settings import ConfigError
from train.checkpoints import Preempted, checkpoint_step, note_resume, resume_point, trainer_callbacks
from train.config import OPTIMIZER, GRPOStageConfig, on_gpu
from train.dist import trainer_activation_checkpointing, world_size
from train.model import activation_checkpointing, attention_kernel, load_for_training, runtime
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
                         batch_size: int = 32, trackers=()):
    """TrainerCallback: Recall/NDCG@10 of the current policy on ``rows`` every ``every`` steps, appended to the
    log history and handed to the experiment trackers' callbacks (``trackers``) as ``eval/recall@10``, ....

    Runs on the main process only (fine for one GPU and DeepSpeed ZeRO-2, whose parameters are not
    sharded; with FSDP set eval_every=0).
    """
    from transformers import TrainerCallback

    from synth.data.combined import of_part
    from train.decoding import DecodeConfig, recommend
    from train.evaluate import domain_groups
    from train.metrics import rank_of, ranking_metrics
    from train.trie import SidTrie

    # rows of a combined dataset: each domain ranked over its own items, as train.evaluate ranks them
    groups = [(idx, trie if d is None else SidTrie(of_part(trie.sequences, d))) for d, idx in domain_groups(rows).items()]

    class RecallCallback(TrainerCallback):
        def __init__(self):
            self.points: list[dict] = []

        def _evaluate(self, state, model, args=None, control=None):
            was_training = model.training
            model.eval()
            t0 = time.time()
            cfg = DecodeConfig(num_beams=10, num_return=10, mode=mode, max_think_tokens=max_think_tokens,
                               batch_size=batch_size)
            ranks: list[int | None] = [None] * len(rows)
            for idx, part_trie in groups:
                ranked = recommend(model, tokenizer, [rows[i]["prompt"] for i in idx], part_trie, cfg)
                for i, rk in zip(idx, ranked):  # a hit by SID, as in train.evaluate (shared reference SIDs too)
                    ranks[i] = rank_of(rows[i]["target"], rk, by=part_trie.sequences)
            m = ranking_metrics(ranks)
            if was_training:
                model.train()
            point = {"step": state.global_step, "val_recall@10": m["recall@10"], "val_ndcg@10": m["ndcg@10"],
                     "val_recall@5": m["recall@5"], "val_n": m["n"], "val_mode": mode,
                     "val_wall_s": round(time.time() - t0, 1)}
            self.points.append(point)
            state.log_history.append(dict(point))
            for tracker in trackers:  # transformers' integrations: "eval_x" is logged as "eval/x"
                tracker.on_log(args, state, control, logs={"eval_recall@10": m["recall@10"], "eval_ndcg@10": m["ndcg@10"],
                                                           "eval_recall@5": m["recall@5"]})
            log.info("GRPO step %d: validation recall@10 %.4f (%s, %d rows)", state.global_step,
                     m["recall@10"], mode, m["n"])

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            if every and state.is_world_process_zero:
                self._evaluate(state, model, args, control)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if every and state.is_world_process_zero and state.global_step % every == 0:
                self._evaluate(state, model, args, control)

        def on_train_end(self, args, state, control, model=None, **kwargs):
            done = {p["step"] for p in self.points}
            if every and state.is_world_process_zero and state.global_step not in done:
                self._evaluate(state, model, args, control)

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


VLLM_INSTALL = "pip install -e '.[vllm]'"


def vllm_installed() -> bool:
    """Whether vLLM is importable, as TRL itself decides (``trl.import_utils.is_vllm_available``; it warns
    outside the vLLM versions TRL supports)."""
    from trl.import_utils import is_vllm_available

    return is_vllm_available()


def continuous_batching_supported() -> bool:
    """Whether this transformers has the continuous batching TRL drives (``generate_batch``; TRL asks for 5.8.0)."""
    import transformers
    from packaging.version import Version

    return Version(transformers.__version__) >= Version("5.8.0")


def resolve_rollout_engine(cfg: GRPOStageConfig, *, gpu: bool, vllm_installed: bool,
                           continuous_batching_ok: bool) -> str:
    """The engine that generates ``cfg``'s rollouts (generate | continuous_batching | vllm) on a machine
    with or without a CUDA GPU, vLLM and a transformers with continuous batching.

    ``auto``: generate with ``constrained_answer`` (the trie walk is a logits processor of generate; vLLM
    under TRL and generate_batch take none); else vllm when installed and on a GPU; else continuous
    batching on a GPU; else generate. Continuous batching is not chosen on a CPU: measured on 2 cores with
    build_tiny's model and the tiny preset's step (64 free completions of ~160 tokens), a GRPO step took
    16-19 s with generate and 19-23 s with continuous batching (its cache sized by
    ``continuous_batching_config``; 31-35 s with transformers' own sizing), and the rollout alone 2-4x
    longer (64 completions of 64 tokens: 1.4-2.6 s against 0.65 s).
    An explicit engine this machine cannot run, or one that cannot constrain the answer, is a ConfigError.
    """
    cfg.check_rollout_engine()
    engine = cfg.rollout_engine
    if engine == "vllm" and not vllm_installed:
        raise ConfigError(f"grpo.rollout_engine vllm: vLLM is not installed ({VLLM_INSTALL}: the versions TRL "
                          "supports), or use rollout_engine auto")
    if engine == "vllm" and not gpu:
        raise ConfigError("grpo.rollout_engine vllm needs a CUDA GPU (vLLM runs colocated on the training GPU): "
                          "use rollout_engine auto or generate on this machine")
    if engine == "continuous_batching" and not continuous_batching_ok:
        raise ConfigError("grpo.rollout_engine continuous_batching needs transformers >= 5.8.0 (generate_batch as "
                          "TRL drives it): upgrade transformers or use rollout_engine auto")
    if engine != "auto":
        return engine
    if cfg.constrained_answer:
        return "generate"
    if gpu and vllm_installed:
        return "vllm"
    if gpu and continuous_batching_ok:
        return "continuous_batching"
    return "generate"


def rollout_engine(cfg: GRPOStageConfig) -> tuple[str, str]:
    """``resolve_rollout_engine`` on this machine, and why (one phrase, for the log)."""
    gpu, vllm, cb = on_gpu(), vllm_installed(), continuous_batching_supported()
    engine = resolve_rollout_engine(cfg, gpu=gpu, vllm_installed=vllm, continuous_batching_ok=cb)
    if cfg.rollout_engine != "auto":
        why = "set by grpo.rollout_engine"
    elif cfg.constrained_answer:
        why = "auto: constrained_answer walks the SID trie in generate's logits processor"
    elif engine == "vllm":
        why = "auto: a GPU and vLLM installed"
    elif engine == "continuous_batching":
        why = f"auto: a GPU, vLLM not installed ({VLLM_INSTALL} for vLLM)"
    elif not gpu:
        why = "auto: no GPU (vLLM needs one; continuous batching is slower than generate on a CPU)"
    else:
        why = "auto: a GPU, but neither vLLM nor transformers' continuous batching (>= 5.8.0)"
    return engine, why


def continuous_batching_config(cfg: GRPOStageConfig, gpu: bool) -> dict | None:
    """transformers' ContinuousBatchingConfig for TRL; None on a GPU (TRL's: the KV cache takes up to half
    the free GPU memory during a rollout, freed before training).

    On a CPU transformers would size the cache from free system RAM (half of it) and fill an attention
    mask over all of it at every rollout: ~6 s each on the tiny model, a tiny-preset GRPO step 31-35 s
    instead of 19-23 s. So the cache holds one generation batch of the longest prompt and completion, and
    prefill steps are 256 tokens (a smaller mask: faster on the tiny model than 1,024)."""
    if gpu:
        return None
    from transformers.generation import ContinuousBatchingConfig

    page = ContinuousBatchingConfig.page_size
    pages_per_request = -(-(cfg.max_prompt_length + cfg.max_completion_length) // page)
    return {"num_blocks": cfg.generation_batch * pages_per_request, "max_batch_tokens": 256}


@contextmanager
def kept_tensors(model):
    """On exit, every parameter (with its gradient) and buffer of ``model`` is again the tensor it is now:
    bit-exact and in its dtype, whatever cast the model in between (``model.to(torch.bfloat16)``).
    Gradients count: a step that spans several generation batches accumulates them across rollouts."""
    params = [(p, p.data, p.grad, None if p.grad is None else p.grad.data) for p in model.parameters()]
    buffers = [(m, name, b) for m in model.modules() for name, b in m._buffers.items() if b is not None]
    try:
        yield
    finally:
        for p, data, grad, grad_data in params:
            p.data = data
            if grad is not None:
                grad.data = grad_data
                p.grad = grad
        for m, name, b in buffers:
            m._buffers[name] = b


def trainer_class(cfg: GRPOStageConfig, trie, tokenizer):
    """TRL's GRPOTrainer, keeping the master weights through continuous-batching rollouts; with
    ``constrained_answer``, one whose rollouts end in a valid SID too (``train.decoding.AnswerConstraint``
    on transformers' generate: TRL takes no logits processor)."""
    from transformers import LogitsProcessorList
    from trl import GRPOTrainer

    class MasterWeightsGRPOTrainer(GRPOTrainer):
        """TRL's continuous-batching rollout casts the policy to bf16 when ``bf16`` is set
        (``unwrapped_model.to(torch.bfloat16)``) and never back: every later forward, backward and AdamW
        update would run on bf16 weights, losing the updates below bf16 resolution that fp32 master
        weights keep. The rollout still runs on that bf16 copy, as TRL intends (bf16 weights and KV cache,
        the kernels it is written for, the precision autocast computes in anyway); then the fp32
        parameters, gradients and buffers (the rotary frequencies) are put back (``kept_tensors``)."""

        def _generate_single_turn(self, *args, **kwargs):
            if not self.use_transformers_continuous_batching:
                return super()._generate_single_turn(*args, **kwargs)
            with kept_tensors(self.accelerator.unwrap_model(self.model)):
                return super()._generate_single_turn(*args, **kwargs)

    if not cfg.constrained_answer:
        return MasterWeightsGRPOTrainer
    if trie is None:
        raise ValueError("grpo.constrained_answer needs the trie of valid SIDs")
    from train.decoding import AnswerConstraint, answer_separator, token_ids

    ids, sep, budget = token_ids(tokenizer), answer_separator(tokenizer), cfg.max_completion_length

    class ConstrainedGRPOTrainer(MasterWeightsGRPOTrainer):
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


def rollout_args(cfg: GRPOStageConfig, engine: str, gpu: bool) -> dict:
    """GRPOConfig's keywords for rollouts by ``engine`` (resolved: generate | continuous_batching | vllm).

    vllm: one engine per process on its own GPU beside the policy (colocate; no server to start). It
    sleeps while the policy trains (``vllm_enable_sleep_mode``: its weights and KV cache are released, so
    the training passes have the GPU's memory; the cost is pushing the weights again at every rollout,
    seconds for 1.7B parameters) and may take 30% of the GPU while it generates (TRL's default: a
    generation batch of 128 completions of 2,048 tokens of Qwen3-1.7B needs ~30 GB of KV cache).
    Its context is the longest prompt plus the longest completion (longer prompts are left out).
    """
    if engine == "vllm":
        return {"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.3,
                "vllm_enable_sleep_mode": True,
                "vllm_max_model_length": cfg.max_prompt_length + cfg.max_completion_length}
    if engine == "continuous_batching":
        return {"use_transformers_continuous_batching": True,
                "transformers_continuous_batching_config": continuous_batching_config(cfg, gpu)}
    if engine == "generate":
        return {}
    raise ValueError(f"rollout engine {engine!r}: resolve_rollout_engine gives generate, continuous_batching or vllm")


def grpo_args(cfg: GRPOStageConfig, out_dir: Path, reward_weights: list[float], world: int | None = None,
              engine: str | None = None):
    """TRL's GRPOConfig for ``cfg`` (resolved) on ``world`` processes (default: this launch's), its rollouts
    generated by ``engine`` (default: ``rollout_engine(cfg)`` on this machine).

    Completions per optimizer step = per_device_train_batch_size x gradient_accumulation_steps x world
    = prompts_per_step x num_generations; TRL's generation_batch_size = generation_batch x world.
    """
    from trl import GRPOConfig

    world = world or world_size()
    cfg.check(world)
    engine = engine or rollout_engine(cfg)[0]
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
        activation_checkpointing=trainer_activation_checkpointing(cfg.activation_checkpointing),  # not FSDP's too
        logging_steps=cfg.logging_steps,
        save_strategy="steps" if cfg.save_steps > 0 else "no",
        save_steps=max(1, cfg.save_steps),
        save_total_limit=2,  # the last two complete checkpoints (train.checkpoints)
        report_to=[],
        seed=cfg.seed,
        log_completions=False,
        disable_tqdm=False,
        lr_scheduler_type="constant",
        optim=OPTIMIZER,
        **rollout_args(cfg, engine, on_gpu()),
    )


def run_grpo(model_dir, out_dir, train_rows: list[dict], cfg: GRPOStageConfig, valid_sids: set[str],
             eval_rows: list[dict] | None = None, trie=None, resume_ok: bool = True, callbacks=()) -> dict:
    """GRPO from ``model_dir`` on rows ``{"prompt": text, "target_sid": SID}``; saves ``out_dir/model``.
    ``callbacks``: the experiment trackers' (``synth.tracking.TrackedRun.callbacks``), which also receive the
    validation points."""
    from datasets import Dataset as HFDataset

    from train.reward import make_reward_funcs

    cfg = cfg.resolved()
    engine, why = rollout_engine(cfg)  # before loading anything: an engine this machine lacks is an error
    log.info("grpo: rollouts by %s (%s)", engine, why)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, tok = load_for_training(model_dir, cfg.master_weights, attention_kernel(cfg.attention))
    cfg = replace(cfg, activation_checkpointing=activation_checkpointing(  # micro-batches of padded completions
        cfg.activation_checkpointing, model, cfg.per_device_batch * (cfg.max_prompt_length + cfg.max_completion_length),
        logits_tokens=cfg.per_device_batch * cfg.max_completion_length))
    tok.padding_side = "left"
    funcs = make_reward_funcs(valid_sids, format_weight=cfg.format_weight)
    funcs.append(reasoning_length_func(tok))
    args = grpo_args(cfg, out_dir, reward_weights=reward_weights(cfg), engine=engine)
    kept, overlong = fit_prompts(train_rows, tok, cfg.max_prompt_length)
    ds = HFDataset.from_list([{"prompt": r["prompt"], "target_sid": r["target_sid"]} for r in kept])
    trackers = list(callbacks)
    validation = []
    if eval_rows and cfg.eval_every and trie is not None:
        validation.append(make_recall_callback(eval_rows, trie, tok, cfg.eval_every, cfg.eval_mode,
                                               cfg.max_completion_length, trackers=trackers))
    marker, stop = trainer_callbacks()
    # the trackers' callbacks last: at the end of training the last validation point reaches them before they close
    trainer = trainer_class(cfg, trie, tok)(model=model, reward_funcs=funcs, args=args, train_dataset=ds, processing_class=tok,
                          callbacks=[*validation, marker, stop, *trackers])
    if not resume_ok:
        shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    resume = resume_point(out_dir / "checkpoints")
    if resume is not None:
        log.info("grpo: resuming from step %d (%s)", checkpoint_step(resume), resume)
    if not resume_ok:
        (out_dir / "resumes.json").unlink(missing_ok=True)
    resumes = note_resume(out_dir, checkpoint_step(resume) if resume is not None else None)
    t0 = time.time()
    trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    wall = time.time() - t0
    if stop.stopped:
        raise Preempted(f"grpo stopped on a signal at step {trainer.state.global_step} after saving a checkpoint: "
                        "rerun the same command to resume")
    save_trained(trainer, tok, out_dir / "model")
    history = trainer.state.log_history
    steps = [h for h in history if "reward" in h]
    summary = {
        "from": str(model_dir),
        "train_rows": len(kept),
        "overlong_prompts_left_out": overlong,
        "completions_per_step": args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size,
        "rollout_engine": engine,
        "runtime": runtime(model, cfg, world_size(), rollout_engine=engine, rollout_engine_why=why),
        "steps": trainer.state.global_step,
        "resumes": resumes,
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
        shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)  # the stage is done: its model is saved
    return summary
