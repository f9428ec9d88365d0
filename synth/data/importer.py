"""Import a folder in the layout MiniOneRec and SIDReasoner publish.

The folder holds ``item.json`` (item id -> {title, description, brand, categories}, and
``features`` (a list) where a folder has them; the published ones do not),
``train.csv``/``valid.csv``/``test.csv`` (columns user_id, history_item_title,
item_title, history_item_id, item_id, history_item_sid, item_sid) and optionally
``info.txt`` and ``index.json`` (the publishers' own SIDs, kept for reference only).
List cells are Python literals and are parsed with ``ast.literal_eval``.
"""
from __future__ import annotations

import ast
import csv
import json
import sys
from pathlib import Path

from synth.data.dataset import MAX_HISTORY, SPLITS, DatasetError, Item, Sample, write_dataset
from synth.data.text import clean_categories, clean_list, clean_text, clean_title
from synth.io import sha256_file, write_json
from synth.sid import is_well_formed

REQUIRED_COLUMNS = ("user_id", "history_item_id", "item_id")
REQUIRED_FILES = ("item.json", "train.csv", "valid.csv", "test.csv")


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DatasetError(
            f"{path}:{line}: not UTF-8 (byte {raw[e.start]:#x} at offset {e.start}); "
            "re-encode the file as UTF-8"
        ) from e


def read_items(path: Path) -> list[Item]:
    text = _read_text(path)
    try:
        table = json.loads(text, object_pairs_hook=_no_duplicate_keys(path))
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from e
    if not isinstance(table, dict):
        raise DatasetError(f"{path}: expected an object mapping item id -> metadata")
    items = []
    for iid, meta in table.items():
        if not isinstance(meta, dict):
            raise DatasetError(f"{path}: item {iid!r}: metadata must be an object")
        title = clean_title(meta.get("title"))
        if not title:
            raise DatasetError(
                f"{path}: item {iid!r} has an empty title; every item needs one "
                "(the paper drops untitled items before the split): fix or remove it"
            )
        items.append(
            Item(
                item_id=str(iid),
                title=title,
                description=clean_text(meta.get("description")),
                brand=clean_text(meta.get("brand")),
                categories=clean_categories(meta.get("categories")),
                # MiniOneRec's item.json has no features; a folder that adds them is read.
                features=clean_list(meta.get("features", meta.get("feature"))),
            )
        )
    return items


def _no_duplicate_keys(path: Path):
    def hook(pairs):
        seen = {}
        for k, v in pairs:
            if k in seen:
                raise DatasetError(f"{path}: duplicate item id {k!r}: each id must appear once")
            seen[k] = v
        return seen

    return hook


def parse_id_list(cell: str, where: str) -> list[str]:
    """'[2122, 243]' -> ['2122', '243']; anything but a literal list of ids is an error."""
    try:
        value = ast.literal_eval(cell.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError) as e:
        raise DatasetError(f"{where}: history_item_id {cell[:80]!r} is not a list literal") from e
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, (int, str)) for v in value):
        raise DatasetError(f"{where}: history_item_id must be a list of item ids, got {cell[:80]!r}")
    return [str(v) for v in value]


def read_split(path: Path, known: set[str]) -> list[Sample]:
    text = _read_text(path)
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    reader = csv.DictReader(text.splitlines(keepends=True))
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise DatasetError(
            f"{path}:1: missing column(s) {', '.join(missing)}; expected the MiniOneRec layout "
            f"({', '.join(REQUIRED_COLUMNS)}, ...)"
        )
    samples = []
    for row in reader:
        where = f"{path}:{reader.line_num}"
        history = parse_id_list(row["history_item_id"], where)
        target = str(row["item_id"]).strip()
        if not target:
            raise DatasetError(f"{where}: empty item_id")
        for iid in [*history, target]:
            if iid not in known:
                raise DatasetError(f"{where}: unknown item id {iid!r} (not in item.json)")
        if not history:
            raise DatasetError(f"{where}: empty history")
        samples.append(Sample(str(row["user_id"]), history[-MAX_HISTORY:], target))
    return samples


def import_folder(src: str | Path, out_dir: str | Path) -> dict:
    """Import ``src`` into ``out_dir`` in the normalized form; returns stats."""
    src = Path(src)
    if not src.is_dir():
        raise DatasetError(f"FROM={src}: no such folder")
    missing = [f for f in REQUIRED_FILES if not (src / f).exists()]
    if missing:
        raise DatasetError(f"FROM={src}: missing {', '.join(missing)} (MiniOneRec layout expected)")
    items = read_items(src / "item.json")
    known = {it.item_id for it in items}
    splits = {split: read_split(src / f"{split}.csv", known) for split in SPLITS}
    inputs = {f.name: sha256_file(f) for f in sorted(src.iterdir()) if f.is_file()}
    source = {"kind": "import", "from": str(src.resolve()), "files_sha256": inputs}
    stats = write_dataset(out_dir, items, splits, source)
    if (src / "index.json").exists():
        # The publishers' own SIDs: kept beside ours for comparison, never used silently.
        write_json(Path(out_dir) / "reference_sids.json", _read_reference_sids(src / "index.json", known))
    return stats


def _read_reference_sids(path: Path, known: set[str]) -> dict[str, list[str]]:
    table = json.loads(_read_text(path))
    out = {}
    for iid, tokens in table.items():
        if str(iid) not in known or not is_well_formed(tokens):
            raise DatasetError(f"{path}: entry {iid!r} is not a known item with a well-formed SID")
        out[str(iid)] = list(tokens)
    return out
