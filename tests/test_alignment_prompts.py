"""Alignment prompts as published: each task family's instruction is the SYSTEM turn, its question (with
the data) the USER turn, the same at training and at evaluation; item text stays data. And the
paper's S1/S2/S3 alignment variants: how a run says which one it trains."""
import json

import pytest

from synth.data.dataset import DatasetError, Item, Sample, write_dataset
from synth.io import read_json, write_json, write_jsonl
from train import pipeline, tasks
from train.config import TrainConfig, load
from train.model import build_tiny_tokenizer
from train.templates import TASKS, prompt_messages, rec_messages, render_prompt

SIDS = {"1": ["<a_1>", "<b_1>"], "2": ["<a_1>", "<b_2>"], "3": ["<a_2>", "<b_1>"]}
EVIL = 'Red {{ 7*7 }} {% for x in range(3) %}x{% endfor %} Stapler'
FAMILY = {  # task -> (what its system turn asks to answer with, what the user turn carries)
    "sid2sid": ("Semantic ID", "<a_1><b_1>"), "sid2title": ("title", "<a_1><b_1>"),
    "title2sid": ("Semantic ID", "Blue Pen"), "title2title": ("title", "Blue Pen"),
    "item_title2sid": ("Semantic ID", "Blue Pen"), "item_sid2title": ("title", "<a_1><b_1>"),
}


def _data(task):
    if task in ("sid2sid", "sid2title"):
        return {"history": ["<a_1><b_1>", "<a_1><b_2>"]}
    if task in ("title2sid", "title2title"):
        return {"history": ["Blue Pen", EVIL]}
    return {"title": "Blue Pen"} if task == "item_title2sid" else {"sid": "<a_1><b_1>"}


@pytest.mark.parametrize("task", sorted(FAMILY))
def test_instruction_in_the_system_turn_question_in_the_user_turn(task):
    system, user = prompt_messages(task, **_data(task))
    assert (system["role"], user["role"]) == ("system", "user")
    answer_with, data = FAMILY[task]
    assert system["content"].rstrip(".").endswith(f"answer with its {answer_with}") or \
        system["content"].endswith(f"Answer with that product's {answer_with}.")
    assert data in user["content"] and data not in system["content"]  # the data is in the question only
    assert "answer" not in user["content"].lower()  # the instruction is in the system turn only
    assert user["content"].rstrip().endswith("?")
    # the system turn is constant text: other data, the same instruction
    assert prompt_messages(task, **{k: (["<a_9><b_9>"] if k == "history" else "Other")
                                    for k in _data(task)})[0] == system


def test_item_text_is_rendered_as_data():
    _, user = prompt_messages("title2title", history=["Blue Pen", EVIL])
    assert EVIL in user["content"] and "49" not in user["content"]
    _, user = prompt_messages("item_title2sid", title=EVIL)
    assert f'"{EVIL}"' in user["content"]


def test_every_alignment_task_has_a_system_turn_but_the_corpus():
    assert {t for t, (system, _) in TASKS.items() if system is None} == {"corpus"}
    assert rec_messages(["<a_1><b_1>"]) == prompt_messages("sid2sid", history=["<a_1><b_1>"])


@pytest.fixture
def inputs(tmp_path):
    items = [Item("1", "Blue Pen"), Item("2", EVIL), Item("3", "Notebook")]
    splits = {"train": [Sample("u1", ["1"], "2"), Sample("u1", ["1", "2"], "3")],
              "valid": [Sample("u1", ["1", "2", "3"], "1")], "test": [Sample("u2", ["3", "1"], "2")]}
    write_dataset(tmp_path / "data" / "d", items, splits, {"kind": "test"})
    write_json(tmp_path / "data" / "d" / "sids.json", SIDS)
    c = tmp_path / "corpora" / "d" / "t"
    write_jsonl(c / "items.jsonl", [{"item_id": "1", "sid": "<a_1><b_1>", "text": "<a_1><b_1> is a pen.",
                                     "insights": ""}])
    write_jsonl(c / "users.jsonl", [{"user_id": "u1", "history": ["1"], "target": "2",
                                     "reasoning": "Pens need staplers.", "text": "u1 likes <a_1><b_1>."}])
    return tasks.load_inputs("d", tmp_path / "data", tmp_path / "corpora", "t")


def test_the_same_recommendation_prompt_at_training_and_at_evaluation(inputs):
    """align's SID -> SID rows, activation rows, and the rendered GRPO / evaluation prompts all start
    with THE system + user prompt; the rendered prompt is exactly the training prefix."""
    tok = build_tiny_tokenizer(vocab_size=400)
    (act,) = tasks.activate_rows(inputs)
    assert [m["role"] for m in act["messages"]] == ["system", "user", "assistant"]
    assert act["messages"][:2] == rec_messages(["<a_1><b_1>"])
    (test_row,) = tasks.rec_rows(inputs, "test", tok)
    assert test_row["prompt"] == render_prompt(tok, rec_messages(["<a_2><b_1>", "<a_1><b_1>"]))
    assert test_row["prompt"].startswith("<|im_start|>system\n")
    full = tok.apply_chat_template(act["messages"], tokenize=False)
    assert full.startswith(render_prompt(tok, act["messages"][:2]))
    for row in tasks.align_eval_rows(inputs):
        assert row["messages"][:2] == rec_messages(["<a_1><b_1>", "<a_1><b_2>", "<a_2><b_1>"])


def _cfg(tmp_path, *flags):
    from train.__main__ import parse

    _, _, _, given = parse(["run", "--dataset", "d", "--model", "tiny", "--data-dir", str(tmp_path / "data"),
                            "--corpora-dir", str(tmp_path / "corpora"), "--runs-dir", str(tmp_path / "runs"), *flags])
    return load(None, given)[0]


def test_variants_s1_s2_s3(inputs, tmp_path):
    assert _cfg(tmp_path, "--teacher", "none").variant == "s1"  # TEACHER=none: no corpus
    assert _cfg(tmp_path, "--teacher", "t").variant == "s2"
    assert _cfg(tmp_path, "--teacher", "t", "--no-align-corpus").variant == "s1"  # corpus for activation only
    assert _cfg(tmp_path, "--teacher", "t", "--general", "g.jsonl").variant == "s3"
    assert _cfg(tmp_path, "--teacher", "t", "--general", "g.jsonl", "--general-n", "0").variant == "s2"
    assert _cfg(tmp_path, "--teacher", "none", "--general", "g.jsonl").variant == "s1+general"
    assert pipeline.run_name(_cfg(tmp_path, "--teacher", "none")) == "tiny-nocorpus-s1"
    assert pipeline.run_name(_cfg(tmp_path, "--teacher", "t")) == "tiny-t"  # S2 keeps its name
    assert pipeline.run_name(_cfg(tmp_path, "--teacher", "t", "--general", "g.jsonl")) == "tiny-t-s3"
    assert TrainConfig().align.general_n == 60000  # the paper's count, used once GENERAL is given


def test_s1_alignment_has_no_corpus_rows(inputs):
    kinds = {r["task"] for r in tasks.align_rows(inputs, corpus=False)}
    assert kinds == {"sid2sid", "sid2title", "title2sid", "title2title", "item_title2sid", "item_sid2title"}
    assert {"corpus_item", "corpus_user"} <= {r["task"] for r in tasks.align_rows(inputs)}


def test_a_run_without_corpus_stops_before_activation_and_records_its_variant(inputs, tmp_path):
    cfg = _cfg(tmp_path, "--teacher", "none")
    with pytest.raises(DatasetError, match="STAGES=align,eval"):
        pipeline.check_corpus(cfg, pipeline.selected(cfg))
    assert not (tmp_path / "runs").exists()  # nothing written before the refusal
    cfg = _cfg(tmp_path, "--teacher", "none", "--stages", "align,eval")
    pipeline.check_corpus(cfg, pipeline.selected(cfg))
    run = pipeline.open_run(cfg, None)
    assert run.dir.name == "tiny-nocorpus-s1" and run.inputs.corpus_dir is None
    rec = read_json(run.metrics)
    assert rec["variant"] == "s1" and rec["run"] == "tiny-nocorpus-s1"
    json.dumps(rec)
