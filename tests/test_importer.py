"""FROM= import of the MiniOneRec/SIDReasoner layout, on the real shared data and on bad input."""
import json

import pytest

from synth.data.dataset import Dataset, DatasetError
from synth.data.importer import import_folder
from synth.data.text import clean_text


def test_import_shared_office_matches_readme(shared_office, tmp_path):
    stats = import_folder(shared_office, tmp_path / "office")
    # The shared data's README: 3,459 items; train 9,484 (partial), valid and test 4,866 rows each.
    assert stats["items"] == 3459
    assert (stats["train"], stats["valid"], stats["test"]) == (9484, 4866, 4866)
    ds = Dataset(tmp_path / "office")
    assert len(ds.items) == 3459
    test = list(ds.samples("test"))
    assert len(test) == 4866
    assert all(1 <= len(s.history) <= 10 for s in test)
    assert all(s.target in ds.items for s in test)
    # HTML and Python-list wrappers are gone from descriptions.
    assert not any(d.description.startswith("['") for d in ds.items.values())
    assert not any("<sup>" in d.description for d in ds.items.values())
    assert not any("font-family" in d.description for d in ds.items.values())
    ref = json.loads((tmp_path / "office" / "reference_sids.json").read_text())
    assert len(ref) == 3459 and ref["0"] == ["<a_60>", "<b_159>", "<c_203>"]


def _layout(tmp_path, items=None, rows=None, header="user_id,history_item_id,item_id"):
    src = tmp_path / "src"
    src.mkdir()
    items = items or {"0": {"title": "Red pen", "description": "", "brand": "", "categories": ""},
                      "1": {"title": "Blue pen", "description": "", "brand": "", "categories": ""}}
    (src / "item.json").write_text(json.dumps(items))
    rows = rows or ['u1,"[0]",1']
    for split in ("train", "valid", "test"):
        (src / f"{split}.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return src


@pytest.mark.parametrize(
    "rows, message",
    [
        (['u1,"[0, 1",1'], "train.csv:2: history_item_id"),
        (['u1,"__import__(\'os\')",1'], "is not a list literal"),
        (['u1,"[0]",7'], "unknown item id '7'"),
        (['u1,"[]",1'], "empty history"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, rows, message):
    src = _layout(tmp_path, rows=rows)
    with pytest.raises(DatasetError, match=message.replace("[", r"\[").replace("(", r"\(")):
        import_folder(src, tmp_path / "out")
    assert not (tmp_path / "out" / "items.jsonl").exists()


def test_missing_column(tmp_path):
    src = _layout(tmp_path, header="user_id,item_id", rows=["u1,1"])
    with pytest.raises(DatasetError, match=r"train.csv:1: missing column\(s\) history_item_id"):
        import_folder(src, tmp_path / "out")


def test_empty_title_and_duplicate_ids(tmp_path):
    src = _layout(tmp_path, items={"0": {"title": "<b></b> "}, "1": {"title": "x"}})
    with pytest.raises(DatasetError, match="item '0' has an empty title"):
        import_folder(src, tmp_path / "out")
    (src / "item.json").write_text('{"0": {"title": "a"}, "0": {"title": "b"}, "1": {"title": "c"}}')
    with pytest.raises(DatasetError, match="duplicate item id '0'"):
        import_folder(src, tmp_path / "out")


def test_non_utf8_names_line(tmp_path):
    src = _layout(tmp_path)
    (src / "valid.csv").write_bytes(b"user_id,history_item_id,item_id\nu1,\"[0]\",1\nu\xff,\"[0]\",1\n")
    with pytest.raises(DatasetError, match=r"valid.csv:3: not UTF-8"):
        import_folder(src, tmp_path / "out")


def test_history_window_is_cut_to_ten(tmp_path):
    items = {str(i): {"title": f"item {i}"} for i in range(12)}
    src = _layout(tmp_path, items=items, rows=['u1,"[0,1,2,3,4,5,6,7,8,9,10]",11'])
    import_folder(src, tmp_path / "out")
    (sample,) = Dataset(tmp_path / "out").samples("train")
    assert sample.history == [str(i) for i in range(1, 11)]


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(DatasetError, match="no such folder"):
        import_folder(tmp_path / "nope", tmp_path / "out")
    src = _layout(tmp_path)
    (src / "test.csv").unlink()
    with pytest.raises(DatasetError, match="missing test.csv"):
        import_folder(src, tmp_path / "out")


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("['Ink <b>bold</b>', 'second']", "Ink bold second"),
        ("Capacity 1amp;quot; max", 'Capacity 1" max'),
        ("Marks-A-Lot<sup></sup> Jumbo", "Marks-A-Lot Jumbo"),
        ("{{ 7*7 }} {% if x %}", "{{ 7*7 }} {% if x %}"),  # data, never a template
        ("['unterminated", "['unterminated"),
        ("['It's broken', 'repr']", "It's broken repr"),
        ("Ink <!-- .h {color:#000;font-family:Arial} --> pack", "Ink pack"),
        ("A <style>p {font-size: 2px}</style>B .sub {font-weight: bold;} C", "A B C"),
        ("x &lt;b&gt;bold&lt;/b&gt; y", "x bold y"),
        ("5 < 7 and 9 > 2", "5 < 7 and 9 > 2"),
    ],
)
def test_clean_text_rules(raw, clean):
    assert clean_text(raw) == clean
