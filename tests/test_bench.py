"""The bench harness on tiny sizes: structure of the rows and results.json, and the
planted near duplicates found. Timings are not asserted (shared, noisy machine)."""
import json

from bench import SECTIONS
from bench import dedup_bench
from bench.__main__ import main
from bench.corpus import CorpusMaker
from synth.dedup import near_duplicate_indices

KEYS = {"name", "value", "unit", "peer", "peer_name", "ratio", "note"}


def test_dedup_section_rows_and_recall():
    rows = dedup_bench.run(True, sizes=[1500], subset=100, quality_texts=100)
    assert all(set(r) == KEYS for r in rows)
    names = [r["name"] for r in rows]
    for want in ["signatures 1k", "LSH index+query 1k", "dedup total 1k", "peak memory 1k",
                 "datasketch LSH index+query 1k", "recall at 2% edits", "recall at 30% edits"]:
        assert want in names, names
    sig = next(r for r in rows if r["name"] == "signatures 1k")
    assert sig["value"] > 0 and sig["ratio"] == round(sig["value"] / sig["peer"], 3)
    same = next(r for r in rows if r["name"] == "datasketch LSH index+query 1k")
    assert "same answer: True" in same["note"]
    total = next(r for r in rows if r["name"] == "dedup total 1k")
    recall = float(total["note"].split("recall ")[1].split()[0])
    assert recall >= 0.95
    curve = {r["name"]: r["value"] for r in rows if r["name"].startswith("recall at")}
    assert curve["recall at 2% edits"] >= 0.95 and curve["recall at 30% edits"] <= 0.1


def test_bench_corpus_planted_copies_are_found():
    texts, planted = CorpusMaker(seed=3).texts(800, dup_share=0.1, edit_rate=0.03)
    assert len(texts) == 800 and all(80 <= len(t.split()) <= 220 for t in texts)
    assert any("<a_" in t for t in texts)
    truth = {i for i, s in enumerate(planted) if s >= 0}
    assert len(truth) > 40
    flagged = near_duplicate_indices(texts)
    assert len(flagged & truth) >= 0.95 * len(truth)
    assert len(flagged - truth) <= 2


def test_main_writes_results(tmp_path, capsys):
    assert {"dedup", "checks"} <= set(SECTIONS)
    out = tmp_path / "results.json"
    assert main(["--quick", "--only", "checks", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["quick"] is True and doc["sections"] == ["checks"]
    assert {"cpu", "cores", "python"} <= set(doc["machine"]) and "timestamp" in doc and "commit" in doc
    assert doc["rows"] and all(r["section"] == "checks" and KEYS <= set(r) for r in doc["rows"])
    per = next(r for r in doc["rows"] if r["name"] == "both checks on a user text")
    assert per["unit"] == "ms" and per["value"] > 0
    assert "both checks on a user text" in capsys.readouterr().out


def test_unknown_section_is_an_error(tmp_path):
    import pytest
    with pytest.raises(SystemExit):
        main(["--only", "nope", "--out", str(tmp_path / "r.json")])
