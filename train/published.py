"""Numbers the SIDReasoner paper publishes, for the report's "published, not measured" rows.

Paper: He et al., "Reasoning over Semantic IDs Enhances Generative Recommendation" (SIDReasoner,
arXiv 2603.23183, KDD 2026). Metrics are test Recall (R) and NDCG (N) at 5 and 10 under full
ranking, on the Amazon 2018 Games, Office and Industrial data this toolkit imports.

- Table 2 (``TABLE2``): all ten models (Caser, GRU4Rec, SASRec, TIGER, HSTU, LETTER, LCRec, ReaRec,
  R2ec, SIDReasoner) on the three datasets, R@5, N@5, R@10, N@10.
- Table 3 (``TABLE3``): R@10 / N@10 before and after RL of the three alignment variants, Games and
  Office: S1 multi-task alignment, S2 = S1 + the enriched (teacher) corpus, S3 = S2 + general
  reasoning data.
- Table 5 (``TABLE5``): Games R@10 / N@10 after RL with the enriched corpus of each teacher
  (Metadata = the rule-based corpus, ``TEACHER=metadata``; Qwen3-8B; Qwen3-32B; GPT-4o-mini).

Provenance: every value was checked cell by cell against the paper's own text (the checked copy
is the project's shared ``paper/`` folder, ``table2_main_results.csv``, ``table3_alignment_ablation.csv``,
``table5_teacher_ablation.csv``; ``tests/test_published.py`` compares this module with it when the
folder is present). The tables below are data copied from there, in the same CSV layout; this
module never reads that folder at run time. Never fill a value in from anywhere but the paper.
"""
from __future__ import annotations

import csv
import io
import re

PAPER = "SIDReasoner, arXiv 2603.23183"
SOURCE = "checked cell by cell against the paper"
DATASETS = ("Games", "Office", "Industrial")  # the paper's columns
METRICS = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")
_SHORT = {"r5": "recall@5", "n5": "ndcg@5", "r10": "recall@10", "n10": "ndcg@10"}

# Table 2, as table2_main_results.csv.
TABLE2_CSV = """\
model,games_r5,games_n5,games_r10,games_n10,office_r5,office_n5,office_r10,office_n10,industrial_r5,industrial_n5,industrial_r10,industrial_n10
Caser,0.0376,0.0241,0.0659,0.0332,0.0880,0.0663,0.1114,0.0738,0.0664,0.0528,0.0852,0.0588
GRU4Rec,0.0329,0.0219,0.0599,0.0305,0.0682,0.0480,0.0974,0.0574,0.0788,0.0578,0.1030,0.0649
SASRec,0.0501,0.0345,0.0723,0.0416,0.1019,0.0824,0.1167,0.0871,0.0807,0.0647,0.0964,0.0697
TIGER,0.0489,0.0300,0.0763,0.0402,0.1270,0.1037,0.1429,0.1121,0.1003,0.0823,0.1325,0.0924
HSTU,0.0539,0.0396,0.0746,0.0462,0.1204,0.1069,0.1323,0.1107,0.1008,0.0898,0.1138,0.0940
LETTER,0.0445,0.0294,0.0709,0.0378,0.1315,0.1074,0.1520,0.1139,0.1080,0.0850,0.1389,0.0950
LCRec,0.0441,0.0274,0.0876,0.0412,0.0964,0.0699,0.1487,0.0867,0.0805,0.0520,0.1330,0.0687
ReaRec,0.0568,0.0381,0.0843,0.0470,0.1173,0.0988,0.1385,0.1057,0.0973,0.0796,0.1205,0.0870
R2ec,0.0655,0.0399,0.0931,0.0525,0.1147,0.0894,0.1486,0.1004,0.0880,0.0774,0.1253,0.0774
SIDReasoner,0.0710,0.0460,0.1031,0.0563,0.1373,0.1119,0.1648,0.1208,0.1109,0.0905,0.1438,0.1010
"""

# Table 3, as table3_alignment_ablation.csv.
TABLE3_CSV = """\
backbone,stage,games_r10,games_n10,office_r10,office_n10
S1,before_rl,0.0414,0.0206,0.0388,0.0201
S1,after_rl,0.0741,0.0355,0.1539,0.0970
S2,before_rl,0.0632,0.0320,0.0619,0.0363
S2,after_rl,0.0957,0.0470,0.1607,0.1178
S3,before_rl,0.0806,0.0450,0.1231,0.0883
S3,after_rl,0.1031,0.0563,0.1648,0.1208
"""

# Table 5, as table5_teacher_ablation.csv.
TABLE5_CSV = """\
teacher,games_r10,games_n10
Metadata,0.0703,0.0466
Qwen3-8B,0.0727,0.0480
Qwen3-32B,0.0858,0.0498
GPT-4o-mini,0.1031,0.0563
"""

VARIANTS = {"S1": "multi-task alignment", "S2": "S1 + enriched corpus", "S3": "S2 + general reasoning data"}
RL_STAGES = {"before_rl": "before RL", "after_rl": "after RL"}


def _read(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def _by_dataset(rows: list[dict], keys: tuple[str, ...]) -> dict[str, list[dict]]:
    """dataset -> rows {key columns..., metric: value, "verified": True} of a table in the paper's CSV layout."""
    out: dict[str, list[dict]] = {}
    for row in rows:
        for dataset in DATASETS:
            prefix = f"{dataset.lower()}_"
            values = {_SHORT[c[len(prefix):]]: float(v) for c, v in row.items() if c.startswith(prefix)}
            if values:
                out.setdefault(dataset, []).append({**{k: row[k] for k in keys}, **values, "verified": True})
    return out


TABLE2: dict[str, list[dict]] = _by_dataset(_read(TABLE2_CSV), ("model",))
TABLE3: dict[str, list[dict]] = _by_dataset(_read(TABLE3_CSV), ("backbone", "stage"))
TABLE5: dict[str, list[dict]] = _by_dataset(_read(TABLE5_CSV), ("teacher",))
PUBLISHED = TABLE2  # the name the report used for Table 2

# Names a user may give the dataset (folder names, Amazon category names) -> the paper's column.
_ALIASES = {
    "office": "Office", "officeproducts": "Office",
    "games": "Games", "videogames": "Games",
    "industrial": "Industrial", "industrialandscientific": "Industrial", "industrialscientific": "Industrial",
}


def paper_dataset(name: str) -> str | None:
    """'office', 'Office_Products', 'office-small' -> 'Office'; None when the paper has no column."""
    key = re.sub(r"[^a-z]", "", name.lower())
    if key in _ALIASES:
        return _ALIASES[key]
    for alias, canon in _ALIASES.items():  # a prefix such as 'office' in 'officesmall'
        if key.startswith(alias):
            return canon
    return None


def _rows(table: dict[str, list[dict]], dataset: str) -> list[dict]:
    canon = paper_dataset(dataset)
    return [dict(row, paper_dataset=canon) for row in table.get(canon, [])] if canon else []


def published_rows(dataset: str) -> list[dict]:
    """Table 2 for ``dataset`` (any name ``paper_dataset`` knows): ten rows, one per model."""
    return _rows(TABLE2, dataset)


def alignment_rows(dataset: str) -> list[dict]:
    """Table 3 for ``dataset`` (Games, Office): {"backbone": S1|S2|S3, "stage": before_rl|after_rl, R@10, N@10}."""
    return _rows(TABLE3, dataset)


def teacher_rows(dataset: str) -> list[dict]:
    """Table 5 for ``dataset`` (Games only): {"teacher", R@10, N@10} after RL."""
    return _rows(TABLE5, dataset)


def paper_teacher(name: str | None) -> str | None:
    """The Table 5 row a ``TEACHER=`` value corresponds to ('metadata' -> 'Metadata', 'gpt-4o-mini',
    'openai/gpt-4o-mini' -> 'GPT-4o-mini', 'ollama/qwen3:8b' -> 'Qwen3-8B'); None for another teacher."""
    if not name:
        return None
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    if key == "metadata":
        return "Metadata"
    for pattern, row in (("gpt4omini", "GPT-4o-mini"), ("qwen332b", "Qwen3-32B"), ("qwen38b", "Qwen3-8B")):
        if pattern in key:
            return row
    return None
