"""CLI of the trainer; its settings are the dataclasses of train/config.py, its presets configs/train/.

  python -m train run --dataset office --teacher metadata [--model tiny] [--config FILE] [--dry-run]
                      [--limit N] [--force] [--stages align,activate,grpo,eval] [--run NAME]
                      [--align.learning-rate X] [--grpo.max-steps N] [--eval.modes direct] ...
  python -m train eval --ckpt runs/office/tiny-metadata/grpo/model --dataset office [--config FILE]
                      [--modes direct,thinking] [--beams 10] [--eval.test-rows N] [--best-of-n N]

``run`` does base (model + SID tokens) -> align -> activate -> GRPO -> evaluation of each stage's
model on the test split (train.pipeline). Settings: dataclass defaults < the preset (``--config``;
without it configs/train/tiny.yaml for ``--model tiny``, configs/train/qwen3-1.7b.yaml for any
other model) < flags. ``--dry-run`` prints the resolved settings of every section as JSON (a valid
preset itself) and exits without loading a model or data. ``--help`` after the command lists
every setting. Multi-GPU: ``accelerate launch --config_file configs/accelerate/zero2.yaml -m
train run ...``. Exit status: 0 done, 2 bad input (an unknown setting, missing data, ...).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from synth.errors import run_cli
from synth.settings import ConfigError, add_arguments, build, given, load_preset, section_of
from train.config import SECTIONS, EvalCommand, EvalConfig, RunConfig, load


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="align -> activate -> GRPO -> evaluation", allow_abbrev=False)
    run.add_argument("--config", default=None, help="preset file (default: configs/train/tiny.yaml for "
                                                     "--model tiny, configs/train/qwen3-1.7b.yaml otherwise)")
    run.add_argument("--dry-run", action="store_true", help="print the resolved settings as JSON and exit")
    add_arguments(run, RunConfig)
    for name, cls in SECTIONS.items():
        if name != "run":
            add_arguments(run, cls, name)
    ev = sub.add_parser("eval", help="evaluate one checkpoint", allow_abbrev=False)
    ev.add_argument("--config", default=None, help="preset file whose eval section to use")
    add_arguments(ev, EvalCommand)
    add_arguments(ev, EvalConfig, "eval")
    return ap


def parse(argv) -> tuple[str, str | None, bool, dict[str, dict]]:
    """(command, --config, --dry-run, section -> the flags given for it)."""
    ns, unknown = parser().parse_known_args(argv)
    opts = vars(ns)
    cmd, config, dry = opts.pop("cmd"), opts.pop("config"), opts.pop("dry_run", False)
    if unknown:
        raise ConfigError(f"unknown flag {unknown[0]!r}: `python -m train {cmd} --help` lists the settings")
    rest = argparse.Namespace(**opts)
    return cmd, config, dry, {name: given(rest, None if name == "run" else name) for name in SECTIONS}


def cmd_run(config: str | None, dry: bool, flags: dict[str, dict]) -> int:
    cfg, preset = load(config, flags)
    if dry:
        print(f"preset: {preset}; variant: {cfg.variant} (S1: alignment tasks, S2: + teacher corpus, "
              f"S3: + general data); GRPO step: {cfg.grpo.prompts_per_step} prompts x {cfg.grpo.num_generations} "
              f"completions", file=sys.stderr)
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    from train.pipeline import run_stages

    run_stages(cfg, preset)
    return 0


def cmd_eval(config: str | None, flags: dict[str, dict], argv) -> int:
    layers = [(f"{config} [eval]", section_of(load_preset(config), "eval", config))] if config else []
    cfg = build(EvalConfig, *layers, ("command line", flags["eval"]))
    cmd = build(EvalCommand, ("command line", flags["run"]))
    cmd.check(cfg)
    from train.pipeline import evaluate_one

    evaluate_one(cmd, cfg, argv)
    return 0


def _main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cmd, config, dry, flags = parse(argv)
    return cmd_run(config, dry, flags) if cmd == "run" else cmd_eval(config, flags, argv)


def main(argv=None) -> int:
    from train.checkpoints import EXIT_PREEMPTED, Preempted

    try:
        return run_cli(_main, argv)
    except Preempted as e:  # SIGTERM/SIGINT: a checkpoint was saved; the same command resumes
        print(f"interrupted: {e}", file=sys.stderr)
        return EXIT_PREEMPTED


if __name__ == "__main__":
    sys.exit(main())
