"""THE ranking metrics: Recall@K and NDCG@K over full-item rankings (one target per row).

rank = 0-based position of the first beam equal to the target (None = miss: not in the list, or an
invalid output, which constrained decoding makes impossible anyway). With one relevant item the
ideal DCG is 1, so NDCG@K = 1 / log2(rank + 2) when rank < K, else 0; Recall@K = [rank < K].
Both are averaged over rows. Compare SID strings rather than item ids when SIDs may be shared by
several items (a beam equal to the target's SID is a hit, as in the released evaluation).
"""
from __future__ import annotations

import math
from typing import Hashable, Sequence


def rank_of(target: Hashable, ranked: Sequence[Hashable]) -> int | None:
    """0-based rank of the first entry of ``ranked`` equal to ``target``; None when absent."""
    for i, r in enumerate(ranked):
        if r == target:
            return i
    return None


def best_rank(target: Hashable, rankings: Sequence[Sequence[Hashable]]) -> int | None:
    """Best-of-N: the best (lowest) rank of ``target`` over N ranked lists (the paper's Figure 4)."""
    ranks = [r for r in (rank_of(target, lst) for lst in rankings) if r is not None]
    return min(ranks) if ranks else None


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
