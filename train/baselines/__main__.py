"""python -m train.baselines --model sasrec|popular|tiger --dataset D [--data-dir data] [--runs-dir runs]
[--sids own|reference|PATH (tiger)] [--seed N] [--epochs N] [--patience N] [--device cpu|cuda] [--threads N]
[... every field of the model's config: SASRecConfig (sasrec, popular) or TigerConfig (tiger)]

Trains (SASRec, TIGER) or counts (most-popular) on data/<D>/train.jsonl, early-stops on valid, scores
test with the metrics of ``make eval`` and writes runs/<D>/baseline-<model>/metrics.json (TIGER with
SIDs other than the own ones: baseline-tiger@<set>/). The flags are those of the chosen model's config
(``--help`` with ``--model`` lists them; without it, every model's).
Exit status: 0 done, 2 bad input (a missing dataset or SID set, an unknown flag or one of another model).
"""
from __future__ import annotations

import argparse
import dataclasses
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
from train.baselines.tiger import TigerConfig
from train.config import RunConfig

# The settings dataclass of each model: its fields are the model's flags (most-popular has none of its
# own and accepts SASRec's, as it always has).
CONFIGS = {"sasrec": SASRecConfig, "popular": SASRecConfig, "tiger": TigerConfig}
OWN_ARGS = ("model", "dataset", "data_dir", "runs_dir", "sids")


def parse(argv) -> tuple[argparse.Namespace, dict]:
    """(the command's own arguments, the model settings given). The flags are those of the chosen
    model's config (a flag of another model's is an unknown flag); without a valid ``--model`` (e.g.
    ``--help`` alone) every model's are listed, each once."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--model")
    chosen = pre.parse_known_args(argv)[0].model
    ap = argparse.ArgumentParser(prog="python -m train.baselines", description=__doc__.split("\n")[0],
                                 allow_abbrev=False)
    ap.add_argument("--model", required=True, choices=MODELS)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--data-dir", default=RunConfig.data_dir)
    ap.add_argument("--runs-dir", default=RunConfig.runs_dir)
    ap.add_argument("--sids", default=None,
                    help="tiger only: SID set (SIDS): own (sids.json, default), reference or a SID map's path")
    seen: set[str] = set()
    for cls in dict.fromkeys([CONFIGS[chosen]] if chosen in CONFIGS else CONFIGS.values()):
        add_arguments(ap, cls, skip=tuple(seen))
        seen.update(f.name for f in dataclasses.fields(cls))
    ns = ap.parse_args(argv)
    if ns.sids is not None and ns.model != "tiger":
        raise ConfigError(f"--sids applies to --model tiger only ({ns.model} ranks item ids, not SIDs)")
    settings = {k: v for k, v in given(ns).items() if k not in OWN_ARGS}
    if "threads" not in settings and os.environ.get("TORCH_THREADS"):
        settings["threads"] = os.environ["TORCH_THREADS"]  # the toolkit-wide thread setting
    return ns, settings


def _main(argv: list[str] | None = None) -> int:
    args, settings = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    ds = Dataset.load(args.dataset, args.data_dir)
    cfg = build(CONFIGS[args.model], ("command line", settings))
    if cfg.device not in ("cpu", "cuda"):
        raise ConfigError(f"--device {cfg.device!r}: expected cpu or cuda")
    sid_set = None
    if args.model == "sasrec":
        from train.baselines.sasrec import run

        record = run(ds, cfg)
    elif args.model == "tiger":
        from train.baselines.tiger import run

        sid_set = ds.sid_set(args.sids)  # a missing or unknown SID set: DatasetError, exit 2
        record = run(ds, cfg, sid_set)
    else:
        from train.baselines.popular import run

        record = run(ds)
    if argv is not None:  # called from Python: name the command as given, not the host's argv
        record["command"] = record["provenance"]["command"] = records.command("train.baselines", argv)
    path = write_metrics(run_dir(args.runs_dir, args.dataset, args.model, sid_set.name if sid_set else None), record)
    print(json.dumps({"model": record["model"], "dataset": record["dataset"],
                      "test": record["stages"][args.model]["direct"], "valid": record["valid"],
                      "wall_time_s": record["wall_time_s"], "metrics": str(path)}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
