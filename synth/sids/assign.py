"""Make every Semantic ID unique without lengthening it when possible.

The RQ-VAE gives each item the nearest code at every level, so similar items can
share a whole SID. Within one prefix (all levels but the last) the colliding items are
re-assigned so that no two share a last-level code, choosing the assignment of
minimum total distance between each item's last residual and its code (Hungarian
algorithm, ``scipy.optimize.linear_sum_assignment``): items that did not collide keep
their code unless moving them lets a colliding neighbour stay closer. This needs at
most ``codebook_size`` items per prefix. A prefix with more items is first balanced
the same way (each code taking at most ceil(n / K) items) and then every SID gets
extra levels numbering the items inside each remaining group (0 for items alone),
so all SIDs keep one length.

Everything here is deterministic: groups are visited in sorted order and ties are
broken by item order.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
from scipy.optimize import linear_sum_assignment


def groups_by(rows: np.ndarray) -> dict[tuple, list[int]]:
    """Row tuple -> indices of the rows equal to it, in index order."""
    out: dict[tuple, list[int]] = defaultdict(list)
    for i, row in enumerate(rows.tolist()):
        out[tuple(row)].append(i)
    return out


def collision_stats(codes: np.ndarray) -> dict:
    """How many items share a full code with another item, and in how many groups."""
    groups = [g for g in groups_by(codes).values() if len(g) > 1]
    n = len(codes)
    colliding = sum(len(g) for g in groups)
    return {
        "collision_rate": colliding / n if n else 0.0,
        "colliding_items": colliding,
        "colliding_groups": len(groups),
        "largest_group": max((len(g) for g in groups), default=1 if n else 0),
    }


def max_items_per_prefix(codes: np.ndarray, prefix_levels: int) -> int:
    """Largest number of items sharing their first ``prefix_levels`` codes."""
    if len(codes) == 0:
        return 0
    return max(len(g) for g in groups_by(codes[:, :prefix_levels]).values())


def utilisation(codes: np.ndarray, codebook_size: int) -> list[float]:
    """Distinct codes used per level / codebook size."""
    return [len(np.unique(codes[:, lv])) / codebook_size for lv in range(codes.shape[1])]


def _assign_prefix(cost: np.ndarray) -> np.ndarray:
    """Min-cost last-level codes for the items of one prefix; cost is [n, K].

    With n <= K every item gets its own code. With n > K the columns are repeated
    ceil(n / K) times so each code is used at most that often."""
    n, k = cost.shape
    reps = -(-n // k)
    tiled = np.tile(cost, (1, reps)) if reps > 1 else cost
    rows, cols = linear_sum_assignment(tiled)
    out = np.empty(n, dtype=np.int64)
    out[rows] = cols % k
    return out


def resolve_collisions(codes: np.ndarray, last_dist: np.ndarray) -> tuple[np.ndarray, dict]:
    """Unique codes for every item.

    ``codes`` is [N, L] (nearest codes), ``last_dist`` [N, K] the squared distance of
    each item's last-level residual to every last-level code. Returns the new codes
    ([N, L] when every prefix holds at most K items, [N, L + extra] otherwise) and a
    summary of what changed."""
    codes = np.asarray(codes, dtype=np.int64)
    n, levels = codes.shape
    if last_dist.shape[0] != n:
        raise ValueError(f"last_dist has {last_dist.shape[0]} rows for {n} items")
    k = last_dist.shape[1]
    out = codes.copy()
    reassigned = 0
    overflowing = 0
    by_prefix = groups_by(codes[:, :-1])
    for prefix in sorted(by_prefix):
        idx = np.asarray(by_prefix[prefix])
        last = codes[idx, -1]
        if len(np.unique(last)) == len(idx):
            continue  # no collision inside this prefix
        new = _assign_prefix(last_dist[idx])
        out[idx, -1] = new
        reassigned += int((new != last).sum())
        overflowing += int(len(idx) > k)

    extra = 0
    remaining = [g for g in groups_by(out).values() if len(g) > 1]
    if remaining:
        # More than K items under one prefix: number the items of each group with
        # base-K digits on extra levels, closest item first, so SIDs stay equal length.
        biggest = max(len(g) for g in remaining)
        extra = 1
        while k**extra < biggest:
            extra += 1
        tail = np.zeros((n, extra), dtype=np.int64)
        for g in remaining:
            ordered = sorted(g, key=lambda i: (last_dist[i, out[i, -1]], i))
            for rank, i in enumerate(ordered):
                for d in range(extra):
                    tail[i, extra - 1 - d] = (rank // k**d) % k
        out = np.concatenate([out, tail], axis=1)
    summary = {
        "items_reassigned": reassigned,
        "prefixes_over_codebook": overflowing,
        "extra_levels": extra,
    }
    if len(groups_by(out)) != n:  # an invariant of the construction above
        raise RuntimeError("collision resolution left duplicate SIDs")
    return out, summary
