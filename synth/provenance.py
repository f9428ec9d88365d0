"""Run provenance, one shape for every command (synth, sids, train, baselines, bench).

``provenance(...)`` returns the block a manifest or metrics file carries under
``"provenance"``: the command line, the fully resolved config, each input file with its
size and sha256, package versions, the git commit of the toolkit, the machine and the time.
Secrets never enter it: the command line is the argv (keys come from the environment only),
and URLs are written without user-info or query.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping

from synth.io import sha256_file

PACKAGES = ("sidreasoner-toolkit", "torch", "transformers", "trl", "accelerate", "datasets", "litellm",
            "openai", "aiohttp", "tenacity", "jinja2", "datasketch", "numpy", "sentence-transformers",
            "orjson", "uvloop", "tensorboard", "wandb", "mlflow")  # the trackers: when installed
REPO = Path(__file__).resolve().parents[1]


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_commit(repo: Path = REPO) -> str | None:
    """The toolkit's commit, with ``+dirty`` when the work tree has changes; None outside git."""
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def command_line() -> str:
    return " ".join([Path(sys.executable).name, *sys.argv])


def file_record(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    return {"path": str(p), "bytes": p.stat().st_size, "sha256": sha256_file(p)}


def input_files(files: Mapping[str, str | os.PathLike | None]) -> dict[str, dict]:
    """name -> {path, bytes, sha256} for each file that exists (a missing optional input is left out)."""
    return {name: file_record(p) for name, p in files.items() if p is not None and Path(p).is_file()}


def provenance(config: Mapping[str, Any] | None = None,
               inputs: Mapping[str, str | os.PathLike | None] | None = None) -> dict[str, Any]:
    return {
        "command": command_line(),
        "config": dict(config) if config is not None else None,
        "inputs": input_files(inputs or {}),
        "versions": package_versions(),
        "commit": git_commit(),
        "machine": {"host": platform.node(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
