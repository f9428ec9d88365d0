import random

from synth.dedup import _edit, _synthetic_corpus, dedup_quality, near_duplicate_indices


def _corpus(seed=0, n=300):
    rng = random.Random(seed)
    base = [" ".join(w) for w in _synthetic_corpus(n, rng)]
    dup_of = {}
    texts = list(base)
    for i in rng.sample(range(n), 30):
        dup_of[len(texts)] = i
        texts.append(" ".join(_edit(base[i].split(), 0.03, rng)))
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
