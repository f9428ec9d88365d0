"""Settings of ``python -m train``: one dataclass per section, the single source of its defaults.

Sections: ``run`` (RunConfig: what to train, on which data, where), ``align``, ``activate``,
``grpo`` (the training stages) and ``eval`` (EvalConfig). The defaults are the paper's / the
released code's values for Qwen3-1.7B. A value comes from, later winning: the dataclass default,
a preset file (``--config``; without one ``configs/train/tiny.yaml`` for ``--model tiny`` and
``configs/train/qwen3-1.7b.yaml`` for any other model), then the command line (``--align.epochs``,
``--grpo.max-steps``, ..., and the short aliases a field lists under ``flags``). Unknown keys are
errors naming the file or flag (``synth.settings``).

Values left unset (None) are decided once, by ``TrainConfig.resolved``: a stage's seed is the
run's seed; bf16 autocast and activation checkpointing are on when a GPU is present (the weights the
optimizer updates are fp32 on every device: ``master_weights``). The resolved config
is what a run prints with ``--dry-run`` and writes into its manifest and metrics.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import ClassVar

from synth.settings import ConfigError, build, load_preset, section_of, to_dict
from train.dist import world_size
from train.reward import FORMAT_WEIGHT

TINY = "tiny"  # the model spec that builds the small CPU model (train.model.build_tiny)
MODES = ("direct", "thinking")
# The align mix's task families (train.tasks.align_rows): the four directions, the item tasks, the corpus
# texts and general data.
ALIGN_TASKS = ("sid2sid", "title2title", "title2sid", "sid2title", "item_title2sid", "item_sid2title",
               "corpus_item", "corpus_user", "general")
STAGES = ("align", "activate", "grpo", "eval")
PRESETS = Path(__file__).resolve().parents[1] / "configs" / "train"
TINY_PRESET = PRESETS / "tiny.yaml"
PAPER_PRESET = PRESETS / "qwen3-1.7b.yaml"


def on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def cap(*limits: int) -> int | None:
    """THE rule for capping rows: the smallest of ``limits`` that is set (> 0); None = all rows."""
    caps = [n for n in limits if n and n > 0]
    return min(caps) if caps else None


def setting(default, help: str, *flags: str):
    """A dataclass field with its help text and any short command-line aliases."""
    return field(default=default, metadata={"help": help, "flags": flags})


def restated(base, name: str, default, *flags: str):
    """Field ``name`` of ``base`` with another default (same help), plus aliases."""
    meta = base.__dataclass_fields__[name].metadata
    return field(default=default, metadata={"help": meta["help"], "flags": flags})


class Section:
    """What every section shares: its name in preset files, a plain dict, a checked copy."""

    SECTION: ClassVar[str] = ""

    def to_dict(self) -> dict:
        return to_dict(self)

    def override(self, **values):
        """A copy with ``values`` replaced; a name that is not a field is a ConfigError."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{type(self).__name__}: unknown setting {unknown[0]!r}; known: {', '.join(sorted(known))}")
        return replace(self, **values)

    @classmethod
    def preset(cls, path: str | os.PathLike):
        """This section of the preset file ``path`` over the dataclass defaults."""
        path = str(path)
        return build(cls, (f"{path} [{cls.SECTION}]", section_of(load_preset(path), cls.SECTION, path)))

    @classmethod
    def tiny(cls):
        """The ``MODEL=tiny`` values: this section of configs/train/tiny.yaml."""
        return cls.preset(TINY_PRESET)

    def resolved(self, seed: int | None = None):
        return self


@dataclass
class DataConfig(Section):
    """Where the data lives (shared by ``train run`` and ``train eval``)."""

    dataset: str | None = setting(None, "dataset folder under data_dir (required)")
    data_dir: str = setting("data", "root of the dataset folders")
    sids: str | None = setting("own", "SID set (SIDS): own (<data_dir>/<dataset>/sids.json), reference (the "
                               "publishers' reference_sids.json, as the paper's scripts) or a SID map's path")
    prompts: str = setting("full", "prompt set of every training row and recommendation prompt: full (prompts/train/) "
                                   "or compact (prompts/train/compact/: the same turns in fewer tokens)", "--prompts")

    def check_prompts(self) -> None:
        from train.templates import PROMPT_SETS

        if self.prompts not in PROMPT_SETS:
            raise ConfigError(f"prompts: {self.prompts!r}; expected one of {', '.join(PROMPT_SETS)}")


@dataclass
class RunConfig(DataConfig):
    SECTION: ClassVar[str] = "run"

    teacher: str | None = setting(None, "teacher corpus under <corpora_dir>/<dataset>/<teacher> (activate needs "
                                        "one); none: no corpus, alignment alone (the paper's S1)")
    model: str = setting("Qwen/Qwen3-1.7B", "'tiny', a Hub id or a local path")
    run: str | None = setting(None, "run name (default <model>-<teacher or nocorpus>, plus -s1 / -s3 for those "
                                    "variants: TrainConfig.variant)")
    stages: tuple[str, ...] = setting(STAGES, "stages to run; one left out still feeds the next from its saved model")
    limit: int = setting(0, "shrink every split and corpus to N rows, and cap validation/test rows (0 = all)")
    force: bool = setting(False, "redo stages and evaluations whose output exists")
    corpora_dir: str = setting("corpora", "root of the teacher corpora")
    runs_dir: str = setting("runs", "root of the run folders")
    seed: int = setting(42, "seed of the data shuffles and of every stage whose seed is unset")
    rl_dataset: str | None = setting(None, "combined datasets (office+industrial): GRPO on this part alone "
                                           "(RL_DATASET; default: every part)", "--rl-dataset")
    report_to: tuple[str, ...] = setting((), "experiment trackers each stage logs to (REPORT_TO): tensorboard, wandb "
                                             "and/or mlflow, comma-separated; none: no tracking (synth.tracking)",
                                         "--report-to")

    def cap(self, rows: int = 0) -> int | None:
        """How many rows a stage reads: ``limit`` and the stage's own cap ``rows`` (see ``cap``)."""
        return cap(self.limit, rows)


MASTER_WEIGHTS = ("fp32", "bf16")
# THE optimizer of every stage: AdamW, fused (one kernel over all parameters: 3.4x faster than the foreach
# AdamW on the tiny model's CPU step, bench/README.md "Trainer throughput"; fused is also the fast one on a GPU).
OPTIMIZER = "adamw_torch_fused"
# transformers' attn_implementation values a stage may ask for; "auto" is resolved by train.model.attention_kernel.
ATTENTION = ("auto", "flash_attention_2", "flex_attention", "sdpa", "eager")


@dataclass
class TrainingConfig(Section):
    """Settings every training stage has (full fine-tuning, AdamW).

    Precision: the weights the optimizer updates are ``master_weights`` (fp32: every stage loads its
    model in fp32 through ``train.model.load_for_training``), and ``bf16`` runs forward and backward
    under bf16 autocast (TrainingArguments ``bf16=True``). bf16 weights would lose any update below
    bf16 resolution: at GRPO's lr 5e-7 an AdamW step changes almost none of them.
    """

    learning_rate: float = setting(3e-4, "peak learning rate")
    epochs: float = setting(10, "passes over the training rows")
    max_steps: int = setting(-1, "cap on optimizer steps, never past `epochs` (-1 = no cap)")
    per_device_batch: int = setting(16, "rows per device per forward pass")
    logging_steps: int = setting(10, "log every N optimizer steps")
    seed: int | None = setting(None, "seed of this stage (unset: the run's seed)")
    bf16: bool | None = setting(None, "bf16 autocast of forward and backward (unset: on when a GPU is present)")
    master_weights: str = setting("fp32", "dtype of the weights the optimizer updates: fp32 (with bf16 autocast "
                                          "for compute) or bf16 (updates below bf16 resolution are lost)")
    activation_checkpointing: bool | None = setting(None, "recompute activations (unset: on when a GPU is present "
                                                          "and the stage's estimated memory does not fit it: "
                                                          "train.model.activation_checkpointing)")
    save_steps: int = setting(0, "full checkpoint (model, optimizer, scheduler, RNG, data position) every N "
                                 "optimizer steps; a rerun resumes from the newest (0: none; align with "
                                 "validation: at each validation, which keeps the best model)")
    attention: str = setting("auto", "attention kernel: auto (flash_attention_2 where installed on a GPU; else "
                                     "flex_attention for packed SFT on a GPU; else sdpa) | " + " | ".join(ATTENTION[1:]))

    def resolved(self, seed: int | None = None):
        gpu = on_gpu() if self.bf16 is None else False
        return replace(
            self,
            seed=self.seed if self.seed is not None else (seed if seed is not None else RunConfig.seed),
            bf16=gpu if self.bf16 is None else self.bf16,
        )

    def check(self, world: int | None = None) -> None:
        if self.master_weights not in MASTER_WEIGHTS:
            raise ConfigError(f"{self.SECTION}.master_weights: {self.master_weights!r}; expected "
                              f"{' or '.join(MASTER_WEIGHTS)}")
        if self.attention not in ATTENTION:
            raise ConfigError(f"{self.SECTION}.attention: {self.attention!r}; expected one of {', '.join(ATTENTION)}")


@dataclass
class SFTStageConfig(TrainingConfig):
    """SFT with TRL's SFTTrainer: loss on the assistant turn."""

    batch_size: int = setting(1024, "global batch in sequences per optimizer step (gradient accumulation fills it); "
                                    "with packing, packed sequences of max_length tokens")
    max_length: int = setting(3072, "longest training sequence in tokens (longer rows are truncated)")
    warmup_steps: float = setting(20, "learning-rate warmup: optimizer steps (>= 1) or a share of all steps (< 1)")
    weight_decay: float = setting(0.0, "AdamW weight decay")
    lr_scheduler: str = setting("linear", "learning-rate schedule after warmup (transformers' lr_scheduler_type)")
    packing: bool = setting(True, "pack rows best-fit-decreasing into max_length sequences, padding-free (the "
                                  "attention kernel keeps packed rows apart); off: one padded row per sequence")
    history_loss: bool = setting(False, "loss on the history's SID tokens of SID-history rows too (next-item "
                                        "prediction at every position); the paper: the assistant turn alone")


@dataclass
class AlignConfig(SFTStageConfig):
    """Stage 1: multi-task SFT (released: lr 3e-4, 10 epochs, batch 1024; best by valid SID->SID loss)."""

    SECTION: ClassVar[str] = "align"

    epochs: float = restated(TrainingConfig, "epochs", 10, "--align-epochs")
    per_device_batch: int = restated(TrainingConfig, "per_device_batch", 4)
    batch_size: int = restated(SFTStageConfig, "batch_size", 64)
    save_steps: int = restated(TrainingConfig, "save_steps", 50)
    patience: int = setting(2, "early stopping: validations (every save_steps; each epoch when 0) without a better "
                               "validation loss (released code: 3 epochs)")
    eval_rows: int = setting(2000, "validation rows for the per-epoch SID-history -> SID loss (0 = all)")
    corpus: bool = setting(True, "mix the teacher corpus texts into alignment (false: the paper's S1, the "
                                 "alignment tasks alone; the corpus still feeds activation)", "--align-corpus")
    general: str | None = setting(None, "general chat data mixed in: a jsonl with 'messages' or a Hub id", "--general")
    general_n: int = setting(60000, "general chat samples mixed in when `general` is set (the paper: 60,000)",
                             "--general-n")
    task_weights: dict[str, float] = field(default_factory=dict, metadata={
        "help": "rows of a task family per epoch, as a multiple of its rows (JSON, e.g. '{\"sid2sid\": 3, "
                "\"corpus_user\": 0.5}'; families: " + ", ".join(ALIGN_TASKS) + "); unlisted: 1, the paper's mix",
        "flags": ()})

    def check(self, world: int | None = None) -> None:
        super().check(world)
        bad = sorted(set(self.task_weights) - set(ALIGN_TASKS))
        if bad:
            raise ConfigError(f"align.task_weights: unknown task {bad[0]!r}; tasks: {', '.join(ALIGN_TASKS)}")
        negative = {k: w for k, w in self.task_weights.items() if not isinstance(w, (int, float)) or w < 0}
        if negative:
            raise ConfigError(f"align.task_weights: weights must be numbers >= 0, got {negative}")


@dataclass
class ActivateConfig(SFTStageConfig):
    """Stage 2: reason-then-recommend SFT (the paper: 1 epoch; released: lr 1e-5, batch 1024, 1,024 tokens)."""

    SECTION: ClassVar[str] = "activate"

    learning_rate: float = restated(TrainingConfig, "learning_rate", 1e-5)
    epochs: float = restated(TrainingConfig, "epochs", 1, "--activate-epochs")
    per_device_batch: int = restated(TrainingConfig, "per_device_batch", 16)
    batch_size: int = restated(SFTStageConfig, "batch_size", 256)
    save_steps: int = restated(TrainingConfig, "save_steps", 20)
    max_length: int = restated(SFTStageConfig, "max_length", 1024)
    warmup_steps: float = restated(SFTStageConfig, "warmup_steps", 10)


# How GRPO's rollouts are generated (GRPOStageConfig.rollout_engine; train.grpo.resolve_rollout_engine): auto
# picks one of the other three for the machine; generate is transformers' generate, continuous_batching its
# generate_batch, vllm a vLLM engine colocated on the training GPU.
ROLLOUT_ENGINES = ("auto", "generate", "continuous_batching", "vllm")


@dataclass
class GRPOStageConfig(TrainingConfig):
    """Stage 3: GRPO (the paper's Eq. 6-8), TRL's GRPOTrainer.

    One optimizer step scores ``prompts_per_step`` prompts x ``num_generations`` completions
    (released verl: train_batch_size 256 prompts x rollout.n 16 = 4,096 completions, one update per
    batch). TRL counts completions: ``grpo_args`` sets per_device_train_batch_size =
    ``per_device_batch`` and gradient accumulation = prompts x group / (per_device_batch x processes),
    and generates ``generation_batch`` completions at a time per process (steps_per_generation).
    ``loss_type="grpo"`` normalises each completion's token losses by its own length and averages
    over the group, as the paper's objective does; TRL's default "dapo" is a different objective.
    """

    SECTION: ClassVar[str] = "grpo"

    learning_rate: float = restated(TrainingConfig, "learning_rate", 5e-7)
    epochs: float = restated(TrainingConfig, "epochs", 10)
    max_steps: int = restated(TrainingConfig, "max_steps", -1, "--grpo-steps")
    save_steps: int = restated(TrainingConfig, "save_steps", 10)
    prompts_per_step: int = setting(256, "prompts per optimizer step, each sampled num_generations times")
    per_device_batch: int = setting(16, "completions per device per forward/backward pass")
    generation_batch: int = setting(128, "completions generated together per process (a divisor of the step's "
                                         "completions per process; bounds the rollout memory)")
    logging_steps: int = restated(TrainingConfig, "logging_steps", 1)
    num_generations: int = setting(16, "group size: completions sampled per prompt")
    beta: float = setting(1e-3, "KL coefficient (> 0: TRL rebuilds the reference from the saved model)")
    format_weight: float = setting(FORMAT_WEIGHT, "lambda of the format reward")
    loss_type: str = setting("grpo", "TRL loss aggregation ('grpo': per-completion length normalisation)")
    temperature: float = setting(1.0, "rollout sampling temperature")
    top_p: float = setting(1.0, "rollout nucleus sampling")
    max_prompt_length: int = setting(1024, "longest prompt in tokens; longer prompts are left out of training")
    max_completion_length: int = setting(1024, "longest rollout in tokens (reasoning + SID); also the reasoning "
                                               "budget of the validation callback")
    constrained_answer: bool = setting(False, "rollouts end in a valid SID: after </think> the answer is walked "
                                              "down the SID trie, as evaluation decodes it (MiniOneRec's RL); "
                                              "the paper's rollouts are unconstrained")
    eval_every: int = setting(50, "validation Recall@10 every N steps (0 = never)", "--grpo-eval-every")
    eval_rows: int = setting(256, "validation rows for that Recall@10")
    eval_mode: str = setting("thinking", "decoding mode of that validation (direct | thinking)")
    rollout_engine: str = setting("auto", "what generates the rollouts: auto (generate with constrained_answer; else "
                                          "vllm when installed and on a GPU, else continuous_batching on a GPU, else "
                                          "generate), generate (transformers' generate), continuous_batching "
                                          "(transformers' generate_batch) or vllm (colocated on the training GPU)")

    @property
    def completions_per_step(self) -> int:
        return self.prompts_per_step * self.num_generations

    def per_process(self, world: int | None = None) -> int:
        """Completions per optimizer step on one process."""
        return self.completions_per_step // (world or world_size())

    def check(self, world: int | None = None) -> None:
        """A step splits into whole forward passes and whole generation batches on every process, and
        every generation batch holds whole groups."""
        super().check(world)
        world = world or world_size()
        total, pd, gen = self.completions_per_step, self.per_device_batch, self.generation_batch
        if min(self.prompts_per_step, pd, gen) < 1 or self.num_generations < 2:
            raise ConfigError("grpo: prompts_per_step, per_device_batch and generation_batch must be >= 1 and "
                              "num_generations >= 2")
        if total % (pd * world):
            raise ConfigError(f"grpo: {self.prompts_per_step} prompts x {self.num_generations} = {total} completions "
                              f"per step do not split into per_device_batch {pd} x {world} process(es)")
        per_process = total // world
        if gen % pd or per_process % gen:
            raise ConfigError(f"grpo: generation_batch {gen} must be a multiple of per_device_batch {pd} and divide "
                              f"the {per_process} completions per step of each of {world} process(es)")
        if (gen * world) % self.num_generations:
            raise ConfigError(f"grpo: generation_batch {gen} x {world} process(es) must hold whole groups of "
                              f"num_generations {self.num_generations}")
        self.check_rollout_engine()

    def check_rollout_engine(self) -> None:
        """A known engine, and none that cannot constrain the answer when ``constrained_answer`` asks for it:
        the trie walk is a logits processor on transformers' generate; TRL passes none to vLLM, and
        transformers' generate_batch takes none."""
        if self.rollout_engine not in ROLLOUT_ENGINES:
            raise ConfigError(f"grpo.rollout_engine: {self.rollout_engine!r}; expected one of {', '.join(ROLLOUT_ENGINES)}")
        if self.constrained_answer and self.rollout_engine in ("vllm", "continuous_batching"):
            raise ConfigError(f"grpo.rollout_engine {self.rollout_engine} cannot constrain the answer to the SID trie "
                              "(it takes no logits processor): use rollout_engine generate (or auto) with "
                              "constrained_answer, or set constrained_answer false")


@dataclass
class EvalConfig(Section):
    """Evaluation: constrained beam search over the trie of valid SIDs, full-item ranking."""

    SECTION: ClassVar[str] = "eval"

    modes: tuple[str, ...] = setting(MODES, "decoding modes to evaluate (direct, thinking)", "--modes")
    num_beams: int = setting(10, "beams of the SID search (= items returned)", "--beams")
    max_think_tokens: int = setting(1024, "reasoning budget in thinking mode", "--max-think-tokens")
    batch_size: int = setting(64, "prompts per decoding batch")
    best_of_n: int = setting(1, "thinking mode: sample N reasonings and score the best list", "--best-of-n")
    test_rows: int = setting(0, "evaluate the first N test rows (0 = all; run.limit caps it too)")


@dataclass
class EvalCommand(DataConfig):
    """``train eval``: one checkpoint on the test split."""

    ckpt: str | None = setting(None, "model folder to evaluate (required)")
    out: str | None = setting(None, "where to write the metrics JSON (default <ckpt>/../eval.json)")

    def check(self, cfg: EvalConfig) -> None:
        if not self.ckpt or not self.dataset:
            raise ConfigError("train eval needs --ckpt MODEL_FOLDER and --dataset NAME (make: CKPT=, DATASET=)")
        check_modes(cfg.modes)


SECTIONS: dict[str, type[Section]] = {"run": RunConfig, "align": AlignConfig, "activate": ActivateConfig,
                                      "grpo": GRPOStageConfig, "eval": EvalConfig}


@dataclass
class TrainConfig:
    """Every section of ``train run``."""

    run: RunConfig = field(default_factory=RunConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    activate: ActivateConfig = field(default_factory=ActivateConfig)
    grpo: GRPOStageConfig = field(default_factory=GRPOStageConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return {name: getattr(self, name).to_dict() for name in SECTIONS}

    def resolved(self) -> "TrainConfig":
        """Unset values decided (seeds, bf16, checkpointing) and the whole checked."""
        from synth.tracking import parse_report_to

        seed = self.run.seed
        run = replace(self.run, report_to=parse_report_to(self.run.report_to))  # "none" -> ()
        out = TrainConfig(run, self.align.resolved(seed), self.activate.resolved(seed),
                          self.grpo.resolved(seed), self.eval)
        out.check()
        return out

    def check(self) -> None:
        bad = [s for s in self.run.stages if s not in STAGES]
        if bad:
            raise ConfigError(f"run.stages: unknown {bad}; expected a subset of {', '.join(STAGES)}")
        check_modes(self.eval.modes, "eval.modes")
        check_modes((self.grpo.eval_mode,), "grpo.eval_mode")
        if not self.run.dataset:
            raise ConfigError("run.dataset is not set: pass --dataset NAME (make: DATASET=)")
        if self.run.rl_dataset:
            from synth.data.combined import PART_SEP

            parts = self.run.dataset.split(PART_SEP) if PART_SEP in self.run.dataset else []
            if self.run.rl_dataset not in parts:
                raise ConfigError(
                    f"run.rl_dataset {self.run.rl_dataset!r} (RL_DATASET): not a part of DATASET={self.run.dataset}"
                    + (f" (parts: {', '.join(parts)})" if parts else "; it picks a part of a combined dataset "
                       "such as office+industrial"))
        self.run.check_prompts()
        from synth.tracking import check_installed, parse_report_to

        check_installed(parse_report_to(self.run.report_to))  # before anything trains
        self.align.check()
        self.activate.check()
        self.grpo.check()

    @property
    def variant(self) -> str:
        """The paper's alignment variant (Table 3) this run trains: ``s1`` the alignment tasks alone (no
        teacher, or ``align.corpus`` false), ``s2`` plus the teacher corpus, ``s3`` plus general data
        (``align.general``); ``s1+general`` (general data without the corpus) is none of the paper's."""
        corpus = bool(self.run.teacher) and self.align.corpus
        general = bool(self.align.general) and self.align.general_n > 0
        if general:
            return "s3" if corpus else "s1+general"
        return "s2" if corpus else "s1"


def check_modes(modes, name: str = "eval.modes") -> None:
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ConfigError(f"{name}: {', '.join(bad) or 'none given'}; expected {' and/or '.join(MODES)}")


def preset_for(model: str) -> Path:
    """The preset a model gets when no --config is given."""
    return TINY_PRESET if model == TINY else PAPER_PRESET


def load(path: str | os.PathLike | None, flags: dict[str, dict]) -> tuple[TrainConfig, Path]:
    """Defaults < preset file < ``flags`` (section -> given values), resolved; and the preset used."""
    preset_path = Path(path) if path else preset_for(flags.get("run", {}).get("model", RunConfig.model))
    preset = load_preset(preset_path)
    unknown = sorted(set(preset) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{preset_path}: unknown section {unknown[0]!r}; sections: {', '.join(SECTIONS)}")
    parts = {name: build(cls, (f"{preset_path} [{name}]", section_of(preset, name, str(preset_path))),
                         ("command line", flags.get(name, {})))
             for name, cls in SECTIONS.items()}
    return TrainConfig(**parts).resolved(), preset_path


def grad_accum(batch_size: int, per_device: int, world: int = 1) -> int:
    """Gradient accumulation giving a global batch of ``batch_size`` (at least 1)."""
    return max(1, batch_size // max(1, per_device * world))
