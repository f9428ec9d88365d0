"""Near-duplicate removal across a corpus: MinHash signatures in NumPy, datasketch's LSH.

What duplicated teacher outputs look like: the same paragraph returned twice with a
few words changed, or boilerplate that a template-happy teacher repeats around a
different SID. Both keep most *word 3-grams* (SIDs count as one word each), while two
honest paragraphs about different items share very few. A word changed destroys up to
three 3-grams, so an edit rate e gives a Jaccard of about (1-3e)/(1+3e): 0.74 at 5%,
0.54 at 10%, 0.25 at 25%. The default threshold 0.5 catches paragraphs with up to about
10% of their words changed (the curve is in ``dedup_quality``); datasketch picks the
bands for that threshold, and each LSH candidate is confirmed on its signature before
it counts, which keeps precision high.

Speed: shingles are hashed with xxhash per distinct word and combined in NumPy; the
128 permutations are one vectorised affine map in uint32 (datasketch's "affine32"
scheme: bijective, so no collisions are introduced), reduced per text with
``np.minimum.reduceat``. Only the LSH buckets are datasketch's.

Deterministic: same texts in the same order -> same answer; ``seed`` fixes the
permutations. The caller passes texts in record order, so which copy is kept does not
depend on the order answers arrived in.
"""
from __future__ import annotations

import random
import re
from typing import Sequence

import numpy as np
import xxhash
from datasketch import LeanMinHash, MinHashLSH

from synth.sid import SID_RUN_RE

SHINGLE = 3
DEFAULT_THRESHOLD = 0.5
_WORD_RE = re.compile(r"\w+")
_CHUNK = 4096  # shingles per block: keeps the (shingles x permutations) block in cache


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's finaliser: spreads structured hashes before the affine permutations."""
    h = h.copy()
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


def _words(text: str) -> list[str]:
    # A SID is one word: two texts about different items differ there.
    if "<" in text:
        text = SID_RUN_RE.sub(lambda m: " " + m.group(0).replace("><", "")[1:-1] + " ", text)
    return _WORD_RE.findall(text.casefold())


def signatures(texts: Sequence[str], num_perm: int = 128, seed: int = 1,
               shingle: int = SHINGLE) -> np.ndarray:
    """(len(texts), num_perm) uint32 MinHash signatures of word ``shingle``-grams."""
    rng = np.random.default_rng(seed)
    a = (rng.integers(0, 2**32, size=num_perm, dtype=np.uint64) | 1).astype(np.uint32)
    b = rng.integers(0, 2**32, size=num_perm, dtype=np.uint64).astype(np.uint32)
    vocab: dict[str, int] = {}
    ids_parts, lengths = [], np.zeros(len(texts), dtype=np.int64)
    for i, t in enumerate(texts):
        w = _words(t or "")
        ids = [vocab.setdefault(x, len(vocab)) for x in w]
        if len(ids) < shingle:  # short texts: the whole text is one shingle
            ids = ids + [-1] * (shingle - len(ids))
        ids_parts.append(np.asarray(ids, dtype=np.int64))
        lengths[i] = len(ids) - shingle + 1
    # One 32-bit hash per distinct word, then a polynomial mix per shingle (wraps mod 2^32).
    word_h = np.fromiter((xxhash.xxh32_intdigest(w.encode(), seed) for w in vocab), dtype=np.uint32,
                         count=len(vocab))
    word_h = np.append(word_h, np.uint32(0x9E3779B9))  # index -1: padding
    sig = np.empty((len(texts), num_perm), dtype=np.uint32)
    if not texts:
        return sig
    all_ids = np.concatenate(ids_parts)
    starts = np.concatenate([[0], np.cumsum([len(p) for p in ids_parts])[:-1]])
    # Shingle k of text i starts at starts[i] + k; build all shingle hashes at once.
    first = np.concatenate([s + np.arange(n) for s, n in zip(starts, lengths)])
    hw = word_h[all_ids]
    sh = np.zeros(len(first), dtype=np.uint32)
    with np.errstate(over="ignore"):
        for j in range(shingle):
            sh = sh * np.uint32(0x01000193) + hw[first + j]
        sh = _fmix32(sh)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        # Process whole texts in blocks of about _CHUNK shingles.
        t0 = 0
        n = len(texts)
        while t0 < n:
            t1 = t0
            while t1 < n and (t1 == t0 or offsets[t1] - offsets[t0] + lengths[t1] <= _CHUNK):
                t1 += 1
            lo = offsets[t0]
            hi = offsets[t1 - 1] + lengths[t1 - 1]
            block = sh[lo:hi, None] * a[None, :] + b[None, :]
            sig[t0:t1] = np.minimum.reduceat(block, offsets[t0:t1] - lo, axis=0)
            t0 = t1
    return sig


def near_duplicate_indices(texts: Sequence[str], threshold: float = DEFAULT_THRESHOLD,
                           num_perm: int = 128, seed: int = 1) -> set[int]:
    """Indices of texts that near-duplicate an EARLIER text in the given order."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"dedup threshold must be in (0, 1), got {threshold}")
    sig = signatures(texts, num_perm=num_perm, seed=seed)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    dups: set[int] = set()
    for i in range(len(texts)):
        m = LeanMinHash(seed=seed, hashvalues=sig[i], scheme="affine32")
        for j in lsh.query(m):
            # Confirm the LSH candidate on the signatures (an unbiased Jaccard estimate).
            if np.count_nonzero(sig[i] == sig[j]) >= threshold * num_perm:
                dups.add(i)
                break
        lsh.insert(i, m, check_duplication=False)
    return dups


# --- quality on planted duplicates -----------------------------------------------------

def _synthetic_corpus(n: int, rng: random.Random, vocab_size: int = 5000) -> list[list[str]]:
    """Paragraph-like texts of 80-200 words with a Zipf vocabulary and shared boilerplate
    phrases, so unrelated texts overlap the way real teacher outputs do."""
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


def _edit(words: list[str], rate: float, rng: random.Random) -> list[str]:
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
    """Recall and precision on planted near duplicates, one row per edit rate.

    For each rate: ``n_texts`` originals, plus an edited copy of a tenth of them placed
    later in the corpus. recall = planted copies flagged / planted; precision = planted
    copies flagged / all flagged."""
    rows = []
    for rate in edit_rates:
        rng = random.Random(f"{seed}:{rate}")
        base = _synthetic_corpus(n_texts, rng)
        picks = rng.sample(range(n_texts), max(1, n_texts // 10))
        copies = [_edit(base[i], rate, rng) for i in picks]
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
