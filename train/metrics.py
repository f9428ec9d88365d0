"""THE ranking metrics: Recall@K and NDCG@K over full-item rankings (one target per row).

rank = 0-based position of the first beam equal to the target (None = miss: not in the list, or an
invalid output, which constrained decoding makes impossible anyway). With one relevant item the
ideal DCG is 1, so NDCG@K = 1 / log2(rank + 2) when rank < K, else 0; Recall@K = [rank < K].
Both are averaged over rows.

What "equal" means is THE hit rule, one argument ``by``:
- ``by=None``: entries are compared as they are (item ids: the baselines, which rank item ids);
- ``by=sid_of`` (item id -> its SID, e.g. ``SidTrie.sequences``): the ranked items and the target are
  compared by SID, so a beam whose SID equals the target's SID is a hit, as in the released
  evaluation (a ranked list of SIDs; the rank of the target's SID). Entries whose SID already
  appeared higher up are dropped first. With unique SIDs this gives exactly the item-id ranks; with
  shared SIDs (the publishers' reference SIDs) a target can be hit through the item its SID names.

THE slices of a test row (``SLICES``), so every model's metrics can be read where they differ most:
- ``cold``: the target appears nowhere in the train split (no train target, no train history item):
  the model never saw it in a sequence;
- ``repeat``: the target is in the row's own history (the user comes back to an item).
A row may be in both or neither. ``slice_labels`` labels the rows of a split, ``sliced_metrics`` gives
``ranking_metrics`` per slice (``{"n": 0}`` for a slice without rows); every evaluation (the LLM's
``train.evaluate``, the baselines) records it as ``"slices"`` beside the overall metrics.
"""
from __future__ import annotations

import math
from typing import Hashable, Iterable, Mapping, Sequence

SLICES = ("cold", "repeat")


def rank_of(target: Hashable, ranked: Sequence[Hashable], by: Mapping | None = None) -> int | None:
    """0-based rank of the first entry of ``ranked`` equal to ``target`` (by SID when ``by`` maps entries
    to SIDs; see the module docstring); None when absent."""
    if by is not None:
        target = by[target]
        ranked = list(dict.fromkeys(by[r] for r in ranked))  # the ranked SIDs, each once
    for i, r in enumerate(ranked):
        if r == target:
            return i
    return None


def best_rank(target: Hashable, rankings: Sequence[Sequence[Hashable]], by: Mapping | None = None) -> int | None:
    """Best-of-N: the best (lowest) rank of ``target`` over N ranked lists (the paper's Figure 4)."""
    ranks = [r for r in (rank_of(target, lst, by) for lst in rankings) if r is not None]
    return min(ranks) if ranks else None


def targets_sharing(targets: Sequence[Hashable], by: Mapping) -> int:
    """How many of ``targets`` have a SID (``by``: item -> SID) that another item of ``by`` also has."""
    counts: dict = {}
    for sid in by.values():
        counts[sid] = counts.get(sid, 0) + 1
    return sum(1 for t in targets if counts[by[t]] > 1)


def ndcg_at(rank: int | None, k: int) -> float:
    return 1.0 / math.log2(rank + 2) if rank is not None and rank < k else 0.0


def ranking_metrics(ranks: Sequence[int | None], ks: Sequence[int] = (5, 10)) -> dict:
    """``{"recall@5", "ndcg@5", "recall@10", "ndcg@10", "n"}`` (keys follow ``ks``) averaged over rows."""
    n = len(ranks)
    if n == 0:
        raise ValueError("ranking_metrics: no rows to score")
    bad = [r for r in ranks if r is not None and (not isinstance(r, int) or r < 0)]
    if bad:
        raise ValueError(f"ranking_metrics: ranks must be None or ints >= 0, got {bad[:3]}")
    out: dict = {}
    for k in ks:
        out[f"recall@{k}"] = sum(1 for r in ranks if r is not None and r < k) / n
        out[f"ndcg@{k}"] = sum(ndcg_at(r, k) for r in ranks) / n
    out["n"] = n
    return out


def slice_labels(dataset, split: str = "test") -> list[tuple[str, ...]]:
    """The slices (``SLICES``) each row of ``split`` belongs to, in file order (``dataset.samples(split)``).

    ``dataset`` is a ``synth.data.dataset.Dataset``; the train split is streamed once for the item ids
    it holds, then ``split`` once. Rows with the same labels share one tuple."""
    seen: set[str] = set()
    for s in dataset.samples("train"):
        seen.add(s.target)
        seen.update(s.history)
    shared: dict[tuple[str, ...], tuple[str, ...]] = {}
    out = []
    for s in dataset.samples(split):
        labels = tuple(name for name, member in zip(SLICES, (s.target not in seen, s.target in s.history))
                       if member)
        out.append(shared.setdefault(labels, labels))
    return out


def sliced_metrics(ranks: Sequence[int | None], labels: Iterable[Sequence[str]], ks: Sequence[int] = (5, 10)) -> dict:
    """``{slice: ranking_metrics of its rows (with "n")}`` for every slice of ``SLICES``; a slice with no
    rows is ``{"n": 0}``. ``labels[i]`` (from ``slice_labels``) are the slices of the row ranked ``ranks[i]``."""
    members: dict[str, list[int | None]] = {name: [] for name in SLICES}
    for rank, row_labels in zip(ranks, labels, strict=True):
        for name in row_labels:
            if name not in members:
                raise ValueError(f"sliced_metrics: unknown slice {name!r}; expected one of {SLICES}")
            members[name].append(rank)
    return {name: ranking_metrics(rs, ks) if rs else {"n": 0} for name, rs in members.items()}
