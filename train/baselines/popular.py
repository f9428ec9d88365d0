"""Most-popular baseline: one ranked list (train-split popularity) for every user.

Popularity counts each (user, item) interaction of the train split once. The train rows are
sliding-window prefixes of one sequence per user (``[a] -> b``, ``[a, b] -> c``, ...), so counting
history items row by row would count early items of long sequences many times; instead, the items
of a user's train rows (histories and targets) are pooled into a set. Ties break by the order of
``items.jsonl``, so the list is deterministic. Only the train split is read: valid/test targets are
never seen.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass

from synth.data.dataset import Dataset
from train.baselines import KS, baseline_record, evaluate_rankings
from train.metrics import slice_labels

log = logging.getLogger(__name__)


@dataclass
class PopularConfig:
    top_k: int = max(KS)  # length of the ranked list handed to the metrics


def popularity(ds: Dataset) -> Counter:
    """item id -> number of train users who interacted with it (history or target)."""
    per_user: dict[str, set[str]] = {}
    for s in ds.samples("train"):
        per_user.setdefault(s.user_id, set()).update([*s.history, s.target])
    counts: Counter = Counter()
    for items in per_user.values():
        counts.update(items)
    return counts


def ranked_items(ds: Dataset, counts: Counter) -> list[str]:
    """Every item, most popular first; ties by item-table order."""
    order = {iid: n for n, iid in enumerate(ds.items)}
    return sorted(ds.items, key=lambda iid: (-counts.get(iid, 0), order[iid]))


def run(ds: Dataset, cfg: PopularConfig | None = None) -> dict:
    """Evaluate most-popular on valid and test; returns the metrics.json record."""
    cfg = cfg or PopularConfig()
    t0 = time.time()
    counts = popularity(ds)
    top = ranked_items(ds, counts)[: cfg.top_k]
    counted = time.time() - t0
    result = {}
    for split in ("valid", "test"):
        targets = [s.target for s in ds.samples(split)]
        labels = slice_labels(ds, split) if split == "test" else None
        result[split] = evaluate_rankings(targets, [top] * len(targets), labels=labels)
    log.info("popular on %s: test %s", ds.name, result["test"])
    return baseline_record(
        ds, "popular", cfg, result["test"], result["valid"], t0, counted,
        popularity={"counted": "distinct (user, item) pairs of the train split, histories and targets",
                    "top": [[iid, counts.get(iid, 0)] for iid in top]})
