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

Several processes (``accelerate launch``, WORLD_SIZE > 1): ``evaluate_checkpoint`` runs on every one, each
decodes a share of the test rows' batches, and every process gets the metrics of all rows, in their
order (``ranked_lists``); the pipeline writes them from the main process.
"""
from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

from synth.data.combined import of_part
from train.config import EvalConfig

log = logging.getLogger(__name__)


def evaluate_model(model, tok, rows: list[dict], sids: dict[str, list[str]], mode: str, cfg: EvalConfig,
                   sharded: bool = False) -> dict:
    """Metrics of ``model`` on rows ``{"prompt", "target"}`` (target = item id) in ``mode``; rows that also
    carry ``"slices"`` (``train.metrics.slice_labels``) add the metrics per slice under ``"slices"``.
    ``sharded``: every process calls this with the same rows and decodes its share of them
    (``ranked_lists``); all get the metrics of all rows."""
    from train.decoding import DecodeConfig
    from train.metrics import best_rank, rank_of, ranking_metrics, sliced_metrics, targets_sharing
    from train.trie import SidTrie

    model.eval()
    dcfg = DecodeConfig(num_beams=cfg.num_beams, num_return=cfg.num_beams, mode=mode,
                        max_think_tokens=cfg.max_think_tokens, batch_size=cfg.batch_size,
                        best_of_n=cfg.best_of_n if mode == "thinking" else 1)
    t0 = time.time()
    score = best_rank if dcfg.best_of_n > 1 else rank_of
    ranks: list[int | None] = [None] * len(rows)
    domains = domain_groups(rows)
    for domain, idx in domains.items():  # one group (None) unless the rows come from a combined dataset
        trie = SidTrie.from_sids(of_part(sids, domain), tok)
        sid_of = trie.sequences  # THE hit rule: by SID (module docstring)
        lists = ranked_lists(model, tok, [rows[i]["prompt"] for i in idx], trie, dcfg, sharded=sharded)
        for i, ls in zip(idx, lists):
            ranks[i] = score(rows[i]["target"], ls, by=sid_of)
    out = ranking_metrics(ranks)
    if None not in domains:
        out["domains"] = {d: ranking_metrics([ranks[i] for i in idx]) for d, idx in domains.items()}
    if rows and all("slices" in r for r in rows):  # rows without slices (older callers): no "slices" entry
        out["slices"] = sliced_metrics(ranks, [r["slices"] for r in rows])
    sid_of = {i: tuple(t) for i, t in sids.items()}
    out["targets_sharing_sid"] = targets_sharing([r["target"] for r in rows], sid_of)
    out["hit"] = "sid"
    out["wall_s"] = round(time.time() - t0, 1)
    if dcfg.best_of_n > 1:
        out["best_of_n"] = dcfg.best_of_n
    return out


def domain_groups(rows: list[dict]) -> dict[str | None, list[int]]:
    """Row indices by ``"domain"`` (rows of a combined dataset: ``tasks.rec_rows``), in first-seen order;
    ``{None: all}`` when the rows carry none. Each domain is ranked over its own items' SIDs (its part of
    the one SID space), as its single-domain run ranks them: evaluation on every part separately."""
    if not rows or "domain" not in rows[0]:
        return {None: list(range(len(rows)))}
    out: dict[str | None, list[int]] = {}
    for i, r in enumerate(rows):
        out.setdefault(r["domain"], []).append(i)
    return out


def decode_batches(tok, prompts: list[str], dcfg) -> list[list[int]]:
    """The batches (row indices) one process decodes ``prompts`` in: sorted by prompt length, ``batch_size``
    at a time, as ``train.decoding`` forms them (the SID beam search in direct mode, the reasoning step
    in thinking mode)."""
    from train.decoding import THINK_START, encode, with_suffix
    from train.templates import EMPTY_THINK

    suffix = EMPTY_THINK if dcfg.mode == "direct" else THINK_START
    lengths = [len(ids) for ids in encode(tok, [with_suffix(p, suffix) for p in prompts])]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    return [order[s: s + dcfg.batch_size] for s in range(0, len(order), dcfg.batch_size)]


def ranked_lists(model, tok, prompts: list[str], trie, dcfg, sharded: bool = False) -> list:
    """Per prompt, ``train.decoding.recommend``'s ranked item ids (``recommend_best_of_n``'s lists with
    best-of-N), in the order of ``prompts``.

    ``sharded`` (every process calls it with the same prompts, ``torch.distributed`` initialised): the
    batches one process would decode (``decode_batches``) are dealt out over the processes
    (``train.dist.shard``); each decodes its batches, in length order, so ``train.decoding`` re-forms
    exactly those batches (its sort is stable); the lists are gathered (``all_gather_object``) and put
    back in order (``train.dist.unshard``). So a direct-mode evaluation decodes the same batches, with the
    same padding, as one process does: the same lists, bit for bit. In thinking mode the reasoning
    batches are the same; the beam search after it batches a process's rows by their reasoning length
    (padding may then differ from one process's); best-of-N samples from each process's own generator."""
    from train.decoding import recommend, recommend_best_of_n
    from train.dist import all_gather, shard, unshard

    decode = recommend_best_of_n if dcfg.best_of_n > 1 else recommend
    if not sharded:
        return decode(model, tok, prompts, trie, dcfg)
    import torch.distributed as td

    batches = decode_batches(tok, prompts, dcfg)
    mine = shard(batches, td.get_rank(), td.get_world_size())
    flat = decode(model, tok, [prompts[i] for b in mine for i in b], trie, dcfg)
    got, at = [], 0
    for b in mine:
        got.append(flat[at: at + len(b)])
        at += len(b)
    digest = hashlib.sha256("\0".join(prompts).encode()).hexdigest()  # the same rows on every process?
    gathered = all_gather((digest, got))
    if len({d for d, _ in gathered}) != 1:
        raise RuntimeError("sharded evaluation: the processes hold different rows (their test rows must not "
                           "depend on the process)")
    out: list = [None] * len(prompts)
    for b, lists in zip(batches, unshard([g for _, g in gathered])):
        for i, ls in zip(b, lists):
            out[i] = ls
    return out


def evaluate_checkpoint(ckpt: str | Path, rows_fn, sids: dict[str, list[str]], modes, cfg: EvalConfig,
                        sharded: bool | None = None) -> dict:
    """Load ``ckpt`` and evaluate it in each mode; ``rows_fn(tok)`` renders the test rows. ``sharded``
    (default: whenever WORLD_SIZE > 1, ``torch.distributed`` then initialised if need be): every process
    calls this and decodes a share of the rows (``ranked_lists``); every process returns the results."""
    from train.dist import init_group
    from train.model import device, load_model

    if sharded is None:
        sharded = init_group()
    model, tok = load_model(ckpt)
    model.to(device())
    rows = rows_fn(tok)
    results = {}
    for mode in modes:
        log.info("evaluating %s in %s mode on %d rows%s", ckpt, mode, len(rows),
                 " (a share of them on each process)" if sharded else "")
        results[mode] = evaluate_model(model, tok, rows, sids, mode, cfg, sharded=sharded)
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
