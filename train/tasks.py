"""The training sets of the three stages, built from a dataset, its SIDs and a teacher corpus.

Every SFT row is one conversation ``{"messages": [user, assistant]}``: TRL decides the dataset
format from the first row, so the whole align mix uses this one format, and the loss falls on the
assistant turn only (``assistant_only_loss``, ``<|im_end|>`` included).

Corpus texts (items.jsonl / users.jsonl ``text`` of ``corpora/<dataset>/<teacher>/``) are plain
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

from synth.data.dataset import Dataset, DatasetError, Sample
from synth.io import iter_jsonl, read_json
from synth.sid import find_sids, sid_string, split_sid
from train.templates import rec_messages, render_prompt, task_messages

log = logging.getLogger(__name__)


@dataclass
class Inputs:
    dataset: Dataset
    sids: dict[str, list[str]]  # item_id -> SID tokens
    corpus_dir: Path | None  # corpora/<dataset>/<teacher>, None when no corpus is used

    @cached_property
    def sid_of(self) -> dict[str, str]:
        # Cached: every row builder reads it, sample by sample.
        return {iid: sid_string(toks) for iid, toks in self.sids.items()}


def load_inputs(dataset: str, data_dir: str | Path = "data", corpora_dir: str | Path = "corpora",
                teacher: str | None = None, sids_path: str | Path | None = None) -> Inputs:
    ds = Dataset(Path(data_dir) / dataset)
    if sids_path is not None and not Path(sids_path).is_file():
        raise DatasetError(f"{sids_path}: no such SID map (--sids)")
    sids = ds.sids() if sids_path is None else {str(k): list(v) for k, v in read_json(sids_path).items()}
    missing = [iid for iid in ds.items if iid not in sids]
    if missing:
        raise DatasetError(
            f"{ds.path}/sids.json has no SID for {len(missing)} item(s), e.g. {missing[:3]}: "
            f"rerun `make sids DATASET={ds.name}`"
        )
    shared = len(sids) - len({sid_string(t) for t in sids.values()})
    if shared:  # e.g. the publishers' SIDs; a shared SID can only ever be ranked as one of its items
        log.warning("%d item(s) share a SID with another item: they cannot be told apart by SID", shared)
    corpus = None
    if teacher:
        corpus = Path(corpora_dir) / dataset / teacher
        if not (corpus / "items.jsonl").exists() and not (corpus / "users.jsonl").exists():
            raise DatasetError(
                f"{corpus}: no items.jsonl/users.jsonl: run `make synth DATASET={dataset} TEACHER={teacher}` first"
            )
    return Inputs(ds, sids, corpus)


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
            rows.append({"messages": task_messages("corpus", text.strip(), kind=tag), "task": f"corpus_{tag}"})
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
    return [
        {"messages": task_messages("sid2sid", tsid, history=hist_sids), "task": "sid2sid"},
        {"messages": task_messages("title2title", ttitle, history=hist_titles), "task": "title2title"},
        {"messages": task_messages("title2sid", tsid, history=hist_titles), "task": "title2sid"},
        {"messages": task_messages("sid2title", ttitle, history=hist_sids), "task": "sid2title"},
    ]


def item_rows(item_ids: Iterable[str], inputs: Inputs) -> list[dict]:
    sid_of, items = inputs.sid_of, inputs.dataset.items
    rows = []
    for iid in item_ids:
        rows.append({"messages": task_messages("item_title2sid", sid_of[iid], title=items[iid].title),
                     "task": "item_title2sid"})
        rows.append({"messages": task_messages("item_sid2title", items[iid].title, sid=sid_of[iid]),
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


def align_rows(inputs: Inputs, limit: int | None = None, general: str | None = None, general_n: int = 0,
               seed: int = 42) -> list[dict]:
    """The align mix: 4 directions over train samples + title<->SID per item + corpus + general."""
    samples = _take(inputs.dataset.samples("train"), limit)
    rows = [r for s in samples for r in sample_rows(s, inputs)]
    if limit:  # only the items the limited samples touch
        item_ids = sorted({i for s in samples for i in [*s.history, s.target]}, key=str)
    else:
        item_ids = list(inputs.dataset.items)
    rows += item_rows(item_ids, inputs)
    rows += corpus_rows(inputs, limit)
    rows += general_rows(general, general_n, seed)
    random.Random(seed).shuffle(rows)
    return rows


def align_eval_rows(inputs: Inputs, limit: int | None = None) -> list[dict]:
    """Validation rows for early stopping: SID-history -> SID (the recommendation task)."""
    sid_of = inputs.sid_of
    return [
        {"messages": task_messages("sid2sid", sid_of[s.target], history=[sid_of[i] for i in s.history]),
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
        msgs = rec_messages(hist) + [{"role": "assistant",
                                      "content": f"<think>\n{reasoning}\n</think>\n\n{target}"}]
        rows.append({"messages": msgs, "task": "activate"})
    if not rows:
        where = inputs.corpus_dir / "users.jsonl" if inputs.corpus_dir else "(no corpus: pass --teacher)"
        raise DatasetError(f"{where}: no user reasoning records: activation needs the user-centric corpus")
    return rows


# ---------------------------------------------------------------------------------------------
# stage 3: GRPO and evaluation prompts
# ---------------------------------------------------------------------------------------------
def rec_rows(inputs: Inputs, split: str, tokenizer, limit: int | None = None) -> list[dict]:
    """Rendered recommendation prompts (chat template up to the assistant turn) with targets.

    GRPO receives the prompt as plain text (standard format), so its completions are plain text and
    the reward reads exactly what the model wrote; evaluation renders the same text.
    """
    sid_of = inputs.sid_of
    rows = []
    for s in _take(inputs.dataset.samples(split), limit):
        prompt = render_prompt(tokenizer, rec_messages([sid_of[i] for i in s.history]))
        rows.append({"prompt": prompt, "target_sid": sid_of[s.target], "target": s.target})
    return rows
