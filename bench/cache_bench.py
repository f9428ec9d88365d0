"""Section "cache": re-running a finished corpus from the response cache.

A first engine run against the loopback teacher (latency 0) fills a fresh cache; the
same run again (same dataset, teacher, prompts and parameters) must be answered wholly
from it: records per second, and the requests sent, counted both by the engine's
manifest and by the server's own counter, which must be zero. Each run is a fresh
process (``bench.engine_bench``'s client), as a user's second ``make synth`` would be.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from bench.common import progress, row
from bench.engine_bench import Server, make_bench_dataset, measure

CONCURRENCY = 256


def run(quick: bool, records: int | None = None) -> list[dict]:
    records = records or (500 if quick else 2500)
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp:
        data_dir, work = Path(tmp) / "data", Path(tmp) / "work"
        make_bench_dataset(data_dir, records)
        with Server(0.0, 1) as srv:
            first = measure("engine", srv.base, CONCURRENCY, records, data_dir, work=work)
            progress(f"cache: first run {first['records'] / first['wall_s']:.0f} records/s, "
                     f"{first['requests']} requests")
            before = srv.requests()
            again = measure("engine", srv.base, CONCURRENCY, records, data_dir, work=work)
            seen = srv.requests() - before
    if seen != 0 or again["requests"] != 0:
        raise RuntimeError(f"re-running a finished corpus sent requests: engine counted {again['requests']}, "
                           f"the server saw {seen}")
    if again["ok"] != first["ok"] or again["cache_hits"] != first["requests"]:
        raise RuntimeError(f"the cached re-run differs: wrote {again['ok']} (first {first['ok']}), "
                           f"{again['cache_hits']} cache hits for {first['requests']} cached answers")
    rate_first = first["records"] / first["wall_s"]
    rate = again["records"] / again["wall_s"]
    return [
        row("cached re-run", rate, "records/s", peer=rate_first, peer_name="first run (latency 0)",
            note=f"{again['records']} records, {again['cache_hits']} cache hits, wall {again['wall_s']:.2f} s "
                 f"(+{again['setup_s']:.1f} s set-up)"),
        row("cached re-run CPU", 1000 * again["cpu_s"] / again["records"], "ms/record",
            peer=1000 * first["cpu_s"] / first["records"], peer_name="first run"),
        row("requests sent by the re-run", seen, "requests", note=f"server counter (engine counted "
            f"{again['requests']}); the first run sent {first['requests']}"),
    ]
