"""THE trie of valid Semantic IDs, over token ids: what constrained decoding may emit.

Every item's SID is a short sequence of token ids (one added tokenizer token per SID token). The
trie answers two questions, both in O(1) dictionary look-ups:

- ``allowed(prefix)``: which SID token ids may follow a SID prefix (``[]`` when the prefix is a
  complete SID with no longer continuation, or is not a prefix of any SID at all);
- ``item_of(seq)``: which item a complete SID names.

Shared SIDs (two items with the same code, e.g. the publishers' reference SIDs for Office hold 15
such collisions) are kept: ``item_of`` returns the first item in input order, ``items_of`` all of
them, and ``collisions`` counts them. A ranking of items therefore cannot tell colliding items
apart, so evaluation compares SIDs (a beam equal to the target's SID is a hit), as the released
code does: ``train.metrics.rank_of(target, ranked, by=trie.sequences)``.

``TrieTable`` is the same trie as tensors on the decoding device (a state per prefix, a transition
table over the SID-token columns): constrained decoding masks a whole batch with a few gathers per
step and never copies token ids to the host.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

from synth.sid import is_well_formed, sid_string


class SidTrie:
    """Prefix tree of the valid SID token-id sequences."""

    def __init__(self, sequences: Mapping[str, Sequence[int]]):
        if not sequences:
            raise ValueError("SidTrie needs at least one item SID; got none")
        children: dict[tuple[int, ...], set[int]] = {}
        items: dict[tuple[int, ...], list[str]] = {}
        for item_id, seq in sequences.items():
            seq = tuple(int(t) for t in seq)
            if not seq:
                raise ValueError(f"item {item_id!r} has an empty SID")
            for i in range(len(seq)):
                children.setdefault(seq[:i], set()).add(seq[i])
            items.setdefault(seq, []).append(str(item_id))
        # Sorted lists: deterministic masks and reproducible beams whatever the dict order was.
        self._children: dict[tuple[int, ...], list[int]] = {p: sorted(c) for p, c in children.items()}
        self._items = items
        self.sequences: dict[str, tuple[int, ...]] = {
            str(k): tuple(int(t) for t in v) for k, v in sequences.items()
        }
        self.levels: int = max(len(s) for s in items)
        self.collisions: int = sum(len(v) - 1 for v in items.values())
        self.token_ids: frozenset[int] = frozenset(t for s in items for t in s)
        self._tables: dict[tuple, TrieTable] = {}

    @classmethod
    def from_sids(cls, sids: Mapping[str, Sequence[str]], tokenizer) -> "SidTrie":
        """Build from ``item_id -> ["<a_1>", "<b_2>", ...]`` (sids.json); each SID token must be ONE
        token of ``tokenizer`` (added with ``tokenizer.add_tokens``), else a clear error."""
        vocab = tokenizer.get_vocab()
        sequences: dict[str, list[int]] = {}
        for item_id, toks in sids.items():
            toks = list(toks)
            if not is_well_formed(toks):
                raise ValueError(
                    f"item {item_id!r}: {toks!r} is not a well-formed SID (expected tokens <a_..><b_..>... in order)"
                )
            missing = [t for t in toks if t not in vocab]
            if missing:
                raise ValueError(
                    f"item {item_id!r}: SID token(s) {missing} are not in the tokenizer's vocabulary; the model "
                    "must be prepared with every SID token added as one token (train.model.add_sid_tokens)"
                )
            sequences[str(item_id)] = [vocab[t] for t in toks]
        return cls(sequences)

    def __len__(self) -> int:
        return len(self.sequences)

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        """Next valid SID token ids after ``prefix`` (``[]`` when complete or not a valid prefix).

        The returned list is shared: do not mutate it."""
        return self._children.get(tuple(prefix), [])

    def item_of(self, seq: Sequence[int]) -> str | None:
        """The item a complete SID names (the first one, for a shared SID), else None."""
        found = self._items.get(tuple(seq))
        return found[0] if found else None

    def items_of(self, seq: Sequence[int]) -> list[str]:
        """Every item sharing the SID ``seq`` (``[]`` when it is no item's SID)."""
        return list(self._items.get(tuple(seq), []))

    def is_complete(self, seq: Sequence[int]) -> bool:
        """True when ``seq`` is exactly some item's SID (it may still be a prefix of a longer one)."""
        return tuple(seq) in self._items

    def is_prefix(self, seq: Sequence[int]) -> bool:
        """True when ``seq`` can still be extended to an item's SID."""
        return tuple(seq) in self._children

    def table(self, end_id: int, vocab_size: int, device) -> "TrieTable":
        """This trie as a ``TrieTable`` for (end token, vocabulary width, device), built once."""
        import torch

        key = (end_id, vocab_size, str(torch.device(device)))
        if key not in self._tables:
            self._tables[key] = TrieTable(self, end_id, vocab_size, device)
        return self._tables[key]


class TrieTable:
    """The trie as a state machine on one device: constrained decoding without a host sync.

    State 0 is the empty prefix, one state per prefix of a valid SID, and a last ``dead`` state for
    anything that left the trie (a non-SID token, an invalid path, or tokens after the end). The
    columns are the SID token ids (sorted) and, last, ``end_id``:

    - ``col_of[token]``: the column of a token id, -1 for every other token;
    - ``next_state[state, col]``: the state after a SID column (``dead`` when the path is invalid);
    - ``beam_allowed[state, col]``: what evaluation's beam search may emit: the children, plus the
      end token when the prefix is a complete SID or has no child (``dead`` allows only the end);
    - ``answer_allowed[state, col]``: what a constrained rollout may emit: the children while the
      prefix is incomplete, else only the end token (``train.decoding.AnswerConstraint``).

    Built once per (trie, end token, device, vocabulary width); ``walk`` and ``masked`` are all a
    decoding step does.
    """

    def __init__(self, trie: SidTrie, end_id: int, vocab_size: int, device="cpu"):
        import torch

        states: dict[tuple[int, ...], int] = {(): 0}
        for seq in trie._items:  # every prefix of every SID gets a state, in a deterministic order
            for i in range(1, len(seq) + 1):
                states.setdefault(seq[:i], len(states))
        self.dead = len(states)
        columns = sorted(trie.token_ids)
        if end_id in trie.token_ids:
            raise ValueError(f"the end token id {end_id} is also a SID token")
        if vocab_size <= max(columns + [end_id]):
            raise ValueError(f"vocabulary width {vocab_size} does not cover the SID/end token ids")
        col = {t: c for c, t in enumerate(columns)}
        n_states, n_cols = self.dead + 1, len(columns)
        next_state = torch.full((n_states, n_cols), self.dead, dtype=torch.long)
        beam = torch.zeros((n_states, n_cols + 1), dtype=torch.bool)
        answer = torch.zeros((n_states, n_cols + 1), dtype=torch.bool)
        for prefix, s in states.items():
            children = trie.allowed(prefix)
            for t in children:
                next_state[s, col[t]] = states[prefix + (t,)]
                beam[s, col[t]] = True
            complete = trie.is_complete(prefix)
            beam[s, n_cols] = complete or not children
            if children and not complete:
                answer[s, [col[t] for t in children]] = True
            else:
                answer[s, n_cols] = True
        beam[self.dead, n_cols] = answer[self.dead, n_cols] = True
        col_of = torch.full((vocab_size,), -1, dtype=torch.long)
        col_of[torch.tensor(columns, dtype=torch.long)] = torch.arange(n_cols)
        self.end_id, self.vocab_size, self.device = end_id, vocab_size, torch.device(device)
        self.columns = torch.tensor(columns + [end_id], dtype=torch.long, device=device)
        self.col_of = col_of.to(device)
        self.next_state = next_state.to(device)
        self.beam_allowed = beam.to(device)
        self.answer_allowed = answer.to(device)

    def walk(self, tokens, valid=None):
        """The state of each row after its tokens (``[rows, steps]``, walked from the empty prefix);
        ``valid[rows, steps]`` (optional): only the True positions are walked (a row's SID may start
        at a different column in each row)."""
        import torch

        state = torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)
        for j in range(tokens.shape[1]):
            col = self.col_of[tokens[:, j]]
            step = torch.where(col >= 0, self.next_state[state, col.clamp(min=0)], self.dead)
            state = step if valid is None else torch.where(valid[:, j], step, state)
        return state

    def masked(self, scores, allowed_columns):
        """``scores`` with every token but the row's ``allowed_columns`` (``[rows, columns]``) at -inf;
        the allowed scores are the model's own, bit for bit."""
        import torch

        allowed = scores.index_select(1, self.columns).masked_fill_(~allowed_columns, -math.inf)
        return torch.empty_like(scores).fill_(-math.inf).index_copy_(1, self.columns, allowed)


def sid_strings(sids: Mapping[str, Sequence[str]]) -> set[str]:
    """The set of valid SID strings (``"<a_1><b_2><c_3>"``) of a sids.json map: the reward's input."""
    return {sid_string(v) for v in sids.values()}
