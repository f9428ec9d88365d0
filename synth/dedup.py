"""Near-duplicate removal across a corpus: MinHash signatures and LSH banding in NumPy.

What duplicated teacher outputs look like: the same paragraph returned twice with a
few words changed, or boilerplate that a template-happy teacher repeats around a
different SID. Both keep most *word 3-grams* (SIDs count as one word each), while two
honest paragraphs about different items share very few. A word changed destroys up to
three 3-grams, so an edit rate e gives a Jaccard of about (1-3e)/(1+3e): 0.74 at 5%,
0.54 at 10%, 0.25 at 25%. The default threshold 0.5 catches paragraphs with up to about
10% of their words changed (the recall curve: ``make bench``, section dedup).
The bands are datasketch's choice for the threshold with false negatives weighted 9 to
1 (32 bands of 4 rows at 0.5 with 128 permutations, see ``LSH_WEIGHTS``), and each LSH
candidate is confirmed on its signature before it counts, which keeps precision high.

Speed (``make bench``): no Python work per word. A chunk of texts is joined into one
string, SID runs are fused into one word with one regex, and the UTF-8 bytes are
split into words with a byte table; each word is hashed by a polynomial over its bytes
computed from one prefix sum (position independent, so the same word hashes the same
everywhere), 3 consecutive word hashes are mixed into a shingle hash, and the 128
permutations are one vectorised affine map in uint32 (datasketch's "affine32" scheme),
reduced per text with ``np.minimum.reduceat``. Candidates come from sorting each band's
keys in NumPy: the same buckets as datasketch's ``MinHashLSH`` (``bench.dedup_bench`` fills
one from the same signatures, and the tests check both flag the same texts), without its
per-document Python calls and one Python set per bucket (32 bands x 1M texts would be
32M sets, about 10 GB).

Deterministic: same texts in the same order -> same answer; ``seed`` fixes the
permutations. The caller passes texts in record order, so which copy is kept does not
depend on the order answers arrived in.
"""
from __future__ import annotations

import functools
import re
from typing import Sequence

import numpy as np
from datasketch import MinHashLSH

SHINGLE = 3
DEFAULT_THRESHOLD = 0.5
_TEXT_BYTES = 1 << 20  # bytes of text per chunk: bounds the temporaries (about 40x this)
_PERM_ROWS = 1024      # shingles per permutation block: keeps (shingles x 128) in cache
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)

# Word characters, as bytes of UTF-8: ASCII letters, digits, "_" (what ``\w`` matches in
# ASCII) and every byte of a multi-byte character (non-ASCII punctuation is turned into
# spaces before encoding, see ``_nonascii``).
_WORD_BYTE = np.zeros(256, dtype=bool)
for _c in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_":
    _WORD_BYTE[_c] = True
_WORD_BYTE[0x80:] = True
_NONWORD_RE = re.compile(r"[^\w\x00]+")
# The "><" inside a SID run: removed, so "<a_1><b_2><c_3>" reads as the one word
# "a_1b_2c_3" (a SID names an item; codes up to 4 digits).
_SID_JOIN_RE = re.compile(
    r"><(?:(?<=<[a-z]_\d><)|(?<=<[a-z]_\d\d><)|(?<=<[a-z]_\d{3}><)|(?<=<[a-z]_\d{4}><))(?=[a-z]_\d+>)")

_P = 0x100000001B3                 # odd, so invertible mod 2^64
_Q = pow(_P, -1, 1 << 64)
_MIX = np.uint64(0x9E3779B97F4A7C15)
_PAD = np.uint64(0x2545F4914F6CDD1D)  # the hash of a missing word (texts under 3 words)


def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser, in place: every input bit moves every output bit."""
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB93FE53B3C53)
    h ^= h >> np.uint64(33)
    return h


@functools.lru_cache(maxsize=4)
def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(Q^i, P^i) mod 2^64 for i < n, n rounded up to a power of two."""
    q = np.full(n, _Q, dtype=np.uint64)
    q[0] = 1
    p = np.full(n, _P, dtype=np.uint64)
    p[0] = 1
    with np.errstate(over="ignore"):
        return np.cumprod(q, dtype=np.uint64), np.cumprod(p, dtype=np.uint64)


def _nonascii(joined: str) -> str:
    # Rare path: keep Unicode word characters, turn Unicode punctuation into spaces, so
    # a text tokenises the same whichever chunk it is in.
    return _NONWORD_RE.sub(" ", joined)


def _chunk_shingles(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(uint32 shingle hashes in text order, shingles per text) for a chunk of texts."""
    m = len(texts)
    joined = "\x00".join(texts)
    if joined.count("\x00") != m - 1:  # a NUL inside a text: it separates words anyway
        joined = "\x00".join(t.replace("\x00", " ") for t in texts)
    if "><" in joined:
        joined = _SID_JOIN_RE.sub("", joined)
    joined = joined.casefold()
    if not joined.isascii():
        joined = _nonascii(joined)
    arr = np.frombuffer(joined.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    n = len(arr)
    isw = _WORD_BYTE[arr]
    edges = np.flatnonzero(np.diff(isw, prepend=False, append=False))
    starts, ends = edges[0::2], edges[1::2]
    text_of = np.searchsorted(np.flatnonzero(arr == 0), starts)
    # Word hash = sum_k byte_k * Q^k over the word, from one prefix sum of byte_i * Q^i.
    qpow, ppow = _powers(1 << max(10, int(n).bit_length()))
    with np.errstate(over="ignore"):
        pre = np.zeros(n + 1, dtype=np.uint64)
        np.cumsum(arr * qpow[:n], out=pre[1:])
        hw = _fmix64((pre[ends] - pre[starts]) * ppow[starts] + (ends - starts).astype(np.uint64))
        words = np.bincount(text_of, minlength=m)
        if len(hw) >= SHINGLE:
            sh = hw[:-2] * _MIX
            sh += hw[1:-1]
            sh *= _MIX
            sh += hw[2:]
            sh = sh[text_of[:-2] == text_of[2:]]
        else:
            sh = np.zeros(0, dtype=np.uint64)
        counts = np.maximum(words - (SHINGLE - 1), 0)
        short = np.flatnonzero(words < SHINGLE)
        if len(short):
            # A text under 3 words is one shingle of its words padded with _PAD.
            first = np.cumsum(words) - words
            pad = np.full((len(short), SHINGLE), _PAD, dtype=np.uint64)
            for k in range(SHINGLE - 1):
                has = words[short] > k
                pad[has, k] = hw[first[short][has] + k]
            extra = (pad[:, 0] * _MIX + pad[:, 1]) * _MIX + pad[:, 2]
            at = (np.cumsum(counts) - counts)[short]
            sh = np.insert(sh, at, extra)
            counts[short] = 1
        sh = (_fmix64(sh) >> np.uint64(32)).astype(np.uint32)
    return sh, counts


def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = (rng.integers(0, 2**32, size=num_perm, dtype=np.uint64) | 1).astype(np.uint32)
    b = rng.integers(0, 2**32, size=num_perm, dtype=np.uint64).astype(np.uint32)
    return a, b


def _min_hash(sh: np.ndarray, counts: np.ndarray, a: np.ndarray, b: np.ndarray,
              out: np.ndarray) -> None:
    """out[t] = min over text t's shingles x of (a*x + b) mod 2^32, per permutation."""
    offsets = np.cumsum(counts) - counts
    # Blocks of whole texts starting in the same window of _PERM_ROWS shingles.
    group = offsets // _PERM_ROWS
    cuts = np.flatnonzero(np.diff(group, prepend=-1, append=-1))
    block = np.empty((_PERM_ROWS + int(counts.max(initial=1)), len(a)), dtype=np.uint32)
    for t0, t1 in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
        lo = int(offsets[t0])
        hi = int(offsets[t1 - 1] + counts[t1 - 1])
        blk = block[:hi - lo]
        np.multiply(sh[lo:hi, None], a[None, :], out=blk)
        np.add(blk, b[None, :], out=blk)
        np.minimum.reduceat(blk, offsets[t0:t1] - lo, axis=0, out=out[t0:t1])


def signatures(texts: Sequence[str], num_perm: int = 128, seed: int = 1) -> np.ndarray:
    """(len(texts), num_perm) uint32 MinHash signatures of word 3-grams (a SID is one
    word), in datasketch's "affine32" scheme: ``LeanMinHash(seed=seed,
    hashvalues=row, scheme="affine32")`` is a valid datasketch MinHash of the text."""
    a, b = _permutations(num_perm, seed)
    sig = np.empty((len(texts), num_perm), dtype=np.uint32)
    i = 0
    while i < len(texts):
        # Chunks of about _TEXT_BYTES characters (at least one text).
        j, size = i, 0
        while j < len(texts) and (j == i or size + len(texts[j] or "") <= _TEXT_BYTES):
            size += len(texts[j] or "") + 1
            j += 1
        sh, counts = _chunk_shingles([t or "" for t in texts[i:j]])
        _min_hash(sh, counts, a, b, sig[i:j])
        i = j
    return sig


# LSH only proposes candidates and each is confirmed on its signature, so a false
# positive costs one comparison while a false negative is a duplicate kept: the bands
# are datasketch's optimum with false negatives weighted 9 to 1. At threshold 0.5 that
# is 32 bands of 4 rows: a pair at Jaccard 0.6 is a candidate 98.8% of the time (87%
# with the even weights' 25 x 5), one at 0.3 (shared boilerplate) 23%.
LSH_WEIGHTS = (0.1, 0.9)


@functools.lru_cache(maxsize=16)
def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) that datasketch's MinHashLSH picks for this threshold and LSH_WEIGHTS."""
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=LSH_WEIGHTS)
    return lsh.b, lsh.r


def _confirm(sig: np.ndarray, i: np.ndarray, j: np.ndarray, need: float,
             band: tuple[int, int]) -> np.ndarray:
    """Pairs that really share the band and agree on >= need permutations."""
    lo, hi = band
    ok = np.empty(len(i), dtype=bool)
    step = 1 << 15
    for s in range(0, len(i), step):
        a, b = sig[i[s:s + step]], sig[j[s:s + step]]
        eq = a == b
        ok[s:s + step] = eq[:, lo:hi].all(axis=1) & (np.count_nonzero(eq, axis=1) >= need)
    return ok


def _band_keys(sig: np.ndarray, lo: int, hi: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        key = np.zeros(len(sig), dtype=np.uint64)
        for c in range(lo, hi):
            key *= _MIX
            key += sig[:, c]
        return _fmix64(key)


def near_duplicate_indices(texts: Sequence[str], threshold: float = DEFAULT_THRESHOLD,
                           num_perm: int = 128, seed: int = 1) -> set[int]:
    """Indices of texts that near-duplicate an EARLIER text in the given order."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"dedup threshold must be in (0, 1), got {threshold}")
    sig = signatures(texts, num_perm=num_perm, seed=seed)
    return duplicates_from_signatures(sig, threshold)


def duplicates_from_signatures(sig: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> set[int]:
    """Rows that share an LSH bucket with an earlier row and agree with it on at least
    ``threshold`` of the permutations (the signature's Jaccard estimate)."""
    n, num_perm = sig.shape
    bands, rows = lsh_params(threshold, num_perm)
    need = threshold * num_perm
    flagged = np.zeros(n, dtype=bool)
    for band in range(bands):
        lo, hi = band * rows, (band + 1) * rows
        key = _band_keys(sig, lo, hi)
        order = np.argsort(key, kind="stable")  # equal keys stay in row order
        ks = key[order]
        same = ks[1:] == ks[:-1]
        if not same.any():
            continue
        # Position of each sorted row within its bucket (0 = the bucket's first row).
        run_start = np.flatnonzero(np.concatenate([[True], ~same]))
        rank = np.arange(n) - np.repeat(run_start, np.diff(np.append(run_start, n)))
        # Round d compares each row with the row d places before it in its bucket,
        # until every row is flagged or has met all earlier rows of its bucket.
        d = 1
        while True:
            pos = np.flatnonzero(rank >= d)
            if not len(pos):
                break
            i, j = order[pos], order[pos - d]
            todo = ~flagged[i]
            i, j = i[todo], j[todo]
            if len(i):
                flagged[i[_confirm(sig, i, j, need, (lo, hi))]] = True
            d += 1
    return set(np.flatnonzero(flagged).tolist())


# Transitional: tests/test_dedup.py still reaches these through this module; they are
# benchmark material and live in bench/ (synth never imports bench otherwise).
