"""The trie of valid SIDs: allowed continuations, items, shared prefixes, collisions, bad input."""
import pytest

from train.trie import SidTrie, sid_strings


def small_trie():
    return SidTrie({
        "i1": [10, 20, 30],
        "i2": [10, 20, 31],
        "i3": [10, 21, 30],
        "i4": [11, 22, 32],
    })


def test_allowed_walks_the_prefixes():
    t = small_trie()
    assert t.levels == 3 and len(t) == 4
    assert t.allowed([]) == [10, 11]
    assert t.allowed([10]) == [20, 21]  # shared first token, two branches
    assert t.allowed([10, 20]) == [30, 31]
    assert t.allowed([11]) == [22]
    assert t.allowed([10, 21]) == [30]
    assert t.allowed([10, 20, 30]) == []  # complete
    assert t.allowed([12]) == [] and t.allowed([11, 20]) == []  # not a prefix of any SID
    assert t.token_ids == {10, 11, 20, 21, 22, 30, 31, 32}


def test_item_of_only_complete_sids():
    t = small_trie()
    assert t.item_of([10, 20, 31]) == "i2"
    assert t.item_of((11, 22, 32)) == "i4"
    assert t.item_of([10, 20]) is None  # a prefix is no item
    assert t.item_of([10, 20, 32]) is None  # valid tokens, no such path
    assert t.item_of([10, 20, 30, 40]) is None
    assert t.is_complete([10, 21, 30]) and not t.is_complete([10, 21])
    assert t.is_prefix([10, 21]) and not t.is_prefix([10, 21, 30])


def test_shared_sid_keeps_first_item_and_counts_collision():
    t = SidTrie({"x": [1, 2, 3], "y": [1, 2, 3], "z": [1, 2, 4]})
    assert t.item_of([1, 2, 3]) == "x"
    assert t.items_of([1, 2, 3]) == ["x", "y"]
    assert t.collisions == 1
    assert t.allowed([1, 2]) == [3, 4]
    # evaluation's SID map: both items of the shared SID map to it, so the decoded x is a hit for y
    from train.metrics import rank_of

    assert t.sequences["x"] == t.sequences["y"] == (1, 2, 3)
    assert rank_of("y", [t.item_of([1, 2, 4]), t.item_of([1, 2, 3])], by=t.sequences) == 1


def test_mixed_lengths_levels_is_max():
    t = SidTrie({"short": [1, 2], "long": [1, 2, 3, 4]})
    assert t.levels == 4
    assert t.is_complete([1, 2]) and t.allowed([1, 2]) == [3]  # complete AND extendable


def test_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        SidTrie({})
    with pytest.raises(ValueError, match="empty SID"):
        SidTrie({"a": []})


def _tokenizer(tokens):
    """A real (tiny) fast tokenizer with ``tokens`` added as ordinary tokens."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")))
    tok.add_tokens(tokens)
    return tok


def test_from_sids_maps_tokens_and_names_missing_ones():
    tok = _tokenizer(["<a_1>", "<b_2>", "<c_3>", "<c_4>"])
    ids = tok.convert_tokens_to_ids(["<a_1>", "<b_2>", "<c_3>", "<c_4>"])
    t = SidTrie.from_sids({"p": ["<a_1>", "<b_2>", "<c_3>"], "q": ["<a_1>", "<b_2>", "<c_4>"]}, tok)
    assert t.item_of([ids[0], ids[1], ids[3]]) == "q"
    assert t.allowed(ids[:2]) == sorted(ids[2:])
    with pytest.raises(ValueError, match=r"item 'r'.*<c_9>.*vocabulary"):
        SidTrie.from_sids({"r": ["<a_1>", "<b_2>", "<c_9>"]}, tok)
    with pytest.raises(ValueError, match="well-formed"):
        SidTrie.from_sids({"s": ["<b_2>", "<a_1>"]}, tok)


def test_sid_strings():
    assert sid_strings({"p": ["<a_1>", "<b_2>"], "q": ["<a_3>", "<b_4>"]}) == {"<a_1><b_2>", "<a_3><b_4>"}
