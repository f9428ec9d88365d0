"""Shared bench helpers: rows, medians of repeats, peak memory, machine info, the table,
and results.json (written atomically)."""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from synth.io import write_json


def row(name: str, value: float | None, unit: str, peer: float | None = None,
        peer_name: str = "", ratio: float | None = None, note: str = "") -> dict:
    """One table row. ``ratio`` defaults to value / peer when both are known."""
    if ratio is None and value is not None and peer:
        ratio = value / peer
    return {"name": name, "value": value, "unit": unit, "peer": peer, "peer_name": peer_name,
            "ratio": None if ratio is None else round(ratio, 3), "note": note}


def median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """(median wall seconds over ``repeats`` calls, the last call's result)."""
    times, result = [], None
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def traced_peak(fn: Callable[[], Any]) -> tuple[float, int, Any]:
    """(wall seconds, peak bytes allocated during the call per tracemalloc, result). NumPy
    reports its buffers to tracemalloc, so this is the extra memory the call needs."""
    was = tracemalloc.is_tracing()
    if not was:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    t = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1] - base
    if not was:
        tracemalloc.stop()
    return elapsed, peak, result


def commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, cwd=Path(__file__).resolve().parent.parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        pass
    return {"platform": platform.platform(), "python": sys.version.split()[0], "cpu": cpu,
            "cores": os.cpu_count(), "memory_gb": round(mem / 2**30, 1) if mem else None,
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.0f}"
        return f"{v:.3g}"
    return str(v)


def table(rows: list[dict]) -> str:
    cols = ["section", "name", "value", "unit", "peer", "peer_name", "ratio", "note"]
    cells = [cols] + [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    widths[-1] = len(cols[-1])  # the note runs free
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(cols))).rstrip() for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_results(path: str | os.PathLike, rows: list[dict], quick: bool, sections: list[str],
                  seconds: float) -> dict:
    doc = {"commit": commit(), "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "quick": quick, "sections": sections, "seconds": round(seconds, 1),
           "machine": machine(), "rows": rows}
    write_json(path, doc)
    return doc


def progress(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)
