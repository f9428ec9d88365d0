"""Numbers the SIDReasoner paper publishes (Table 2), for the report's "published, not measured" rows.

Paper: He et al., "Reasoning over Semantic IDs Enhances Generative Recommendation" (SIDReasoner,
arXiv 2603.23183, KDD 2026), Table 2: test Recall@5/10 and NDCG@5/10 under full ranking, on the
Amazon 2018 Office, Industrial and Games data this toolkit imports.

Provenance, honestly: the paper's own table could not be read here. The values below are
TRANSCRIPTIONS by a third-party reproduction (github.com/FSmisaka/Reasoning4GenRec-Reproduction:
README "复现目标（论文 Table 2）", README section "论文参考值 (Table 2)", src/train/common.py
PAPER_REF, results/reproduction.md); every entry therefore carries ``verified: False`` and the
report says so. TODO: check each value against the paper's Table 2 and add it to ``VERIFIED``;
add the rows still missing (the other baselines of Table 2, and SASRec/TIGER on Industrial).
Never fill a value in from anywhere but the paper or a transcription named here.
"""
from __future__ import annotations

import re

PAPER = "SIDReasoner, arXiv 2603.23183, Table 2"
SOURCE = "transcribed by github.com/FSmisaka/Reasoning4GenRec-Reproduction, not yet checked against the paper"

# The paper's Table 2, as transcribed: one row per (dataset, model), metrics under the toolkit's names.
_TABLE2 = """
dataset     model        recall@5  ndcg@5  recall@10  ndcg@10
Office      SASRec       0.1019    0.0824  0.1167     0.0871
Office      TIGER        0.1270    0.1037  0.1429     0.1121
Office      SIDReasoner  0.1373    0.1119  0.1648     0.1208
Games       SASRec       0.0501    0.0345  0.0723     0.0416
Games       TIGER        0.0489    0.0300  0.0763     0.0402
Games       SIDReasoner  0.0710    0.0460  0.1031     0.0563
Industrial  SIDReasoner  0.1109    0.0905  0.1438     0.1010
"""
VERIFIED: set[tuple[str, str]] = set()  # (dataset, model) rows checked against the paper itself


def _parse(table: str) -> dict[str, list[dict]]:
    """dataset -> rows {"model", metric: value, "verified"} of a whitespace-separated table."""
    head, *lines = [line.split() for line in table.strip().splitlines()]
    out: dict[str, list[dict]] = {}
    for cells in lines:
        dataset, model, *values = cells
        row = {"model": model, **{k: float(v) for k, v in zip(head[2:], values, strict=True)},
               "verified": (dataset, model) in VERIFIED}
        out.setdefault(dataset, []).append(row)
    return out


PUBLISHED: dict[str, list[dict]] = _parse(_TABLE2)

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


def published_rows(dataset: str) -> list[dict]:
    canon = paper_dataset(dataset)
    return [dict(row, paper_dataset=canon) for row in PUBLISHED.get(canon, [])] if canon else []
