"""THE metrics.json of every run (trainer, ``train eval`` and baselines) and the provenance it carries.

    {"kind": "llm" | "eval" | "baseline", "model", "dataset", "teacher", "run", "limit",
     "data": {"name", "path", "stats", "sha256": {file: hash}},
     "sid_set": {"name": "own" | "reference" | "custom", "file", "sha256"} (None: a baseline, no SIDs),
     "config": {the fully resolved settings}, "command": "...",
     "provenance": {command, config, inputs with sizes and sha256, versions, commit, machine, time},
     "stages": {stage: {mode: {"recall@5", "ndcg@5", "recall@10", "ndcg@10", "n", "targets_sharing_sid", ...}}},
     "train_wall_s": {stage: seconds}, "wall_time_s": seconds, ...keys of one kind}

``train.report`` reads this one shape. The provenance block is ``synth.provenance``'s, as for
every command of the toolkit; ``data`` is the dataset part of its inputs, ``teacher`` the corpus part.
"""
from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any, Mapping, Sequence

from synth.data.dataset import SPLITS
from synth.io import read_json, write_json
from synth.provenance import command_line, provenance

KEYS = ("kind", "model", "dataset", "teacher", "run", "limit", "data", "sid_set", "config", "command", "provenance",
        "stages", "train_wall_s", "wall_time_s")


def dataset_files(path: str | os.PathLike, prefix: str = "dataset/") -> dict[str, Path]:
    """The files of a dataset folder a run reads: items and the three splits."""
    path = Path(path)
    return {f"{prefix}{name}": path / name for name in ["items.jsonl", *(f"{s}.jsonl" for s in SPLITS)]}


def command(prog: str, argv: Sequence[str] | None = None) -> str:
    """The command line: ``python -m prog argv`` when ``argv`` is given (a call from Python), else the process's."""
    return command_line() if argv is None else f"python -m {prog} {shlex.join(argv)}".strip()


def run_provenance(config: Mapping[str, Any], inputs: Mapping[str, str | os.PathLike | None],
                   prog: str | None = None, argv: Sequence[str] | None = None) -> dict:
    """``synth.provenance.provenance`` with the command as ``command`` names it."""
    prov = provenance(config, inputs)
    prov["command"] = command(prog or "", argv)
    return prov


def _hashes(prov: dict, prefix: str) -> dict[str, str]:
    return {name[len(prefix):]: rec["sha256"] for name, rec in prov["inputs"].items() if name.startswith(prefix)}


def data_block(dataset_dir: str | os.PathLike, prov: dict) -> dict:
    """What a run was trained and tested on: name, path, stats and the sha256 of each file read."""
    path = Path(dataset_dir)
    stats = read_json(path / "stats.json") if (path / "stats.json").exists() else {}
    return {"name": path.name, "path": str(path), "stats": stats, "sha256": _hashes(prov, "dataset/")}


def sid_set_block(sid_set, prov: dict) -> dict:
    """The SIDs a run used (``synth.data.dataset.SidSet``): name, file, and the sha256 its provenance hashed."""
    return {"name": sid_set.name, "file": str(sid_set.path), "sha256": prov["inputs"]["sids"]["sha256"]}


def teacher_block(name: str | None, corpus_dir: str | os.PathLike | None, prov: dict) -> dict | None:
    """The teacher corpus a run read (None without one)."""
    if not name:
        return None
    return {"name": name, "path": str(corpus_dir) if corpus_dir else None, "sha256": _hashes(prov, "corpus/")}


def record(*, kind: str, model: str, dataset: str, run: str, data: dict, config: dict, prov: dict,
           teacher: dict | None = None, sid_set: dict | None = None, limit: int = 0, stages: dict | None = None,
           train_wall_s: dict | None = None, wall_time_s: float | None = None, **extra) -> dict:
    rec = {"kind": kind, "model": model, "dataset": dataset, "teacher": teacher, "run": run, "limit": limit,
           "data": data, "sid_set": sid_set, "config": config, "command": prov["command"], "provenance": prov,
           "stages": stages or {}, "train_wall_s": train_wall_s or {}}
    rec["wall_time_s"] = wall_time_s if wall_time_s is not None else total_wall(rec)
    rec.update(extra)
    return rec


def total_wall(rec: dict) -> float:
    """Seconds spent on a record: training plus evaluation, over every stage."""
    evals = [m.get("wall_s", 0) for modes in rec["stages"].values() for m in modes.values() if isinstance(m, dict)]
    return round(sum(rec["train_wall_s"].values()) + sum(evals), 1)


def write(path: str | os.PathLike, rec: dict) -> Path:
    """Write a record (atomically); one without every key of the schema is a bug."""
    missing = [k for k in KEYS if k not in rec]
    if missing:
        raise ValueError(f"metrics record lacks {missing}")
    write_json(path, rec)
    return Path(path)


def start(path: str | os.PathLike, rec: dict) -> dict:
    """``rec`` with the stages and wall times ``path`` already holds (a resumed run keeps them), written."""
    old = read_json(path) if Path(path).exists() else {}
    rec = {**rec, "stages": old.get("stages", {}), "train_wall_s": old.get("train_wall_s", {})}
    rec["wall_time_s"] = total_wall(rec)
    write(path, rec)
    return rec


def update(path: str | os.PathLike, stage: str, results: dict | None = None, train_wall: float | None = None) -> dict:
    """Merge one stage's evaluation results (mode -> metrics) and/or training time into ``path``."""
    rec = read_json(path)
    if results:
        rec["stages"].setdefault(stage, {}).update(results)
    if train_wall is not None:
        rec["train_wall_s"][stage] = round(train_wall, 1)
    rec["wall_time_s"] = total_wall(rec)
    write(path, rec)
    return rec
