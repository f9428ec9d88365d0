import random

from bench.dedup_quality import dedup_quality, edit_words, synthetic_corpus
from synth.dedup import near_duplicate_indices


def _corpus(seed=0, n=300):
    rng = random.Random(seed)
    base = [" ".join(w) for w in synthetic_corpus(n, rng)]
    dup_of = {}
    texts = list(base)
    for i in rng.sample(range(n), 30):
        dup_of[len(texts)] = i
        texts.append(" ".join(edit_words(base[i].split(), 0.03, rng)))
    return texts, dup_of


def test_planted_duplicates_found():
    texts, dup_of = _corpus()
    flagged = near_duplicate_indices(texts)
    assert set(dup_of) <= flagged
    assert len(flagged - set(dup_of)) <= 1


def test_deterministic_whatever_the_arrival_order():
    texts, _ = _corpus(seed=1)
    records = list(enumerate(texts))  # (record id, text)
    kept_sets = []
    for s in range(3):
        arrived = records[:]
        random.Random(s).shuffle(arrived)
        in_order = sorted(arrived)  # the caller passes record order
        flagged = near_duplicate_indices([t for _r, t in in_order])
        kept_sets.append({in_order[i][0] for i in range(len(in_order)) if i not in flagged})
    assert kept_sets[0] == kept_sets[1] == kept_sets[2]


def test_sid_and_threshold():
    a = "The item <a_1><b_2><c_3> is a pen " + "with a smooth line for daily notes " * 5
    b = a.replace("<a_1><b_2><c_3>", "<a_9><b_9><c_9>")
    assert near_duplicate_indices([a, a]) == {1}
    assert near_duplicate_indices([a, b]) == {1}  # boilerplate around another SID
    assert near_duplicate_indices(["one two three four", "five six seven eight"]) == set()


def test_quality_curve():
    rows = dedup_quality(n_texts=200, edit_rates=(0.02, 0.3), seed=3)
    assert rows[0]["recall"] >= 0.9 and rows[0]["precision"] >= 0.9
    assert rows[1]["recall"] <= 0.2


# --- the vectorised path against a plain-Python statement of the same function --------

import numpy as np  # noqa: E402

from bench.dedup_bench import duplicates_via_datasketch, reference_words  # noqa: E402
from synth import dedup  # noqa: E402

M64 = (1 << 64) - 1
TRICKY = [
    "Plain words, with punctuation; and CAPS... then <a_1><b_22><c_333> right after.",
    "word<a_12><b_7><c_201>word and <a_1> alone and <A_1><B_2> upper",
    "Straße ÉCOLE naïve — “quoted” 5½ café's déjà-vu",
    "",
    "one",
    "two words",
    "nul\x00inside the text here",
    "tabs\tand\nnewlines   and    spaces",
    "x" * 300 + " a very long token then more words here",
]


def _fmix(h):
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & M64
    h ^= h >> 33
    h = (h * 0xC4CEB93FE53B3C53) & M64
    return h ^ (h >> 33)


def _reference_signature(text, num_perm=128, seed=1):
    words = reference_words(text.replace("\x00", " "))
    hw = []
    for w in words:
        b = w.encode()
        hw.append(_fmix((sum(c * pow(dedup._Q, k, 1 << 64) for k, c in enumerate(b)) + len(b)) & M64))
    pad = int(dedup._PAD)
    grams = [hw[k:k + 3] for k in range(len(hw) - 2)] or [(hw + [pad, pad, pad])[:3]]
    mix = int(dedup._MIX)
    sh = [_fmix((((g[0] * mix + g[1]) * mix) + g[2]) & M64) >> 32 for g in grams]
    a, b = dedup._permutations(num_perm, seed)
    return np.array([min((int(ai) * x + int(bi)) & 0xFFFFFFFF for x in sh) for ai, bi in zip(a, b)],
                    dtype=np.uint32)


def test_vectorised_signatures_match_plain_python():
    sig = dedup.signatures(TRICKY)
    for i, text in enumerate(TRICKY):
        assert (sig[i] == _reference_signature(text)).all(), repr(text)


def test_signature_does_not_depend_on_neighbours_or_chunking(monkeypatch):
    texts, _ = _corpus(seed=2, n=60)
    texts = texts + TRICKY
    whole = dedup.signatures(texts)
    monkeypatch.setattr(dedup, "_TEXT_BYTES", 2000)  # many small chunks
    chunked = dedup.signatures(texts)
    alone = np.stack([dedup.signatures([t])[0] for t in texts])
    assert (whole == chunked).all() and (whole == alone).all()


def test_numpy_banding_equals_datasketch_index():
    rng = random.Random(5)
    base = [" ".join(w) for w in synthetic_corpus(300, rng)]
    texts = list(base)
    for rate in (0.02, 0.08, 0.12, 0.15, 0.2):  # around the threshold: both sides of it
        for i in rng.sample(range(300), 15):
            texts.append(" ".join(edit_words(base[i].split(), rate, rng)))
    texts += texts[:5]  # exact copies too
    sig = dedup.signatures(texts)
    ours = dedup.duplicates_from_signatures(sig)
    assert ours == duplicates_via_datasketch(sig)
    assert {len(texts) - 5 + k for k in range(5)} <= ours
    assert dedup.lsh_params(0.5, 128) == (32, 4)
