"""Build a dataset from the raw Amazon Reviews 2018 files, as MiniOneRec/SIDReasoner do.

Inputs (McAuley lab, "amazon_v2"): the 5-core review file
``categoryFilesSmall/<Category>_5.json.gz`` and the metadata file
``metaFiles2/meta_<Category>.json.gz``, gzipped JSON lines (older dumps hold Python
dict literals; those lines are parsed with ``ast.literal_eval``, never ``eval``).

The processing follows MiniOneRec's ``data/amazon18_data_process.py`` rule for rule,
so that item ids and splits come out as in the published files:

1. Titles (metadata, every line in file order, the last admissible title of an asin
   wins): a title is admissible when present, free of ``<span id``, and, after
   replacing ``&quot;``/``&amp;`` and stripping spaces and double quotes, longer than
   one character and at most 20 space-separated words. We add one rule of ours: the
   title cleaned by :func:`synth.data.text.clean_title` (which is what we store) must be
   non-empty. Reviews of items without an admissible title are dropped.
2. Window: a review counts when ``start <= unixReviewTime <= end`` with start/end the
   first instant of the configured months (2016-10 and 2018-11), taken in UTC. (The
   published script uses the machine's local time; review times are whole days at
   00:00 UTC and the dump ends in 2018-10, so any time zone east of UTC gives the same
   reviews.)
3. Iterative 5-core on reviews: users and items with fewer than 5 reviews in the pool
   are removed until none is left. Repeated reviews of one item by one user are *not*
   merged: each review is one interaction and counts towards the 5.
4. While fewer than 3,000 items survive and the start year is after 1996, the start
   moves back one year and steps 2-3 rerun on all reviews.
5. Users in order of their first surviving review in the review file; each user's
   reviews sorted by time (stable: ties keep file order). Item ids ``"0", "1", ...``
   in order of first appearance along that walk.
6. Samples: for each user and each position ``i >= 1`` in the sequence, history =
   the up to 10 preceding items, target = item ``i``.
7. Split: all samples sorted (stably) by the target's time, then cut at
   ``int(0.8 n)`` and ``int(0.9 n)``: train / valid / test. A user can appear in all
   three.

Counts, as the paper's Table 1 reports them: *items* = items surviving step 4 (all of
them occur in some sample); *interactions* = the number of samples ``n`` of step 7
(= surviving reviews minus users). Table 1: Games 3,858 / 61,417, Office 3,459 /
48,656, Industrial 3,686 / 45,325 (MiniOneRec's published Industrial splits hold
36,259 + 4,532 + 4,533 = 45,324 samples). ``stats.json`` reports these as ``items``
and ``interactions``, with the window used and the size of the 5-core.
"""
from __future__ import annotations

import ast
import gzip
import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, NamedTuple

from synth.data.dataset import MAX_HISTORY, DatasetError, Item, Sample, write_dataset
from synth.data.download import DownloadConfig, DownloadError, Progress, download, sha256_of
from synth.data.text import clean_categories, clean_list, clean_text, clean_title

# Hosts of the 2018 dump, tried in order. mcauleylab is the lab's current public host;
# datarepo is the older one many scripts still cite.
DEFAULT_BASE_URLS = (
    "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_v2",
    "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2",
)


@dataclass(frozen=True)
class AmazonDataset:
    name: str
    category: str

    @property
    def reviews_file(self) -> str:
        return f"{self.category}_5.json.gz"

    @property
    def meta_file(self) -> str:
        return f"meta_{self.category}.json.gz"

    def paths(self) -> dict[str, str]:
        """URL paths below a base URL."""
        return {
            "reviews": f"categoryFilesSmall/{self.reviews_file}",
            "meta": f"metaFiles2/{self.meta_file}",
        }


DATASETS = {
    "games": AmazonDataset("games", "Video_Games"),
    "office": AmazonDataset("office", "Office_Products"),
    "industrial": AmazonDataset("industrial", "Industrial_and_Scientific"),
}


@dataclass(frozen=True)
class AmazonConfig:
    start_year: int = 2016
    start_month: int = 10
    end_year: int = 2018
    end_month: int = 11
    k: int = 5
    min_items: int = 3000  # MiniOneRec: move the start back a year while fewer survive
    earliest_year: int = 1996  # ... but never before the dump begins
    max_history: int = MAX_HISTORY
    train_frac: float = 0.8
    valid_frac: float = 0.1  # test gets the rest


class Review(NamedTuple):
    user: str
    item: str
    ts: int


def get_dataset(name: str) -> AmazonDataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise DatasetError(
            f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)} "
            "(or give FROM=<folder> to import any folder in the MiniOneRec layout)"
        ) from None


# ---------------------------------------------------------------------------- reading


def iter_records(path: Path, what: str) -> Iterator[tuple[int, dict]]:
    """(line number, record) from a gzipped JSON-lines file, with progress on stderr."""
    with open(path, "rb") as raw:
        total = path.stat().st_size
        progress = Progress(f"reading {path.name}", total)
        last = 0
        try:
            with gzip.GzipFile(fileobj=raw) as f:
                for lineno, line in enumerate(f, 1):
                    if lineno % 4096 == 0:
                        pos = raw.tell()
                        progress.update(pos - last)
                        last = pos
                    if not line.strip():
                        continue
                    yield lineno, parse_record(line, f"{path}:{lineno}", what)
        except (OSError, EOFError) as e:
            raise DatasetError(f"{path}: damaged gzip file ({e}); delete it and run again") from e
        progress.update(total - last)
        progress.close()


def parse_record(line: bytes, where: str, what: str) -> dict:
    """Strict JSON first; Python dict literals (older dumps) second; never ``eval``."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{where}: not UTF-8 (byte {line[e.start]:#x}); the {what} file "
                           "is damaged: delete it and run again") from e
    try:
        rec = json.loads(text)
    except json.JSONDecodeError:
        try:
            rec = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError) as e:
            raise DatasetError(f"{where}: neither JSON nor a Python literal; the {what} file "
                               "is damaged: delete it and run again") from e
    if not isinstance(rec, dict):
        raise DatasetError(f"{where}: expected one {what} record (an object) per line")
    return rec


def read_reviews(path: Path) -> list[Review]:
    out = []
    for lineno, rec in iter_records(path, "review"):
        try:
            out.append(Review(str(rec["reviewerID"]), str(rec["asin"]), int(rec["unixReviewTime"])))
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetError(
                f"{path}:{lineno}: review needs reviewerID, asin and an integer "
                f"unixReviewTime ({type(e).__name__}: {e})"
            ) from e
    return out


def admissible_title(raw) -> bool:
    """MiniOneRec's title rule (see the module docstring, step 1)."""
    if not isinstance(raw, str) or "<span id" in raw:
        return False
    t = raw.replace("&quot;", '"').replace("&amp;", "&").strip(" ").strip('"')
    return len(t) > 1 and len(t.split(" ")) <= 20


def read_meta(path: Path, wanted: set[str]) -> tuple[dict[str, str], dict[str, dict]]:
    """(asin -> cleaned title, asin -> metadata record) for the asins in ``wanted``.

    As in MiniOneRec, a later line of the same asin replaces the record, and replaces
    the title only if its own title is admissible.
    """
    titles: dict[str, str] = {}
    meta: dict[str, dict] = {}
    for lineno, rec in iter_records(path, "metadata"):
        asin = rec.get("asin")
        if asin is None:
            raise DatasetError(f"{path}:{lineno}: metadata record without 'asin'")
        asin = str(asin)
        if asin not in wanted:
            continue
        meta[asin] = {k: rec.get(k) for k in ("description", "feature", "brand", "category", "categories")}
        raw = rec.get("title")
        if admissible_title(raw) and (title := clean_title(raw)):
            titles[asin] = title
    return titles, meta


# ---------------------------------------------------------------------------- processing


def month_start(year: int, month: int) -> int:
    return int(datetime(year, month, 1, tzinfo=timezone.utc).timestamp())


def kcore(reviews: list[Review], titled: set[str], k: int, start_ts: int, end_ts: int) -> list[Review]:
    """Reviews in the window, of titled items, in the iterative k-core; file order kept."""
    pool = [r for r in reviews if start_ts <= r.ts <= end_ts and r.item in titled]
    while True:
        users = Counter(r.user for r in pool)
        items = Counter(r.item for r in pool)
        bad_users = {u for u, c in users.items() if c < k}
        bad_items = {i for i, c in items.items() if c < k}
        if not bad_users and not bad_items:
            return pool
        pool = [r for r in pool if r.user not in bad_users and r.item not in bad_items]


def choose_window(reviews: list[Review], titled: set[str], cfg: AmazonConfig) -> tuple[list[Review], int]:
    """Apply steps 2-4; returns the surviving reviews and the start year used."""
    end_ts = month_start(cfg.end_year, cfg.end_month)
    year = cfg.start_year
    while True:
        pool = kcore(reviews, titled, cfg.k, month_start(year, cfg.start_month), end_ts)
        n_items = len({r.item for r in pool})
        print(f"window {year}-{cfg.start_month:02d}..{cfg.end_year}-{cfg.end_month:02d}: "
              f"{n_items} items, {len({r.user for r in pool})} users, {len(pool)} reviews "
              f"in the {cfg.k}-core", file=sys.stderr)
        if year > cfg.earliest_year and n_items < cfg.min_items:
            year -= 1
            continue
        return pool, year


def user_sequences(pool: list[Review]) -> dict[str, list[Review]]:
    """Users in order of first review in ``pool``; each sequence sorted stably by time."""
    seqs: dict[str, list[Review]] = {}
    for r in pool:
        seqs.setdefault(r.user, []).append(r)
    for seq in seqs.values():
        seq.sort(key=lambda r: r.ts)
    return seqs


def assign_item_ids(seqs: dict[str, list[Review]]) -> dict[str, str]:
    ids: dict[str, str] = {}
    for seq in seqs.values():
        for r in seq:
            if r.item not in ids:
                ids[r.item] = str(len(ids))
    return ids


def make_samples(seqs: dict[str, list[Review]], ids: dict[str, str], max_history: int) -> list[tuple[int, Sample]]:
    """(target time, sample) for every position after the first, users in order."""
    out = []
    for user, seq in seqs.items():
        for i in range(1, len(seq)):
            history = [ids[r.item] for r in seq[max(i - max_history, 0):i]]
            out.append((seq[i].ts, Sample(user, history, ids[seq[i].item])))
    return out


def temporal_split(timed: list[tuple[int, Sample]], cfg: AmazonConfig) -> dict[str, list[Sample]]:
    ordered = [s for _, s in sorted(timed, key=lambda x: x[0])]  # stable: ties keep order
    n = len(ordered)
    a, b = int(n * cfg.train_frac), int(n * (cfg.train_frac + cfg.valid_frac))
    return {"train": ordered[:a], "valid": ordered[a:b], "test": ordered[b:]}


def make_item(item_id: str, title: str, rec: dict) -> Item:
    brand = rec.get("brand")
    cats = rec.get("category") or rec.get("categories") or []  # 2018 / 2014 key
    if isinstance(cats, list):  # MiniOneRec drops category entries holding markup
        cats = [c for c in cats if "</span>" not in str(c)]
    return Item(
        item_id=item_id,
        title=title,
        description=clean_text(rec.get("description")),
        brand=clean_text(brand.replace("by\n", "") if isinstance(brand, str) else brand),
        categories=clean_categories(cats),
        features=clean_list(rec.get("feature")),
    )


def process(reviews: list[Review], titles: dict[str, str], meta: dict[str, dict],
            cfg: AmazonConfig) -> tuple[list[Item], dict[str, list[Sample]], dict]:
    """Steps 2-7 on parsed inputs; returns items, splits and the extra stats."""
    pool, start_year = choose_window(reviews, set(titles), cfg)
    if not pool:
        raise DatasetError("no reviews survive the window and the 5-core filter; "
                           "are these the right files?")
    seqs = user_sequences(pool)
    ids = assign_item_ids(seqs)
    timed = make_samples(seqs, ids, cfg.max_history)
    splits = temporal_split(timed, cfg)
    items = [make_item(iid, titles[asin], meta[asin]) for asin, iid in ids.items()]
    extra = {
        "interactions": len(timed),
        "reviews_in_core": len(pool),
        "window_start": f"{start_year}-{cfg.start_month:02d}",
        "window_end": f"{cfg.end_year}-{cfg.end_month:02d}",
        "window_moved_back_years": cfg.start_year - start_year,
    }
    return items, splits, extra


# ---------------------------------------------------------------------------- entry point


def fetch_any(urls: list[str], dest: Path, config: DownloadConfig) -> str:
    """Download ``dest`` from the first URL that answers; returns that URL."""
    if dest.exists():
        download(urls[0], dest, config=config)  # validates, no network
        return urls[0]
    errors = []
    for url in urls:
        try:
            download(url, dest, config=config)
            return url
        except DownloadError as e:
            if dest.with_name(dest.name + ".part").exists() or len(urls) == 1:
                raise  # got bytes from this host: resuming elsewhere would mix sources
            errors.append(str(e).split(";")[0])
    raise DownloadError(f"{'; '.join(errors)}; put the file at {dest} or use FROM=<folder>")


def build_from_raw(
    name: str,
    out_dir: Path,
    raw_dir: Path,
    base_url: str | None = None,
    config: AmazonConfig = AmazonConfig(),
    download_config: DownloadConfig = DownloadConfig(),
) -> dict:
    """Download (if needed) and process dataset ``name`` into ``out_dir``; returns stats."""
    ds = get_dataset(name)
    raw_dir = Path(raw_dir)
    bases = [base_url.rstrip("/")] if base_url else list(DEFAULT_BASE_URLS)
    used, hashes = {}, {}
    for kind, rel in ds.paths().items():
        dest = raw_dir / Path(rel).name
        used[kind] = fetch_any([f"{b}/{rel}" for b in bases], dest, download_config)
        hashes[dest.name] = sha256_of(dest)
    reviews = read_reviews(raw_dir / ds.reviews_file)
    titles, meta = read_meta(raw_dir / ds.meta_file, {r.item for r in reviews})
    items, splits, extra = process(reviews, titles, meta, config)
    source = {
        "kind": "amazon18",
        "dataset": ds.name,
        "category": ds.category,
        "urls": used,
        "files_sha256": hashes,
        "processing": "MiniOneRec data/amazon18_data_process.py rules (synth/data/amazon.py)",
        "config": asdict(config),
        "window": {"start": extra["window_start"], "end": extra["window_end"]},
        "extra_stats": extra,
    }
    return write_dataset(out_dir, items, splits, source)
