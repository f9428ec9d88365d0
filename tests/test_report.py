"""The report lists every run it finds, one row per stage and mode, and says which files it skipped."""
import json

import pytest

from train import report
from train.published import paper_dataset, published_rows


def _metrics(r10, n=100):
    return {"recall@5": r10 / 2, "ndcg@5": r10 / 4, "recall@10": r10, "ndcg@10": r10 / 3, "n": n}


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj), encoding="utf-8")


@pytest.fixture()
def runs(tmp_path):
    root = tmp_path / "runs"
    _write(root / "office" / "baseline-sasrec" / "metrics.json", {
        "model": "sasrec", "kind": "baseline", "dataset": "office", "teacher": None,
        "data": {"name": "office", "stats": {"train": 9484}, "sha256": {"train.jsonl": "ab" * 32}},
        "stages": {"sasrec": {"direct": _metrics(0.111)}}, "wall_time_s": 1.0})
    _write(root / "office" / "baseline-popular" / "metrics.json", {
        "model": "popular", "kind": "baseline", "dataset": "office", "data": {"name": "office"},
        "stages": {"popular": {"direct": _metrics(0.045)}}})
    _write(root / "office" / "tiny-metadata" / "metrics.json", {
        "model": "tiny", "teacher": {"name": "metadata", "corpus_sha256": "cd" * 32}, "dataset": "office",
        "data": "office (import of shared Office)",
        "stages": {
            "grpo": {"thinking": _metrics(0.031)},  # out of order on purpose
            "align": {"direct": _metrics(0.011), "thinking": _metrics(0.012)},
            "activate": {"thinking": _metrics(0.021), "direct": {}},  # an empty mode is skipped
        }})
    _write(root / "office" / "tiny-gpt" / "metrics.json", {
        "model": "tiny", "teacher": "gpt-4o-mini", "dataset": "office", "limit": 200,
        "stages": {"grpo": {"thinking": _metrics(0.05)}, "align": {"direct": _metrics(0.04)}}})
    _write(root / "office" / "nested" / "run2" / "metrics.json", {
        "model": "Qwen3-0.6B", "stages": {"align": _metrics(0.2)}})  # metrics without a mode level
    _write(root / "office" / "broken" / "metrics.json", '{"model": "x", "stages": {')
    _write(root / "office" / "nostages" / "metrics.json", {"model": "x"})
    _write(root / "games" / "other" / "metrics.json", {"stages": {"align": {"direct": _metrics(0.9)}}})
    return root


def test_report_includes_every_run_and_skips_malformed_files_by_name(runs, caplog):
    rep = report.build("office", runs)
    got = [(r.run, r.stages, r.mode) for r in rep.rows]
    assert got == [
        ("baseline-popular", "popular", "direct"),
        ("baseline-sasrec", "sasrec", "direct"),
        ("nested/run2", "align", "—"),
        ("tiny-gpt", "align", "direct"),
        ("tiny-gpt", "align → activate → grpo", "thinking"),
        ("tiny-metadata", "align", "direct"),
        ("tiny-metadata", "align", "thinking"),
        ("tiny-metadata", "align → activate", "thinking"),
        ("tiny-metadata", "align → activate → grpo", "thinking"),
    ]
    skipped = dict(rep.skipped)
    assert set(skipped) == {str(runs / "office" / "broken" / "metrics.json"),
                            str(runs / "office" / "nostages" / "metrics.json")}
    assert "not valid JSON" in skipped[str(runs / "office" / "broken" / "metrics.json")]
    assert any("broken/metrics.json" in rec.getMessage() for rec in caplog.records)

    md = rep.markdown_path.read_text(encoding="utf-8")
    assert rep.markdown_path == runs / "office" / "report.md"
    for run in ("baseline-popular", "baseline-sasrec", "nested/run2", "tiny-gpt", "tiny-metadata"):
        assert f"| {run} |" in md
    assert "| tiny-metadata | tiny | metadata (cdcdcdcd) | align → activate → grpo | " in md
    assert "office (train 9,484 rows, sha abababab)" in md
    assert "| tiny-gpt | tiny | gpt-4o-mini | align | office, limit 200 rows | — | direct |" in md
    assert "| office (train 9,484 rows, sha abababab) | item ids | direct |" in md  # baselines: no SIDs
    assert "0.1110" in md and "0.0450" in md
    assert "other" not in md  # another dataset's runs stay out
    assert "broken/metrics.json" in md and "nostages/metrics.json" in md
    # the paper's numbers, marked as such: all ten models of Table 2 for Office, and Table 3
    assert "published, not measured" in md and "| SIDReasoner |" in md and "0.1648" in md
    for model in ("Caser", "GRU4Rec", "SASRec", "TIGER", "HSTU", "LETTER", "LCRec", "ReaRec", "R2ec"):
        assert f"| paper: Office | {model} |" in md
    assert len(rep.published) == 10 and "unverified" not in md
    assert "| S2 | after RL | paper: Office | — | — | 0.1607 | 0.1178 | — | published, not measured (Table 3) |" in md
    assert "Table 5" not in md  # Games only
    assert rep.png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![Recall@10 and NDCG@10](report.png)" in md


def test_strict_mode_turns_a_malformed_file_into_an_error_naming_it(runs, capsys):
    with pytest.raises(report.ReportError, match=r"broken/metrics.json: not valid JSON"):
        report.build("office", runs, strict=True)
    assert report.main(["--dataset", "office", "--runs-dir", str(runs), "--strict"]) == 2
    assert "broken/metrics.json" in capsys.readouterr().err


def test_cli_writes_where_told_and_a_dataset_without_paper_numbers(tmp_path, runs, capsys):
    out = tmp_path / "elsewhere" / "r.md"
    assert report.main(["--dataset", "games", "--runs-dir", str(runs), "--out", str(out)]) == 0
    md = out.read_text(encoding="utf-8")
    assert "| other |" in md and "0.9000" in md and (tmp_path / "elsewhere" / "r.png").exists()
    assert report.main(["--dataset", "mine", "--runs-dir", str(runs)]) == 0
    md = (runs / "mine" / "report.md").read_text(encoding="utf-8")
    assert "No metrics.json found" in md and "Published rows: none for 'mine'" in md


def test_paper_dataset_names():
    assert paper_dataset("office") == paper_dataset("Office_Products") == "Office"
    assert paper_dataset("Industrial_and_Scientific") == "Industrial"
    assert paper_dataset("video-games") == "Games"
    assert paper_dataset("movielens") is None
    rows = published_rows("office")
    assert len(rows) == 10 and {r["model"] for r in rows} >= {"SASRec", "SIDReasoner"}
    assert all(r["verified"] for r in rows)  # checked against the paper (tests/test_published.py)


def _llm(teacher, stages, sid_set="own", general=None):
    return {"kind": "llm", "model": "tiny", "dataset": "games", "teacher": {"name": teacher} if teacher else None,
            "sid_set": {"name": sid_set, "file": "x", "sha256": "ef" * 32},
            "config": {"align": {"general": general, "general_n": 100 if general else 0}},
            "stages": stages}


def test_runs_sit_beside_the_papers_table3_and_table5_rows(tmp_path):
    root = tmp_path / "runs"
    _write(root / "games" / "s1" / "metrics.json", _llm(None, {
        "align": {"thinking": _metrics(0.01)}, "grpo": {"thinking": _metrics(0.02)}}))
    _write(root / "games" / "s2" / "metrics.json", _llm("metadata", {
        "align": {"thinking": _metrics(0.03)}, "activate": {"thinking": _metrics(0.04)},
        "grpo": {"thinking": _metrics(0.05)}}, sid_set="reference"))
    _write(root / "games" / "s3" / "metrics.json", _llm("gpt-4o-mini", {"grpo": {"direct": _metrics(0.06)}},
                                                        general="chat.jsonl"))
    _write(root / "games" / "s1-recorded" / "metrics.json", {**_llm("metadata", {"grpo": {"direct": _metrics(0.08)}}),
                                                             "variant": "s1"})  # TEACHER=x ALIGN_CORPUS=0
    _write(root / "games" / "s1-general" / "metrics.json", {**_llm(None, {"grpo": {"direct": _metrics(0.09)}}),
                                                            "variant": "s1+general"})  # none of the paper's
    _write(root / "games" / "baseline-popular" / "metrics.json", {
        "kind": "baseline", "model": "popular", "stages": {"popular": {"direct": _metrics(0.07)}}})
    rep = report.build("games", root)
    assert [(r.run, r.variant, r.rl) for r in rep.rows if r.variant] == [
        ("s1", "S1", "before_rl"), ("s1", "S1", "after_rl"), ("s1-recorded", "S1", "after_rl"),
        ("s2", "S2", None), ("s2", "S2", "before_rl"), ("s2", "S2", "after_rl"), ("s3", "S3", "after_rl")]
    md = rep.markdown_path.read_text(encoding="utf-8")
    t3 = md[md.index("Table 3 (Games)"):md.index("Table 5")]
    lines = [line for line in t3.splitlines() if line.startswith("| S")]
    assert [line.split(" | ")[:3] for line in lines] == [
        ["| S1", "before RL", "paper: Games"], ["| S1", "before RL", "s1"],
        ["| S1", "after RL", "paper: Games"], ["| S1", "after RL", "s1"], ["| S1", "after RL", "s1-recorded"],
        ["| S2", "before RL", "paper: Games"], ["| S2", "before RL", "s2"],
        ["| S2", "after RL", "paper: Games"], ["| S2", "after RL", "s2"],
        ["| S3", "before RL", "paper: Games"],
        ["| S3", "after RL", "paper: Games"], ["| S3", "after RL", "s3"]]
    assert "| S2 | after RL | s2 | thinking | reference (efefefef) | 0.0500 |" in t3
    assert "| S1 | before RL | paper: Games | — | — | 0.0414 | 0.0206 |" in t3
    t5 = md[md.index("Table 5"):]
    lines = [line.split(" | ")[:2] for line in t5.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert lines == [["| Metadata", "paper: Games"], ["| Metadata", "s2"], ["| Qwen3-8B", "paper: Games"],
                     ["| Qwen3-32B", "paper: Games"], ["| GPT-4o-mini", "paper: Games"], ["| GPT-4o-mini", "s3"]]
    assert "| GPT-4o-mini | paper: Games | — | — | 0.1031 | 0.0563 | — | published, not measured (Table 5) |" in t5


def _sliced(r10, n=100, cold=10, repeat=5):
    """Metrics with slices: the cold slice scores r10 / 2, the repeat slice 2 * r10 (NDCG a third of it)."""
    return {**_metrics(r10, n), "slices": {
        "cold": {**_metrics(r10 / 2, cold), "n": cold} if cold else {"n": 0},
        "repeat": {**_metrics(2 * r10, repeat), "n": repeat}}}


def test_main_table_shows_the_slices_and_dashes_for_records_without_them(tmp_path):
    root = tmp_path / "runs"
    _write(root / "office" / "baseline-popular" / "metrics.json", {
        "kind": "baseline", "model": "popular", "stages": {"popular": {"direct": _sliced(0.1)}}})
    _write(root / "office" / "llm" / "metrics.json", {
        "kind": "llm", "model": "tiny", "stages": {"align": {"direct": _sliced(0.2), "thinking": _sliced(0.3)}}})
    _write(root / "office" / "old" / "metrics.json", {
        "kind": "llm", "model": "tiny", "stages": {"align": {"direct": _metrics(0.4)}}})  # before slices
    md = report.build("office", root).markdown_path.read_text(encoding="utf-8")
    head = next(line for line in md.splitlines() if line.startswith("| run |"))
    cols = [c.strip() for c in head.strip("|").split("|")]
    assert cols[7:17] == ["Recall@5", "NDCG@5", "Recall@10", "NDCG@10", "Recall@10 cold", "NDCG@10 cold",
                          "Recall@10 repeat", "NDCG@10 repeat", "n", "source"]

    def cells(run, mode):
        line = next(line for line in md.splitlines() if line.startswith(f"| {run} |") and f"| {mode} |" in line)
        return dict(zip(cols, (c.strip() for c in line.strip("|").split("|"))))

    row = cells("llm", "thinking")
    assert (row["Recall@10"], row["NDCG@10"], row["n"]) == ("0.3000", "0.1000", "100")
    assert (row["Recall@10 cold"], row["NDCG@10 cold"]) == ("0.1500", "0.0500")
    assert (row["Recall@10 repeat"], row["NDCG@10 repeat"]) == ("0.6000", "0.2000")
    assert cells("baseline-popular", "direct")["Recall@10 cold"] == "0.0500"
    old = cells("old", "direct")
    assert old["Recall@10"] == "0.4000"
    assert [old[f"{m} {s}"] for s in ("cold", "repeat") for m in ("Recall@10", "NDCG@10")] == ["—"] * 4
    paper = cells("paper: Office", "—")  # the published rows: no slices
    assert paper["Recall@10 cold"] == paper["NDCG@10 repeat"] == "—"
    # each slice's size, said once for the runs that agree
    assert "cold: 10 rows, repeat: 5 rows (of 100 test rows)." in md

    # a run on fewer test rows (--limit) has other counts: each group names its runs; an empty slice shows —
    _write(root / "office" / "small" / "metrics.json", {
        "kind": "llm", "model": "tiny", "limit": 20, "stages": {"align": {"direct": _sliced(0.5, 20, 0, 2)}}})
    md = report.build("office", root).markdown_path.read_text(encoding="utf-8")
    assert "cold: 10 rows, repeat: 5 rows (of 100 test rows): baseline-popular, llm; " \
           "cold: 0 rows, repeat: 2 rows (of 20 test rows): small." in md
    small = cells("small", "direct")
    assert (small["Recall@10 cold"], small["Recall@10 repeat"]) == ("—", "1.0000")


def test_a_report_without_any_sliced_record_says_so(runs):
    md = report.build("office", runs).markdown_path.read_text(encoding="utf-8")
    assert "No measured row records slices yet" in md
    assert "| tiny-gpt | tiny | gpt-4o-mini | align | office, limit 200 rows | — | direct | 0.0200 | 0.0100 | " \
           "0.0400 | 0.0133 | — | — | — | — | 100 |" in md


def test_report_says_what_grpo_changed(tmp_path):
    """A run that trained GRPO gets a row: validation Recall@10 before -> after, reward, reasoning length and
    how many steps had any reward variance (the ones with a policy gradient)."""
    from train.report import grpo_section

    grpo = tmp_path / "office" / "tiny-metadata" / "grpo"
    grpo.mkdir(parents=True)
    points = [{"step": 0, "val_recall@10": 0.07, "val_n": 1000, "val_mode": "thinking"},
              {"step": 4, "val_recall@10": 0.08, "val_n": 1000, "val_mode": "thinking"}]
    (grpo / "summary.json").write_text(json.dumps({"steps": 4, "completions_per_step": 64, "recall_points": points}))
    steps = [{"reward": r, "reward_std": sd, "rewards/reasoning_tokens/mean": n}
             for r, sd, n in ((0.1, 0.0, 80.0), (0.2, 0.1, 85.0), (0.1, 0.0, 90.0), (0.3, 0.2, 95.0))]
    (grpo / "log_history.json").write_text(json.dumps(steps + points))
    (tmp_path / "office" / "baseline-popular").mkdir()  # no GRPO: no row
    lines = grpo_section(tmp_path / "office")
    row = [line for line in lines if line.startswith("| tiny-metadata")]
    assert len(row) == 1 and len([line for line in lines if line.startswith("| ")]) == 2
    cells = [c.strip() for c in row[0].strip("|").split("|")]
    assert cells[3] == "0.0700 -> 0.0800" and cells[4] == "1000 thinking"
    assert cells[5] == "0.1000 -> 0.3000" and cells[6] == "80.0000 -> 95.0000" and cells[7] == "2 of 4"
