"""Reference recommenders evaluated in the same harness as the LLM: SASRec and most-popular.

Both rank every item of the dataset for every test sample, keep the top ``max(ks)`` item ids and
hand the rank of the target in that list to ``train.metrics.rank_of`` / ``ranking_metrics``: the
very functions ``make eval`` uses for the LLM, so a baseline row and an LLM row of the report are
computed by one piece of code. A run writes ``runs/<dataset>/baseline-<model>/metrics.json``:

    {"model": "sasrec", "kind": "baseline", "dataset": "office",
     "data": {fingerprint of the data folder: path, stats, sha256 of each file read},
     "stages": {"sasrec": {"direct": {"recall@5", "ndcg@5", "recall@10", "ndcg@10", "n"}}},
     "valid": {...}, "config": {...}, "training": {...}, "seed": 42, "wall_time_s": 12.3}

which has the shape of the LLM runs' metrics.json (``stages -> stage -> mode -> metrics``), so
``train.report`` reads both the same way.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

from synth.data.dataset import SPLITS, Dataset
from synth.io import sha256_file, write_json

KS = (5, 10)
MODELS = ("sasrec", "popular")


def data_fingerprint(ds: Dataset) -> dict:
    """What a run was trained and tested on: enough to tell two data folders apart."""
    files = ["items.jsonl", *(f"{s}.jsonl" for s in SPLITS)]
    stats_path = ds.path / "stats.json"
    return {
        "name": ds.name,
        "path": str(ds.path),
        "stats": ds.stats() if stats_path.exists() else {},
        "sha256": {f: sha256_file(ds.path / f) for f in files if (ds.path / f).exists()},
    }


def evaluate_rankings(targets: Sequence[str], rankings: Iterable[Sequence[str]], ks=KS) -> dict:
    """THE metrics of ``make eval`` over ranked item-id lists (best first)."""
    from train.metrics import rank_of, ranking_metrics

    ranks = [rank_of(t, ranked) for t, ranked in zip(targets, rankings, strict=True)]
    return ranking_metrics(ranks, ks=ks)


def run_dir(runs_dir: str | os.PathLike, dataset: str, model: str) -> Path:
    return Path(runs_dir) / dataset / f"baseline-{model}"


def write_metrics(out_dir: Path, record: dict) -> Path:
    path = Path(out_dir) / "metrics.json"
    write_json(path, record)
    return path
