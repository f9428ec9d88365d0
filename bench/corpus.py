"""Synthetic teacher-like corpora for the dedup bench, built in NumPy (1M texts in seconds).

Texts of 80-200 words drawn from a Zipf vocabulary of made-up words, with commas,
full stops, capitals and SIDs (``<a_12><b_7><c_201>``) the way teacher outputs carry
them, plus planted near duplicates: copies of earlier texts with a share of their words
substituted, deleted or inserted. Everything is a function of ``seed``.
"""
from __future__ import annotations

import numpy as np

_LETTERS = np.frombuffer(b"etaoinshrdlcumwfgypbvkjxqz", dtype=np.uint8)
_LETTER_P = np.array([12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.4,
                      2.2, 2.0, 2.0, 1.9, 1.5, 1.0, 0.8, 0.2, 0.2, 0.1, 0.1])


def _vocabulary(rng: np.random.Generator, n_words: int, n_sids: int) -> tuple[np.ndarray, np.ndarray]:
    """Padded byte table (tokens x width) and lengths: separators, words, Words, SIDs."""
    lens = np.clip(rng.geometric(0.18, size=n_words) + 1, 2, 14)
    letters = rng.choice(_LETTERS, size=(n_words, 14), p=_LETTER_P / _LETTER_P.sum())
    tokens = [b" ", b", ", b". ", b"\n"]
    words = [bytes(letters[i, :lens[i]]) for i in range(n_words)]
    tokens += words + [w.capitalize() for w in words]
    codes = rng.integers(0, 256, size=(n_sids, 3))
    tokens += [f"<a_{a}><b_{b}><c_{c}>".encode() for a, b, c in codes]
    width = max(len(t) for t in tokens)
    table = np.zeros((len(tokens), width), dtype=np.uint8)
    tlen = np.array([len(t) for t in tokens], dtype=np.int64)
    for i, t in enumerate(tokens):
        table[i, :len(t)] = np.frombuffer(t, dtype=np.uint8)
    return table, tlen


class CorpusMaker:
    SPACE, COMMA, STOP, NEWLINE = 0, 1, 2, 3

    def __init__(self, seed: int = 0, n_words: int = 30000, n_sids: int = 5000):
        self.rng = np.random.default_rng(seed)
        self.n_words, self.n_sids = n_words, n_sids
        self.table, self.tlen = _vocabulary(self.rng, n_words, n_sids)
        w = 1.0 / np.arange(1, n_words + 1) ** 1.05
        cdf = np.cumsum(w) / w.sum()
        # Inverse-CDF lookup table: one gather per word instead of a binary search.
        self.zipf = np.minimum(np.searchsorted(cdf, (np.arange(1 << 20) + 0.5) / (1 << 20)), n_words - 1)
        flat = np.zeros(int(self.tlen.sum()), dtype=np.uint8)
        self.tstart = np.concatenate([[0], np.cumsum(self.tlen)[:-1]])
        for i in range(len(self.tlen)):
            flat[self.tstart[i]:self.tstart[i] + self.tlen[i]] = self.table[i, :self.tlen[i]]
        self.flat = flat

    def _words(self, n: int) -> np.ndarray:
        """Token ids of n words: Zipf words, some capitalised, about 2% SIDs."""
        ids = self.zipf[self.rng.integers(0, 1 << 20, size=n)] + 4
        u = self.rng.random(n)
        ids = np.where(u < 0.04, ids + self.n_words, ids)
        sid = 4 + 2 * self.n_words + self.rng.integers(0, self.n_sids, size=n)
        return np.where(u > 0.98, sid, ids)

    def _render(self, texts: list[np.ndarray]) -> list[str]:
        """Word ids per text -> strings, with separators, in one vectorised gather."""
        lens = np.array([len(t) for t in texts], dtype=np.int64)
        words = np.concatenate(texts)
        sep = np.full(len(words), self.SPACE, dtype=np.int64)
        u = self.rng.random(len(words))
        sep[u < 0.08] = self.COMMA
        sep[u < 0.03] = self.STOP
        sep[np.cumsum(lens) - 1] = self.NEWLINE
        toks = np.empty(2 * len(words), dtype=np.int64)
        toks[0::2], toks[1::2] = words, sep
        tl = self.tlen[toks]
        out_start = np.cumsum(tl) - tl
        # Byte k of the output comes from byte (k - out_start) of its token in the flat table.
        src = np.repeat(self.tstart[toks] - out_start, tl) + np.arange(int(tl.sum()))
        return self.flat[src].tobytes().decode("utf-8").split("\n")[:-1]

    def texts(self, n: int, dup_share: float = 0.0, edit_rate: float = 0.05,
              chunk: int = 20000) -> tuple[list[str], np.ndarray]:
        """n texts of 80-200 words; ``dup_share`` of them are edited copies of an earlier
        text of the same chunk. Returns (texts, planted): planted[i] is the source or -1."""
        out: list[str] = []
        planted = np.full(n, -1, dtype=np.int64)
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            lens = self.rng.integers(80, 201, size=hi - lo)
            flat = self._words(int(lens.sum()))
            batch = np.split(flat, np.cumsum(lens)[:-1])
            dups = np.nonzero(self.rng.random(hi - lo) < dup_share)[0]
            for k in dups[dups > 0]:
                src = int(self.rng.integers(0, k))
                batch[k] = self.edit(batch[src], edit_rate)
                planted[lo + k] = lo + src
            out += self._render(batch)
        return out, planted

    def edit(self, words: np.ndarray, rate: float) -> np.ndarray:
        """Substitute half, delete a quarter, insert a quarter of ``rate`` of the words."""
        n_ops = max(1, round(rate * len(words)))
        ops = self.rng.random(n_ops)
        w = words.copy()
        subs = ops < 0.5
        pos = self.rng.integers(0, len(w), size=int(subs.sum()))
        w[pos] = self._words(len(pos))
        n_del = int(((ops >= 0.5) & (ops < 0.75)).sum())
        if n_del and len(w) > 10 + n_del:
            w = np.delete(w, self.rng.choice(len(w), size=n_del, replace=False))
        n_ins = int((ops >= 0.75).sum())
        if n_ins:
            w = np.insert(w, self.rng.integers(0, len(w) + 1, size=n_ins), self._words(n_ins))
        return w
