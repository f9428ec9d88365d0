"""Recall and precision of ``synth.dedup`` on planted near duplicates, one row per edit rate
(the recall curve of ``make bench``'s dedup section; the tests check its two ends).

Texts are paragraph-like word lists with a Zipf vocabulary and shared boilerplate phrases,
so unrelated texts overlap the way real teacher outputs do; a planted copy is an earlier
text with a share of its words substituted, deleted or inserted.
"""
from __future__ import annotations

import random
from typing import Sequence

from synth.dedup import DEFAULT_THRESHOLD, near_duplicate_indices


def synthetic_corpus(n: int, rng: random.Random, vocab_size: int = 5000) -> list[list[str]]:
    """``n`` texts of 80-200 words (as word lists)."""
    vocab = [f"w{i}" for i in range(vocab_size)]
    weights = [1.0 / (i + 1) for i in range(vocab_size)]
    boiler = [rng.choices(vocab[:200], k=rng.randint(4, 8)) for _ in range(30)]
    texts = []
    for _ in range(n):
        words: list[str] = []
        target = rng.randint(80, 200)
        while len(words) < target:
            if rng.random() < 0.15:
                words += rng.choice(boiler)
            else:
                words += rng.choices(vocab, weights=weights, k=rng.randint(5, 15))
        texts.append(words[:target])
    return texts


def edit_words(words: list[str], rate: float, rng: random.Random) -> list[str]:
    """Substitute, delete or insert about ``rate`` of the words."""
    out = list(words)
    for _ in range(max(1, round(rate * len(words)))):
        op, k = rng.random(), rng.randrange(len(out))
        if op < 0.5:
            out[k] = f"edit{rng.randrange(10**6)}"
        elif op < 0.75 and len(out) > 10:
            del out[k]
        else:
            out.insert(k, f"edit{rng.randrange(10**6)}")
    return out


def dedup_quality(n_texts: int = 2000, edit_rates: Sequence[float] = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3),
                  seed: int = 0, threshold: float = DEFAULT_THRESHOLD, num_perm: int = 128) -> list[dict]:
    """For each rate: ``n_texts`` originals, plus an edited copy of a tenth of them placed
    later in the corpus. recall = planted copies flagged / planted; precision = planted
    copies flagged / all flagged."""
    rows = []
    for rate in edit_rates:
        rng = random.Random(f"{seed}:{rate}")
        base = synthetic_corpus(n_texts, rng)
        picks = rng.sample(range(n_texts), max(1, n_texts // 10))
        copies = [edit_words(base[i], rate, rng) for i in picks]
        texts = [" ".join(w) for w in base + copies]
        planted = set(range(n_texts, n_texts + len(copies)))
        flagged = near_duplicate_indices(texts, threshold=threshold, num_perm=num_perm, seed=seed + 1)
        tp = len(flagged & planted)
        rows.append({
            "edit_rate": rate,
            "expected_jaccard": round((1 - 3 * rate) / (1 + 3 * rate), 3) if rate < 1 / 3 else 0.0,
            "planted": len(planted),
            "flagged": len(flagged),
            "recall": round(tp / len(planted), 4),
            "precision": round(tp / len(flagged), 4) if flagged else 1.0,
        })
    return rows
