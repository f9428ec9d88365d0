"""The normalized dataset form that every later stage reads.

``data/<name>/`` holds:

- ``items.jsonl``   one item per line: ``{"item_id", "title", "description", "brand",
  "categories"}``; ``item_id`` is a string, text fields are cleaned plain text.
- ``train.jsonl``, ``valid.jsonl``, ``test.jsonl``   one sample per line:
  ``{"user_id", "history": [item_id, ...], "target": item_id}``, histories oldest
  first, at most 10 items (the paper's window).
- ``stats.json``    ``{"items", "users", "train", "valid", "test", ...}``.
- ``source.json``   where the data came from, with input file hashes.
- ``sids.json`` / ``sids_stats.json``   written later by ``make sids``.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from synth.errors import UserError
from synth.io import iter_jsonl, read_json, write_json, write_jsonl

SPLITS = ("train", "valid", "test")
MAX_HISTORY = 10


def data_root() -> Path:
    return Path(os.environ.get("DATA_DIR", "data"))


def dataset_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    return Path(root or data_root()) / name


@dataclass
class Item:
    item_id: str
    title: str
    description: str = ""
    brand: str = ""
    categories: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Sample:
    user_id: str
    history: list[str]
    target: str

    def to_dict(self) -> dict:
        return {"user_id": self.user_id, "history": list(self.history), "target": self.target}


class DatasetError(UserError, ValueError):
    """Bad input: the message names the file, the line or record, and what to do."""


def write_dataset(
    out_dir: str | os.PathLike,
    items: list[Item],
    splits: dict[str, list[Sample]],
    source: dict,
) -> dict:
    """Validate and write the normalized form; returns the stats written to stats.json."""
    out = Path(out_dir)
    ids = [it.item_id for it in items]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DatasetError(f"duplicate item id {dup!r} in the item table")
    known = set(ids)
    for split, samples in splits.items():
        for n, s in enumerate(samples, 1):
            for iid in [*s.history, s.target]:
                if iid not in known:
                    raise DatasetError(
                        f"{split} sample {n} (user {s.user_id}) refers to unknown item id {iid!r}"
                    )
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "items.jsonl", (it.to_dict() for it in items))
    for split in SPLITS:
        write_jsonl(out / f"{split}.jsonl", (s.to_dict() for s in splits.get(split, [])))
    users = {s.user_id for samples in splits.values() for s in samples}
    stats = {
        "items": len(items),
        "users": len(users),
        **{split: len(splits.get(split, [])) for split in SPLITS},
        "interactions_in_splits": sum(len(v) for v in splits.values()),
        "max_history": max((len(s.history) for v in splits.values() for s in v), default=0),
    }
    stats.update(source.pop("extra_stats", {}))
    write_json(out / "source.json", source)
    write_json(out / "stats.json", stats)
    return stats


class Dataset:
    """Read access to ``data/<name>/``; splits are streamed, items are held in memory."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not (self.path / "items.jsonl").exists():
            raise DatasetError(
                f"{self.path}/items.jsonl not found: run `make data DATASET={self.path.name}` first"
            )
        self.items: dict[str, Item] = {}
        for rec in iter_jsonl(self.path / "items.jsonl"):
            self.items[str(rec["item_id"])] = Item(**rec)

    @classmethod
    def load(cls, name: str, root: str | os.PathLike | None = None) -> "Dataset":
        return cls(dataset_dir(name, root))

    @property
    def name(self) -> str:
        return self.path.name

    def samples(self, split: str) -> Iterator[Sample]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        for rec in iter_jsonl(self.path / f"{split}.jsonl"):
            yield Sample(str(rec["user_id"]), [str(i) for i in rec["history"]], str(rec["target"]))

    def stats(self) -> dict:
        return read_json(self.path / "stats.json")

    def sids(self) -> dict[str, list[str]]:
        p = self.path / "sids.json"
        if not p.exists():
            raise DatasetError(f"{p} not found: run `make sids DATASET={self.name}` first")
        return {str(k): list(v) for k, v in read_json(p).items()}
