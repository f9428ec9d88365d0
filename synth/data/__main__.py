"""``python -m synth.data``: make ``<data-dir>/<name>/`` in the normalized form.

    python -m synth.data --dataset office --from ../shared/data/amazon18/Office_Products
    python -m synth.data --dataset games                        # raw Amazon 2018
    python -m synth.data --dataset office --source minionerec   # MiniOneRec's splits

Prints the stats JSON on stdout; progress goes to stderr. Bad input or a failed
download prints one line on stderr and exits with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from synth.data.dataset import DatasetError, data_root
from synth.data.download import DownloadConfig, DownloadError

EXIT_BAD_INPUT = 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m synth.data", description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True, help="games | office | industrial (any name with --from)")
    p.add_argument("--from", dest="from_dir", type=Path,
                   help="import a folder in the MiniOneRec layout instead of downloading")
    p.add_argument("--source", choices=("amazon", "minionerec"), default="amazon",
                   help="amazon: raw Amazon 2018 files, processed here; "
                        "minionerec: MiniOneRec's published splits (office, industrial)")
    p.add_argument("--raw-dir", type=Path,
                   help="where downloads go (default <data-dir>/raw/<source>)")
    p.add_argument("--base-url", help="replace the download host (mirrors, tests)")
    p.add_argument("--data-dir", type=Path, help="output root (default $DATA_DIR or data/)")
    p.add_argument("--quiet", action="store_true", help="no download progress")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    root = args.data_dir or data_root()
    out = root / args.dataset
    if args.from_dir is not None:
        from synth.data.importer import import_folder

        return import_folder(args.from_dir, out)
    dl = DownloadConfig(progress=not args.quiet)
    if args.source == "minionerec":
        from synth.data.minionerec import fetch_minionerec

        raw = args.raw_dir or root / "raw" / "minionerec"
        return fetch_minionerec(args.dataset, out, raw, args.base_url, download_config=dl)
    from synth.data.amazon import build_from_raw

    raw = args.raw_dir or root / "raw" / "amazon18"
    return build_from_raw(args.dataset, out, raw, args.base_url, download_config=dl)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        stats = run(args)
    except (DatasetError, DownloadError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted; partial downloads are kept as .part files and resume next time",
              file=sys.stderr)
        return 130
    print(json.dumps(stats, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
