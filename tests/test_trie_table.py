"""The trie as a device table (``train.trie.TrieTable``) decodes exactly what the per-row Python walk did.

``ReferenceTrieProcessor`` and ``ReferenceAnswerConstraint`` are the processors of commit 71c0cff,
kept here verbatim as the specification: every mask, every beam and every score of the vectorised
processors must be identical to theirs (bit for bit: the allowed scores are the model's own in both).
The Office test runs the full beam search over the publishers' SIDs of the shared Office data
(3,459 items, 15 shared SIDs) with a random tiny model.
"""
import math
import random

import pytest
import torch

from train.decoding import AnswerConstraint, TrieLogitsProcessor
from train.trie import SidTrie


# ---------------------------------------------------------------------------------------------
# the specification: the Python-walk processors the table replaced
# ---------------------------------------------------------------------------------------------
class ReferenceTrieProcessor:
    def __init__(self, trie, prompt_len, end_id):
        self.trie, self.prompt_len, self.end_id = trie, prompt_len, end_id

    def _allowed(self, prefix, device):
        allowed = list(self.trie.allowed(prefix))
        if self.trie.is_complete(prefix) or not allowed:
            allowed.append(self.end_id)
        return torch.tensor(allowed, dtype=torch.long, device=device)

    def __call__(self, input_ids, scores):
        rows_by_prefix = {}
        for r, gen in enumerate(input_ids[:, self.prompt_len:].tolist()):
            rows_by_prefix.setdefault(tuple(gen), []).append(r)
        mask = torch.full_like(scores, -math.inf)
        for prefix, rows in rows_by_prefix.items():
            allowed = self._allowed(prefix, scores.device)
            rows_t = torch.tensor(rows, dtype=torch.long, device=scores.device)
            mask[rows_t[:, None], allowed[None, :]] = 0.0
        return scores + mask


class ReferenceAnswerConstraint:
    def __init__(self, trie, prompt_len, think_end, sep, end_id, max_new_tokens):
        self.trie, self.prompt_len, self.think_end, self.end_id = trie, prompt_len, think_end, end_id
        self.sep = list(sep)
        self.room = len(self.sep) + trie.levels + 2
        self.max_new_tokens = max_new_tokens

    def _allowed(self, gen):
        if self.think_end not in gen:
            return [self.think_end] if self.max_new_tokens - len(gen) <= self.room else None
        after = gen[gen.index(self.think_end) + 1:]
        if len(after) < len(self.sep):
            return [self.sep[len(after)]]
        prefix = tuple(after[len(self.sep):])
        allowed = list(self.trie.allowed(prefix))
        return allowed if allowed and not self.trie.is_complete(prefix) else [self.end_id]

    def __call__(self, input_ids, scores):
        mask = torch.zeros_like(scores)
        for r, gen in enumerate(input_ids[:, self.prompt_len:].tolist()):
            allowed = self._allowed(gen)
            if allowed is None:
                mask[r, self.end_id] = -math.inf
            else:
                mask[r] = -math.inf
                mask[r, allowed] = 0.0
        return scores + mask


# ---------------------------------------------------------------------------------------------
# masks on random inputs: every kind of row
# ---------------------------------------------------------------------------------------------
VOCAB, END, THINK_END, PAD = 60, 2, 3, 0
SEP = [4, 5]


def _trie(varied_lengths: bool = False) -> SidTrie:
    rng = random.Random(0)
    seqs = {}
    for i in range(30):
        seqs[f"i{i}"] = (10 + rng.randrange(4), 20 + rng.randrange(5), 30 + rng.randrange(6))
    seqs["shared"] = seqs["i0"]  # a SID two items share
    if varied_lengths:  # a complete SID that is also a prefix of a longer one
        seqs["short"] = (10, 20)
        seqs["long"] = (10, 20, 30, 40)
    return SidTrie(seqs)


@pytest.mark.parametrize("varied", [False, True])
@pytest.mark.parametrize("steps", [0, 1, 2, 3, 4, 5])
def test_beam_mask_equals_the_python_walk(varied, steps):
    trie = _trie(varied)
    rng = random.Random(steps)
    prompt = torch.randint(40, VOCAB, (64, 7))
    gen = torch.stack([torch.tensor([rng.choice(list(trie.token_ids) + [END, PAD, 55]) for _ in range(steps)],
                                    dtype=torch.long) for _ in range(64)]) if steps else torch.zeros((64, 0), dtype=torch.long)
    # half the rows: real trie paths (prefixes, complete SIDs, SIDs then the end token)
    seqs = list(trie.sequences.values())
    for r in range(0, 64, 2):
        s = list(rng.choice(seqs)) + [END, PAD, PAD]
        gen[r] = torch.tensor(s[:steps], dtype=torch.long)
    ids = torch.cat([prompt, gen], 1)
    scores = torch.randn(64, VOCAB)
    got = TrieLogitsProcessor(trie, 7, END)(ids, scores.clone())
    want = ReferenceTrieProcessor(trie, 7, END)(ids, scores.clone())
    assert torch.equal(got, want)


@pytest.mark.parametrize("budget", [9, 12, 40])
def test_answer_mask_equals_the_python_walk(budget):
    trie = _trie(varied_lengths=True)
    rng = random.Random(budget)
    seqs = list(trie.sequences.values())
    ref = ReferenceAnswerConstraint(trie, 5, THINK_END, SEP, END, budget)
    new = AnswerConstraint(trie, 5, THINK_END, SEP, END, budget)
    checked = 0
    for steps in range(0, budget):
        rows = []
        for _ in range(48):
            kind = rng.randrange(5)
            free = [rng.randrange(6, VOCAB) for _ in range(steps)]
            if kind == 0 or steps == 0:  # still reasoning (maybe past the point where </think> is forced)
                row = free
            else:  # closed the think block somewhere, then part of the separator / a SID / end + pads
                k = rng.randrange(steps)
                tail = SEP + list(rng.choice(seqs)) + [END] + [PAD] * budget
                if kind == 3:  # an invalid SID path
                    tail = SEP + [rng.choice(sorted(trie.token_ids)) for _ in range(4)] + [END] + [PAD] * budget
                if kind == 4:  # a second </think> inside the answer part: the first one counts
                    tail = [THINK_END] + tail
                row = free[:k] + [THINK_END] + tail
                row = row[:steps]
            rows.append(row)
        ids = torch.cat([torch.randint(6, VOCAB, (48, 5)), torch.tensor(rows, dtype=torch.long).reshape(48, steps)], 1)
        scores = torch.randn(48, VOCAB)
        assert torch.equal(new(ids, scores.clone()), ref(ids, scores.clone())), f"step {steps}"
        checked += 1
    assert checked == budget


# ---------------------------------------------------------------------------------------------
# the whole beam search on Office: same beams, same scores
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def office(shared_office, tmp_path_factory):
    from synth.data.dataset import Dataset
    from synth.data.importer import import_folder
    from synth.sid import vocabulary_of
    from train.model import build_tiny

    root = tmp_path_factory.mktemp("office")
    import_folder(shared_office, root / "office")
    ds = Dataset(root / "office")
    sids = ds.sids(str(ds.path / "reference_sids.json"))
    model, tok = build_tiny(vocabulary_of(sids.values()), texts=[it.title for it in ds.items.values()][:500])
    return ds, sids, model.eval(), tok


def test_office_beams_and_scores_are_identical(office, monkeypatch):
    """Beam 10 over all 3,459 Office items (15 shared SIDs), 96 test prompts: the table processor and
    the Python walk give the same raw beams, in the same order, with the same scores (==)."""
    import train.decoding as decoding
    from train import tasks
    from train.decoding import EMPTY_THINK, constrained_beam_search, encode, token_ids, with_suffix

    ds, sids, model, tok = office
    trie = SidTrie.from_sids(sids, tok)
    assert trie.collisions > 0 and len(trie) > 3000
    rows = tasks.rec_rows(tasks.Inputs(ds, sids, None), "test", tok, limit=96)
    ids = encode(tok, [with_suffix(r["prompt"], EMPTY_THINK) for r in rows])
    t = token_ids(tok)
    runs = {}
    for name, proc in (("table", TrieLogitsProcessor), ("walk", ReferenceTrieProcessor)):
        monkeypatch.setattr(decoding, "TrieLogitsProcessor", proc)
        out = []
        for start in range(0, len(ids), 32):
            out += constrained_beam_search(model, ids[start:start + 32], trie, num_beams=10, num_return=10,
                                           end_id=t.end, pad_id=t.pad)
        runs[name] = out
    assert runs["table"] == runs["walk"]
    assert sum(len(b) for b in runs["table"]) == 96 * 10
    assert all(trie.item_of(sid) is not None for beams in runs["table"] for sid, _ in beams)


def test_office_constrained_rollouts_are_identical(office):
    """Sampled GRPO-style rollouts (same seed) under both answer constraints: the same token ids."""
    from transformers import LogitsProcessorList

    from train import tasks
    from train.decoding import answer_separator, left_pad, token_ids

    ds, sids, model, tok = office
    trie = SidTrie.from_sids(sids, tok)
    rows = tasks.rec_rows(tasks.Inputs(ds, sids, None), "train", tok, limit=6)
    t, sep, budget = token_ids(tok), answer_separator(tok), 24
    input_ids, mask = left_pad([tok(r["prompt"], add_special_tokens=False)["input_ids"] for r in rows], t.pad, "cpu")
    outs = []
    for cls in (AnswerConstraint, ReferenceAnswerConstraint):
        torch.manual_seed(1)
        proc = cls(trie, input_ids.shape[1], t.think_end, sep, t.end, budget)
        outs.append(model.generate(input_ids=input_ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0,
                                   max_new_tokens=budget, num_return_sequences=4, eos_token_id=t.end,
                                   pad_token_id=t.pad, logits_processor=LogitsProcessorList([proc])))
    assert torch.equal(outs[0], outs[1])
    assert all(t.think_end in row for row in outs[0][:, input_ids.shape[1]:].tolist())
