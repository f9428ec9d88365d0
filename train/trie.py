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
"""
from __future__ import annotations

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


def sid_strings(sids: Mapping[str, Sequence[str]]) -> set[str]:
    """The set of valid SID strings (``"<a_1><b_2><c_3>"``) of a sids.json map: the reward's input."""
    return {sid_string(v) for v in sids.values()}
