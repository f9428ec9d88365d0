"""The normalized dataset form that every later stage reads.

``data/<name>/`` holds:

- ``items.jsonl``   one item per line: ``{"item_id", "title", "description", "brand",
  "categories", "features"}``; ``item_id`` is a string, text fields are cleaned plain text,
  ``features`` the raw metadata's ``feature`` bullets (cleaned strings; empty when the source
  has none, and absent from files written before it existed: those load with it empty).
- ``train.jsonl``, ``valid.jsonl``, ``test.jsonl``   one sample per line:
  ``{"user_id", "history": [item_id, ...], "target": item_id}``, histories oldest
  first, at most 10 items (the paper's window).
- ``stats.json``    ``{"items", "users", "train", "valid", "test", ...}``.
- ``source.json``   where the data came from, with input file hashes.
- ``sids.json`` / ``sids_stats.json``   written later by ``make sids``: the project's own SIDs
  (collision-free), the SID set ``own``.
- ``reference_sids.json``   the publishers' SIDs (MiniOneRec's ``index.json``, kept by the importer),
  the SID set ``reference``: what the paper's released scripts train and evaluate Office and
  Industrial with. Not unique (15 groups of Office items share a SID).

Which SID file a command uses is decided in ONE place, ``Dataset.sid_set`` (``SIDS=own|reference``,
or the path of a SID map); synthesis, training and evaluation all go through it, and record the
``SidSet.record()`` it returns (name, file, sha256) in their corpus manifest / run records.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from synth.errors import UserError
from synth.io import iter_jsonl, read_json, sha256_file, write_json, write_jsonl

SPLITS = ("train", "valid", "test")
MAX_HISTORY = 10
OWN, REFERENCE = "own", "reference"
# THE SID sets a dataset folder offers (the value of SIDS= / --sids): name -> file in data/<name>/.
SID_SETS = {OWN: "sids.json", REFERENCE: "reference_sids.json"}
CUSTOM = "custom"  # the name recorded when --sids gives the path of a SID map instead of a set name


def sid_set_name(sids: str | os.PathLike | None) -> str:
    """The name ``Dataset.sid_set`` gives the setting ``sids``, without reading a dataset (folder names)."""
    key = OWN if sids is None or str(sids) == "" else str(sids)
    return key if key in SID_SETS else CUSTOM


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
    features: list[str] = field(default_factory=list)

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


@dataclass(frozen=True)
class SidSet:
    """One SID map of a dataset: its name (``own``, ``reference`` or ``custom``) and its file."""

    name: str
    path: Path

    def load(self) -> dict[str, list[str]]:
        return {str(k): list(v) for k, v in read_json(self.path).items()}

    def sha256(self) -> str:
        return sha256_file(self.path)

    def record(self) -> dict:
        """What corpora and runs record about the SIDs they used (and what a run checks a corpus by)."""
        return {"name": self.name, "file": str(self.path), "sha256": self.sha256()}


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

    def sid_set(self, sids: str | os.PathLike | None = None) -> SidSet:
        """THE choice of SID file: ``own`` (default: sids.json), ``reference`` (reference_sids.json)
        or the path of a SID map (name ``custom``); a missing file is a DatasetError saying what to run."""
        key = OWN if sids is None or str(sids) == "" else str(sids)
        from synth.data.combined import PART_SEP

        if key == REFERENCE and PART_SEP in self.name:
            raise DatasetError(
                f"SIDS={REFERENCE} with DATASET={self.name}: the publishers' SIDs are one SID space per dataset (the "
                f"same SID names different items in each part); a combination has one SID space of its own: "
                f"`make sids DATASET={self.name}`, then SIDS={OWN}")
        if key in SID_SETS:
            p = self.path / SID_SETS[key]
            if not p.exists():
                if key == OWN:
                    raise DatasetError(f"{p} not found: run `make sids DATASET={self.name}` first")
                raise DatasetError(
                    f"{p} not found: the reference SIDs come with the publishers' index.json; import the data "
                    f"with `make data DATASET={self.name} FROM=<folder with index.json>`, or use SIDS={OWN}")
            return SidSet(key, p)
        p = Path(key)
        if p.suffix != ".json" and not p.exists():
            raise DatasetError(f"SIDS={key}: expected one of {', '.join(SID_SETS)} or the path of a SID map (.json)")
        if not p.is_file():
            raise DatasetError(f"{p}: no such SID map (SIDS= / --sids)")
        for name, file in SID_SETS.items():  # a path to one of the dataset's own files keeps its name
            if (self.path / file).exists() and p.resolve() == (self.path / file).resolve():
                return SidSet(name, p)
        return SidSet(CUSTOM, p)

    def sids(self, sids: str | os.PathLike | None = None) -> dict[str, list[str]]:
        """item id -> SID tokens of the SID set ``sids`` (see ``sid_set``; default ``own``)."""
        return self.sid_set(sids).load()
