"""Combined datasets: ``office+industrial`` is one dataset made of prepared parts (the paper's Figure 3).

``make data DATASET=office+industrial`` writes ``data/office+industrial/`` in the normalized form from the
parts' folders, so every later stage (SIDs, synthesis, training, evaluation) reads it like any dataset:

- item ids are namespaced by part, ``office:B00ABC`` (an id may repeat across parts; the domain of an
  item is the part before the first ``:``, ``domain_of``), user ids likewise;
- each split is the union of the parts' splits, interleaved (one row of each part in turn), so that any
  prefix (``LIMIT=``) holds every domain;
- ``source.json`` records the parts and the sha256 of each part's files, ``stats.json`` totals and per-part counts;
- ``make sids`` then trains ONE RQ-VAE over all items (one SID space, unique across domains) and adds
  per-domain statistics (``sid_domain_stats``); the embeddings are each part's cached ones where present.

A name with ``+`` is a combination; its parts must be prepared (``make data DATASET=<part> ...``) first.
"""
from __future__ import annotations

import os
from itertools import zip_longest
from pathlib import Path

from synth.data.dataset import SPLITS, Dataset, DatasetError, Item, Sample, dataset_dir, write_dataset
from synth.io import read_json, sha256_file

PART_SEP = "+"  # office+industrial
NAMESPACE_SEP = ":"  # office:B00ABC


def parts_of(name: str) -> list[str] | None:
    """The parts of a combined dataset name (``office+industrial`` -> [office, industrial]); None for a
    plain name; a DatasetError for an empty or repeated part."""
    if PART_SEP not in name:
        return None
    parts = name.split(PART_SEP)
    if any(not p for p in parts):
        raise DatasetError(f"DATASET={name}: an empty part name (expected e.g. office+industrial)")
    if len(set(parts)) != len(parts):
        raise DatasetError(f"DATASET={name}: a part appears twice")
    return parts


def namespaced(part: str, item_id: str) -> str:
    return f"{part}{NAMESPACE_SEP}{item_id}"


def domain_of(item_id: str) -> str:
    """The part an item of a combined dataset comes from."""
    return item_id.split(NAMESPACE_SEP, 1)[0]


def of_part(by_item: dict, part: str | None) -> dict:
    """The entries of an item-keyed map (SIDs, ...) whose item belongs to ``part``; all of them for None."""
    return by_item if part is None else {i: v for i, v in by_item.items() if domain_of(i) == part}


def load_part(part: str, root: str | os.PathLike | None, combined: str) -> Dataset:
    """A prepared part, or a DatasetError naming what to run."""
    folder = dataset_dir(part, root)
    if not (folder / "items.jsonl").exists():
        raise DatasetError(
            f"DATASET={combined}: part {part!r} is not prepared ({folder}/items.jsonl not found): run "
            f"`make data DATASET={part} FROM=<its folder>` (or SOURCE=) first, then `make data DATASET={combined}`")
    return Dataset(folder)


def combine(name: str, root: str | os.PathLike | None = None) -> dict:
    """Write ``<root>/<name>/`` from the parts of ``name``; returns its stats."""
    parts = parts_of(name)
    if not parts or len(parts) < 2:
        raise DatasetError(f"DATASET={name}: a combination needs two or more parts joined by {PART_SEP!r}")
    datasets = [load_part(p, root, name) for p in parts]
    items: list[Item] = []
    for part, ds in zip(parts, datasets):
        for it in ds.items.values():
            d = it.to_dict()
            d["item_id"] = namespaced(part, it.item_id)
            items.append(Item(**d))
    splits: dict[str, list[Sample]] = {}
    for split in SPLITS:
        per_part = [[Sample(namespaced(part, s.user_id), [namespaced(part, i) for i in s.history],
                            namespaced(part, s.target)) for s in ds.samples(split)]
                    for part, ds in zip(parts, datasets)]
        splits[split] = [s for row in zip_longest(*per_part) for s in row if s is not None]
    per_part_stats = {part: read_json(ds.path / "stats.json") for part, ds in zip(parts, datasets)}
    source = {
        "kind": "combined",
        "parts": parts,
        "parts_sha256": {part: {f: sha256_file(ds.path / f) for f in ("items.jsonl", *(f"{s}.jsonl" for s in SPLITS))}
                         for part, ds in zip(parts, datasets)},
        "extra_stats": {"parts": {p: {k: st.get(k) for k in ("items", "users", *SPLITS)}
                                  for p, st in per_part_stats.items()}},
    }
    return write_dataset(dataset_dir(name, root), items, splits, source)


def dataset_parts(ds: Dataset) -> list[str] | None:
    """The parts a prepared dataset folder was combined from (its source.json), None for a plain dataset."""
    src = ds.path / "source.json"
    if not src.exists():
        return None
    doc = read_json(src)
    return list(doc["parts"]) if doc.get("kind") == "combined" else None


def part_dirs(ds: Dataset) -> list[tuple[str, Path]]:
    """(part, folder) of a combined dataset, the parts' folders beside it."""
    return [(p, ds.path.parent / p) for p in dataset_parts(ds) or []]


def sid_domain_stats(sids: dict[str, list[str]]) -> dict:
    """Per domain of a combined dataset's SIDs: items, codes used per level, and how much the domains share
    first-level codes (codes used by more than one domain; the share of each domain's items under them)."""
    by_domain: dict[str, list[list[str]]] = {}
    for iid, toks in sids.items():
        by_domain.setdefault(domain_of(iid), []).append(list(toks))
    levels = max(len(t) for t in sids.values())
    first = {d: {t[0] for t in toks} for d, toks in by_domain.items()}
    owners: dict[str, set[str]] = {}
    for d, codes in first.items():
        for c in codes:
            owners.setdefault(c, set()).add(d)
    shared = {c for c, ds in owners.items() if len(ds) > 1}
    domains = {}
    for d, toks in by_domain.items():
        domains[d] = {
            "items": len(toks),
            "codes_used_per_level": [len({t[lv] for t in toks if len(t) > lv}) for lv in range(levels)],
            "first_level_codes_shared": len(first[d] & shared),
            "items_under_shared_first_level": round(sum(t[0] in shared for t in toks) / len(toks), 4),
        }
    all_first = set(owners)
    return {"domains": domains, "first_level_codes": len(all_first), "first_level_codes_shared": len(shared),
            "first_level_jaccard": round(len(shared) / len(all_first), 4) if all_first else 0.0}
