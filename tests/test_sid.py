import pytest

from synth import sid


def test_tokens_round_trip():
    toks = sid.tokens_from_codes([12, 7, 201])
    assert toks == ["<a_12>", "<b_7>", "<c_201>"]
    assert sid.sid_string(toks) == "<a_12><b_7><c_201>"
    assert sid.split_sid("<a_12><b_7><c_201>") == toks
    assert sid.is_well_formed(toks)


@pytest.mark.parametrize("bad", ["", "a_12", "<a_12> <b_7>", "<A_1>", "<a_x>", "<a_1>tail"])
def test_split_rejects_non_sids(bad):
    with pytest.raises(ValueError):
        sid.split_sid(bad)


def test_well_formed_checks_level_order():
    assert not sid.is_well_formed(["<b_1>", "<a_2>"])
    assert not sid.is_well_formed([])
    assert sid.is_well_formed(sid.tokens_from_codes([1, 2, 3, 4]))  # any number of levels


def test_find_sids_in_text():
    text = "I liked <a_1><b_2><c_3> and then <a_4><b_5><c_6>, not <a_7>."
    assert sid.find_sids(text) == ["<a_1><b_2><c_3>", "<a_4><b_5><c_6>", "<a_7>"]


def test_vocabulary_sorted_by_level_then_code():
    vocab = sid.vocabulary_of([["<a_10>", "<b_2>"], ["<a_9>", "<b_2>"]])
    assert vocab == ["<a_9>", "<a_10>", "<b_2>"]
    assert len(sid.vocabulary(3, 256)) == 768
