"""One table for a dataset: every run's metrics.json under runs/<dataset>/, beside the paper's numbers.

    python -m train.report --dataset office [--runs-dir runs] [--out runs/office/report.md] [--strict]

Reads every ``metrics.json`` below ``runs/<dataset>/`` (LLM runs from ``make train`` and baselines
from ``make baseline``, one record shape: ``train.records``), one row per (run, stage, mode):

    {"kind", "model", "teacher", "dataset", "data", "limit", "stages": {stage: {mode: {"recall@5", ...}}}, ...}

A stage may also hold the metrics directly (no mode level). Missing parts show as "—". The main
table also shows Recall@10 and NDCG@10 on the test slices (``train.metrics.SLICES``: cold, repeat) a
record holds under ``"slices"``, and says once how many rows each slice has; records written before
slices existed, and the published rows, show "—" there. The
"stages" column is the chain of the trainer's stages up to a row's (align -> activate -> grpo); the
"SIDs" column the SID set the run used (``sid_set``: own or reference, with its sha256; baselines
rank item ids). The paper's Table 2 numbers for the dataset (``train.published``: all ten models)
follow, marked "published, not measured".

Two more sections put the paper's ablations beside the measured runs they apply to:

- Table 3 (Games, Office): R@10 / N@10 before and after RL of S1 (multi-task alignment), S2 (+ the
  teacher corpus), S3 (+ general data). A trainer run's variant: S1 = no teacher corpus
  (``TEACHER=none``), S2 = a teacher corpus, S3 = a teacher corpus and general data (``GENERAL``,
  ``GENERAL_N`` > 0); "before RL" is the model GRPO starts from (activate, or align without
  activate), "after RL" the grpo stage.
- Table 5 (Games): R@10 / N@10 after RL per teacher; the grpo rows of an S2 or S3 run sit beside the
  row of its teacher (``train.published.paper_teacher``: metadata, gpt-4o-mini, qwen3 8b/32b).

A metrics.json that cannot be read (not JSON, not an object, no ``stages`` with metrics) is
skipped with a warning naming the file and the reason, and listed under the table, so one broken
run does not hide the others; ``--strict`` makes it an error instead.

Writes ``report.md`` and ``report.png`` (Recall@10 and NDCG@10 bars) atomically.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from synth.errors import UserError, run_cli
from synth.io import atomic_write
from train.config import RunConfig
from train.metrics import SLICES
from train.published import (
    PAPER,
    RL_STAGES,
    SOURCE,
    VARIANTS,
    alignment_rows,
    paper_dataset,
    paper_teacher,
    published_rows,
    teacher_rows,
)

log = logging.getLogger(__name__)

METRICS = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")
CHART_METRICS = ("recall@10", "ndcg@10")
SLICE_METRICS = ("recall@10", "ndcg@10")  # shown per slice (SLICES) in the main table
LLM_STAGES = ("align", "activate", "grpo")  # THE order of the trainer's stages
MODE_ORDER = {"direct": 0, "thinking": 1}
MEASURED = "measured"
PUBLISHED = "published, not measured"
DASH = "—"


class ReportError(UserError, ValueError):
    """A metrics.json that cannot be used (raised with --strict; otherwise a warning)."""


@dataclass
class Row:
    run: str
    model: str
    teacher: str
    stages: str
    data: str
    mode: str
    metrics: dict
    source: str = MEASURED
    path: str = ""
    order: tuple = field(default=(), repr=False)
    sids: str = DASH
    variant: str | None = None  # Table 3's S1 | S2 | S3 (trainer runs)
    rl: str | None = None  # Table 3's before_rl | after_rl
    teacher_name: str | None = None  # the TEACHER= value, for Table 5

    def slice(self, name: str) -> dict:
        """The metrics of slice ``name`` (``{}`` when the record has none: older records, published rows)."""
        slices = self.metrics.get("slices")
        sl = slices.get(name) if isinstance(slices, dict) else None
        return sl if isinstance(sl, dict) else {}

    @property
    def label(self) -> str:
        if self.source != MEASURED:
            return f"{self.model} (paper)"
        return f"{self.run} · {self.stages} · {self.mode}"


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------
def _name(value, default: str = DASH) -> str:
    """A field that may be a string, a dict with a name, or absent."""
    if value is None or value == "":
        return default
    if isinstance(value, dict):
        for key in ("name", "corpus", "id", "model"):
            if value.get(key):
                name = str(value[key])
                sha = _short_sha(value)
                return f"{name} ({sha})" if sha else name
        return default
    return str(value)


def _short_sha(d: dict) -> str:
    """First 8 hex digits of a hash found in ``d`` (a ``*sha*`` key, or a ``sha256`` dict)."""
    for key, v in d.items():
        if "sha" not in key.lower():
            continue
        if isinstance(v, str) and re.fullmatch(r"[0-9a-f]{16,}", v):
            return v[:8]
        if isinstance(v, dict):  # {"train.jsonl": "...", ...}: prefer the training file
            pick = v.get("train.jsonl") or next((x for x in v.values() if isinstance(x, str)), "")
            if re.fullmatch(r"[0-9a-f]{16,}", pick or ""):
                return pick[:8]
    return ""


def describe_data(data, dataset: str | None) -> str:
    """'office (train 9,484 rows, sha 1a2b3c4d)' from whatever the run recorded about its data."""
    if isinstance(data, str) and data:
        return data
    if not isinstance(data, dict):
        return dataset or DASH
    name = data.get("name") or data.get("dataset") or dataset or DASH
    stats = data.get("stats") if isinstance(data.get("stats"), dict) else {}
    train = stats.get("train", data.get("train", data.get("train_rows")))
    parts = []
    if isinstance(train, int):
        parts.append(f"train {train:,} rows")
    sha = _short_sha(data)
    if sha:
        parts.append(f"sha {sha}")
    return f"{name} ({', '.join(parts)})" if parts else str(name)


def _is_metrics(d) -> bool:
    return isinstance(d, dict) and any(k in d for k in METRICS)


def stage_chain(stage: str) -> str:
    if stage in LLM_STAGES:
        return " → ".join(LLM_STAGES[: LLM_STAGES.index(stage) + 1])
    return stage


def describe_sids(record: dict) -> str:
    """'reference (1a2b3c4d)' from a record's ``sid_set``; 'item ids' for a baseline (it uses no SIDs)."""
    sid_set = record.get("sid_set")
    if isinstance(sid_set, dict) and sid_set.get("name"):
        sha = str(sid_set.get("sha256") or "")[:8]
        return f"{sid_set['name']} ({sha})" if sha else str(sid_set["name"])
    return "item ids" if record.get("kind") == "baseline" else DASH


def variant_of(record: dict) -> str | None:
    """Table 3's variant of a trainer run (kind "llm"): the ``variant`` it recorded (``TrainConfig.variant``:
    s1, s2, s3); for a record without one, the same rule on its teacher and align settings (S1 without the
    corpus in alignment, S2 with it, S3 with it and general data). None for anything else (baselines,
    ``train eval``, general data without the corpus, which is none of the paper's variants)."""
    if record.get("kind") != "llm":
        return None
    if isinstance(record.get("variant"), str):
        v = record["variant"].upper()
        return v if v in VARIANTS else None
    config = record.get("config") if isinstance(record.get("config"), dict) else {}
    align = config.get("align") if isinstance(config.get("align"), dict) else {}
    corpus = bool(record.get("teacher")) and align.get("corpus", True) is not False
    if align.get("general") and (align.get("general_n") or 0) > 0:
        return "S3" if corpus else None
    return "S2" if corpus else "S1"


def rl_stage(stage: str, stages: dict) -> str | None:
    """Table 3's before/after RL of a stage: grpo is after; the model GRPO starts from is before."""
    if stage == "grpo":
        return "after_rl"
    if stage == "activate" or (stage == "align" and "activate" not in stages):
        return "before_rl"
    return None


def rows_of(path: Path, record, run: str, dataset: str | None = None) -> list[Row]:
    """The rows of one metrics.json; raises ReportError naming the file when it is unusable."""
    if not isinstance(record, dict):
        raise ReportError(f"{path}: expected a JSON object, got {type(record).__name__}")
    stages = record.get("stages")
    if not isinstance(stages, dict) or not stages:
        raise ReportError(f"{path}: no \"stages\" object (expected {{stage: {{mode: metrics}}}})")
    model = _name(record.get("model"), run)
    teacher = _name(record.get("teacher"))
    data = describe_data(record.get("data"), record.get("dataset") or dataset)
    sids, variant = describe_sids(record), variant_of(record)
    teacher_name = record["teacher"].get("name") if isinstance(record.get("teacher"), dict) else record.get("teacher")
    if isinstance(record.get("limit"), int) and record["limit"] > 0:  # the trainer's --limit (smoke runs)
        data += f", limit {record['limit']} rows"
    rows = []
    for s_idx, (stage, modes) in enumerate(stages.items()):
        if _is_metrics(modes):
            modes = {DASH: modes}
        if not isinstance(modes, dict):
            continue
        for mode, metrics in modes.items():
            if not _is_metrics(metrics):
                continue
            # baselines first, then run by run, each in stage order (align, activate, grpo)
            rank = LLM_STAGES.index(stage) if stage in LLM_STAGES else len(LLM_STAGES)
            rows.append(Row(run=run, model=model, teacher=teacher, stages=stage_chain(stage),
                            data=data, mode=str(mode), metrics=metrics, path=str(path),
                            order=(record.get("kind") != "baseline", run, rank, s_idx,
                                   MODE_ORDER.get(mode, 9), str(mode)),
                            sids=sids, variant=variant, rl=rl_stage(stage, stages) if variant else None,
                            teacher_name=teacher_name if isinstance(teacher_name, str) else None))
    if not rows:
        raise ReportError(f"{path}: \"stages\" holds no metrics ({', '.join(METRICS)})")
    return rows


def collect(dataset_dir: Path, strict: bool = False) -> tuple[list[Row], list[tuple[str, str]]]:
    """All rows under ``dataset_dir`` and the (file, reason) pairs that were skipped."""
    rows: list[Row] = []
    skipped: list[tuple[str, str]] = []
    for path in sorted(dataset_dir.rglob("metrics.json")):
        run = path.parent.relative_to(dataset_dir).as_posix() or dataset_dir.name
        try:
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ReportError(f"{path}: not valid JSON ({e})") from e
            rows.extend(rows_of(path, record, run, dataset_dir.name))
        except ReportError as e:
            if strict:
                raise
            log.warning("skipping %s", e)
            skipped.append((str(path), str(e)))
    rows.sort(key=lambda r: r.order)
    return rows, skipped


def _paper_row(p: dict, model: str, table: str) -> Row:
    note = f"{PUBLISHED} ({table})" if p.get("verified") else f"{PUBLISHED} ({table}, unverified)"
    return Row(run=f"paper: {p['paper_dataset']}", model=model, teacher=DASH, stages=DASH,
               data=f"paper's {p['paper_dataset']} data", mode=DASH,
               metrics={k: p[k] for k in METRICS if k in p}, source=note)


def paper_rows(dataset: str) -> list[Row]:
    """The paper's Table 2 for ``dataset``: one row per model (ten)."""
    return [_paper_row(p, p["model"], "Table 2") for p in published_rows(dataset)]


def table3_rows(dataset: str, rows: list[Row]) -> list[tuple[str, str, Row]]:
    """(variant, RL stage, row): each published Table 3 row followed by the measured rows it applies to."""
    out = []
    for p in alignment_rows(dataset):
        variant, rl = p["backbone"], p["stage"]
        out.append((variant, rl, _paper_row(p, f"{variant} {RL_STAGES[rl]}", "Table 3")))
        out += [(variant, rl, r) for r in rows if r.variant == variant and r.rl == rl]
    return out


def table5_rows(dataset: str, rows: list[Row]) -> list[tuple[str, Row]]:
    """(teacher, row): each published Table 5 row followed by the after-RL rows of the runs whose corpus (in
    alignment: S2, S3) that teacher wrote."""
    out = []
    for p in teacher_rows(dataset):
        out.append((p["teacher"], _paper_row(p, p["teacher"], "Table 5")))
        out += [(p["teacher"], r) for r in rows
                if r.rl == "after_rl" and r.variant in ("S2", "S3") and paper_teacher(r.teacher_name) == p["teacher"]]
    return out


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------
def _fmt(v) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and math.isnan(v)):
        return DASH
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _cell(text: str) -> str:
    """Markdown-safe table cell: run names and model names come from the file system / files."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(head: list[str], lines: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *("| " + " | ".join(_cell(c) for c in cells) + " |" for cells in lines)]


def ablation_sections(dataset: str, rows: list[Row]) -> list[str]:
    """Markdown of the Table 3 and Table 5 sections for ``dataset`` (none when the paper has neither)."""
    out: list[str] = []
    t3 = table3_rows(dataset, rows)
    if t3:
        canon = paper_dataset(dataset)
        out += ["", f"## Alignment variants beside the paper's Table 3 ({canon})", "",
                "Variants: " + "; ".join(f"{k} = {v}" for k, v in VARIANTS.items()) + ". A run's variant (its recorded "
                "`variant`): S1 = alignment tasks alone (TEACHER=none, or ALIGN_CORPUS=0), S2 = with a teacher "
                "corpus, S3 = with a teacher corpus and general data (GENERAL=). Before RL = the model GRPO starts from (activate, or align without "
                "it); after RL = grpo. The paper reports Recall@10 and NDCG@10 only.", ""]
        out += _table(["variant", "RL", "run", "mode", "SIDs", "Recall@10", "NDCG@10", "n", "source"],
                      [[v, RL_STAGES[rl], r.run, r.mode, r.sids,
                        _fmt(r.metrics.get("recall@10")), _fmt(r.metrics.get("ndcg@10")), _fmt(r.metrics.get("n")),
                        r.source] for v, rl, r in t3])
        if not any(r.source == MEASURED for _v, _rl, r in t3):
            out += ["", "No measured trainer run maps to a variant yet."]
    t5 = table5_rows(dataset, rows)
    if t5:
        out += ["", f"## Teacher corpora beside the paper's Table 5 ({paper_dataset(dataset)}, after RL)", "",
                "Metadata = the rule-based corpus (TEACHER=metadata). A run's grpo rows sit beside its teacher's "
                "row.", ""]
        out += _table(["teacher", "run", "mode", "SIDs", "Recall@10", "NDCG@10", "n", "source"],
                      [[t, r.run, r.mode, r.sids, _fmt(r.metrics.get("recall@10")), _fmt(r.metrics.get("ndcg@10")),
                        _fmt(r.metrics.get("n")), r.source] for t, r in t5])
    return out


def _metric_name(metric: str) -> str:
    return metric.replace("recall", "Recall").replace("ndcg", "NDCG")


def slice_note(rows: list[Row]) -> str:
    """How many test rows each slice has ("cold: N rows, repeat: M rows"), once for all rows that agree
    (runs with --limit or another test split differ, and are named)."""
    groups: dict[tuple, list[str]] = {}
    for r in rows:
        if all(isinstance(r.slice(name).get("n"), int) for name in SLICES):
            key = (r.metrics.get("n"), *(r.slice(name)["n"] for name in SLICES))
            groups.setdefault(key, [])
            if r.run not in groups[key]:
                groups[key].append(r.run)
    what = ("Slices of the test rows: cold = the target appears nowhere in the train split (no train target, "
            "no train history item); repeat = the target is in the row's own history; a row may be in both.")
    if not groups:
        return what + " No measured row records slices yet (metrics.json written before slices existed)."
    parts = []
    for (n, *counts), runs in groups.items():
        text = ", ".join(f"{name}: {c:,} rows" for name, c in zip(SLICES, counts))
        text += f" (of {n:,} test rows)" if isinstance(n, int) else ""
        parts.append(text + (f": {', '.join(runs)}" if len(groups) > 1 else ""))
    return f"{what} {'; '.join(parts)}. A slice without rows, a record written before slices existed and the " \
           "published rows show —."


def markdown(dataset: str, rows: list[Row], published: list[Row], skipped, chart: str | None) -> str:
    head = ["run", "model", "teacher corpus", "stages", "data trained on", "SIDs", "mode",
            "Recall@5", "NDCG@5", "Recall@10", "NDCG@10",
            *(f"{_metric_name(m)} {name}" for name in SLICES for m in SLICE_METRICS), "n", "source"]
    lines = [f"# Results on {dataset}", ""]
    lines.append("Measured rows: test split, full ranking over all items, metrics from `train.metrics` "
                 "(the code `make eval` uses). One row per run, training stage and decoding mode.")
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in [*rows, *published]:
        cells = [r.run, r.model, r.teacher, r.stages, r.data, r.sids, r.mode,
                 *(_fmt(r.metrics.get(m)) for m in METRICS),
                 *(_fmt(r.slice(name).get(m)) for name in SLICES for m in SLICE_METRICS),
                 _fmt(r.metrics.get("n")), r.source]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    if not rows:
        lines += ["", f"No metrics.json found under runs/{dataset}/ yet."]
    else:
        lines += ["", slice_note(rows)]
    lines.append("")
    if published:
        lines.append(f"Published rows: {PAPER}, Table 2, column {published[0].run.split(': ')[1]} (all "
                     f"{len(published)} models); {SOURCE}. The paper's authors computed them on their copy of the "
                     "data (the train split used here may be a part of it); they are shown for scale, not as a "
                     "measurement of this toolkit.")
    else:
        lines.append(f"Published rows: none for {dataset!r} (the paper reports Office, Industrial, Games).")
    lines += ablation_sections(dataset, rows)
    if skipped:
        lines += ["", "Skipped (unreadable metrics.json):", ""]
        lines += [f"- `{p}`: {reason}" for p, reason in skipped]
    if chart:
        lines += ["", f"![Recall@10 and NDCG@10]({chart})"]
    return "\n".join(lines) + "\n"


def chart_png(path: Path, dataset: str, rows: list[Row]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r.label for r in rows]
    fig, axes = plt.subplots(1, len(CHART_METRICS), figsize=(12, 0.45 * len(rows) + 1.5), sharey=True)
    for ax, metric in zip(axes, CHART_METRICS):
        values = [r.metrics.get(metric) if isinstance(r.metrics.get(metric), (int, float)) else 0.0
                  for r in rows]
        measured = [r.source == MEASURED for r in rows]
        bars = ax.barh(range(len(rows)), values,
                       color=["tab:blue" if m else "lightgray" for m in measured],
                       edgecolor="black", linewidth=0.4)
        for bar, m in zip(bars, measured):
            if not m:
                bar.set_hatch("//")
        ax.set_title(metric.replace("recall", "Recall").replace("ndcg", "NDCG"))
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(rows)), labels, fontsize=8)
    axes[0].invert_yaxis()  # the y axis is shared: invert once, first row on top
    fig.suptitle(f"{dataset}: measured (blue) vs published, not measured (gray, hatched)", fontsize=10)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


@dataclass
class Report:
    markdown_path: Path
    png_path: Path | None
    rows: list[Row]
    published: list[Row]
    skipped: list[tuple[str, str]]


def grpo_effects(run_dir: Path) -> dict | None:
    """What GRPO changed in one run (``grpo/summary.json`` and ``log_history.json``): validation Recall@10
    before and after, mean reward, reasoning length and the share of steps with any reward variance."""
    summary_path, log_path = run_dir / "grpo" / "summary.json", run_dir / "grpo" / "log_history.json"
    if not summary_path.is_file() or not log_path.is_file():
        return None
    try:
        summary, history = json.loads(summary_path.read_text()), json.loads(log_path.read_text())
    except (OSError, ValueError) as e:
        log.warning("%s: cannot read GRPO logs (%s)", run_dir, e)
        return None
    steps = [h for h in history if "reward" in h]
    points = summary.get("recall_points") or []
    lengths = [h.get("rewards/reasoning_tokens/mean") for h in steps]
    return {"run": run_dir.name, "steps": summary.get("steps"), "completions": summary.get("completions_per_step"),
            "val_before": points[0] if points else {}, "val_after": points[-1] if len(points) > 1 else {},
            "reward": (steps[0]["reward"], steps[-1]["reward"]) if steps else (None, None),
            "reasoning": (lengths[0], lengths[-1]) if steps else (None, None),
            "with_variance": sum(1 for h in steps if float(h.get("reward_std") or 0) > 1e-6),
            "curves": (run_dir / "grpo_curves.png").is_file()}


def grpo_section(dataset_dir: Path) -> list[str]:
    """A table of ``grpo_effects`` for every run of the dataset that trained GRPO (the paper's Figure 6 in
    numbers; the curves are each run's grpo_curves.png)."""
    effects = [e for d in sorted(dataset_dir.iterdir()) if d.is_dir() and (e := grpo_effects(d))]
    if not effects:
        return []
    out = ["", "## What GRPO changed", "",
           "Validation Recall@10 before and after (the rows and mode of `grpo.eval_rows` / `grpo.eval_mode`), mean "
           "reward and reasoning length (tokens) at the first and last step, steps where some group's rewards "
           "differed (only those carry a policy gradient); the curves over steps are `<run>/grpo_curves.png`.", ""]
    rows = []
    for e in effects:
        b, a = e["val_before"], e["val_after"]
        rows.append([e["run"], _fmt(e["steps"]), _fmt(e["completions"]),
                     f"{_fmt(b.get('val_recall@10'))} -> {_fmt(a.get('val_recall@10'))}",
                     f"{_fmt(b.get('val_n'))} {b.get('val_mode', '')}".strip(),
                     f"{_fmt(e['reward'][0])} -> {_fmt(e['reward'][1])}",
                     f"{_fmt(e['reasoning'][0])} -> {_fmt(e['reasoning'][1])}",
                     f"{e['with_variance']} of {_fmt(e['steps'])}",
                     f"{e['run']}/grpo_curves.png" if e["curves"] else DASH])
    return out + _table(["run", "steps", "completions/step", "val Recall@10", "val rows", "reward",
                         "reasoning tokens", "steps with reward variance", "curves"], rows)


def _rl_part(path: str) -> str:
    """The GRPO part of a combined run (its recorded ``run.rl_dataset``), "all" when unset."""
    try:
        cfg = json.loads(Path(path).read_text(encoding="utf-8")).get("config") or {}
    except (OSError, json.JSONDecodeError):
        return DASH
    return (cfg.get("run") or {}).get("rl_dataset") or "all"


def domain_section(dataset: str, runs_dir: Path, rows: list[Row]) -> list[str]:
    """A combined dataset's per-domain results (each part ranked over its own items), side by side with the
    single-domain runs of each part where they exist: the in-domain vs cross-domain comparison of the
    paper's Figure 3."""
    from synth.data.combined import parts_of

    parts = parts_of(dataset)
    if not parts:
        return []
    lines: list[list[str]] = []
    for part in parts:
        single, _ = collect(runs_dir / part) if (runs_dir / part).is_dir() else ([], [])
        for r in single:
            lines.append([part, r.run, part, part if r.stages.endswith("grpo") else DASH, r.stages, r.mode,
                          *(_fmt(r.metrics.get(m)) for m in METRICS), _fmt(r.metrics.get("n"))])
        for r in rows:
            m = (r.metrics.get("domains") or {}).get(part)
            if isinstance(m, dict):
                lines.append([part, r.run, dataset, _rl_part(r.path) if r.stages.endswith("grpo") else DASH,
                              r.stages, r.mode, *(_fmt(m.get(k)) for k in METRICS), _fmt(m.get("n"))])
    if not lines:
        return []
    head = ["", "## Per domain (in-domain vs cross-domain)", "",
            f"Each part of {dataset} ranked over its own items (its share of the one SID space), as its single-domain "
            "run ranks them; rows trained on the part alone come first (`runs/<part>/`).", ""]
    return head + _table(["domain", "run", "trained on", "GRPO on", "stages", "mode",
                          *(_metric_name(m) for m in METRICS), "n"], lines)


def build(dataset: str, runs_dir: str | os.PathLike = RunConfig.runs_dir, out: str | os.PathLike | None = None,
          strict: bool = False) -> Report:
    dataset_dir = Path(runs_dir) / dataset
    out = Path(out) if out else dataset_dir / "report.md"
    rows, skipped = collect(dataset_dir, strict) if dataset_dir.is_dir() else ([], [])
    if not dataset_dir.is_dir():
        log.warning("%s does not exist: the report lists published numbers only", dataset_dir)
    published = paper_rows(dataset)
    png = out.with_suffix(".png")
    chart_rows = [*rows, *published]
    if chart_rows:
        chart_png(png, dataset, chart_rows)
    else:
        png = None
    rel = os.path.relpath(png, out.parent) if png else None
    grpo = grpo_section(dataset_dir) if dataset_dir.is_dir() else []
    grpo = domain_section(dataset, Path(runs_dir), rows) + grpo
    with atomic_write(out) as f:
        f.write(markdown(dataset, rows, published, skipped, rel) + "\n".join(grpo) + ("\n" if grpo else ""))
    return Report(out, png, rows, published, skipped)


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.report", description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--runs-dir", default=RunConfig.runs_dir)
    ap.add_argument("--out", default=None, help="markdown path (default runs/<dataset>/report.md); "
                                                 "the PNG goes beside it")
    ap.add_argument("--strict", action="store_true", help="an unreadable metrics.json is an error")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    rep = build(args.dataset, args.runs_dir, args.out, args.strict)
    print(rep.markdown_path.read_text(encoding="utf-8"))
    print(f"wrote {rep.markdown_path}" + (f" and {rep.png_path}" if rep.png_path else ""), file=sys.stderr)
    if paper_dataset(args.dataset) is None:
        print(f"note: no published numbers for {args.dataset!r}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 done, 2 an unusable metrics.json under --strict (synth.errors)."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
