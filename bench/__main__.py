"""python -m bench [--quick] [--only dedup,checks] [--out bench/results.json]"""
from __future__ import annotations

import argparse
import importlib
import sys
import time

from bench import SECTIONS
from bench.common import progress, table, write_results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small sizes, for development (< 1 min a section)")
    ap.add_argument("--only", default="", help=f"comma-separated sections of: {', '.join(SECTIONS)}")
    ap.add_argument("--out", default="bench/results.json", help="where results.json goes")
    args = ap.parse_args(argv)
    names = [s.strip() for s in args.only.split(",") if s.strip()] or list(SECTIONS)
    unknown = [s for s in names if s not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    rows: list[dict] = []
    t0 = time.perf_counter()
    for name in names:
        progress(f"section {name} ({'quick' if args.quick else 'full'})")
        t = time.perf_counter()
        module = importlib.import_module(SECTIONS[name])
        for r in module.run(args.quick):
            rows.append({"section": name, **r})
        progress(f"section {name} done in {time.perf_counter() - t:.1f} s")
    doc = write_results(args.out, rows, args.quick, names, time.perf_counter() - t0)
    print(table(rows))
    print(f"\ncommit {doc['commit'] or '(none)'}  {doc['machine']['cpu']}  {doc['machine']['cores']} cores  "
          f"load {doc['machine']['load_average']}  -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
