"""The GRPO reward: prefix levels, format, robust parsing, the TRL-facing functions."""
import pytest

from train.reward import (
    FORMAT_WEIGHT,
    format_reward,
    make_reward_funcs,
    parse_answer,
    prefix_reward,
    total_reward,
)

TARGET = ["<a_1>", "<b_2>", "<c_3>"]
VALID = {"<a_1><b_2><c_3>", "<a_1><b_2><c_4>", "<a_1><b_5><c_3>", "<a_7><b_2><c_3>"}


def done(answer: str, reasoning: str = "the user buys pens") -> str:
    return f"<think>\n{reasoning}\n</think>\n\n{answer}"


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("<a_1><b_2><c_3>", 1.0),  # k = 3
        ("<a_1><b_2><c_4>", 0.5),  # k = 2
        ("<a_1><b_5><c_3>", 0.25),  # k = 1 (third token right but after a miss: no credit)
        ("<a_7><b_2><c_3>", 0.0),  # wrong first token: 0 whatever follows
        ("<a_9><b_9><c_9>", 0.0),
    ],
)
def test_prefix_levels_l3_match_released_values(answer, expected):
    assert prefix_reward(parse_answer(done(answer)), TARGET) == expected


def test_prefix_levels_l4():
    target = "<a_1><b_2><c_3><d_4>"
    got = [prefix_reward(parse_answer(done(a)), target) for a in (
        "<a_0><b_2><c_3><d_4>", "<a_1><b_0><c_3><d_4>", "<a_1><b_2><c_0><d_4>", "<a_1><b_2><c_3><d_0>",
        "<a_1><b_2><c_3><d_4>")]
    assert got == [0.0, 0.125, 0.25, 0.5, 1.0]


def test_missing_think_end_gives_zero():
    c = "<think>\nreasoning that never ends <a_1><b_2><c_3>"
    assert parse_answer(c) is None
    assert prefix_reward(parse_answer(c), TARGET) == 0.0
    assert format_reward(c, VALID) == 0.0
    assert parse_answer("<a_1><b_2><c_3>") is None  # no think block at all


def test_only_answer_after_last_think_end_counts():
    c = "<think>\nmaybe <a_1><b_2><c_3>\n</think>\n\n<a_7><b_2><c_3>"
    assert parse_answer(c) == ["<a_7>", "<b_2>", "<c_3>"]
    assert total_reward(c, TARGET, VALID) == pytest.approx(0.0 + FORMAT_WEIGHT)
    twice = "<think>\nx\n</think>\n\n<a_9></think>\n<a_1><b_2><c_3>"
    assert parse_answer(twice) == TARGET  # the last </think> is read ...
    assert format_reward(twice, VALID) == 0.0  # ... but two of them is not the format


def test_clean_answer_format_and_total():
    c = done("<a_1><b_2><c_3>")
    assert format_reward(c, VALID) == 1.0
    assert total_reward(c, TARGET, VALID) == pytest.approx(1.1)
    # whitespace and end tokens around the SID are allowed by the format
    assert format_reward(done(" <a_1><b_2><c_4>\n<|im_end|>"), VALID) == 1.0
    assert format_reward(done("<a_1><b_2><c_4><|im_end|><|endoftext|>"), VALID) == 1.0
    assert total_reward(done("<a_1><b_2><c_4>"), TARGET, VALID) == pytest.approx(0.6)


def test_extra_text_after_sid_keeps_prefix_loses_format():
    c = done("<a_1><b_2><c_3> because you like pens")
    assert parse_answer(c) == TARGET
    assert prefix_reward(parse_answer(c), TARGET) == 1.0
    assert format_reward(c, VALID) == 0.0
    assert total_reward(c, TARGET, VALID) == 1.0


def test_text_before_sid_is_unparsable():
    c = done("The next item is <a_1><b_2><c_3>")
    assert parse_answer(c) is None
    assert total_reward(c, TARGET, VALID) == 0.0


def test_more_tokens_than_levels():
    c = done("<a_1><b_2><c_3><d_4>")
    assert parse_answer(c) == TARGET + ["<d_4>"]
    assert prefix_reward(parse_answer(c), TARGET) == 1.0  # the extra token is like extra text
    assert format_reward(c, VALID) == 0.0  # not an existing item's SID


def test_fewer_tokens_than_levels():
    c = done("<a_1><b_2>")
    assert prefix_reward(parse_answer(c), TARGET) == 0.5
    assert format_reward(c, VALID) == 0.0
    assert prefix_reward(parse_answer(done("<a_1>")), TARGET) == 0.25


def test_unknown_sid_gets_prefix_but_no_format():
    c = done("<a_1><b_2><c_99>")  # well formed, no such item
    assert prefix_reward(parse_answer(c), TARGET) == 0.5
    assert format_reward(c, VALID) == 0.0
    # unknown SID tokens the model never had still parse as SID text, never crash
    assert prefix_reward(parse_answer(done("<z_1>")), TARGET) == 0.0


def test_non_sid_answers():
    for answer in ("", "   ", "pens", "<|im_end|>", "<a_x><b_2>", "<A_1><b_2><c_3>"):
        c = done(answer)
        assert prefix_reward(parse_answer(c), TARGET) == 0.0, answer
        assert format_reward(c, VALID) == 0.0, answer


def test_empty_target_is_an_error():
    with pytest.raises(ValueError):
        prefix_reward(["<a_1>"], [])


def test_reward_funcs_for_trl_string_and_conversational():
    prefix_fn, format_fn = make_reward_funcs(VALID, format_weight=0.1)
    assert (prefix_fn.weight, format_fn.weight) == (1.0, 0.1)
    assert prefix_fn.__name__ == "sid_prefix_reward" and format_fn.__name__ == "sid_format_reward"
    completions = [done("<a_1><b_2><c_3>"), done("<a_1><b_2><c_4> yes"), "no think block <a_1><b_2><c_3>"]
    targets = ["<a_1><b_2><c_3>", ["<a_1>", "<b_2>", "<c_3>"], "<a_1><b_2><c_3>"]
    kwargs = dict(prompts=["p"] * 3, completion_ids=[[1]] * 3, trainer_state=None, other_column=[0, 1, 2])
    assert prefix_fn(completions=completions, target_sid=targets, **kwargs) == [1.0, 0.5, 0.0]
    assert format_fn(completions=completions, target_sid=targets, **kwargs) == [1.0, 0.0, 0.0]
    conv = [[{"role": "assistant", "content": c}] for c in completions]
    assert prefix_fn(completions=conv, target_sid=targets, **kwargs) == [1.0, 0.5, 0.0]
    assert format_fn(completions=conv, target_sid=targets, **kwargs) == [1.0, 0.0, 0.0]
    # a response parser that split the think block off into reasoning_content
    parsed = [[{"role": "assistant", "reasoning_content": "pens", "content": "<a_1><b_2><c_4>"}]]
    assert prefix_fn(completions=parsed, target_sid=["<a_1><b_2><c_3>"]) == [0.5]
    assert format_fn(completions=parsed, target_sid=["<a_1><b_2><c_3>"]) == [1.0]


def test_reward_funcs_errors():
    prefix_fn, _ = make_reward_funcs(VALID)
    with pytest.raises(ValueError, match="target_sid"):
        prefix_fn(prompts=["p"], completions=[done("<a_1>")])
    with pytest.raises(ValueError, match="no valid SIDs"):
        make_reward_funcs(set())
    with pytest.raises(ValueError, match="format_weight"):
        make_reward_funcs(VALID, format_weight=-1)
