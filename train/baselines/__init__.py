"""Reference recommenders evaluated in the same harness as the LLM: SASRec and most-popular.

Both rank every item of the dataset for every test sample, keep the top ``max(ks)`` item ids and
hand the rank of the target in that list to ``train.metrics.rank_of`` / ``ranking_metrics``: the
very functions ``make eval`` uses for the LLM, so a baseline row and an LLM row of the report are
computed by one piece of code. A run writes ``runs/<dataset>/baseline-<model>/metrics.json``,
the record of every run (``train.records``: ``stages -> <model> -> "direct" -> metrics``, data
hashes, config, provenance), plus ``valid`` (the validation metrics) and what the model adds
(``training``, ``popularity``, ...); ``train.report`` reads it as it reads the LLM runs.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Sequence

from synth.data.dataset import Dataset
from train import records

KS = (5, 10)
MODELS = ("sasrec", "popular")


def baseline_record(ds: Dataset, model: str, config, test: dict, valid: dict, started: float,
                    train_wall: float, **extra) -> dict:
    """THE metrics.json record of a baseline run (``train.records``), its provenance included."""
    cfg = asdict(config)
    prov = records.run_provenance(cfg, records.dataset_files(ds.path))
    return records.record(kind="baseline", model=model, dataset=ds.name, run=f"baseline-{model}",
                          data=records.data_block(ds.path, prov), config=cfg, prov=prov,
                          stages={model: {"direct": test}}, train_wall_s={model: round(train_wall, 3)},
                          wall_time_s=round(time.time() - started, 3), valid=valid, **extra)


def evaluate_rankings(targets: Sequence[str], rankings: Iterable[Sequence[str]], ks=KS) -> dict:
    """THE metrics of ``make eval`` over ranked item-id lists (best first). Baselines use no SIDs, so a
    hit is the target's item id (``rank_of`` with ``by=None``; the LLM's evaluation passes ``by`` = its
    item -> SID map), and their records carry ``sid_set: None``."""
    from train.metrics import rank_of, ranking_metrics

    ranks = [rank_of(t, ranked, by=None) for t, ranked in zip(targets, rankings, strict=True)]
    return ranking_metrics(ranks, ks=ks)


def run_dir(runs_dir: str | os.PathLike, dataset: str, model: str) -> Path:
    return Path(runs_dir) / dataset / f"baseline-{model}"


def write_metrics(out_dir: Path, record: dict) -> Path:
    return records.write(Path(out_dir) / "metrics.json", record)
