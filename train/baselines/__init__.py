"""Reference recommenders evaluated in the same harness as the LLM: SASRec, most-popular and TIGER.

Both rank every item of the dataset for every test sample, keep the top ``max(ks)`` item ids and
hand the rank of the target in that list to ``train.metrics.rank_of`` / ``ranking_metrics`` (and the
test rows' slices to ``sliced_metrics``): the very functions ``make eval`` uses for the LLM, so a
baseline row and an LLM row of the report are computed by one piece of code. A run writes
``runs/<dataset>/baseline-<model>/metrics.json``, the record of every run (``train.records``:
``stages -> <model> -> "direct" -> metrics``, data hashes, config, provenance), plus ``valid`` (the
validation metrics) and what the model adds (``training``, ``popularity``, ...); ``train.report``
reads it as it reads the LLM runs.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

from synth.data.dataset import OWN, Dataset, SidSet
from train import records
from train.config import setting

KS = (5, 10)
MODELS = ("sasrec", "popular", "tiger")


@dataclass
class TrainedBaselineConfig:
    """What every trained baseline (SASRec, TIGER) sets alike: the epoch bounds, where it runs, its seed."""

    epochs: int = setting(200, "upper bound on epochs; early stopping usually ends far sooner")
    min_epochs: int = setting(1, "epochs before early stopping may end training")
    threads: int = setting(1, "CPU threads (a model this small is slower with more on a shared CPU)")
    device: str = setting("cpu", "cpu or cuda")
    seed: int = setting(42, "seed of initialisation and shuffling")


def baseline_record(ds: Dataset, model: str, config, test: dict, valid: dict, started: float,
                    train_wall: float, sid_set: SidSet | None = None, **extra) -> dict:
    """THE metrics.json record of a baseline run (``train.records``), its provenance included. A model
    that generates SIDs (TIGER: constrained beam search, hits by SID as the LLM's evaluation counts them)
    passes its ``sid_set``: hashed as the input ``sids`` and recorded as the LLM runs record it, and a
    set other than the own one names the run ``baseline-<model>@<set>`` (``run_name``)."""
    cfg = asdict(config)
    inputs = {**records.dataset_files(ds.path), **({"sids": sid_set.path} if sid_set else {})}
    prov = records.run_provenance(cfg, inputs)
    return records.record(kind="baseline", model=model, dataset=ds.name,
                          run=run_name(model, sid_set.name if sid_set else None),
                          data=records.data_block(ds.path, prov), config=cfg, prov=prov,
                          sid_set=records.sid_set_block(sid_set, prov) if sid_set else None,
                          stages={model: {"direct": test}}, train_wall_s={model: round(train_wall, 3)},
                          wall_time_s=round(time.time() - started, 3), valid=valid, **extra)


def evaluate_rankings(targets: Sequence[str], rankings: Iterable[Sequence[str]], ks=KS,
                      labels: Sequence[Sequence[str]] | None = None) -> dict:
    """THE metrics of ``make eval`` over ranked item-id lists (best first). Baselines use no SIDs, so a
    hit is the target's item id (``rank_of`` with ``by=None``; the LLM's evaluation passes ``by`` = its
    item -> SID map), and their records carry ``sid_set: None``. With ``labels`` (each row's slices,
    ``train.metrics.slice_labels``) the metrics per slice are added under ``"slices"``, as the LLM's."""
    from train.metrics import rank_of, ranking_metrics, sliced_metrics

    ranks = [rank_of(t, ranked, by=None) for t, ranked in zip(targets, rankings, strict=True)]
    out = ranking_metrics(ranks, ks=ks)
    if labels is not None:
        out["slices"] = sliced_metrics(ranks, labels, ks=ks)
    return out


def run_name(model: str, sid_set: str | None = None) -> str:
    """``baseline-<model>``; with a SID set other than the own one, ``@<set>`` after it
    (``baseline-tiger@reference``), as ``train.pipeline.run_name`` names the LLM runs."""
    return f"baseline-{model}" + ("" if sid_set in (None, OWN) else f"@{sid_set}")


def run_dir(runs_dir: str | os.PathLike, dataset: str, model: str, sid_set: str | None = None) -> Path:
    return Path(runs_dir) / dataset / run_name(model, sid_set)


def write_metrics(out_dir: Path, record: dict) -> Path:
    return records.write(Path(out_dir) / "metrics.json", record)
