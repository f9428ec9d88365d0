"""The training sets: align mix, activation samples, GRPO prompts, on a small hand-made dataset."""
import pytest

from synth.data.dataset import DatasetError, Item, Sample, write_dataset
from synth.io import write_json, write_jsonl
from train import tasks
from train.templates import rec_messages, render

SIDS = {"1": ["<a_1>", "<b_1>"], "2": ["<a_1>", "<b_2>"], "3": ["<a_2>", "<b_1>"]}


@pytest.fixture
def inputs(tmp_path):
    items = [Item("1", "Blue Pen"), Item("2", "Red {{ 7*7 }} Stapler"), Item("3", "Notebook")]
    splits = {"train": [Sample("u1", ["1"], "2"), Sample("u1", ["1", "2"], "3")],
              "valid": [Sample("u1", ["1", "2", "3"], "1")], "test": [Sample("u2", ["3"], "1")]}
    write_dataset(tmp_path / "data" / "d", items, splits, {"kind": "test"})
    write_json(tmp_path / "data" / "d" / "sids.json", SIDS)
    c = tmp_path / "corpora" / "d" / "t"
    write_jsonl(c / "items.jsonl", [{"item_id": "1", "sid": "<a_1><b_1>", "text": "<a_1><b_1> is a pen.",
                                     "insights": ""}])
    write_jsonl(c / "users.jsonl", [{"user_id": "u1", "history": ["1"], "target": "2",
                                     "reasoning": "Pens need staplers.", "text": "u1 likes <a_1><b_1>."}])
    return tasks.load_inputs("d", tmp_path / "data", tmp_path / "corpora", "t")


def test_align_mix_is_one_conversational_format(inputs):
    rows = tasks.align_rows(inputs)
    kinds = sorted({r["task"] for r in rows})
    assert kinds == ["corpus_item", "corpus_user", "item_sid2title", "item_title2sid", "sid2sid", "sid2title",
                     "title2sid", "title2title"]
    assert len(rows) == 2 * 4 + 3 * 2 + 2
    for r in rows:  # the task's instruction is the system turn, its question the user turn (corpus: no question)
        roles = ["user", "assistant"] if r["task"].startswith("corpus") else ["system", "user", "assistant"]
        assert [m["role"] for m in r["messages"]] == roles
    corpus = next(r for r in rows if r["task"] == "corpus_item")
    assert corpus["messages"][1]["content"].endswith("<a_1><b_1> is a pen.")
    # Item text is data, never a template: the braces come through verbatim (in the user turn).
    t2t = [r for r in rows if r["task"] == "item_title2sid"]
    assert any("{{ 7*7 }}" in r["messages"][1]["content"] for r in t2t)


def test_sid2sid_uses_the_recommendation_prompt(inputs):
    row = next(r for r in tasks.align_rows(inputs) if r["task"] == "sid2sid")
    assert row["messages"][:-1] in (rec_messages(["<a_1><b_1>"]), rec_messages(["<a_1><b_1>", "<a_1><b_2>"]))
    hist = row["messages"][1]["content"]
    assert hist == render("sid_hist.user.j2", history=["<a_1><b_1>"]) or "<a_1><b_1>, <a_1><b_2>" in hist
    assert row["messages"][-1]["content"].endswith("</think>\n\n" + ("<a_1><b_2>" if "<a_1><b_2>" not in hist
                                                                      else "<a_2><b_1>"))
    ev = tasks.align_eval_rows(inputs)
    assert len(ev) == 1 and ev[0]["messages"][-1]["content"].endswith("<a_1><b_1>")


def test_activation_rows_reason_then_answer(inputs):
    (row,) = tasks.activate_rows(inputs)
    assert row["messages"][:2] == rec_messages(["<a_1><b_1>"])  # THE recommendation prompt: system + user
    assert "<a_1><b_1>" in row["messages"][1]["content"]
    assert row["messages"][-1]["content"] == "<think>\nPens need staplers.\n</think>\n\n<a_1><b_2>"


def test_limit_and_bad_corpus(inputs, tmp_path):
    assert len([r for r in tasks.align_rows(inputs, limit=1) if r["task"] == "sid2sid"]) == 1
    write_jsonl(tmp_path / "corpora" / "d" / "t" / "users.jsonl", [{"user_id": "u1", "history": ["9"],
                                                                     "target": "2", "reasoning": "x"}])
    with pytest.raises(DatasetError, match=r"users.jsonl:1: unknown item id '9'"):
        tasks.activate_rows(inputs)
    with pytest.raises(DatasetError, match="make synth"):
        tasks.load_inputs("d", tmp_path / "data", tmp_path / "corpora", "missing")
