"""The training sets of the three stages, built from a dataset, its SIDs and a teacher corpus.

Every SFT row is one conversation ``{"messages": [system, user, assistant]}`` (the task's
instruction in the system turn, its question in the user turn: ``train.templates``; corpus texts
``[user, assistant]``): TRL decides the dataset format from the first row, so the whole align mix
uses this one conversational format, and the loss falls on the assistant turn only
(``assistant_only_loss``, ``<|im_end|>`` included).

Corpus texts (items.jsonl / users.jsonl ``text`` of ``corpora/<dataset>/<teacher>/``, or
``<teacher>@reference/`` with the publishers' SIDs) are plain
language-model text: each becomes an assistant turn after a short constant user turn
(``prompts/train/corpus.j2``) that says what kind of text follows. The loss therefore covers every
token of the text (and nothing of the instruction), which is the released code's "plain LM" loss
expressed in the single conversational format.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterable, Iterator

from synth.corpus import corpus_dir
from synth.data.dataset import CUSTOM, OWN, SID_SETS, Dataset, DatasetError, Sample, SidSet
from synth.io import iter_jsonl, read_json
from synth.sid import find_sids, sid_string, split_sid
from train.templates import rec_messages, render_prompt, task_messages

log = logging.getLogger(__name__)


@dataclass
class Inputs:
    dataset: Dataset
    sids: dict[str, list[str]]  # item_id -> SID tokens
    corpus_dir: Path | None  # corpora/<dataset>/<teacher>[@<sid set>], None when no corpus is used
    sid_set: SidSet | None = None  # the SID file ``sids`` was read from (Dataset.sid_set); runs record it
    prompts: str = "full"  # the prompt set every row and prompt is written in (train.templates.PROMPT_SETS)

    @cached_property
    def parts(self) -> list[str] | None:
        """The parts of a combined dataset (``synth.data.combined``), None for a plain one."""
        from synth.data.combined import dataset_parts

        return dataset_parts(self.dataset)

    @cached_property
    def sid_of(self) -> dict[str, str]:
        # Cached: every row builder reads it, sample by sample.
        return {iid: sid_string(toks) for iid, toks in self.sids.items()}


def load_inputs(dataset: str, data_dir: str | Path = "data", corpora_dir: str | Path = "corpora",
                teacher: str | None = None, sids: str | Path | None = None, prompts: str = "full") -> Inputs:
    """The dataset, the SIDs of the set ``sids`` (own | reference | a SID map's path: ``Dataset.sid_set``)
    and the teacher's corpus written with those same SIDs (``check_corpus_sids``)."""
    ds = Dataset(Path(data_dir) / dataset)
    chosen = ds.sid_set(sids)
    sid_map = chosen.load()
    missing = [iid for iid in ds.items if iid not in sid_map]
    if missing:
        raise DatasetError(
            f"{chosen.path} has no SID for {len(missing)} item(s), e.g. {missing[:3]}: "
            + (f"rerun `make sids DATASET={ds.name}`" if chosen.name == OWN else "use a SID map of every item")
        )
    shared = len(sid_map) - len({sid_string(t) for t in sid_map.values()})
    if shared:  # e.g. the publishers' SIDs: evaluation counts a hit by SID, as the released code does
        log.warning("%s SIDs: %d item(s) share a SID with another item (evaluation compares SIDs)",
                    chosen.name, shared)
    corpus = None
    if teacher:
        corpus = corpus_dir(dataset, teacher, corpora_dir, chosen.name)
        if not (corpus / "items.jsonl").exists() and not (corpus / "users.jsonl").exists():
            raise DatasetError(_no_corpus(corpus, dataset, teacher, chosen, corpora_dir))
        check_corpus_sids(corpus, chosen, dataset, teacher)
    return Inputs(ds, sid_map, corpus, chosen, prompts)


def _synth_command(dataset: str, teacher: str, sid_set: SidSet) -> str:
    sids = "" if sid_set.name == OWN else f" SIDS={sid_set.path if sid_set.name == CUSTOM else sid_set.name}"
    return f"make synth DATASET={dataset} TEACHER={teacher}{sids}"


def _no_corpus(corpus: Path, dataset: str, teacher: str, chosen: SidSet, corpora_dir) -> str:
    msg = f"{corpus}: no items.jsonl/users.jsonl for the {chosen.name!r} SIDs"
    others = [corpus_dir(dataset, teacher, corpora_dir, name) for name in SID_SETS if name != chosen.name]
    there = [o for o in others if (o / "items.jsonl").exists() or (o / "users.jsonl").exists()]
    if there:
        msg += f" ({', '.join(map(str, there))} holds a corpus made with other SIDs, which this run refuses)"
    return msg + f": run `{_synth_command(dataset, teacher, chosen)}` first"


def check_corpus_sids(corpus: Path, chosen: SidSet, dataset: str, teacher: str) -> None:
    """Refuse a corpus written with other SIDs than the run's: its texts name items by SID.

    The corpus manifest's ``sid_set`` ({name, file, sha256}) is compared with the run's; a manifest
    from before SID sets were recorded counts as the own set with its ``dataset_files["sids.json"]``.
    A corpus without a manifest (written by hand) cannot be checked: a warning says so."""
    path = corpus / "manifest.json"
    if not path.exists():
        log.warning("%s: no manifest.json, so the SIDs of this corpus cannot be checked against the run's", corpus)
        return
    manifest = read_json(path)
    made = manifest.get("sid_set") or {"name": OWN, "sha256": (manifest.get("dataset_files") or {}).get("sids.json")}
    name, sha = made.get("name"), made.get("sha256")
    redo = f"run `{_synth_command(dataset, teacher, chosen)}`"
    if name != chosen.name:
        other = f"SIDS={name}" if name in SID_SETS else f"SIDS={made.get('file')}"
        raise DatasetError(
            f"{corpus} was written with the {name!r} SIDs ({made.get('file', 'sids.json')}) but this run uses the "
            f"{chosen.name!r} SIDs ({chosen.path}); a corpus names items by SID, so it only fits the SIDs it was "
            f"written with: {redo} to write a corpus for the {chosen.name!r} SIDs, or run with {other}")
    if sha and sha != chosen.sha256():
        raise DatasetError(
            f"{corpus} was written with another version of the {name!r} SIDs (sha256 {sha[:12]}, now "
            f"{chosen.sha256()[:12]} for {chosen.path}): the SID map changed since; {redo} to rewrite the corpus")


def _take(it: Iterable, limit: int | None) -> list:
    out = []
    for x in it:
        if limit and len(out) >= limit:
            break
        out.append(x)
    return out


# ---------------------------------------------------------------------------------------------
# corpus
# ---------------------------------------------------------------------------------------------
def _resolve_sid(value, inputs: Inputs, where: str) -> str:
    """A corpus reference to an item: an item id or a SID string/token list -> SID string."""
    if isinstance(value, list) and value and all(isinstance(v, str) and v.startswith("<") for v in value):
        return sid_string(value)
    value = str(value)
    if value.startswith("<"):
        split_sid(value)  # raises with a clear message when malformed
        return value
    if value not in inputs.sids:
        raise DatasetError(f"{where}: unknown item id {value!r}")
    return sid_string(inputs.sids[value])


def iter_corpus(inputs: Inputs, kind: str) -> Iterator[tuple[str, dict]]:
    """(where, record) for ``kind`` in {"items", "users"}; nothing when the file is absent."""
    if inputs.corpus_dir is None:
        return
    path = inputs.corpus_dir / f"{kind}.jsonl"
    if not path.exists():
        log.warning("%s not found: no %s texts in the mix", path, kind)
        return
    for n, rec in enumerate(iter_jsonl(path), 1):
        yield f"{path}:{n}", rec


def corpus_rows(inputs: Inputs, limit: int | None = None) -> list[dict]:
    rows = []
    for kind, tag in (("items", "item"), ("users", "user")):
        k = 0
        for where, rec in iter_corpus(inputs, kind):
            text = rec.get("text")
            if not isinstance(text, str):
                raise DatasetError(f"{where}: record has no string 'text' field")
            if not text.strip():
                continue
            if limit and k >= limit:
                break
            rows.append({"messages": task_messages("corpus", text.strip(), kind=tag, prompts=inputs.prompts),
                         "task": f"corpus_{tag}"})
            k += 1
    return rows


# ---------------------------------------------------------------------------------------------
# stage 1: align
# ---------------------------------------------------------------------------------------------
def sample_rows(sample: Sample, inputs: Inputs) -> list[dict]:
    """The four directions of Appendix B for one (history, target) sample."""
    sid_of, items = inputs.sid_of, inputs.dataset.items
    hist_sids = [sid_of[i] for i in sample.history]
    hist_titles = [items[i].title for i in sample.history]
    tsid, ttitle = sid_of[sample.target], items[sample.target].title
    p = inputs.prompts
    return [
        {"messages": task_messages("sid2sid", tsid, history=hist_sids, prompts=p), "task": "sid2sid"},
        {"messages": task_messages("title2title", ttitle, history=hist_titles, prompts=p), "task": "title2title"},
        {"messages": task_messages("title2sid", tsid, history=hist_titles, prompts=p), "task": "title2sid"},
        {"messages": task_messages("sid2title", ttitle, history=hist_sids, prompts=p), "task": "sid2title"},
    ]


def covering_samples(samples: Iterable[Sample]) -> list[Sample]:
    """The samples no other sample of the same user contains: a sample whose history + target is a
    prefix of another's history + target is left out (a user's sliding-window samples are nested
    prefixes, up to the history cap). Under ``history_loss`` the longer row's history positions
    already predict every left-out target from the same items before it. Input order is kept."""
    samples = list(samples)
    by_user: dict[str, list[tuple[str, ...]]] = {}
    for s in samples:
        by_user.setdefault(s.user_id, []).append((*s.history, s.target))
    covered: set[tuple[str, tuple[str, ...]]] = set()
    for user, seqs in by_user.items():
        kept: list[tuple[str, ...]] = []
        for seq in sorted(set(seqs), key=len, reverse=True):
            if any(longer[: len(seq)] == seq for longer in kept):
                covered.add((user, seq))
            else:
                kept.append(seq)
    return [s for s in samples if (s.user_id, (*s.history, s.target)) not in covered]


def item_rows(item_ids: Iterable[str], inputs: Inputs) -> list[dict]:
    sid_of, items = inputs.sid_of, inputs.dataset.items
    rows = []
    for iid in item_ids:
        rows.append({"messages": task_messages("item_title2sid", sid_of[iid], title=items[iid].title,
                                                   prompts=inputs.prompts),
                     "task": "item_title2sid"})
        rows.append({"messages": task_messages("item_sid2title", items[iid].title, sid=sid_of[iid],
                                                   prompts=inputs.prompts),
                     "task": "item_sid2title"})
    return rows


def general_rows(spec: str | None, n: int, seed: int = 0) -> list[dict]:
    """General chat data (jsonl with ``messages`` or a Hub dataset id) to keep general ability."""
    if not spec or n <= 0:
        return []
    p = Path(spec)
    if p.exists():
        recs = [(f"{p}:{k}", r) for k, r in enumerate(iter_jsonl(p), 1)]
    else:
        from datasets import load_dataset

        recs = [(f"{spec}[{k}]", r) for k, r in enumerate(load_dataset(spec, split="train"))]
    random.Random(seed).shuffle(recs)
    rows = []
    for where, rec in recs[:n]:
        msgs = rec.get("messages")
        if not isinstance(msgs, list) or not any(m.get("role") == "assistant" for m in msgs if isinstance(m, dict)):
            raise DatasetError(f"{where}: general data needs a 'messages' list with an assistant turn")
        rows.append({"messages": [{"role": m["role"], "content": str(m.get("content") or "")} for m in msgs],
                     "task": "general"})
    return rows


def weigh_tasks(rows: list[dict], weights: dict[str, float] | None, seed: int = 42) -> list[dict]:
    """Rows of each task family ``weights[task]`` times over: whole copies, plus a seeded sample for the
    fraction (0.5 keeps half the rows, 2.5 every row twice and half of them a third time). A family
    not listed keeps its rows once."""
    if not weights:
        return rows
    rng = random.Random(seed)
    by_task: dict[str, list[dict]] = {}
    for r in rows:
        by_task.setdefault(r["task"], []).append(r)
    out = []
    for task, group in by_task.items():
        w = float(weights.get(task, 1.0))
        whole, part = int(w), w - int(w)
        out += group * whole
        if part > 0:
            out += rng.sample(group, round(part * len(group)))
    return out


def align_rows(inputs: Inputs, limit: int | None = None, general: str | None = None, general_n: int = 0,
               seed: int = 42, corpus: bool = True, task_weights: dict[str, float] | None = None,
               history_loss: bool = False) -> list[dict]:
    """The align mix: 4 directions over train samples + title<->SID per item + corpus + general,
    each family weighted by ``task_weights`` (``weigh_tasks``; none: the paper's mix, each row once).
    With ``history_loss`` (the rows' history SIDs carry loss: ``train.sft.tokenize_rows``) the
    SID-history -> SID rows come from ``covering_samples`` only: the rows left out would repeat
    targets the kept rows' histories already teach (on Office: 2,413 rows instead of 9,484, every
    train target still taught).

    The paper's variants (Table 3): S1 without the corpus texts (no teacher, or ``corpus=False``),
    S2 with them, S3 with general data as well."""
    samples = _take(inputs.dataset.samples("train"), limit)
    keep = {id(s) for s in covering_samples(samples)} if history_loss else {id(s) for s in samples}
    rows = [r for s in samples for r in sample_rows(s, inputs) if r["task"] != "sid2sid" or id(s) in keep]
    if limit:  # only the items the limited samples touch
        item_ids = sorted({i for s in samples for i in [*s.history, s.target]}, key=str)
    else:
        item_ids = list(inputs.dataset.items)
    rows += item_rows(item_ids, inputs)
    if corpus:
        rows += corpus_rows(inputs, limit)
    rows += general_rows(general, general_n, seed)
    rows = weigh_tasks(rows, task_weights, seed)
    random.Random(seed).shuffle(rows)
    return rows


def align_eval_rows(inputs: Inputs, limit: int | None = None) -> list[dict]:
    """Validation rows for early stopping: SID-history -> SID (the recommendation task)."""
    sid_of = inputs.sid_of
    return [
        {"messages": task_messages("sid2sid", sid_of[s.target], history=[sid_of[i] for i in s.history],
                                   prompts=inputs.prompts),
         "task": "sid2sid"}
        for s in _take(inputs.dataset.samples("valid"), limit)
    ]


# ---------------------------------------------------------------------------------------------
# stage 2: activate
# ---------------------------------------------------------------------------------------------
def activate_rows(inputs: Inputs, limit: int | None = None) -> list[dict]:
    """users.jsonl -> prompt rec_messages(history) ; response <think>reasoning</think> target SID."""
    rows = []
    for where, rec in iter_corpus(inputs, "users"):
        if limit and len(rows) >= limit:
            break
        for key in ("history", "target", "reasoning"):
            if key not in rec:
                raise DatasetError(f"{where}: user record lacks {key!r} (expected user_id, history, target, reasoning)")
        hist = rec["history"]
        if isinstance(hist, str):
            hist = find_sids(hist)
        hist = [_resolve_sid(h, inputs, where) for h in hist]
        target = _resolve_sid(rec["target"], inputs, where)
        reasoning = str(rec["reasoning"] or "").strip()
        if not reasoning:
            continue
        msgs = rec_messages(hist, inputs.prompts) + [{"role": "assistant",
                                      "content": f"<think>\n{reasoning}\n</think>\n\n{target}"}]
        rows.append({"messages": msgs, "task": "activate"})
    if not rows:
        where = inputs.corpus_dir / "users.jsonl" if inputs.corpus_dir else "(no corpus: pass --teacher)"
        raise DatasetError(f"{where}: no user reasoning records: activation needs the user-centric corpus")
    return rows


# ---------------------------------------------------------------------------------------------
# stage 3: GRPO and evaluation prompts
# ---------------------------------------------------------------------------------------------
def rec_rows(inputs: Inputs, split: str, tokenizer, limit: int | None = None,
             domain: str | None = None) -> list[dict]:
    """Rendered recommendation prompts (chat template up to the assistant turn) with targets.

    GRPO receives the prompt as plain text (standard format), so its completions are plain text and
    the reward reads exactly what the model wrote; evaluation renders the same text. Each row carries
    its ``"slices"`` (``train.metrics.slice_labels``: cold, repeat), which evaluation scores apart, and, for a
    combined dataset, its ``"domain"`` (the part of its target; evaluation ranks each part apart). ``domain``:
    only the rows of that part (GRPO on one part: ``RL_DATASET``), the first ``limit`` of them.
    """
    from synth.data.combined import domain_of
    from train.metrics import slice_labels

    sid_of = inputs.sid_of
    labels = slice_labels(inputs.dataset, split)  # every row of the split, in file order: the first rows align
    samples = zip(inputs.dataset.samples(split), labels)
    if domain is not None:
        samples = ((s, sl) for s, sl in samples if domain_of(s.target) == domain)
    rows = []
    for s, slices in _take(samples, limit):
        prompt = render_prompt(tokenizer, rec_messages([sid_of[i] for i in s.history], inputs.prompts))
        row = {"prompt": prompt, "target_sid": sid_of[s.target], "target": s.target, "slices": slices}
        if inputs.parts:
            row["domain"] = domain_of(s.target)
        rows.append(row)
    return rows
