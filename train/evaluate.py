"""Evaluation driver: THE recommendation prompt -> constrained decoding -> Recall/NDCG@5/10.

Full-item ranking over every item of the dataset (the trie holds all SIDs, even with --limit).
A hit is counted by SID, as the released evaluation does: the beams form a ranked list of SIDs and
the target's rank is that of its SID (``train.metrics.rank_of`` with ``by`` = the trie's item -> SID
map). With the project's own SIDs (unique) this is the item-id rank; with the publishers' reference
SIDs a target that shares its SID with another item is hit when that SID is decoded.
Results are ``{mode: {recall@5, ndcg@5, recall@10, ndcg@10, n, targets_sharing_sid, hit, wall_s}}``
per checkpoint (``targets_sharing_sid``: test targets whose SID another item also has; ``hit``:
"sid"), plus ``slices`` when the rows carry theirs (``tasks.rec_rows`` does): ``{"cold": {..., "n"},
"repeat": {..., "n"}}`` (``train.metrics.sliced_metrics``), kept in the run's metrics.json
(``train.records``). The direct mode after align is the non-reasoning SID recommender (the reference
that shows what reasoning adds).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from train.config import EvalConfig

log = logging.getLogger(__name__)


def evaluate_model(model, tok, rows: list[dict], sids: dict[str, list[str]], mode: str, cfg: EvalConfig) -> dict:
    """Metrics of ``model`` on rows ``{"prompt", "target"}`` (target = item id) in ``mode``; rows that also
    carry ``"slices"`` (``train.metrics.slice_labels``) add the metrics per slice under ``"slices"``."""
    from train.decoding import DecodeConfig, recommend, recommend_best_of_n
    from train.metrics import best_rank, rank_of, ranking_metrics, sliced_metrics, targets_sharing
    from train.trie import SidTrie

    trie = SidTrie.from_sids(sids, tok)
    model.eval()
    dcfg = DecodeConfig(num_beams=cfg.num_beams, num_return=cfg.num_beams, mode=mode,
                        max_think_tokens=cfg.max_think_tokens, batch_size=cfg.batch_size,
                        best_of_n=cfg.best_of_n if mode == "thinking" else 1)
    prompts = [r["prompt"] for r in rows]
    t0 = time.time()
    sid_of = trie.sequences  # THE hit rule: by SID (module docstring)
    if dcfg.best_of_n > 1:
        lists = recommend_best_of_n(model, tok, prompts, trie, dcfg)
        ranks = [best_rank(r["target"], ls, by=sid_of) for r, ls in zip(rows, lists)]
    else:
        ranked = recommend(model, tok, prompts, trie, dcfg)
        ranks = [rank_of(r["target"], rk, by=sid_of) for r, rk in zip(rows, ranked)]
    out = ranking_metrics(ranks)
    if rows and all("slices" in r for r in rows):  # rows without slices (older callers): no "slices" entry
        out["slices"] = sliced_metrics(ranks, [r["slices"] for r in rows])
    out["targets_sharing_sid"] = targets_sharing([r["target"] for r in rows], sid_of)
    out["hit"] = "sid"
    out["wall_s"] = round(time.time() - t0, 1)
    if dcfg.best_of_n > 1:
        out["best_of_n"] = dcfg.best_of_n
    return out


def evaluate_checkpoint(ckpt: str | Path, rows_fn, sids: dict[str, list[str]], modes, cfg: EvalConfig) -> dict:
    """Load ``ckpt`` and evaluate it in each mode; ``rows_fn(tok)`` renders the test rows."""
    from train.model import device, load_model

    model, tok = load_model(ckpt)
    model.to(device())
    rows = rows_fn(tok)
    results = {}
    for mode in modes:
        log.info("evaluating %s in %s mode on %d rows", ckpt, mode, len(rows))
        results[mode] = evaluate_model(model, tok, rows, sids, mode, cfg)
        log.info("%s %s: %s", Path(ckpt).parent.name, mode, results[mode])
    return results


def format_table(metrics: dict) -> str:
    """A markdown table of metrics.json (stage x mode); Recall/NDCG@10 per slice (with its n) where recorded."""
    from train.metrics import SLICES

    def at10(m: dict, name: str) -> str:  # "R@10 | N@10 | n" of a slice; — where absent or empty
        sl = (m.get("slices") or {}).get(name) or {}
        if "recall@10" not in sl:
            return f"— | — | {sl.get('n', '—')}"
        return f"{sl['recall@10']:.4f} | {sl['ndcg@10']:.4f} | {sl['n']}"

    slice_head = "".join(f" Recall@10 {s} | NDCG@10 {s} | n {s} |" for s in SLICES)
    lines = ["| stage | mode | n | Recall@5 | NDCG@5 | Recall@10 | NDCG@10 |" + slice_head
             + " targets sharing a SID | eval s |",
             "|---|---|---|---|---|---|---|" + "---|---|---|" * len(SLICES) + "---|---|"]
    for stage, modes in metrics.get("stages", {}).items():
        for mode, m in modes.items():
            if not m:
                continue
            lines.append(f"| {stage} | {mode} | {m['n']} | {m['recall@5']:.4f} | {m['ndcg@5']:.4f} | "
                         f"{m['recall@10']:.4f} | {m['ndcg@10']:.4f} | "
                         + "".join(f"{at10(m, s)} | " for s in SLICES)
                         + f"{m.get('targets_sharing_sid', '')} | {m.get('wall_s', '')} |")
    sid_set = metrics.get("sid_set")
    if isinstance(sid_set, dict):
        lines.append(f"\nSIDs: {sid_set.get('name')} ({sid_set.get('file')}, sha256 {str(sid_set.get('sha256'))[:12]}); "
                     "a hit is the target's SID among the beams")
    return "\n".join(lines)
