"""The paper's published numbers (train.published) are complete and equal the checked copy of the paper."""
import csv
from pathlib import Path

import pytest

from train import published
from train.published import (
    TABLE2,
    TABLE3,
    TABLE5,
    alignment_rows,
    paper_teacher,
    published_rows,
    teacher_rows,
)

PAPER_DIR = Path(__file__).resolve().parents[2] / "shared" / "paper"
TABLES = {"table2_main_results.csv": published.TABLE2_CSV, "table3_alignment_ablation.csv": published.TABLE3_CSV,
          "table5_teacher_ablation.csv": published.TABLE5_CSV}
MODELS = ["Caser", "GRU4Rec", "SASRec", "TIGER", "HSTU", "LETTER", "LCRec", "ReaRec", "R2ec", "SIDReasoner"]


def _cells(rows):
    """Each cell, numbers as floats (so '0.0880' and '0.088' are the same fact)."""
    out = []
    for row in rows:
        cells = {}
        for k, v in row.items():
            try:
                cells[k] = float(v)
            except ValueError:
                cells[k] = v
        out.append(cells)
    return out


@pytest.mark.parametrize("name", sorted(TABLES))
def test_tables_equal_the_checked_copy_of_the_paper(name):
    path = PAPER_DIR / name
    if not path.exists():
        pytest.skip(f"the checked copy of the paper's tables is not here ({path})")
    with path.open(encoding="utf-8", newline="") as f:
        paper = list(csv.DictReader(f))
    ours = list(csv.DictReader(TABLES[name].splitlines()))
    assert list(ours[0]) == list(paper[0])  # same columns, same order
    assert _cells(ours) == _cells(paper)  # every cell, row by row


def test_every_entry_is_carried_and_checked():
    # Table 2: ten models x three datasets = 30 entries, four metrics each
    assert sorted(TABLE2) == ["Games", "Industrial", "Office"]
    for rows in TABLE2.values():
        assert [r["model"] for r in rows] == MODELS
        assert all(len([k for k in r if "@" in k]) == 4 and r["verified"] for r in rows)
    assert sum(len(rows) for rows in TABLE2.values()) == 30
    # Table 3: S1-S3 before/after RL on Games and Office, R@10 / N@10
    assert sorted(TABLE3) == ["Games", "Office"]
    for rows in TABLE3.values():
        assert [(r["backbone"], r["stage"]) for r in rows] == [
            (s, st) for s in ("S1", "S2", "S3") for st in ("before_rl", "after_rl")]
        assert all(set(r) >= {"recall@10", "ndcg@10"} and r["verified"] for r in rows)
    # Table 5: four teachers on Games
    assert list(TABLE5) == ["Games"]
    assert [r["teacher"] for r in TABLE5["Games"]] == ["Metadata", "Qwen3-8B", "Qwen3-32B", "GPT-4o-mini"]


def test_lookups():
    office = {r["model"]: r for r in published_rows("office")}
    assert list(office) == MODELS and office["SIDReasoner"]["recall@10"] == 0.1648
    assert office["Caser"]["recall@5"] == 0.0880 and office["SIDReasoner"]["paper_dataset"] == "Office"
    s3 = [r for r in alignment_rows("Office_Products") if r["backbone"] == "S3"]
    assert [(r["stage"], r["recall@10"]) for r in s3] == [("before_rl", 0.1231), ("after_rl", 0.1648)]
    assert alignment_rows("industrial") == [] and teacher_rows("office") == []
    assert [r["ndcg@10"] for r in teacher_rows("games")] == [0.0466, 0.0480, 0.0498, 0.0563]
    # the SIDReasoner rows agree across tables (the paper's full model is S3 after RL with GPT-4o-mini)
    assert s3[-1]["recall@10"] == office["SIDReasoner"]["recall@10"]
    assert teacher_rows("games")[-1]["recall@10"] == TABLE2["Games"][-1]["recall@10"]


def test_teacher_names():
    assert paper_teacher("metadata") == "Metadata"
    assert paper_teacher("gpt-4o-mini") == paper_teacher("openai/gpt-4o-mini") == "GPT-4o-mini"
    assert paper_teacher("ollama/qwen3:8b") == paper_teacher("hosted_vllm/Qwen/Qwen3-8B") == "Qwen3-8B"
    assert paper_teacher("Qwen3-32B") == "Qwen3-32B"
    assert paper_teacher("claude") is None and paper_teacher(None) is None
