"""A small synthetic dataset (items, splits, sids.json) for the engine tests."""
from __future__ import annotations

import json
import random
from pathlib import Path

from synth.data.dataset import Item, Sample, write_dataset

NOUNS = ["stapler", "notebook", "pencil", "marker", "binder", "folder", "envelope", "calculator",
         "scissors", "eraser", "highlighter", "clipboard", "tape", "ruler", "sharpener", "label"]
ADJS = ["crimson", "heavy", "compact", "glossy", "recycled", "ergonomic", "magnetic", "spiral",
        "waterproof", "silent", "vintage", "neon"]


def make_dataset(root: Path, name: str = "tiny", n_items: int = 24, n_train: int = 24, seed: int = 0) -> Path:
    rng = random.Random(seed)
    items, seen = [], set()
    while len(items) < n_items:
        title = f"{rng.choice(ADJS).title()} {rng.choice(ADJS).title()} {rng.choice(NOUNS).title()} {len(items) * 7 + 3}X"
        if title in seen:
            continue
        seen.add(title)
        items.append(Item(item_id=f"I{len(items):03d}", title=title,
                          description=f"A {title.split()[2].lower()} for the office. Reliable and simple to use. "
                                      f"Model code {len(items) * 7 + 3}X.",
                          brand=rng.choice(["Acme", "Globex", "Initech"]), categories=["Office Products"]))
    ids = [it.item_id for it in items]
    train = []
    for u in range(n_train):
        hist = rng.sample(ids, rng.randint(2, 6))
        target = rng.choice([i for i in ids if i not in hist])
        train.append(Sample(f"U{u:03d}", hist, target))
    valid = [Sample("U900", ids[:3], ids[3])]
    out = root / name
    write_dataset(out, items, {"train": train, "valid": valid, "test": valid}, {"source": "synthetic test"})
    sids = {iid: [f"<a_{k % 4}>", f"<b_{k // 4 % 6}>", f"<c_{k}>"] for k, iid in enumerate(ids)}
    (out / "sids.json").write_text(json.dumps(sids), encoding="utf-8")
    return out


KINDS = ["Drill", "Wrench", "Hammer", "Saw", "Pliers", "Level", "Sander", "Clamp", "Chisel", "Screwdriver",
         "Toolbox", "Ladder", "Flashlight", "Tape Measure", "Glue Gun"]
BRANDS = ["Dewalt", "Makita", "Bosch", "Stanley", "Ryobi"]


def make_sequential_domain(root: Path, name: str = "tools", n_items: int = 150, n_users: int = 400,
                           seed: int = 0) -> Path:
    """A second small domain with structure a recommender can learn (only Office is in ../shared/data): items
    of a few kinds and brands, and users who buy items of one kind in catalogue order (now and then another
    kind), so the next item follows from the history. Item ids I000... repeat those of ``make_dataset``."""
    rng = random.Random(seed)
    items = []
    for k in range(n_items):
        kind, brand = KINDS[k % len(KINDS)], BRANDS[(k // len(KINDS)) % len(BRANDS)]
        items.append(Item(item_id=f"I{k:03d}", title=f"{brand} {kind} Model {100 + k}",
                          description=f"A {kind.lower()} by {brand} for the workshop, model {100 + k}.",
                          brand=brand, categories=["Tools & Home Improvement", kind]))
    by_kind: dict[str, list[str]] = {}
    for it in items:
        by_kind.setdefault(it.categories[1], []).append(it.item_id)
    splits: dict[str, list[Sample]] = {"train": [], "valid": [], "test": []}
    for u in range(n_users):
        kind_items = by_kind[rng.choice(KINDS)]
        start = rng.randrange(len(kind_items))
        seq = [kind_items[(start + j) % len(kind_items)] for j in range(rng.randint(4, 8))]
        if rng.random() < 0.2:
            seq.insert(rng.randrange(1, len(seq) - 1), rng.choice(items).item_id)
        seq = list(dict.fromkeys(seq))
        if len(seq) < 4:
            continue
        # leave-one-out, as the Amazon splits: the last item is the test target, the one before it the valid
        # target, every earlier position a training target
        uid = f"U{u:04d}"
        splits["test"].append(Sample(uid, seq[:-1][-10:], seq[-1]))
        splits["valid"].append(Sample(uid, seq[:-2][-10:], seq[-2]))
        splits["train"].extend(Sample(uid, seq[:t][-10:], seq[t]) for t in range(2, len(seq) - 2))
    out = root / name
    write_dataset(out, items, splits, {"source": "synthetic second domain (tests.synth_fixtures.make_sequential_domain)",
                                       "seed": seed})
    return out
