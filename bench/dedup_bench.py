"""Section "dedup": MinHash signatures and LSH dedup at 10k, 100k and 1M teacher-like
texts (QUICK: 2k, 10k), with peers measured in the same run on the same texts:
datasketch per document (the usual way to write it), datasketch's MinHashLSH index fed
our signatures (``duplicates_via_datasketch``, also the reference the tests compare
``synth.dedup`` to), and rensa (Rust) when it is installed. Plus the recall curve
(``bench.dedup_quality``)."""
from __future__ import annotations

import functools
import re

import numpy as np

from bench.common import median_time, progress, row, traced_peak
from bench.corpus import CorpusMaker
from bench.dedup_quality import dedup_quality
from synth import dedup
from synth.sid import SID_RUN_RE

_WORD_RE = re.compile(r"\w+")


def reference_words(text: str) -> list[str]:
    """The words of a text the plain-Python way (one regex per text); what the peers use."""
    if "<" in text:
        text = SID_RUN_RE.sub(lambda m: " " + m.group(0).replace("><", "")[1:-1] + " ", text)
    return _WORD_RE.findall(text.casefold())


def reference_shingles(text: str) -> list[str]:
    w = reference_words(text)
    if len(w) < dedup.SHINGLE:
        return [" ".join(w)]
    return [" ".join(w[k:k + dedup.SHINGLE]) for k in range(len(w) - dedup.SHINGLE + 1)]


def _quality(flagged: set[int], planted: np.ndarray) -> tuple[float, float]:
    truth = set(np.flatnonzero(planted >= 0).tolist())
    tp = len(flagged & truth)
    return (tp / len(truth) if truth else 1.0), (tp / len(flagged) if flagged else 1.0)


def datasketch_per_document(texts: list[str], threshold: float = dedup.DEFAULT_THRESHOLD,
                            num_perm: int = 128) -> tuple[float, float, set[int]]:
    """(signature seconds, LSH seconds, flagged) with datasketch's MinHash per text."""
    import time

    from datasketch import MinHash, MinHashLSH

    t = time.perf_counter()
    mhs = []
    for text in texts:
        m = MinHash(num_perm=num_perm, seed=1)
        m.update_batch([s.encode() for s in reference_shingles(text)])
        mhs.append(m)
    t_sig = time.perf_counter() - t
    t = time.perf_counter()
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm,
                     params=dedup.lsh_params(threshold, num_perm))
    flagged = set()
    for i, m in enumerate(mhs):
        if any(m.jaccard(mhs[j]) >= threshold for j in lsh.query(m)):
            flagged.add(i)
        lsh.insert(i, m, check_duplication=False)
    return t_sig, time.perf_counter() - t, flagged


def build_lsh(sig: np.ndarray, threshold: float = dedup.DEFAULT_THRESHOLD, seed: int = 1):
    """A datasketch ``MinHashLSH`` holding every row of ``sig`` (key = row index)."""
    from datasketch import LeanMinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=sig.shape[1],
                     params=dedup.lsh_params(threshold, sig.shape[1]))
    with lsh.insertion_session() as session:
        for i, row_ in enumerate(sig):
            session.insert(i, LeanMinHash(seed=seed, hashvalues=row_, scheme="affine32"),
                           check_duplication=False)
    return lsh


def duplicates_via_datasketch(sig: np.ndarray, threshold: float = dedup.DEFAULT_THRESHOLD,
                              seed: int = 1) -> set[int]:
    """The same answer as ``synth.dedup.duplicates_from_signatures``, from datasketch's index
    and queries, one document at a time: the reference the tests and this section compare to."""
    from datasketch import LeanMinHash

    lsh = build_lsh(sig, threshold, seed)
    need = threshold * sig.shape[1]
    dups = set()
    for i, row_ in enumerate(sig):
        m = LeanMinHash(seed=seed, hashvalues=row_, scheme="affine32")
        for j in sorted(lsh.query(m)):
            if j < i and np.count_nonzero(row_ == sig[j]) >= need:
                dups.add(i)
                break
    return dups


def rensa_dedup(texts: list[str], threshold: float = dedup.DEFAULT_THRESHOLD,
                num_perm: int = 128) -> tuple[float, float, set[int]] | None:
    """(signature seconds incl. Python tokenising, LSH seconds, flagged) with rensa's bulk API."""
    try:
        from rensa import RMinHash, RMinHashLSH
    except ImportError:
        return None
    import time

    t = time.perf_counter()
    matrix = RMinHash.digest_matrix_from_token_sets([reference_shingles(x) for x in texts], num_perm, 1)
    t_sig = time.perf_counter() - t
    t = time.perf_counter()
    bands, _rows = dedup.lsh_params(threshold, num_perm)
    flags = RMinHashLSH(threshold, num_perm, bands).insert_matrix_and_query_duplicate_flags(matrix)
    return t_sig, time.perf_counter() - t, set(np.flatnonzero(np.asarray(flags)).tolist())


def _size(n: int) -> str:
    return f"{n // 1000}k" if n < 1_000_000 else f"{n // 1_000_000}M"


def run(quick: bool, sizes: list[int] | None = None, subset: int | None = None,
        quality_texts: int | None = None) -> list[dict]:
    sizes = sizes or ([2_000, 10_000] if quick else [10_000, 100_000, 1_000_000])
    ds_index_max = 10_000 if quick else 100_000   # datasketch's index: ~10 GB at 1M
    rensa_max = 10_000 if quick else 100_000       # its Python tokenising holds all shingles
    subset = subset or (500 if quick else 2_000)
    rows: list[dict] = []
    maker = CorpusMaker(seed=0)
    peer_rate = None
    for n in sizes:
        progress(f"dedup: generating {n:,} texts")
        texts, planted = maker.texts(n, dup_share=0.05, edit_rate=0.05)
        if peer_rate is None:
            progress(f"dedup: datasketch per document on {subset:,} texts")
            ds_sig, ds_lsh, _ = datasketch_per_document(texts[:subset])
            peer_rate = subset / ds_sig
            rows.append(row(f"datasketch per document, {subset} texts", peer_rate, "texts/s",
                            note=f"MinHash.update_batch per text + LSH query/insert {ds_lsh:.2f} s; the peer"))
        ours = _ours(texts, planted, peer_rate)
        rows += ours["rows"]
        if n <= ds_index_max:
            progress(f"dedup: datasketch MinHashLSH index on {n:,} signatures")
            t_ds, ds_flagged = median_time(functools.partial(duplicates_via_datasketch, ours["sig"]), 1)
            rows.append(row(f"datasketch LSH index+query {_size(n)}", t_ds, "s", peer=ours["t_lsh"],
                            peer_name="NumPy banding",
                            note=f"same signatures, per-document insert/query; same answer: "
                                 f"{ds_flagged == ours['flagged']}"))
        if n <= rensa_max:
            progress(f"dedup: rensa on {n:,} texts")
            rows.append(_rensa_row(texts, planted, ours["t_sig"] + ours["t_lsh"]))
        del texts, ours
    progress("dedup: recall curve on planted near duplicates")
    for q in dedup_quality(n_texts=quality_texts or (300 if quick else 2000)):
        rows.append(row(f"recall at {q['edit_rate']:.0%} edits", q["recall"], "recall",
                        note=f"precision {q['precision']:.2f}, expected Jaccard {q['expected_jaccard']}"))
    return rows


def _ours(texts: list[str], planted: np.ndarray, peer_rate: float) -> dict:
    """synth.dedup on ``texts``: its rows, signatures, flagged set and the two timings."""
    n = len(texts)
    words = sum(len(t.split()) for t in texts[:1000]) / min(n, 1000)
    repeats = 3 if n <= 10_000 else 1
    progress(f"dedup: {n:,} texts, signatures x{repeats}")
    t_sig, sig = median_time(lambda: dedup.signatures(texts), repeats)
    _t, peak_sig, _ = traced_peak(lambda: dedup.signatures(texts[:min(n, 100_000)]))
    t_lsh, flagged = median_time(lambda: dedup.duplicates_from_signatures(sig), repeats)
    _t, peak_lsh, _ = traced_peak(lambda: dedup.duplicates_from_signatures(sig))
    rec, prec = _quality(flagged, planted)
    tag = _size(n)
    rows = [
        row(f"signatures {tag}", n / t_sig, "texts/s", peer=peer_rate, peer_name="datasketch per doc",
            note=f"{t_sig:.2f} s, {words:.0f} words/text, median of {repeats}"),
        row(f"LSH index+query {tag}", t_lsh, "s",
            note=f"NumPy banding {dedup.lsh_params(0.5, 128)} + signature confirm"),
        row(f"dedup total {tag}", t_sig + t_lsh, "s",
            peer=8.0 if n == 100_000 else 90.0 if n == 1_000_000 else None,
            peer_name="target" if n in (100_000, 1_000_000) else "",
            note=f"recall {rec:.3f} precision {prec:.3f} on {int((planted >= 0).sum())} "
                 f"planted copies at 5% edits"),
        row(f"peak memory {tag}", (sig.nbytes + max(peak_sig, 0) + peak_lsh) / 2**20, "MiB",
            note=f"signature matrix {sig.nbytes / 2**20:.0f} MiB + tokenising "
                 f"{peak_sig / 2**20:.0f} + banding {peak_lsh / 2**20:.0f} (tracemalloc; "
                 f"texts themselves not counted)"),
    ]
    return {"rows": rows, "sig": sig, "flagged": flagged, "t_sig": t_sig, "t_lsh": t_lsh}


def _rensa_row(texts: list[str], planted: np.ndarray, ours_s: float) -> dict:
    tag = _size(len(texts))
    r = rensa_dedup(texts)
    if r is None:
        return row(f"rensa {tag}", None, "", note="rensa not installed (pip install rensa)")
    r_sig, r_lsh, r_flagged = r
    r_rec, r_prec = _quality(r_flagged, planted)
    return row(f"rensa total {tag}", r_sig + r_lsh, "s", peer=ours_s, peer_name="ours",
               note=f"Python tokenising+digest {r_sig:.2f} s, LSH {r_lsh:.2f} s; "
                    f"recall {r_rec:.3f} precision {r_prec:.3f} (it flags both copies)")
