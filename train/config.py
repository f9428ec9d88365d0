"""Settings of ``python -m train``: one dataclass per section, the single source of its defaults.

Sections: ``run`` (RunConfig: what to train, on which data, where), ``align``, ``activate``,
``grpo`` (the training stages) and ``eval`` (EvalConfig). The defaults are the paper's / the
released code's values for Qwen3-1.7B. A value comes from, later winning: the dataclass default,
a preset file (``--config``; without one ``configs/train/tiny.yaml`` for ``--model tiny`` and
``configs/train/qwen3-1.7b.yaml`` for any other model), then the command line (``--align.epochs``,
``--grpo.max-steps``, ..., and the short aliases a field lists under ``flags``). Unknown keys are
errors naming the file or flag (``synth.settings``).

Values left unset (None) are decided once, by ``TrainConfig.resolved``: a stage's seed is the
run's seed; bf16 and activation checkpointing are on when a GPU is present. The resolved config
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
    sids: str | None = setting(None, "SID map to use instead of <data_dir>/<dataset>/sids.json")


@dataclass
class RunConfig(DataConfig):
    SECTION: ClassVar[str] = "run"

    teacher: str | None = setting(None, "teacher corpus under <corpora_dir>/<dataset>/<teacher> (activate needs one)")
    model: str = setting("Qwen/Qwen3-1.7B", "'tiny', a Hub id or a local path")
    run: str | None = setting(None, "run name (default <model>-<teacher>)")
    stages: tuple[str, ...] = setting(STAGES, "stages to run; one left out still feeds the next from its saved model")
    limit: int = setting(0, "shrink every split and corpus to N rows, and cap validation/test rows (0 = all)")
    force: bool = setting(False, "redo stages and evaluations whose output exists")
    corpora_dir: str = setting("corpora", "root of the teacher corpora")
    runs_dir: str = setting("runs", "root of the run folders")
    seed: int = setting(42, "seed of the data shuffles and of every stage whose seed is unset")

    def cap(self, rows: int = 0) -> int | None:
        """How many rows a stage reads: ``limit`` and the stage's own cap ``rows`` (see ``cap``)."""
        return cap(self.limit, rows)


@dataclass
class TrainingConfig(Section):
    """Settings every training stage has (full fine-tuning, AdamW)."""

    learning_rate: float = setting(3e-4, "peak learning rate")
    epochs: float = setting(10, "passes over the training rows")
    max_steps: int = setting(-1, "cap on optimizer steps, never past `epochs` (-1 = no cap)")
    batch_size: int = setting(1024, "global batch per optimizer step (gradient accumulation fills it)")
    per_device_batch: int = setting(16, "rows per device per forward pass")
    logging_steps: int = setting(10, "log every N optimizer steps")
    seed: int | None = setting(None, "seed of this stage (unset: the run's seed)")
    bf16: bool | None = setting(None, "bf16 mixed precision (unset: on when a GPU is present)")
    activation_checkpointing: bool | None = setting(None, "recompute activations (unset: on when a GPU is present)")

    def resolved(self, seed: int | None = None):
        gpu = on_gpu() if self.bf16 is None or self.activation_checkpointing is None else False
        return replace(
            self,
            seed=self.seed if self.seed is not None else (seed if seed is not None else RunConfig.seed),
            bf16=gpu if self.bf16 is None else self.bf16,
            activation_checkpointing=gpu if self.activation_checkpointing is None else self.activation_checkpointing,
        )


@dataclass
class SFTStageConfig(TrainingConfig):
    """SFT with TRL's SFTTrainer: loss on the assistant turn."""

    max_length: int = setting(2048, "longest training sequence in tokens")
    warmup_ratio: float = setting(0.03, "share of the steps spent warming up the learning rate")
    weight_decay: float = setting(0.0, "AdamW weight decay")
    lr_scheduler: str = setting("cosine", "learning-rate schedule (transformers' lr_scheduler_type)")
    packing: bool = setting(False, "pack rows best-fit-decreasing into max_length sequences, padding-free")


@dataclass
class AlignConfig(SFTStageConfig):
    """Stage 1: multi-task SFT (released: lr 3e-4, 10 epochs, batch 1024; best by valid SID->SID loss)."""

    SECTION: ClassVar[str] = "align"

    epochs: float = restated(TrainingConfig, "epochs", 10, "--align-epochs")
    patience: int = setting(2, "early stopping: epochs without a better validation loss (released code: 3)")
    eval_rows: int = setting(2000, "validation rows for the per-epoch SID-history -> SID loss (0 = all)")
    general: str | None = setting(None, "general chat data mixed in: a jsonl with 'messages' or a Hub id", "--general")
    general_n: int = setting(0, "general chat samples mixed in (the paper: 60,000)", "--general-n")


@dataclass
class ActivateConfig(SFTStageConfig):
    """Stage 2: reason-then-recommend SFT (the paper: 1 epoch; released: lr 1e-5, 5 epochs)."""

    SECTION: ClassVar[str] = "activate"

    learning_rate: float = restated(TrainingConfig, "learning_rate", 1e-5)
    epochs: float = restated(TrainingConfig, "epochs", 1, "--activate-epochs")
    batch_size: int = restated(TrainingConfig, "batch_size", 128)
    per_device_batch: int = restated(TrainingConfig, "per_device_batch", 8)


@dataclass
class GRPOStageConfig(TrainingConfig):
    """Stage 3: GRPO (the paper's Eq. 6-8).

    ``loss_type="grpo"`` normalises each completion's token losses by its own length and averages
    over the group, as the paper's objective does; TRL's default "dapo" is a different objective.
    ``batch_size`` counts completions per optimizer step (256 = 16 prompts x group 16).
    """

    SECTION: ClassVar[str] = "grpo"

    learning_rate: float = restated(TrainingConfig, "learning_rate", 5e-7)
    epochs: float = restated(TrainingConfig, "epochs", 1)
    max_steps: int = restated(TrainingConfig, "max_steps", -1, "--grpo-steps")
    batch_size: int = restated(TrainingConfig, "batch_size", 256)
    logging_steps: int = restated(TrainingConfig, "logging_steps", 1)
    num_generations: int = setting(16, "group size: completions sampled per prompt")
    beta: float = setting(1e-3, "KL coefficient (> 0: TRL rebuilds the reference from the saved model)")
    format_weight: float = setting(FORMAT_WEIGHT, "lambda of the format reward")
    loss_type: str = setting("grpo", "TRL loss aggregation ('grpo': per-completion length normalisation)")
    temperature: float = setting(1.0, "rollout sampling temperature")
    top_p: float = setting(1.0, "rollout nucleus sampling")
    max_completion_length: int = setting(512, "longest rollout in tokens (reasoning + SID)")
    eval_every: int = setting(50, "validation Recall@10 every N steps (0 = never)", "--grpo-eval-every")
    eval_rows: int = setting(256, "validation rows for that Recall@10")
    eval_mode: str = setting("thinking", "decoding mode of that validation (direct | thinking)")

    def check(self, world: int | None = None) -> None:
        """The batch must split into whole groups on every process."""
        world = world or world_size()
        if self.per_device_batch % self.num_generations and (self.per_device_batch * world) % self.num_generations:
            raise ConfigError(f"grpo: per_device_batch {self.per_device_batch} x {world} process(es) must be "
                              f"divisible by num_generations {self.num_generations}")


@dataclass
class EvalConfig(Section):
    """Evaluation: constrained beam search over the trie of valid SIDs, full-item ranking."""

    SECTION: ClassVar[str] = "eval"

    modes: tuple[str, ...] = setting(MODES, "decoding modes to evaluate (direct, thinking)", "--modes")
    num_beams: int = setting(10, "beams of the SID search (= items returned)", "--beams")
    max_think_tokens: int = setting(256, "reasoning budget in thinking mode", "--max-think-tokens")
    batch_size: int = setting(32, "prompts per decoding batch")
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
        seed = self.run.seed
        out = TrainConfig(self.run, self.align.resolved(seed), self.activate.resolved(seed),
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
        self.grpo.check()


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
