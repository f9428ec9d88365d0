"""``make view``: one self-contained HTML page to look at a corpus (``corpora/<dataset>/<teacher>/report.html``).

    python -m synth.view --dataset office --teacher metadata            # -> corpora/office/metadata/report.html
    python -m synth.view --dataset office --teacher gpt-4o-mini,qwen    # two corpora side by side (teacher ablation)

The page needs no server and no network: its styles, its script and its data are inside it, and it loads
nothing (no CDN, no font, no image). It shows the run's summary (manifest.json), rejection reasons as bars
with example answers and what each check means, text lengths per stage, the reasoning length against the
history length, a record browser (search by item id, user id, SID or text; SIDs highlighted, the item's
title on hover), and the near-duplicate clusters of the MinHash pass.

Item and teacher text is untrusted: it travels as JSON inside a ``<script type="application/json">`` element
(every ``<`` written ``\\u003c``, so nothing in it can close the element or open a comment), and the page puts it into the document
with ``textContent`` and attributes only, never as HTML. A title holding ``<script>`` shows as text.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

from synth.checks import REASON_EXPLANATIONS
from synth.data.dataset import Dataset, DatasetError, dataset_dir
from synth.errors import run_cli
from synth.io import atomic_write, iter_jsonl, read_json
from synth.sid import SID_RUN_RE, sid_string

PAGE = Path(__file__).resolve().parents[1] / "prompts" / "view" / "report.html"
DATA_MARK = "/*__DATA__*/null"
EXAMPLES_PER_REASON = 3
SCATTER_POINTS = 3000  # reasoning length against history length: a deterministic sample of the users
DESCRIPTION_CHARS = 400


def words(text: str) -> int:
    return len(text.split()) if text else 0


def histogram(values: list[int], bins: int = 30) -> dict:
    """Counts of ``values`` in ``bins`` equal-width bins over [min, max] (what the page draws)."""
    if not values:
        return {"lo": 0, "hi": 0, "counts": [], "n": 0, "mean": 0, "p50": 0, "p95": 0}
    lo, hi = min(values), max(values)
    width = max(1, -(-(hi - lo + 1) // bins))
    counts = [0] * (-(-(hi - lo + 1) // width))
    for v in values:
        counts[(v - lo) // width] += 1
    ordered = sorted(values)
    return {"lo": lo, "hi": hi, "width": width, "counts": counts, "n": len(values),
            "mean": round(sum(values) / len(values), 1), "p50": ordered[len(ordered) // 2],
            "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]}


def near_duplicate_clusters(texts: list[tuple[str, str]], flagged: list[tuple[str, str]],
                            threshold: float = 0.5) -> list[dict]:
    """For each text the MinHash pass rejected as a near-duplicate (``flagged``: (record, text)), the kept text
    it agrees with most (signature agreement, the Jaccard estimate), grouped by that kept text."""
    if not flagged or not texts:
        return []
    import numpy as np

    from synth.dedup import signatures

    sig_kept = signatures([t for _, t in texts])
    sig_dup = signatures([t for _, t in flagged])
    clusters: dict[int, dict] = {}
    for j, (rid, text) in enumerate(flagged):
        agree = (sig_kept == sig_dup[j]).mean(axis=1)
        best = int(np.argmax(agree))
        if agree[best] < threshold * 0.8:  # nothing kept is close: a copy of another rejected text
            continue
        c = clusters.setdefault(best, {"kept": {"id": texts[best][0], "text": texts[best][1]}, "copies": []})
        c["copies"].append({"id": rid, "text": text, "jaccard": round(float(agree[best]), 3)})
    return sorted(clusters.values(), key=lambda c: -len(c["copies"]))


def corpus_payload(dataset: Dataset, folder: Path, sids: dict[str, list[str]]) -> dict:
    """What the page shows of one corpus folder (manifest, records, rejections, lengths, duplicates)."""
    manifest = read_json(folder / "manifest.json") if (folder / "manifest.json").exists() else {}
    records, kept_texts = [], []
    lengths: dict[str, list[int]] = {"item insights": [], "item paragraph": [], "user reasoning": [],
                                     "user narrative": []}
    scatter = []
    for r in iter_jsonl(folder / "items.jsonl") if (folder / "items.jsonl").exists() else []:
        iid = str(r.get("item_id"))
        it = dataset.items.get(iid)
        insights = r.get("insights") or ""
        if not isinstance(insights, str):
            insights = json.dumps(insights, ensure_ascii=False, indent=1)
        records.append({"k": "item", "id": iid, "sid": r.get("sid") or "", "insights": insights,
                        "text": r.get("text") or "",
                        "title": it.title if it else "", "brand": it.brand if it else "",
                        "categories": list(it.categories) if it else [],
                        "description": (it.description[:DESCRIPTION_CHARS] if it else "")})
        lengths["item insights"].append(words(insights))
        lengths["item paragraph"].append(words(r.get("text") or ""))
        kept_texts.append((f"item {iid}", r.get("text") or ""))
    for n, r in enumerate(iter_jsonl(folder / "users.jsonl") if (folder / "users.jsonl").exists() else []):
        hist = [str(i) for i in r.get("history") or []]
        records.append({"k": "user", "id": str(r.get("user_id")), "history": hist, "target": str(r.get("target")),
                        "reasoning": r.get("reasoning") or "", "text": r.get("text") or ""})
        lengths["user reasoning"].append(words(r.get("reasoning") or ""))
        lengths["user narrative"].append(words(r.get("text") or ""))
        if n % max(1, 1 + n // SCATTER_POINTS) == 0 and len(scatter) < SCATTER_POINTS:
            scatter.append([len(hist), words(r.get("reasoning") or "")])
        kept_texts.append((f"user {r.get('user_id')}", r.get("text") or ""))
    reasons: dict[str, dict] = {}
    flagged = []
    for r in iter_jsonl(folder / "rejected.jsonl") if (folder / "rejected.jsonl").exists() else []:
        reason = str(r.get("reason") or "unknown")
        entry = reasons.setdefault(reason, {"count": 0, "status": r.get("status"), "stage": r.get("stage"),
                                            "explanation": REASON_EXPLANATIONS.get(reason, ""), "examples": []})
        entry["count"] += 1
        if len(entry["examples"]) < EXAMPLES_PER_REASON:
            entry["examples"].append({"kind": r.get("kind"), "id": str(r.get("id")), "stage": r.get("stage"),
                                      "text": r.get("text") or "", "detail": r.get("detail")})
        if reason == "near_duplicate":
            flagged.append((f"{r.get('kind')} {r.get('id')}", r.get("text") or ""))
    return {
        "folder": folder.name,
        "manifest": {k: manifest.get(k) for k in (
            "teacher", "dataset", "complete", "requested", "written", "written_items", "written_users", "rejected",
            "failed", "failed_reasons", "unfinished", "cache_hits", "requests_sent", "retries", "tokens_in",
            "tokens_out", "cost_usd", "spent_usd", "priced", "wall_time_s", "prompt_hashes", "sid_set", "dedup",
            "created", "seed")},
        "records": records,
        "reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1]["count"])),
        "lengths": {k: histogram(v) for k, v in lengths.items() if v},
        "scatter": scatter,
        "duplicates": near_duplicate_clusters(kept_texts, flagged),
    }


def corpus_sids(dataset: Dataset, folder: Path) -> dict[str, list[str]]:
    """The SIDs a corpus was written with (its manifest's ``sid_set`` file), else the dataset's own."""
    manifest = folder / "manifest.json"
    sid_file = (read_json(manifest).get("sid_set") or {}).get("file") if manifest.exists() else None
    return read_json(sid_file) if sid_file and Path(sid_file).exists() else dataset.sids()


def page(dataset: Dataset, folders: list[Path]) -> str:
    """The page's HTML for one corpus (or several, side by side), each with the SIDs it was written with."""
    corpora = []
    for folder in folders:
        sids = corpus_sids(dataset, folder)
        c = corpus_payload(dataset, folder, sids)
        c["titles"] = {sid_string(t): dataset.items[i].title for i, t in sids.items() if i in dataset.items}
        c["item_sid"] = {i: sid_string(t) for i, t in sids.items()}
        corpora.append(c)
    data = {"dataset": dataset.name, "built": time.strftime("%Y-%m-%d %H:%M:%S"), "sid_pattern": SID_RUN_RE.pattern,
            "corpora": corpora}
    blob = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    # inside <script type="application/json"> nothing may close the element or open a comment: no "<" at all
    # (JSON allows "<" only inside strings, where \u003c is the same character)
    blob = blob.replace("<", "\\u003c")
    template = PAGE.read_text(encoding="utf-8")
    if DATA_MARK not in template:
        raise RuntimeError(f"{PAGE} lacks the data mark {DATA_MARK!r}")
    return template.replace(DATA_MARK, blob)


def build(dataset: str, teachers: Sequence[str], data_dir: str | None = None, corpora_dir: str = "corpora",
          out: str | Path | None = None) -> Path:
    """Write the page; returns its path (one teacher: <corpus>/report.html; two: <dataset>/<a>,<b>.report.html)."""
    ds = Dataset(dataset_dir(dataset, data_dir))
    folders = []
    for t in teachers:
        folder = Path(corpora_dir) / dataset / t
        if not (folder / "manifest.json").exists() and not (folder / "items.jsonl").exists():
            raise DatasetError(f"{folder}: no corpus there (manifest.json, items.jsonl): run "
                               f"`make synth DATASET={dataset} TEACHER={t}` first")
        folders.append(folder)
    path = Path(out) if out else (folders[0] / "report.html" if len(folders) == 1
                                  else Path(corpora_dir) / dataset / f"{','.join(teachers)}.report.html")
    html = page(ds, folders)
    with atomic_write(path) as f:
        f.write(html)
    return path


def _main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m synth.view", description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--teacher", required=True, help="a corpus folder name, or two joined by a comma to compare")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--corpora-dir", default="corpora")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    teachers = [t.strip() for t in args.teacher.split(",") if t.strip()]
    if not 1 <= len(teachers) <= 2:
        raise DatasetError(f"--teacher {args.teacher!r}: one corpus, or two joined by a comma")
    t0 = time.time()
    path = build(args.dataset, teachers, args.data_dir, args.corpora_dir, args.out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.time() - t0:.1f} s", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
