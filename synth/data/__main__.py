"""``python -m synth.data``: make ``<data-dir>/<name>/`` in the normalized form.

    python -m synth.data --dataset office --from ../shared/data/amazon18/Office_Products
    python -m synth.data --dataset games                        # raw Amazon 2018
    python -m synth.data --dataset office --source minionerec   # MiniOneRec's splits
    python -m synth.data --dataset office+industrial            # a combination of prepared parts

Prints the stats JSON on stdout; progress goes to stderr. ``source.json`` records where the
data came from and the run's provenance (``synth.provenance``). Exit status
(``synth.errors``): 0 done; 2 bad input or a failed download, said in one line on stderr;
130 interrupted (partial downloads resume next time).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from synth.data.combined import combine, parts_of
from synth.data.dataset import DatasetError, data_root
from synth.data.download import DownloadConfig
from synth.endpoints import safe_url
from synth.errors import run_cli
from synth.io import read_json, write_json
from synth.provenance import provenance


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
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


def run(args: argparse.Namespace) -> tuple[dict, Path]:
    """Build the dataset; returns its stats and the folder its input files were read from."""
    root = args.data_dir or data_root()
    out = root / args.dataset
    if parts_of(args.dataset):  # office+industrial: built from the prepared parts
        if args.from_dir is not None or args.source != "amazon":
            raise DatasetError(f"DATASET={args.dataset} is a combination of prepared datasets: prepare each part "
                               "with FROM=/SOURCE= (`make data DATASET=<part> FROM=...`), then run it without them")
        return combine(args.dataset, root), out
    if args.from_dir is not None:
        from synth.data.importer import import_folder

        return import_folder(args.from_dir, out), args.from_dir
    dl = DownloadConfig(progress=not args.quiet)
    if args.source == "minionerec":
        from synth.data.minionerec import PUBLISHED, fetch_minionerec

        raw = args.raw_dir or root / "raw" / "minionerec"
        stats = fetch_minionerec(args.dataset, out, raw, args.base_url, download_config=dl)
        return stats, raw / PUBLISHED[args.dataset]
    from synth.data.amazon import build_from_raw

    raw = args.raw_dir or root / "raw" / "amazon18"
    return build_from_raw(args.dataset, out, raw, args.base_url, download_config=dl), raw


def record_provenance(out: Path, args: argparse.Namespace, folder: Path) -> None:
    """Add the run's provenance to ``out/source.json``. Its inputs are the files whose hashes
    the build already took (``files_sha256``): large raw files are not hashed twice."""
    path = out / "source.json"
    source = read_json(path)
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    config["base_url"] = safe_url(args.base_url)
    prov = provenance(config)
    prov["inputs"] = {name: {"path": str(folder / name), "bytes": (folder / name).stat().st_size, "sha256": sha}
                      for name, sha in source.get("files_sha256", {}).items() if (folder / name).is_file()}
    source["provenance"] = prov
    write_json(path, source)


def _main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        stats, folder = run(args)
    except KeyboardInterrupt:
        print("interrupted; partial downloads are kept as .part files and resume next time",
              file=sys.stderr)
        return 130
    record_provenance((args.data_dir or data_root()) / args.dataset, args, folder)
    print(json.dumps(stats, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
