"""python -m train.baselines --model sasrec|popular --dataset D [--data-dir data] [--runs-dir runs]
[--seed N] [--epochs N] [--patience N] [--device cpu|cuda] [--threads N] [... every SASRecConfig field]

Trains (SASRec) or counts (most-popular) on data/<D>/train.jsonl, early-stops on valid, scores
test with the metrics of ``make eval`` and writes runs/<D>/baseline-<model>/metrics.json.
Exit status: 0 done, 2 bad input (a missing dataset, an unknown flag).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from synth.data.dataset import Dataset
from synth.errors import run_cli
from synth.settings import ConfigError, add_arguments, build, given
from train import records
from train.baselines import MODELS, run_dir, write_metrics
from train.baselines.sasrec import SASRecConfig
from train.config import RunConfig


def parse(argv) -> tuple[argparse.Namespace, dict]:
    """(the command's own arguments, the SASRec settings given)."""
    ap = argparse.ArgumentParser(prog="python -m train.baselines", description=__doc__.split("\n")[0],
                                 allow_abbrev=False)
    ap.add_argument("--model", required=True, choices=MODELS)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--data-dir", default=RunConfig.data_dir)
    ap.add_argument("--runs-dir", default=RunConfig.runs_dir)
    add_arguments(ap, SASRecConfig)
    ns = ap.parse_args(argv)
    settings = {k: v for k, v in given(ns).items() if k not in ("model", "dataset", "data_dir", "runs_dir")}
    if "threads" not in settings and os.environ.get("TORCH_THREADS"):
        settings["threads"] = os.environ["TORCH_THREADS"]  # the toolkit-wide thread setting
    return ns, settings


def _main(argv: list[str] | None = None) -> int:
    args, settings = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    ds = Dataset.load(args.dataset, args.data_dir)
    cfg = build(SASRecConfig, ("command line", settings))
    if cfg.device not in ("cpu", "cuda"):
        raise ConfigError(f"--device {cfg.device!r}: expected cpu or cuda")
    if args.model == "sasrec":
        from train.baselines.sasrec import run

        record = run(ds, cfg)
    else:
        from train.baselines.popular import run

        record = run(ds)
    if argv is not None:  # called from Python: name the command as given, not the host's argv
        record["command"] = record["provenance"]["command"] = records.command("train.baselines", argv)
    path = write_metrics(run_dir(args.runs_dir, args.dataset, args.model), record)
    print(json.dumps({"model": record["model"], "dataset": record["dataset"],
                      "test": record["stages"][args.model]["direct"], "valid": record["valid"],
                      "wall_time_s": record["wall_time_s"], "metrics": str(path)}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
