"""Raw Amazon 2018 processing and SOURCE=minionerec, end to end over a local HTTP server.

The fixture is a tiny category ("Office_Products") built so that every rule matters:

- core: users A B C D E G x items P Q R S H survive the 5-core;
- H's title carries HTML (``<i>Hammer</i> &amp;amp; Nails``), R's an entity;
- X has a blank title: it is dropped, so user F (P Q R S X) falls to 4 reviews and goes;
- M has no metadata at all: dropped;
- Z is reviewed by A B C D and L; L has only 3 reviews, so L goes in the first pass and
  Z (down to 4) in the second: the filter must iterate;
- G reviews P twice: repeated reviews are kept and count (G has 5 reviews, 4 items);
- J has one review on 2016-09-30, just before the window: dropped unless the window
  moves back (it does under the default min_items=3000, with 5 items surviving);
- K's 5th review is on 2018-11-02, after the window: K never survives;
- E's first review is at exactly 2016-10-01 00:00 UTC: inside;
- D reviews S and P on the same day (S first in the file): ties keep file order;
- the file lists F, D, B, A, L, C, E, G, J, K: user order is first appearance.
- Q has two metadata lines (the second with an empty title): the title of the first
  stays, the brand of the last wins. S's metadata line is a Python dict literal, and its
  ``feature`` a Python list literal in a string.
- P's ``feature`` bullets carry HTML, an entity, a blank one and a repeat: cleaned like
  descriptions, blank and repeated bullets dropped, they reach ``features`` in items.jsonl.
"""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from synth.data.amazon import (
    AmazonConfig,
    Review,
    admissible_title,
    build_from_raw,
    make_samples,
    read_meta,
    user_sequences,
)
from synth.data.dataset import Dataset, DatasetError
from synth.data.download import DownloadConfig, DownloadError
from synth.data.minionerec import fetch_minionerec, published_files
from synth.prompts import PromptSet, item_context
from tests.test_download import RangeServer, closed_port_url, count_attempts

REPO = Path(__file__).resolve().parents[1]
QUIET = DownloadConfig(timeout_s=5, retries=1, backoff_s=0.01, progress=False)


def ts(y, m, d) -> int:
    return int(datetime(y, m, d, tzinfo=timezone.utc).timestamp())


def day(n: int) -> int:
    return ts(2017, 1, 1) + n * 86400


REVIEWS = [  # (user, item, time) in file order
    *[("F", i, day(60 + k)) for k, i in enumerate("PQRSX")],
    ("D", "S", day(30)), ("D", "P", day(30)), ("D", "Q", day(31)), ("D", "R", day(32)),
    ("D", "H", day(33)), ("D", "X", day(34)), ("D", "Z", day(35)), ("D", "M", day(36)),
    ("B", "M", day(15)), ("B", "Z", day(14)), ("B", "X", day(13)), ("B", "R", day(12)),
    ("B", "S", day(11)), ("B", "H", day(10)), ("B", "P", day(3)), ("B", "Q", day(2)),
    *[("A", i, day(1 + k)) for k, i in enumerate("PQRSHXZM")],
    ("L", "Z", day(90)), ("L", "P", day(91)), ("L", "Q", day(92)),
    ("C", "H", day(1)), *[("C", i, day(20 + k)) for k, i in enumerate("RSPQXZM")],
    ("E", "R", ts(2016, 10, 1)), *[("E", i, day(41 + k)) for k, i in enumerate("HPQSXM")],
    ("G", "P", day(51)), ("G", "P", day(50)), ("G", "Q", day(52)), ("G", "R", day(53)),
    ("G", "S", day(54)),
    ("J", "P", ts(2016, 9, 30)), *[("J", i, day(70 + k)) for k, i in enumerate("QRSH")],
    *[("K", i, day(80 + k)) for k, i in enumerate("PQRS")], ("K", "H", ts(2018, 11, 2)),
]

META_LINES = [
    json.dumps({"asin": "P", "title": "Paper Clips, 100-Count", "brand": "by\nACME",
                "category": ["Office Products", "Clips"],
                "description": ["Steel clips.", "<b>Strong</b>"],
                "feature": ["<b>Rust-proof</b> steel &amp; vinyl", "Holds 10 sheets", " ", "holds 10 SHEETS"]}),
    json.dumps({"asin": "Q", "title": "Quill Pen", "brand": "Old"}),
    json.dumps({"asin": "R", "title": "Ruler &amp; Set"}),
    repr({"asin": "S", "title": "Stapler", "feature": "['Jams <i>never</i>']",
          "category": ["Office Products", '<span class="a-list">bad</span>']}),
    json.dumps({"asin": "H", "title": "<i>Hammer</i> &amp;amp; Nails"}),
    json.dumps({"asin": "X", "title": "   "}),
    json.dumps({"asin": "Z", "title": "Zipper"}),
    json.dumps({"asin": "UNREVIEWED", "title": "Never reviewed"}),
    json.dumps({"asin": "Q", "title": "", "brand": "New"}),
]

# Expected, worked out by hand from the rules in synth/data/amazon.py.
# Item ids follow the walk D (S P Q R H), B, A, C, E, G: S=0 P=1 Q=2 R=3 H=4.
TRAIN = [
    ("A", [1], 2), ("B", [2], 1), ("A", [1, 2], 3), ("A", [1, 2, 3], 0), ("A", [1, 2, 3, 0], 4),
    ("B", [2, 1], 4), ("B", [2, 1, 4], 0), ("B", [2, 1, 4, 0], 3),
    ("C", [4], 3), ("C", [4, 3], 0), ("C", [4, 3, 0], 1), ("C", [4, 3, 0, 1], 2),
    ("D", [0], 1), ("D", [0, 1], 2), ("D", [0, 1, 2], 3), ("D", [0, 1, 2, 3], 4),
    ("E", [3], 4), ("E", [3, 4], 1), ("E", [3, 4, 1], 2),
]
VALID = [("E", [3, 4, 1, 2], 0), ("G", [1], 1)]
TEST = [("G", [1, 1], 2), ("G", [1, 1, 2], 3), ("G", [1, 1, 2, 3], 0)]
ITEMS = [
    {"item_id": "0", "title": "Stapler", "description": "", "brand": "",
     "categories": ["Office Products"], "features": ["Jams never"]},
    {"item_id": "1", "title": "Paper Clips, 100-Count", "description": "Steel clips. Strong",
     "brand": "ACME", "categories": ["Office Products", "Clips"],
     "features": ["Rust-proof steel & vinyl", "Holds 10 sheets"]},
    {"item_id": "2", "title": "Quill Pen", "description": "", "brand": "New", "categories": [],
     "features": []},
    {"item_id": "3", "title": "Ruler & Set", "description": "", "brand": "", "categories": [],
     "features": []},
    {"item_id": "4", "title": "Hammer & Nails", "description": "", "brand": "", "categories": [],
     "features": []},
]


def rows(split):
    return [(s.user_id, [int(i) for i in s.history], int(s.target)) for s in split]


@pytest.fixture
def raw_server(tmp_path):
    root = tmp_path / "www"
    reviews = "".join(
        json.dumps({"reviewerID": u, "asin": i, "unixReviewTime": t, "overall": 5.0,
                    "reviewText": "<p>ok</p>"}) + "\n" for u, i, t in REVIEWS)
    (root / "categoryFilesSmall").mkdir(parents=True)
    (root / "categoryFilesSmall" / "Office_Products_5.json.gz").write_bytes(
        gzip.compress(reviews.encode()))
    (root / "metaFiles2").mkdir()
    (root / "metaFiles2" / "meta_Office_Products.json.gz").write_bytes(
        gzip.compress(("\n".join(META_LINES) + "\n").encode()))
    with RangeServer(root) as srv:
        yield srv


def test_build_from_raw_matches_the_hand_worked_splits(raw_server, tmp_path):
    out = tmp_path / "data" / "office"
    cfg = AmazonConfig(min_items=1)  # keep the 2016-10 start
    stats = build_from_raw("office", out, tmp_path / "raw", raw_server.url, cfg, QUIET)
    ds = Dataset(out)
    assert rows(ds.samples("train")) == TRAIN
    assert rows(ds.samples("valid")) == VALID
    assert rows(ds.samples("test")) == TEST
    assert [it.to_dict() for it in ds.items.values()] == ITEMS
    line = next(json.loads(x) for x in (out / "items.jsonl").read_text().splitlines() if '"item_id": "1"' in x)
    assert line["features"] == ["Rust-proof steel & vinyl", "Holds 10 sheets"]
    # ... and the stage-1 prompt (and stage 2's) shows them, with the description
    ps, ctx = PromptSet(), item_context(ds.items["1"], "<a_1><b_1><c_1>")
    stage1 = ps.render("item_analysis", ctx)[1]["content"]
    assert "Description: Steel clips. Strong\nFeatures: Rust-proof steel & vinyl; Holds 10 sheets\n" in stage1
    insights = {"refined_description": "x", "primary_use_cases": ["x"], "target_audiences": ["x"],
                "key_features": ["x"], "related_keywords": ["x"]}
    stage2 = ps.render("item_integration", {**ctx, "insights": insights})[1]["content"]
    assert "Features: Rust-proof steel & vinyl; Holds 10 sheets\n" in stage2
    assert "Features: none given" in ps.render("item_analysis", item_context(ds.items["2"], "<a_2>"))[1]["content"]
    assert {k: stats[k] for k in ("items", "users", "train", "valid", "test", "interactions",
                                  "reviews_in_core", "window_start", "window_end")} == {
        "items": 5, "users": 6, "train": 19, "valid": 2, "test": 3, "interactions": 24,
        "reviews_in_core": 30, "window_start": "2016-10", "window_end": "2018-11"}
    source = json.loads((out / "source.json").read_text())
    assert source["urls"]["meta"] == f"{raw_server.url}/metaFiles2/meta_Office_Products.json.gz"
    assert len(source["files_sha256"]["Office_Products_5.json.gz"]) == 64
    # A second build reuses the verified raw files: no new requests.
    n = len(raw_server.requests)
    build_from_raw("office", tmp_path / "again", tmp_path / "raw", raw_server.url, cfg, QUIET)
    assert len(raw_server.requests) == n


def test_items_jsonl_without_features_still_loads(tmp_path):
    """items.jsonl written before ``features`` existed: the items load with none."""
    d = tmp_path / "old"
    d.mkdir()
    (d / "items.jsonl").write_text(json.dumps({"item_id": "7", "title": "Pen", "description": "Blue.",
                                               "brand": "B", "categories": ["Office"]}) + "\n")
    item = Dataset(d).items["7"]
    assert item.features == [] and item.to_dict()["features"] == []
    assert "Features: none given" in PromptSet().render("item_analysis", item_context(item, "<a_7>"))[1]["content"]


def test_feature_cleaning():
    from synth.data.text import clean_list

    assert clean_list(None) == [] == clean_list("") == clean_list([]) == clean_list(["", " <br> "])
    assert clean_list("['a &amp; b', '<p>c</p>']") == ["a & b", "c"]  # a literal, parsed, never run
    assert clean_list("Just one <b>line</b>") == ["Just one line"]
    assert clean_list(["x", ["y", "X"], "__import__('os')"]) == ["x", "y", "__import__('os')"]


def test_window_moves_back_while_too_few_items(raw_server, tmp_path):
    # Default min_items=3000: 5 items never suffice, so the start walks back to 1996-10
    # and J's 2016-09-30 review (hence J) is in.
    stats = build_from_raw("office", tmp_path / "o", tmp_path / "raw", raw_server.url,
                           download_config=QUIET)
    assert stats["window_start"] == "1996-10" and stats["window_moved_back_years"] == 20
    assert (stats["users"], stats["interactions"]) == (7, 28)
    assert (stats["train"], stats["valid"], stats["test"]) == (22, 3, 3)
    test = rows(Dataset(tmp_path / "o").samples("test"))
    assert [u for u, _, _ in test] == ["J", "J", "J"]
    assert test[-1] == ("J", [1, 2, 3, 0], 4)


def test_history_is_capped_at_ten():
    seq = [Review("u", f"i{k}", k) for k in range(12)]
    seqs = user_sequences(seq)
    ids = {f"i{k}": str(k) for k in range(12)}
    samples = make_samples(seqs, ids, 10)
    assert len(samples) == 11
    assert samples[-1][1].history == [str(k) for k in range(1, 11)]


def test_title_rules():
    assert admissible_title("Stapler")
    assert not admissible_title(None) and not admissible_title("") and not admissible_title("X")
    assert not admissible_title('""')  # quotes stripped -> empty
    assert not admissible_title("<span id='x'>Pen</span>")
    assert admissible_title(" ".join(["w"] * 20)) and not admissible_title(" ".join(["w"] * 21))


def test_markup_only_title_is_dropped(tmp_path):
    p = tmp_path / "meta.json.gz"
    p.write_bytes(gzip.compress(b'{"asin": "a", "title": "<b></b>"}\n{"asin": "b", "title": "Ok"}\n'))
    titles, meta = read_meta(p, {"a", "b"})
    assert titles == {"b": "Ok"} and set(meta) == {"a", "b"}


def test_bad_metadata_line_names_file_and_line(tmp_path):
    p = tmp_path / "meta.json.gz"
    p.write_bytes(gzip.compress(b'{"asin": "a", "title": "Ok"}\n{"asin": b, oops\n'))
    with pytest.raises(DatasetError, match=r"meta\.json\.gz:2: neither JSON nor a Python literal"):
        read_meta(p, {"a"})


def test_unknown_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset 'books'.*games, office, industrial"):
        build_from_raw("books", tmp_path / "o", tmp_path / "raw")


def test_offline_names_url_and_path(tmp_path, monkeypatch):
    base = closed_port_url()
    attempts, sleeps = count_attempts(monkeypatch)
    with pytest.raises(DownloadError) as e:
        build_from_raw("games", tmp_path / "g", tmp_path / "raw", base)
    assert len(attempts) == 1 and sleeps == []  # fails at once: no retry of a refused connection
    assert str(e.value).startswith(f"could not reach {base}/categoryFilesSmall/Video_Games_5.json.gz")
    assert f"put the file at {tmp_path / 'raw' / 'Video_Games_5.json.gz'} or use FROM=" in str(e.value)


def _cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "synth.data", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_cli_end_to_end(raw_server, tmp_path):
    r = _cli("--dataset", "office", "--base-url", raw_server.url, "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout)
    assert (stats["items"], stats["users"], stats["interactions"]) == (5, 7, 28)
    assert (tmp_path / "d" / "raw" / "amazon18" / "meta_Office_Products.json.gz").exists()
    assert Dataset(tmp_path / "d" / "office").stats() == stats
    assert "window 2016-10..2018-11: 5 items" in r.stderr  # progress of the window search


def test_cli_failure_is_one_line_and_exit_2(tmp_path):
    r = _cli("--dataset", "office", "--base-url", closed_port_url(), "--data-dir", str(tmp_path))
    assert r.returncode == 2
    assert r.stderr.startswith("error: could not reach ") and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and r.stdout == ""
    r = _cli("--dataset", "games", "--source", "minionerec", "--data-dir", str(tmp_path))
    assert r.returncode == 2 and "publishes no processed Video Games" in r.stderr


# ---------------------------------------------------------------------------- minionerec


def _write_minionerec_repo(root: Path, category: str) -> None:
    items = {"0": {"title": "Pen", "description": "['Blue &amp; fine']", "brand": "B",
                   "categories": ""},
             "1": {"title": "Ink", "description": "", "brand": "", "categories": ""},
             "2": {"title": "Pad", "description": "", "brand": "", "categories": ""}}
    header = "user_id,history_item_title,item_title,history_item_id,item_id,history_item_sid,item_sid\n"
    csvs = {
        "train.csv": header + 'u1,"[\'Pen\']",Ink,[0],1,[\'<a_1>\'],<a_2>\n'
                              'u1,"[\'Pen\', \'Ink\']",Pad,"[0, 1]",2,[],<a_3>\n',
        "valid.csv": header + 'u2,"[\'Ink\']",Pen,[1],0,[],<a_1>\n',
        "test.csv": header + 'u2,"[\'Ink\', \'Pen\']",Pad,"[1, 0]",2,[],<a_3>\n',
    }
    content = {"item.json": json.dumps(items), "index.json": json.dumps({"0": ["<a_1>"]}),
               "info.txt": "<a_1>\tPen\t0\n", **csvs}
    for local, rel in published_files(category).items():
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(content[local])


def test_minionerec_fetch_and_import(tmp_path):
    root = tmp_path / "www"
    _write_minionerec_repo(root, "Office_Products")
    with RangeServer(root) as srv:
        stats = fetch_minionerec("office", tmp_path / "office", tmp_path / "raw", srv.url, QUIET)
        assert sorted(p for p, _ in srv.requests) == sorted(
            "/" + rel for rel in published_files("Office_Products").values())
    assert {k: stats[k] for k in ("items", "users", "train", "valid", "test")} == {
        "items": 3, "users": 2, "train": 2, "valid": 1, "test": 1}
    ds = Dataset(tmp_path / "office")
    assert ds.items["0"].description == "Blue & fine"
    assert rows(ds.samples("train")) == [("u1", [0], 1), ("u1", [0, 1], 2)]
    source = json.loads((tmp_path / "office" / "source.json").read_text())
    assert source["kind"] == "minionerec"
    assert source["urls"]["train.csv"] == (
        f"{srv.url}/data/Amazon/train/Office_Products_5_2016-10-2018-11.csv")
    assert (tmp_path / "raw" / "Office_Products" / "item.json").exists()


def test_minionerec_has_no_games(tmp_path):
    with pytest.raises(DatasetError, match="no processed Video Games"):
        fetch_minionerec("games", tmp_path / "g", tmp_path / "raw")
