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
