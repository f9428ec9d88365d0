"""python -m train.baselines --model sasrec|popular --dataset D [--data-dir data] [--runs-dir runs]
[--seed N] [--epochs N] [--device cpu|cuda] [--threads N]

Trains (SASRec) or counts (most-popular) on data/<D>/train.jsonl, early-stops on valid, scores
test with the metrics of ``make eval`` and writes runs/<D>/baseline-<model>/metrics.json.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from synth.data.dataset import Dataset, DatasetError
from train.baselines import MODELS, run_dir, write_metrics


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.baselines", description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, choices=MODELS)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--data-dir", default=os.environ.get("DATA_DIR", "data"))
    ap.add_argument("--runs-dir", default=os.environ.get("RUNS_DIR", "runs"))
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--epochs", type=int, default=None, help="SASRec: upper bound on epochs")
    ap.add_argument("--patience", type=int, default=None, help="SASRec: early-stopping patience")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=int(os.environ.get("TORCH_THREADS", 1)))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        ds = Dataset.load(args.dataset, args.data_dir)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.model == "sasrec":
        from train.baselines.sasrec import SASRecConfig, run

        overrides = {k: v for k, v in (("epochs", args.epochs), ("patience", args.patience)) if v is not None}
        record = run(ds, SASRecConfig(seed=args.seed, device=args.device, threads=args.threads, **overrides))
    else:
        from train.baselines.popular import run

        record = run(ds, seed=args.seed)
    record["command"] = "python -m train.baselines " + " ".join(sys.argv[1:] if argv is None else argv)
    path = write_metrics(run_dir(args.runs_dir, args.dataset, args.model), record)
    print(json.dumps({"model": record["model"], "dataset": record["dataset"],
                      "test": record["stages"][args.model]["direct"], "valid": record["valid"],
                      "wall_time_s": record["wall_time_s"], "metrics": str(path)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
