"""Where corpora live and how they are written: ``<corpora_dir>/<dataset>/<teacher>/``
(``<teacher>@reference/`` for a corpus written with the publishers' SIDs, ``SIDS=reference``).

- ``items.jsonl``    ``{item_id, sid, text, insights}`` per accepted item, in item order;
- ``users.jsonl``    ``{user_id, history, target, reasoning, text}`` per accepted training
  sequence, in training-split order;
- ``rejected.jsonl`` ``{kind, index, id, stage, reason, text}`` per record that did not pass
  (or failed), in record order;
- ``manifest.json``  counts, tokens, cost, teacher, parameters, prompt hashes, dataset
  hashes, versions, wall time, and the run's provenance (``synth.provenance``: the command,
  the resolved config, the input files, the commit and the machine).

A corpus is written whole or not at all: every file goes into a fresh temporary sibling
folder, which then replaces the old folder (two renames; the old one is deleted after).
A run killed at any moment leaves the previous corpus (or, in the instant between the
renames, the previous one under ``.<teacher>.old-*``, which ``write_corpus`` restores on
the next run if the final folder is missing).
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

import orjson

from synth.io import atomic_write, write_json


def safe_teacher_name(teacher: str) -> str:
    """'ollama/qwen3:8b' -> 'ollama_qwen3_8b': one path component, same for the same teacher."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", teacher).strip("._")
    if not name:
        raise ValueError(f"teacher name {teacher!r} gives an empty folder name")
    return name


def corpus_dir(dataset: str, teacher: str, root: str | os.PathLike, sid_set: str = "own") -> Path:
    """``<root>/<dataset>/<teacher>`` for the own SIDs, ``<teacher>@<sid_set>`` for another SID set
    (``SIDS=reference``: ``metadata@reference``), so corpora of different SIDs never share a folder."""
    name = safe_teacher_name(teacher)
    return Path(root) / dataset / (name if sid_set == "own" else f"{name}@{safe_teacher_name(sid_set)}")


def _write_lines(path: Path, records: Iterable[dict]) -> int:
    n = 0
    with atomic_write(path, "wb") as f:
        for rec in records:
            f.write(orjson.dumps(rec) + b"\n")
            n += 1
    return n


def _recover(final: Path) -> None:
    """A run killed between the two renames left the old corpus aside: put it back."""
    if final.exists():
        return
    olds = sorted(final.parent.glob(f".{final.name}.old-*"))
    if olds:
        os.replace(olds[-1], final)


def write_corpus(out_dir: str | os.PathLike, items: Iterable[dict], users: Iterable[dict],
                 rejected: Iterable[dict], manifest: dict) -> Path:
    """Write the four files into a temporary folder, then swap it in for ``out_dir``."""
    final = Path(out_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    _recover(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        _write_lines(tmp / "items.jsonl", items)
        _write_lines(tmp / "users.jsonl", users)
        _write_lines(tmp / "rejected.jsonl", rejected)
        write_json(tmp / "manifest.json", manifest)
        os.chmod(tmp, 0o755)
        if final.exists():
            old = final.parent / f".{final.name}.old-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final

