"""SOURCE=minionerec: fetch the processed splits MiniOneRec publishes, then import them.

MiniOneRec's repository (github.com/AkaliKong/MiniOneRec) holds, under
``data/Amazon/``, the paper's exact Office and Industrial data:
``train|valid|test/<Category>_5_2016-10-2018-11.csv``,
``info/<Category>_5_2016-10-2018-11.txt`` and ``index/<Category>.item.json`` /
``index/<Category>.index.json``. They are downloaded (resumable, verified) into
``<raw_dir>/<Category>/`` under the names the importer expects, then imported with
:func:`synth.data.importer.import_folder`. Video Games is not published there.
"""
from __future__ import annotations

from pathlib import Path

from synth.data.dataset import DatasetError
from synth.data.download import DownloadConfig, fetch_all
from synth.data.importer import import_folder
from synth.io import read_json, write_json

# The branch the files are read from; recorded in source.json with the URLs.
MINIONEREC_BASE_URL = "https://raw.githubusercontent.com/AkaliKong/MiniOneRec/main"
WINDOW = "2016-10-2018-11"
PUBLISHED = {"office": "Office_Products", "industrial": "Industrial_and_Scientific"}


def published_files(category: str) -> dict[str, str]:
    """Local name (importer layout) -> path inside the MiniOneRec repository."""
    stem = f"{category}_5_{WINDOW}"
    return {
        "item.json": f"data/Amazon/index/{category}.item.json",
        "index.json": f"data/Amazon/index/{category}.index.json",
        "info.txt": f"data/Amazon/info/{stem}.txt",
        "train.csv": f"data/Amazon/train/{stem}.csv",
        "valid.csv": f"data/Amazon/valid/{stem}.csv",
        "test.csv": f"data/Amazon/test/{stem}.csv",
    }


def _check_not_lfs_pointer(path: Path, url: str) -> None:
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"version https://git-lfs"):
        raise DatasetError(f"{path}: {url} returned a Git LFS pointer, not the data; "
                           "fetch the file with git lfs and use FROM=<folder>")


def fetch_minionerec(
    name: str,
    out_dir: Path,
    raw_dir: Path,
    base_url: str | None = None,
    download_config: DownloadConfig = DownloadConfig(),
) -> dict:
    """Download MiniOneRec's processed ``name`` into ``raw_dir`` and import it; returns stats."""
    if name == "games":
        raise DatasetError(
            "MiniOneRec publishes no processed Video Games data; build it from the raw "
            "Amazon 2018 files (SOURCE=amazon, the default) or import a folder with FROM=<folder>"
        )
    if name not in PUBLISHED:
        raise DatasetError(f"SOURCE=minionerec has no dataset {name!r}; "
                           f"published: {', '.join(PUBLISHED)}")
    category = PUBLISHED[name]
    base = (base_url or MINIONEREC_BASE_URL).rstrip("/")
    folder = Path(raw_dir) / category
    files = [(f"{base}/{rel}", folder / local) for local, rel in published_files(category).items()]
    fetch_all(files, download_config)
    for url, dest in files:
        _check_not_lfs_pointer(dest, url)
    stats = import_folder(folder, out_dir)
    # Record where the imported files came from next to their hashes.
    source = read_json(Path(out_dir) / "source.json")
    source.update(kind="minionerec", dataset=name, urls={d.name: u for u, d in files})
    write_json(Path(out_dir) / "source.json", source)
    return stats
